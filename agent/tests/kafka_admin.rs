//! The Kafka admin client against a real Apache Kafka (assembled by
//! `scripts/kafka-dist`): one KRaft node in combined mode with a SASL_SSL
//! SCRAM-SHA-512 broker listener and a mutual-TLS controller listener, both
//! with PEM keystores signed by a CA made here. Every `KafkaAdmin` call is
//! checked against it, so are a keystore reloaded by re-setting its path,
//! and the refusals (wrong password, wrong CA, closed port).
//!
//! Needs Java (`scripts/install-deps`); a missing piece fails the test.

#[macro_use]
mod common;

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ADMIN_PASSWORD, Kafka, TIMEOUT, TestCa, free_port, wait_for};
use kraftops_agent::kafka::{
    AdminClient, AdminConfig, Auth, ConfigEntry, ConfigOp, ConfigSource, KafkaAdmin, KafkaError,
    TopicPartition,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

fn entry<'a>(entries: &'a [ConfigEntry], name: &str) -> &'a ConfigEntry {
    entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no config {name}"))
}

/// The serial number of the certificate `address` presents, by a fresh
/// TLS handshake trusting `ca_pem`.
fn presented_serial(address: &str, ca_pem: &str) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tcp = TcpStream::connect(address).expect("connect");
    tcp.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    while tls.is_handshaking() {
        tls.complete_io(&mut tcp).expect("handshake");
    }
    let leaf = tls.peer_certificates().expect("certificates")[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).expect("X.509");
    cert.raw_serial().to_vec()
}

#[test]
fn admin_client_against_a_real_kafka() {
    let started = Instant::now();
    let kafka = Kafka::start();
    let admin = kafka.scram_client(ADMIN_PASSWORD);

    // Ready when our own client sees broker 1.
    let metadata = wait_for(
        "Kafka to answer Metadata",
        Duration::from_secs(60),
        &kafka,
        || {
            admin
                .metadata()
                .ok()
                .filter(|m| m.brokers.iter().any(|b| b.id == 1))
        },
    );
    report!("Kafka ready after {:?}", started.elapsed());
    assert_eq!(metadata.brokers.len(), 1);
    assert_eq!(metadata.brokers[0].host, "127.0.0.1");
    assert!(metadata.cluster_id.is_some());

    // 1. Topics and the cluster, over SASL_SSL/SCRAM-SHA-512.
    admin
        .create_topic("orders", 3, 1, &[("min.insync.replicas", "1")])
        .expect("create topic");
    let orders = wait_for(
        "orders in Metadata",
        Duration::from_secs(15),
        &kafka,
        || {
            admin
                .metadata()
                .expect("metadata")
                .topics
                .into_iter()
                .find(|t| t.name == "orders" && t.partitions.iter().all(|p| p.leader == 1))
        },
    );
    assert!(!orders.internal);
    assert_eq!(orders.partitions.len(), 3);
    for p in &orders.partitions {
        assert_eq!(
            (p.leader, &p.replicas, &p.isr),
            (1, &vec![1], &vec![1]),
            "{p:?}"
        );
        assert!(p.offline_replicas.is_empty());
    }
    let again = admin.create_topic("orders", 3, 1, &[]).expect_err("exists");
    report!("creating orders again: {again}");
    assert!(
        again.to_string().contains("TOPIC_ALREADY_EXISTS"),
        "{again}"
    );

    let cluster = admin.describe_cluster().expect("describe cluster");
    report!("describe_cluster: {cluster:?}");
    assert_eq!(cluster.nodes.len(), 1);
    assert_eq!((cluster.nodes[0].id, cluster.nodes[0].fenced), (1, false));
    assert_eq!(Some(&cluster.cluster_id), metadata.cluster_id.as_ref());

    let configs = admin
        .topic_configs(&["orders".to_owned()], &["min.insync.replicas"])
        .expect("topic configs");
    assert_eq!(configs["orders"]["min.insync.replicas"], "1");
    let missing = admin
        .topic_configs(&["no-such-topic".to_owned()], &["min.insync.replicas"])
        .expect_err("unknown topic");
    report!("configs of an unknown topic: {missing}");
    assert!(
        missing.to_string().contains("topic no-such-topic"),
        "{missing}"
    );

    // 2. Broker configs: read, set, delete, refuse.
    let configs = admin.broker_configs(1).expect("broker configs");
    let log_dirs = entry(&configs, "log.dirs");
    assert!(log_dirs.read_only, "{log_dirs:?}");
    assert_eq!(log_dirs.source, ConfigSource::StaticBroker);
    let threads = entry(&configs, "log.cleaner.threads");
    assert!(!threads.read_only, "{threads:?}");
    assert_eq!(threads.source, ConfigSource::Default);

    let set = |value: &str| ConfigOp::Set {
        name: "log.cleaner.threads".to_owned(),
        value: value.to_owned(),
    };
    admin
        .alter_broker_configs(1, &[set("2")])
        .expect("set log.cleaner.threads");
    let threads = wait_for(
        "log.cleaner.threads=2",
        Duration::from_secs(15),
        &kafka,
        || {
            let configs = admin.broker_configs(1).expect("broker configs");
            Some(entry(&configs, "log.cleaner.threads").clone())
                .filter(|e| e.value.as_deref() == Some("2"))
        },
    );
    report!("after set: {threads:?}");
    assert_eq!(threads.source, ConfigSource::DynamicBroker);
    assert_eq!(threads.synonyms[0].source, ConfigSource::DynamicBroker);
    assert!(
        threads
            .synonyms
            .iter()
            .any(|s| s.source == ConfigSource::Default && s.value.as_deref() == Some("1")),
        "{threads:?}"
    );
    admin
        .alter_broker_configs(
            1,
            &[ConfigOp::Delete {
                name: "log.cleaner.threads".to_owned(),
            }],
        )
        .expect("delete log.cleaner.threads");
    let threads = wait_for(
        "log.cleaner.threads deleted",
        Duration::from_secs(15),
        &kafka,
        || {
            let configs = admin.broker_configs(1).expect("broker configs");
            Some(entry(&configs, "log.cleaner.threads").clone())
                .filter(|e| e.source != ConfigSource::DynamicBroker)
        },
    );
    assert_eq!(
        (threads.source, threads.value.as_deref()),
        (ConfigSource::Default, Some("1"))
    );
    let invalid = admin
        .alter_broker_configs(1, &[set("abc")])
        .expect_err("abc is not a number");
    report!("invalid value: {invalid}");
    assert!(matches!(invalid, KafkaError::Kafka { .. }), "{invalid:?}");
    let text = invalid.to_string();
    assert!(
        text.contains("INVALID_CONFIG") || text.contains("INVALID_REQUEST"),
        "{text}"
    );
    assert!(
        text.contains("broker 1 config log.cleaner.threads"),
        "{text}"
    );

    // The listener's keystore: re-setting its path reloads the file.
    let before = presented_serial(&kafka.internal, &kafka.ca.pem());
    std::fs::write(&kafka.internal_keystore, kafka.ca.keystore(1003)).expect("new keystore");
    let location = kafka.internal_keystore.display().to_string();
    admin
        .alter_broker_configs(
            1,
            &[ConfigOp::Set {
                name: "listener.name.internal.ssl.keystore.location".to_owned(),
                value: location.clone(),
            }],
        )
        .expect("re-set the keystore location");
    let reload = Instant::now();
    let after = wait_for(
        "the new certificate",
        Duration::from_secs(15),
        &kafka,
        || Some(presented_serial(&kafka.internal, &kafka.ca.pem())).filter(|s| *s != before),
    );
    report!(
        "keystore reload: serial {before:02x?} -> {after:02x?} after {:?}",
        reload.elapsed()
    );
    assert_eq!(
        after,
        vec![0x03, 0xeb],
        "1003, the new certificate's serial"
    );
    let configs = admin.broker_configs(1).expect("broker configs");
    let keystore = entry(&configs, "listener.name.internal.ssl.keystore.location");
    assert_eq!(keystore.value.as_deref(), Some(location.as_str()));
    assert_eq!(keystore.source, ConfigSource::DynamicBroker);
    // The client's pooled connection was made before: a new one works too.
    assert!(kafka.scram_client(ADMIN_PASSWORD).metadata().is_ok());

    // 3. The metadata quorum, through the broker.
    let quorum = admin.describe_quorum().expect("describe quorum");
    report!("describe_quorum via the broker: {quorum:?}");
    assert_eq!(quorum.leader_id, 1);
    assert_eq!(
        quorum
            .voters
            .iter()
            .map(|v| v.replica_id)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert!(quorum.high_watermark > 0);

    // 4. Elections and reassignments.
    let orders_0 = TopicPartition {
        topic: "orders".to_owned(),
        partition: 0,
    };
    assert_eq!(
        admin
            .elect_preferred_leaders(std::slice::from_ref(&orders_0))
            .expect("elect"),
        vec![]
    );
    assert_eq!(admin.elect_preferred_leaders(&[]).expect("nothing"), vec![]);
    let unknown = TopicPartition {
        topic: "no-such-topic".to_owned(),
        partition: 0,
    };
    let failed = admin
        .elect_preferred_leaders(std::slice::from_ref(&unknown))
        .expect("elect");
    report!("election of an unknown partition: {failed:?}");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, unknown);
    assert!(
        failed[0].1.starts_with("UNKNOWN_TOPIC_OR_PARTITION"),
        "{failed:?}"
    );
    assert_eq!(admin.reassignments().expect("reassignments"), vec![]);

    // 5. The controllers, over mutual TLS (KIP-919).
    let controllers = kafka.controller_client();
    let cluster = controllers
        .describe_cluster()
        .expect("describe cluster (controllers)");
    report!("describe_cluster via the controllers: {cluster:?}");
    assert_eq!(cluster.controller_id, 1);
    assert_eq!(
        cluster
            .nodes
            .iter()
            .map(|n| (n.id, format!("{}:{}", n.host, n.port)))
            .collect::<Vec<_>>(),
        vec![(1, kafka.controller.clone())]
    );
    let quorum = controllers
        .describe_quorum()
        .expect("describe quorum (controllers)");
    assert_eq!(quorum.leader_id, 1);
    assert_eq!(quorum.voters.len(), 1);
    let controller_configs = controllers.broker_configs(1).expect("controller configs");
    assert_eq!(
        entry(&controller_configs, "process.roles").value.as_deref(),
        Some("broker,controller")
    );
    let refused = controllers
        .metadata()
        .expect_err("no Metadata on controllers");
    report!("Metadata to a controller: {refused}");
    assert!(
        matches!(refused, KafkaError::Unsupported { .. }),
        "{refused:?}"
    );

    // 6. Refusals: clear errors, no panic.
    let wrong = kafka
        .scram_client("wrong-password")
        .metadata()
        .expect_err("wrong password");
    report!("wrong password: {wrong}");
    let text = wrong.to_string();
    assert!(
        matches!(wrong, KafkaError::Authentication { .. }),
        "{wrong:?}"
    );
    assert!(
        text.contains(&kafka.internal) && text.contains("admin"),
        "{text}"
    );
    assert!(text.contains("authentication failed"), "{text}");

    let stranger = TestCa::new("some other CA");
    let wrong_ca = AdminClient::new(AdminConfig {
        bootstrap: vec![kafka.internal.clone()],
        ca_pem: stranger.pem(),
        auth: Auth::Scram {
            user: "admin".to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
        },
        timeout: TIMEOUT,
        controllers: false,
    })
    .expect("client")
    .metadata()
    .expect_err("untrusted server certificate");
    report!(
        "wrong CA: {wrong_ca} ({:?})",
        std::error::Error::source(&wrong_ca).map(ToString::to_string)
    );
    assert!(matches!(wrong_ca, KafkaError::Tls { .. }), "{wrong_ca:?}");
    assert!(wrong_ca.to_string().contains(&kafka.internal));

    let no_certificate = AdminClient::new(AdminConfig {
        bootstrap: vec![kafka.controller.clone()],
        ca_pem: kafka.ca.pem(),
        auth: Auth::Scram {
            user: "admin".to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
        },
        timeout: TIMEOUT,
        controllers: true,
    })
    .expect("client")
    .describe_cluster()
    .expect_err("the controller listener requires a client certificate");
    report!(
        "no client certificate: {no_certificate} ({:?})",
        std::error::Error::source(&no_certificate).map(ToString::to_string)
    );

    let closed = format!("127.0.0.1:{}", free_port());
    let asked = Instant::now();
    let refused = AdminClient::new(AdminConfig {
        bootstrap: vec![closed.clone()],
        ca_pem: kafka.ca.pem(),
        auth: Auth::Scram {
            user: "admin".to_owned(),
            password: ADMIN_PASSWORD.to_owned(),
        },
        timeout: TIMEOUT,
        controllers: false,
    })
    .expect("client")
    .metadata()
    .expect_err("closed port");
    report!("closed port: {refused} after {:?}", asked.elapsed());
    assert!(matches!(refused, KafkaError::Connect { .. }), "{refused:?}");
    assert!(refused.to_string().contains(&closed));
    assert!(asked.elapsed() < TIMEOUT);

    report!("all checks done after {:?}", started.elapsed());
}
