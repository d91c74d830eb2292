//! `init` makes a new repository that validates and renders, with fresh
//! identities and secrets, and refuses to touch anything that exists.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use age::secrecy::ExposeSecret as _;
use desired_state::Identity;
use desired_state::types::Name;
use kraftops_agent::certs::{Ca, NodeIdentity, NodeKey, csr_pem, issued_by};
use kraftops_agent::init::{InitError, InitOptions, InitReport, init, join_token_secret};

const NOW: u64 = 1_795_564_800;

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed")
}

fn options(cluster: &str, identity: &Path) -> InitOptions {
    let mut opts = InitOptions::new(cluster, seed_dir(), identity);
    opts.now = NOW;
    opts
}

fn name(s: &str) -> Name {
    Name::try_from(s).expect("valid name")
}

struct Created {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    identity: PathBuf,
    report: InitReport,
}

fn create(cluster: &str) -> Created {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let identity = tmp.path().join("keys/cluster.age-identity");
    let report = init(&repo, &options(cluster, &identity)).expect("init succeeds");
    Created {
        _tmp: tmp,
        repo,
        identity,
        report,
    }
}

fn read_identity(path: &Path) -> Identity {
    Identity::parse(&std::fs::read_to_string(path).expect("identity file"))
        .expect("identity parses")
}

#[test]
fn creates_a_repository_that_validates_and_renders() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let identity_path = tmp.path().join("cluster.age-identity");
    let coordinator = age::x25519::Identity::generate();
    let mut opts = options("kafka-test", &identity_path);
    opts.recipients = vec![coordinator.to_public().to_string()];
    let report = init(&repo, &opts).expect("init succeeds");

    let model =
        desired_state::load_dir(&repo).unwrap_or_else(|d| panic!("does not validate:\n{d}"));
    assert_eq!(model.cluster.name.as_str(), "kafka-test");
    assert_eq!(
        model.cluster.kraft_cluster_id.as_str(),
        report.kraft_cluster_id
    );
    let seed = desired_state::load_dir(&seed_dir()).expect("seed loads");
    assert_ne!(
        model.cluster.kraft_cluster_id.as_str(),
        seed.cluster.kraft_cluster_id.as_str()
    );
    assert_eq!(model.nodes.len(), seed.nodes.len());
    for (new, old) in model.nodes.iter().zip(&seed.nodes) {
        assert_eq!(new.name.as_str(), old.name.as_str());
        assert_eq!(new.directory_id.is_some(), old.directory_id.is_some());
        if let (Some(a), Some(b)) = (&new.directory_id, &old.directory_id) {
            assert_ne!(
                a.as_str(),
                b.as_str(),
                "{}: directory id not fresh",
                new.name.as_str()
            );
        }
    }
    assert_eq!(model.topics.len(), seed.topics.len());
    assert_eq!(model.users.len(), seed.users.len());
    assert_eq!(model.connectors.len(), seed.connectors.len());
    assert_eq!(model.rules.len(), seed.rules.len());
    assert_eq!(model.dashboards.len(), seed.dashboards.len());
    assert!(repo.join("observability/tests/kafka.test.yaml").is_file());
    assert!(
        !std::fs::read_to_string(repo.join("cluster.yaml"))
            .expect("read")
            .contains("yaml-language-server")
    );

    // Every secret decrypts with the new identity and renders every node.
    let identity = read_identity(&identity_path);
    let secrets = model
        .decrypt_all(&identity)
        .expect("secrets decrypt with the new identity");
    let plans = roles::render_all(&model, &secrets).expect("every node renders");
    assert_eq!(plans.len(), model.nodes.len());
    // The example identity reads none of them.
    let example = Identity::parse(
        &std::fs::read_to_string(seed_dir().join("../seed.example-only.age-identity"))
            .expect("read"),
    )
    .expect("parses");
    assert!(model.decrypt(&name("admin-password"), &example).is_err());

    // The extra recipient (the coordinator) reads them too.
    let coordinator = Identity::parse(coordinator.to_string().expose_secret()).expect("parses");
    let token = model
        .decrypt(&name("join-token-broker-1"), &coordinator)
        .expect("coordinator decrypts");
    assert_eq!(
        token.expose().len(),
        43,
        "32 bytes, URL-safe base64 without padding"
    );
    assert_ne!(
        token,
        model
            .decrypt(&name("join-token-broker-2"), &coordinator)
            .expect("decrypts"),
        "each node has its own token"
    );
    for node in &model.nodes {
        assert!(
            model
                .secrets
                .contains_key(&name(&join_token_secret(node.name.as_str())))
        );
    }
    for user in &model.users {
        let password = model
            .decrypt(&user.password_secret, &identity)
            .expect("decrypts");
        assert!(password.single_line("p").expect("one line").len() >= 32);
    }

    // The CA is new, its key is in secrets/, and it signs node certificates.
    assert_ne!(model.ca_certificate, seed.ca_certificate);
    let ca_key = model
        .decrypt(&model.cluster.security.ca.key_secret, &identity)
        .expect("decrypts");
    let ca = Ca::from_pem(&model.ca_certificate, ca_key.expose()).expect("CA loads");
    assert_eq!(ca.subject(), "CN=kafka-test CA, O=kraftops");
    let plan = plans
        .iter()
        .find(|p| p.node == "broker-1")
        .expect("broker-1");
    let req = plan.certificates.first().expect("certificate request");
    let key = NodeKey::generate().expect("key");
    let node = NodeIdentity::from_model(&model, "broker-1").expect("exists");
    let signed = ca
        .sign(
            &csr_pem(req, &key).expect("CSR"),
            &node,
            req.validity_seconds,
            NOW,
        )
        .expect("signs");
    assert!(issued_by(&signed.pem, &model.ca_certificate).expect("parses"));

    // The report lists what was made, and no secret value.
    assert_eq!(report.ca_certificate, "pki/ca.pem");
    assert!(report.files.iter().any(|f| f == "secrets/ca-key.age"));
    assert!(
        report
            .files
            .iter()
            .any(|f| f == "secrets/grafana-admin-password.age")
    );
    assert!(
        report
            .secrets
            .iter()
            .any(|s| s == "join-token-observability-1")
    );
    assert_eq!(report.recipients.len(), 2);
    let shown = format!("{report}\n{report:?}");
    for (secret_name, value) in &secrets {
        let v = value.expose();
        let probe = v.lines().find(|l| !l.starts_with("-----")).unwrap_or(v);
        assert!(
            !shown.contains(probe),
            "the report shows secret {secret_name}"
        );
    }
    let identity_text = std::fs::read_to_string(&identity_path).expect("read");
    let secret_line = identity_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .expect("key line");
    assert!(!shown.contains(secret_line));
    assert!(shown.contains(&report.identity_recipient));
}

#[test]
fn refuses_a_non_empty_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).expect("mkdir");
    std::fs::write(repo.join("README.md"), "mine\n").expect("write");
    let identity = tmp.path().join("id");
    let err = init(&repo, &options("kafka-test", &identity)).expect_err("refused");
    assert!(matches!(err, InitError::NotEmpty { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("is not empty; init only creates a new repository"),
        "{err}"
    );
    assert!(!identity.exists(), "nothing is written when init refuses");
    assert_eq!(std::fs::read_dir(&repo).expect("read").count(), 1);

    // A file where the repository should be is refused too.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").expect("write");
    let err = init(&file, &options("kafka-test", &identity)).expect_err("refused");
    assert!(matches!(err, InitError::NotADirectory { .. }), "{err:?}");

    // An empty directory is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    init(&empty, &options("kafka-test", &identity)).expect("init into an empty directory");
    desired_state::load_dir(&empty).expect("validates");
}

#[test]
fn identity_file_is_private_and_never_overwritten() {
    let created = create("kafka-test");
    let mode = std::fs::metadata(&created.identity)
        .expect("identity exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {:o}", mode & 0o777);
    let text = std::fs::read_to_string(&created.identity).expect("read");
    assert!(text.contains(&format!(
        "# public key: {}",
        created.report.identity_recipient
    )));
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .count(),
        1
    );

    // A second init with the same identity path refuses and writes nothing.
    let other = created.repo.with_file_name("other");
    let err = init(&other, &options("kafka-test", &created.identity)).expect_err("refused");
    assert!(matches!(err, InitError::IdentityExists { .. }), "{err:?}");
    assert!(!other.exists());
    assert_eq!(
        std::fs::read_to_string(&created.identity).expect("read"),
        text
    );

    // The identity may not go into the repository.
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let err =
        init(&repo, &options("kafka-test", &repo.join("secrets/../id"))).expect_err("refused");
    assert!(
        matches!(err, InitError::IdentityInsideRepository { .. }),
        "{err:?}"
    );
    assert!(!repo.exists());
}

#[test]
fn two_inits_differ() {
    let a = create("kafka-a");
    let b = create("kafka-b");
    let ma = desired_state::load_dir(&a.repo).expect("validates");
    let mb = desired_state::load_dir(&b.repo).expect("validates");
    assert_ne!(a.report.kraft_cluster_id, b.report.kraft_cluster_id);
    assert_ne!(ma.ca_certificate, mb.ca_certificate);
    assert_ne!(
        a.report.ca_fingerprint_sha256,
        b.report.ca_fingerprint_sha256
    );
    assert_ne!(a.report.identity_recipient, b.report.identity_recipient);
    let key = |m: &desired_state::Model, id: &Path| {
        m.decrypt(&name("ca-key"), &read_identity(id))
            .expect("decrypts")
            .expose()
            .to_owned()
    };
    assert_ne!(key(&ma, &a.identity), key(&mb, &b.identity));
    let dir_ids = |m: &desired_state::Model| -> Vec<String> {
        m.nodes
            .iter()
            .filter_map(|n| n.directory_id.as_ref().map(|d| d.as_str().to_owned()))
            .collect()
    };
    let (ia, ib) = (dir_ids(&ma), dir_ids(&mb));
    assert_eq!(ia.len(), 3);
    assert!(ia.iter().all(|id| !ib.contains(id)));
    // Within one repository, too, every id is different.
    let mut all = ia.clone();
    all.push(a.report.kraft_cluster_id.clone());
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4);
    // One cluster's identity cannot read the other's secrets.
    assert!(
        mb.decrypt(&name("admin-password"), &read_identity(&a.identity))
            .is_err()
    );
}

#[test]
fn refuses_bad_options() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp.path().join("repo");
    let identity = tmp.path().join("id");
    let err = init(&repo, &options("Kafka_Prod", &identity)).expect_err("bad name");
    assert!(matches!(err, InitError::ClusterName { .. }), "{err:?}");

    let mut opts = options("kafka-test", &identity);
    opts.recipients = vec!["ssh-ed25519 AAAA".to_owned()];
    let err = init(&repo, &opts).expect_err("bad recipient");
    assert!(matches!(err, InitError::Recipient { .. }), "{err:?}");

    let mut opts = options("kafka-test", &identity);
    opts.template_dir = tmp.path().join("no-template");
    let err = init(&repo, &opts).expect_err("no template");
    assert!(matches!(err, InitError::Io { .. }), "{err:?}");
    assert!(!repo.exists() && !identity.exists());
}
