//! `kraftops-bootstrap` as a real process against moto's EC2 emulator (a
//! real process too, one per test, on 127.0.0.1), state read back with the
//! Rust SDK.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use support::*;

const CLUSTER: &str = "kafka-prod";

/// (node, az, address, type) of the example.
const NODES: [(&str, &str, &str, &str, &str); 9] = [
    (
        "broker-1",
        "broker",
        "eu-central-1a",
        "10.0.1.11",
        "t3.small",
    ),
    (
        "broker-2",
        "broker",
        "eu-central-1b",
        "10.0.2.11",
        "t3.small",
    ),
    (
        "broker-3",
        "broker",
        "eu-central-1a",
        "10.0.1.12",
        "t3.small",
    ),
    (
        "broker-4",
        "broker",
        "eu-central-1b",
        "10.0.2.12",
        "t3.small",
    ),
    (
        "controller-1",
        "controller",
        "eu-central-1a",
        "10.0.1.21",
        "t3.small",
    ),
    (
        "controller-2",
        "controller",
        "eu-central-1b",
        "10.0.2.21",
        "t3.small",
    ),
    (
        "controller-3",
        "controller",
        "eu-central-1c",
        "10.0.3.21",
        "t3.small",
    ),
    (
        "connect-1",
        "connect",
        "eu-central-1a",
        "10.0.1.31",
        "t3.small",
    ),
    (
        "observability-1",
        "observability",
        "eu-central-1a",
        "10.0.1.41",
        "t3.medium",
    ),
];

/// The user-data `roles` renders for `node` of the example.
fn expected_user_data(node: &str) -> String {
    let model = desired_state::load_dir(&example_dir()).unwrap();
    let text = std::fs::read_to_string(identity_file()).unwrap();
    let identity = desired_state::Identity::parse(&text).unwrap();
    let secrets = model.decrypt_all(&identity).unwrap();
    let token = secrets
        .iter()
        .find(|(k, _)| k.as_str() == format!("join-token-{node}"))
        .unwrap()
        .1;
    let identity_value = desired_state::SecretValue::new(text.clone());
    let s = roles::cloud_init::UserDataSecrets {
        join_token: token,
        identity: node.starts_with("observability").then_some(&identity_value),
    };
    roles::cloud_init::user_data(&model, node, &s).unwrap()
}

fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// Lines of a plan that are not `keep`, the header or the summary.
fn changes(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|l| {
            !l.starts_with("keep ") && !l.starts_with("Cluster ") && !l.starts_with("Plan: ")
        })
        .collect()
}

fn plan_section(stdout: &str) -> &str {
    stdout.split("Plan: ").next().unwrap()
}

#[test]
fn apply_creates_the_examples_network_and_machines() {
    let moto = Moto::start();
    let started = Instant::now();
    let out = run("apply", &example_dir(), &moto.endpoint(), &[]);
    assert_success(&out);
    eprintln!("apply of the example took {:?}", started.elapsed());
    let text = stdout(&out);
    assert!(
        text.contains(
            "image ami-0deb12new (debian-12-amd64-20251101-2288, created 2025-11-01T10:00:00.000Z)"
        ),
        "{text}"
    );
    assert!(
        text.contains("Plan: 16 to create, 0 to change, 0 to delete, 0 unchanged."),
        "{text}"
    );
    assert!(
        text.contains("Apply complete: 16 created, 0 changed, 0 deleted."),
        "{text}"
    );
    assert!(
        stderr(&out).contains("] created vpc vpc-"),
        "progress goes to stderr"
    );

    let c = client(&moto.endpoint());
    runtime().block_on(async {
        let f = cluster_filter(CLUSTER);
        // The VPC.
        let vpcs = c.describe_vpcs().filters(f.clone()).send().await.unwrap();
        assert_eq!(vpcs.vpcs().len(), 1);
        let vpc = &vpcs.vpcs()[0];
        let vpc_id = vpc.vpc_id().unwrap();
        assert_eq!(vpc.cidr_block(), Some("10.0.0.0/16"));
        assert_eq!(tag(vpc.tags(), "kraftops:resource"), Some("vpc"));
        assert_eq!(tag(vpc.tags(), "Project"), Some("DataStreamingCase"));
        for attr in [
            aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames,
            aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport,
        ] {
            let a = c
                .describe_vpc_attribute()
                .vpc_id(vpc_id)
                .attribute(attr.clone())
                .send()
                .await
                .unwrap();
            let on = a
                .enable_dns_hostnames()
                .or(a.enable_dns_support())
                .and_then(|v| v.value());
            assert_eq!(on, Some(true), "{attr:?}");
        }
        // Subnets, one per AZ, public.
        let subnets = c
            .describe_subnets()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        let mut by_az: BTreeMap<String, (String, String, bool, String)> = BTreeMap::new();
        for s in subnets.subnets() {
            assert_eq!(s.vpc_id(), Some(vpc_id));
            by_az.insert(
                s.availability_zone().unwrap().to_owned(),
                (
                    s.subnet_id().unwrap().to_owned(),
                    s.cidr_block().unwrap().to_owned(),
                    s.map_public_ip_on_launch().unwrap_or(false),
                    tag(s.tags(), "kraftops:resource").unwrap().to_owned(),
                ),
            );
        }
        let summary: Vec<(&str, &str, bool, &str)> = by_az
            .iter()
            .map(|(az, (_, cidr, public, r))| (az.as_str(), cidr.as_str(), *public, r.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("eu-central-1a", "10.0.1.0/24", true, "subnet-eu-central-1a"),
                ("eu-central-1b", "10.0.2.0/24", true, "subnet-eu-central-1b"),
                ("eu-central-1c", "10.0.3.0/24", true, "subnet-eu-central-1c"),
            ]
        );
        // The internet gateway, attached.
        let igws = c
            .describe_internet_gateways()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(igws.internet_gateways().len(), 1);
        let igw = &igws.internet_gateways()[0];
        let igw_id = igw.internet_gateway_id().unwrap();
        assert_eq!(
            igw.attachments()
                .iter()
                .filter_map(|a| a.vpc_id())
                .collect::<Vec<_>>(),
            [vpc_id]
        );
        assert_eq!(tag(igw.tags(), "kraftops:resource"), Some("igw"));
        // The route table: default route to the gateway, every subnet.
        let rts = c
            .describe_route_tables()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(rts.route_tables().len(), 1);
        let rt = &rts.route_tables()[0];
        let default: Vec<_> = rt
            .routes()
            .iter()
            .filter(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .map(|r| r.gateway_id())
            .collect();
        assert_eq!(default, [Some(igw_id)]);
        let associated: BTreeSet<&str> = rt
            .associations()
            .iter()
            .filter_map(|a| a.subnet_id())
            .collect();
        let subnet_ids: BTreeSet<&str> = by_az.values().map(|v| v.0.as_str()).collect();
        assert_eq!(associated, subnet_ids);
        // The security group: exactly these (port, cidr), nothing else.
        let sgs = c
            .describe_security_groups()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(sgs.security_groups().len(), 1);
        let sg = &sgs.security_groups()[0];
        let mut rules = BTreeSet::new();
        for p in sg.ip_permissions() {
            assert_eq!(p.ip_protocol(), Some("tcp"));
            assert_eq!(p.from_port(), p.to_port());
            assert!(
                p.user_id_group_pairs().is_empty()
                    && p.ipv6_ranges().is_empty()
                    && p.prefix_list_ids().is_empty()
            );
            for r in p.ip_ranges() {
                rules.insert((p.from_port().unwrap(), r.cidr_ip().unwrap().to_owned()));
            }
        }
        let vpc_cidr = "10.0.0.0/16";
        let admin = "203.0.113.0/24";
        let want: BTreeSet<(i32, String)> = [
            (9100, vpc_cidr),
            (9170, vpc_cidr),
            (9093, vpc_cidr),
            (8079, vpc_cidr),
            (9092, vpc_cidr),
            (9091, vpc_cidr),
            (8080, vpc_cidr),
            (8083, vpc_cidr),
            (9171, vpc_cidr),
            (9172, vpc_cidr),
            (9090, vpc_cidr),
            (9094, vpc_cidr),
            (3000, vpc_cidr),
            (22, admin),
            (9170, admin),
            (9090, admin),
            (9093, admin),
            (9171, admin),
            (3000, admin),
        ]
        .into_iter()
        .map(|(p, c)| (p, c.to_owned()))
        .collect();
        assert_eq!(rules, want);
        let sg_id = sg.group_id().unwrap();

        // The machines.
        let reservations = c
            .describe_instances()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        let instances: Vec<_> = reservations
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .collect();
        assert_eq!(instances.len(), 9);
        for (node, role, az, address, itype) in NODES {
            let i = instances
                .iter()
                .find(|i| tag(i.tags(), "kraftops:node") == Some(node))
                .unwrap_or_else(|| panic!("no machine for {node}"));
            let id = i.instance_id().unwrap();
            assert_eq!(
                i.placement().and_then(|p| p.availability_zone()),
                Some(az),
                "{node}"
            );
            assert_eq!(i.subnet_id(), Some(by_az[az].0.as_str()), "{node}");
            assert_eq!(i.private_ip_address(), Some(address), "{node}");
            assert_eq!(i.instance_type().map(|t| t.as_str()), Some(itype), "{node}");
            assert_eq!(i.image_id(), Some(NEWEST_DEBIAN_12), "{node}");
            assert_eq!(i.key_name(), Some("kafka-key"), "{node}");
            assert_eq!(
                i.state().and_then(|s| s.name()).map(|s| s.as_str()),
                Some("running"),
                "{node}"
            );
            assert_eq!(
                i.security_groups()
                    .iter()
                    .filter_map(|g| g.group_id())
                    .collect::<Vec<_>>(),
                [sg_id]
            );
            let md = i.metadata_options().unwrap();
            assert_eq!(
                md.http_tokens().map(|t| t.as_str()),
                Some("required"),
                "{node}: IMDSv2"
            );
            assert_eq!(
                tag(i.tags(), "Name"),
                Some(format!("{CLUSTER}-{node}").as_str())
            );
            assert_eq!(tag(i.tags(), "kraftops:cluster"), Some(CLUSTER));
            assert_eq!(tag(i.tags(), "kraftops:role"), Some(role));
            assert_eq!(tag(i.tags(), "kraftops:resource"), Some("instance"));
            assert_eq!(tag(i.tags(), "Environment"), Some("Production"));
            // The root volume on the image's root device.
            let bdm: Vec<_> = i
                .block_device_mappings()
                .iter()
                .map(|b| b.device_name().unwrap())
                .collect();
            assert_eq!(bdm, ["/dev/xvda"], "{node}");
            // User-data: exactly what roles renders.
            let attr = c
                .describe_instance_attribute()
                .instance_id(id)
                .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
                .send()
                .await
                .unwrap();
            let encoded = attr.user_data().and_then(|u| u.value()).unwrap();
            let decoded = String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(decoded, expected_user_data(node), "{node}");
            eprintln!(
                "{node}: user-data {} bytes (EC2 takes 16384)",
                decoded.len()
            );
            assert!(decoded.starts_with("#cloud-config"));
        }
        // Root volumes: gp3, encrypted, 30 GiB, tagged.
        let volumes = c
            .describe_volumes()
            .filters(f.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(volumes.volumes().len(), 9);
        for v in volumes.volumes() {
            assert_eq!(v.size(), Some(30));
            assert_eq!(v.volume_type().map(|t| t.as_str()), Some("gp3"));
            assert_eq!(v.encrypted(), Some(true));
            assert_eq!(tag(v.tags(), "kraftops:resource"), Some("root-volume"));
        }
    });

    // The table of machines.
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("NODE"))
        .collect();
    assert_eq!(table.len(), 10, "{text}");
    for (row, (node, role, az, address, _)) in table[1..].iter().zip(NODES) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cells[..3], [node, role, az]);
        assert!(cells[3].starts_with("i-"));
        assert_eq!(cells[4], address);
    }
}

#[test]
fn a_second_apply_creates_nothing() {
    let moto = Moto::start();
    assert_success(&run("apply", &example_dir(), &moto.endpoint(), &[]));
    let c = client(&moto.endpoint());
    let rt = runtime();
    let before = rt.block_on(inventory(&c, CLUSTER));
    assert_eq!(before.instances.len(), 9);

    let again = run("apply", &example_dir(), &moto.endpoint(), &[]);
    assert_success(&again);
    let text = stdout(&again);
    assert!(
        text.contains("Plan: 0 to create, 0 to change, 0 to delete, 16 unchanged."),
        "{text}"
    );
    assert!(
        text.contains("Nothing to create, change or delete: 16 resources up to date."),
        "{text}"
    );
    assert!(changes(plan_section(&text)).is_empty(), "{text}");
    assert!(
        !stderr(&again).contains("] create"),
        "nothing was created:\n{}",
        stderr(&again)
    );
    assert_eq!(rt.block_on(inventory(&c, CLUSTER)), before);
}

#[test]
fn identity_out_of_band_keeps_every_working_secret_out_of_ec2() {
    let moto = Moto::start();
    assert_success(&run(
        "apply",
        &example_dir(),
        &moto.endpoint(),
        &["--identity-out-of-band"],
    ));
    let c = client(&moto.endpoint());
    let rt = runtime();
    let inv = rt.block_on(inventory(&c, CLUSTER));
    assert_eq!(inv.instances.len(), 9);
    for (id, node) in rt.block_on(async {
        let mut out = Vec::new();
        let resp = c
            .describe_instances()
            .filters(cluster_filter(CLUSTER))
            .send()
            .await
            .unwrap();
        for r in resp.reservations() {
            for i in r.instances() {
                out.push((
                    i.instance_id().unwrap().to_owned(),
                    tag(i.tags(), "kraftops:node").unwrap().to_owned(),
                ));
            }
        }
        out
    }) {
        let attr = rt
            .block_on(
                c.describe_instance_attribute()
                    .instance_id(&id)
                    .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
                    .send(),
            )
            .unwrap();
        let decoded = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(attr.user_data().and_then(|u| u.value()).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(
            !decoded.contains("AGE-SECRET-KEY"),
            "{node}'s user-data holds the identity"
        );
        assert!(
            decoded.contains("identity_file: /etc/kraftops/age-identity"),
            "{node}"
        );
    }
}

#[test]
fn plan_shows_only_an_instance_type_change_and_apply_makes_it_by_stop_modify_start() {
    let moto = Moto::start();
    assert_success(&run("apply", &example_dir(), &moto.endpoint(), &[]));
    let c = client(&moto.endpoint());
    let rt = runtime();
    let before = rt.block_on(inventory(&c, CLUSTER));
    let broker_1 = before
        .instances
        .iter()
        .find(|i| i.0 == "broker-1")
        .unwrap()
        .1
        .clone();

    let repo = example_copy();
    edit(
        repo.path(),
        "nodes.yaml",
        "address: 10.0.1.11\n    instance_type: t3.small",
        "address: 10.0.1.11\n    instance_type: t3.medium",
    );
    let plan = run("plan", repo.path(), &moto.endpoint(), &[]);
    assert_success(&plan);
    let text = stdout(&plan);
    assert_eq!(
        changes(&text),
        [format!(
            "change broker-1 instance type t3.small → t3.medium ({broker_1}: stop, modify, start)"
        )],
        "{text}"
    );
    assert!(
        text.contains("Plan: 0 to create, 1 to change, 0 to delete, 15 unchanged."),
        "{text}"
    );
    assert_eq!(
        rt.block_on(inventory(&c, CLUSTER)),
        before,
        "plan changes nothing"
    );

    let apply = run("apply", repo.path(), &moto.endpoint(), &[]);
    assert_success(&apply);
    assert!(stdout(&apply).contains("Apply complete: 0 created, 1 changed, 0 deleted."));
    let i = rt.block_on(async {
        c.describe_instances()
            .instance_ids(&broker_1)
            .send()
            .await
            .unwrap()
            .reservations()[0]
            .instances()[0]
            .clone()
    });
    assert_eq!(i.instance_type().map(|t| t.as_str()), Some("t3.medium"));
    assert_eq!(
        i.state().and_then(|s| s.name()).map(|s| s.as_str()),
        Some("running")
    );
    assert_eq!(
        rt.block_on(inventory(&c, CLUSTER)),
        before,
        "the same machine, changed in place"
    );
    let after = run("plan", repo.path(), &moto.endpoint(), &[]);
    assert!(changes(&stdout(&after)).is_empty(), "{}", stdout(&after));

    // An address cannot change in place: plan and apply refuse, nothing changes.
    let broker_2 = before
        .instances
        .iter()
        .find(|i| i.0 == "broker-2")
        .unwrap()
        .1
        .clone();
    edit(
        repo.path(),
        "nodes.yaml",
        "address: 10.0.2.11",
        "address: 10.0.2.99",
    );
    for command in ["plan", "apply"] {
        let out = run(command, repo.path(), &moto.endpoint(), &[]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        let text = stdout(&out);
        assert_eq!(
            changes(&text),
            [format!(
                "refuse broker-2 ({broker_2}) is at 10.0.2.11 in eu-central-1b, nodes.yaml says 10.0.2.99 in eu-central-1b: \
                 a machine's address and zone cannot change in place (remove the node, apply, then add it back)"
            )],
            "{text}"
        );
        assert!(
            stderr(&out).contains("1 change cannot be made in place, so nothing was applied"),
            "{}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("] "), "no step was carried out");
    }
    assert_eq!(rt.block_on(inventory(&c, CLUSTER)), before);
}

/// The emulator is killed (SIGKILL) while `apply` is launching machines.
/// moto keeps its state in memory, so a restarted moto would be empty; its
/// recorder wrote every request it received to a file before handling it,
/// and with the same random seed a fresh moto replaying that file ends with
/// the same resources under the same ids: the state at the moment of the
/// kill. `apply` is then run again against it.
#[test]
fn apply_resumes_after_the_emulator_is_killed_half_way() {
    let mut moto = Moto::start();
    moto.seed(MOTO_SEED);
    moto.start_recording();
    let identity = identity_file();
    let endpoint = moto.endpoint();
    let example = example_dir();
    let mut child = bootstrap_command(&[
        "apply",
        example.to_str().unwrap(),
        "--endpoint-url",
        &endpoint,
        "--identity",
        identity.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let lines = lines_of(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap();
        seen.push(line.clone());
        // Kill as the fourth machine is being launched.
        if line.contains("] create instance broker-4") {
            moto.kill();
            break;
        }
    }
    let status = child.wait().unwrap();
    seen.extend(lines.iter());
    let progress = seen.join("\n");
    eprintln!("--- first apply (killed half way)\n{progress}");
    assert!(!status.success(), "apply must fail when the emulator dies");
    assert!(
        progress.contains("error: applying the plan (run apply again to resume): "),
        "{progress}"
    );
    let made: Vec<String> = seen
        .iter()
        .filter_map(|l| l.split_once("] created ").map(|(_, what)| what.to_owned()))
        .collect();
    assert!(
        made.iter().filter(|m| m.starts_with("instance ")).count() == 3,
        "{made:?}"
    );

    // A new emulator on the same port, with the state of the old one.
    let recording = std::fs::read(&moto.recording).unwrap();
    let port = moto.port;
    drop(moto);
    let moto = Moto::start_on(port).unwrap_or_else(Moto::start);
    moto.seed(MOTO_SEED);
    moto.replay(&recording);
    let c = client(&moto.endpoint());
    let rt = runtime();
    let restored = rt.block_on(inventory(&c, CLUSTER));
    // Everything the first run reported made is there, under its id.
    for m in &made {
        let id = m
            .split_whitespace()
            .map(|w| w.trim_end_matches(','))
            .find(|w| {
                w.starts_with("vpc-")
                    || w.starts_with("subnet-")
                    || w.starts_with("igw-")
                    || w.starts_with("rtb-")
                    || w.starts_with("sg-")
                    || w.starts_with("i-")
            })
            .unwrap();
        let all = [
            &restored.vpcs,
            &restored.subnets,
            &restored.internet_gateways,
            &restored.route_tables,
            &restored.security_groups,
        ];
        let found = all.iter().any(|l| l.iter().any(|x| x == id))
            || restored.instances.iter().any(|i| i.1 == id);
        assert!(found, "{m} is not in the restored emulator: {restored:#?}");
    }
    assert!((3..=4).contains(&restored.instances.len()), "{restored:#?}");

    let again = run("apply", &example, &moto.endpoint(), &[]);
    assert_success(&again);
    let text = stdout(&again);
    let resumed = restored.instances.len();
    assert!(
        text.contains(&format!(
            "Plan: {} to create, 0 to change, 0 to delete, {} unchanged.",
            9 - resumed,
            7 + resumed
        )),
        "{text}"
    );
    let after = rt.block_on(inventory(&c, CLUSTER));
    assert_eq!(after.vpcs.len(), 1);
    assert_eq!(after.subnets.len(), 3);
    assert_eq!(after.internet_gateways.len(), 1);
    assert_eq!(after.route_tables.len(), 1);
    assert_eq!(after.security_groups.len(), 1);
    let nodes: Vec<&str> = after.instances.iter().map(|i| i.0.as_str()).collect();
    let mut want: Vec<&str> = NODES.iter().map(|n| n.0).collect();
    want.sort();
    assert_eq!(nodes, want, "one machine per node, no duplicates");
    assert!(after.instances.iter().all(|i| i.2 == "running"));
    // And it has converged.
    let plan = run("plan", &example, &moto.endpoint(), &[]);
    assert!(changes(&stdout(&plan)).is_empty(), "{}", stdout(&plan));
}

#[test]
fn destroy_removes_only_this_clusters_resources_and_needs_yes() {
    let moto = Moto::start();
    assert_success(&run("apply", &example_dir(), &moto.endpoint(), &[]));
    // A second cluster in the same account and region.
    let other = example_copy();
    edit(
        other.path(),
        "cluster.yaml",
        "name: kafka-prod",
        "name: kafka-other",
    );
    for file in ["cluster.yaml", "nodes.yaml"] {
        edit(other.path(), file, "10.0.", "10.1.");
    }
    assert_success(&run("apply", other.path(), &moto.endpoint(), &[]));
    let c = client(&moto.endpoint());
    let rt = runtime();
    let ours = rt.block_on(inventory(&c, CLUSTER));
    let theirs = rt.block_on(inventory(&c, "kafka-other"));
    assert_eq!(ours.instances.len(), 9);
    assert_eq!(theirs.instances.len(), 9);

    // Without --yes and without a terminal: refused, nothing touched.
    let refused = run("destroy", &example_dir(), &moto.endpoint(), &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("pass --yes to confirm"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(rt.block_on(inventory(&c, CLUSTER)), ours);

    let destroyed = run("destroy", &example_dir(), &moto.endpoint(), &["--yes"]);
    assert_success(&destroyed);
    let text = stdout(&destroyed);
    assert!(
        text.contains("Plan: 0 to create, 0 to change, 16 to delete, 0 unchanged."),
        "{text}"
    );
    assert!(text.contains("Destroy complete: 16 deleted; nothing tagged kraftops:cluster=kafka-prod is left in eu-central-1."), "{text}");
    let gone = rt.block_on(inventory(&c, CLUSTER));
    assert!(gone.is_empty(), "{gone:#?}");
    assert!(
        gone.volumes.is_empty(),
        "root volumes go with their machines: {gone:#?}"
    );
    let vpcs = rt.block_on(async { c.describe_vpcs().vpc_ids(&ours.vpcs[0]).send().await });
    assert!(
        vpcs.is_err() || vpcs.unwrap().vpcs().is_empty(),
        "the VPC itself is deleted"
    );
    // The other cluster is untouched.
    assert_eq!(rt.block_on(inventory(&c, "kafka-other")), theirs);

    let again = run("destroy", &example_dir(), &moto.endpoint(), &["--yes"]);
    assert_success(&again);
    assert!(
        stdout(&again).contains("Nothing is tagged kraftops:cluster=kafka-prod in eu-central-1.")
    );
}

/// Each bad repository fails with `file:line:col: message` and makes no
/// connection at all to the endpoint it was given.
#[test]
fn bad_input_fails_before_any_aws_call() {
    struct Case {
        name: &'static str,
        edits: &'static [(&'static str, &'static str, &'static str)],
        /// (file, the line to find, the value whose column is reported, message)
        at: (&'static str, &'static str, &'static str, &'static str),
    }
    let cases = [
        Case {
            name: "an availability zone of another region",
            edits: &[
                (
                    "cluster.yaml",
                    "- name: eu-central-1c",
                    "- name: eu-west-1c",
                ),
                ("nodes.yaml", "az: eu-central-1c", "az: eu-west-1c"),
            ],
            at: (
                "cluster.yaml",
                "- name: eu-west-1c",
                "eu-west-1c",
                "availability zone eu-west-1c is not a zone of region eu-central-1 (aws.region)",
            ),
        },
        Case {
            name: "overlapping subnets",
            edits: &[("cluster.yaml", "subnet: 10.0.3.0/24", "subnet: 10.0.2.0/23")],
            at: (
                "cluster.yaml",
                "subnet: 10.0.2.0/23",
                "10.0.2.0/23",
                "subnet 10.0.2.0/23 of eu-central-1c overlaps subnet 10.0.2.0/24 of eu-central-1b",
            ),
        },
        Case {
            name: "an address outside its subnet",
            edits: &[("nodes.yaml", "address: 10.0.1.11", "address: 10.0.2.99")],
            at: (
                "nodes.yaml",
                "address: 10.0.2.99",
                "10.0.2.99",
                "address 10.0.2.99 is outside subnet 10.0.1.0/24 of eu-central-1a",
            ),
        },
        Case {
            name: "the SSH port is a role's port",
            edits: &[(
                "cluster.yaml",
                "  key_pair: kafka-key\n",
                "  key_pair: kafka-key\n  ssh_port: 9092\n",
            )],
            at: (
                "cluster.yaml",
                "ssh_port: 9092",
                "9092",
                "aws.ssh_port 9092 is also ports.client, the client listener",
            ),
        },
    ];
    let tripwire = Tripwire::new();
    for case in &cases {
        let repo = example_copy();
        for (file, from, to) in case.edits {
            edit(repo.path(), file, from, to);
        }
        let (file, line_has, value, message) = case.at;
        let (line, col) = position(repo.path(), file, line_has, value);
        let want = format!("{file}:{line}:{col}: {message}");
        for command in ["plan", "apply", "destroy"] {
            let out = run(
                command,
                repo.path(),
                &tripwire.endpoint(),
                &["--yes"][..usize::from(command == "destroy")],
            );
            assert_eq!(out.status.code(), Some(1), "{}: {command}", case.name);
            let err = stderr(&out);
            assert!(
                err.contains(&want),
                "{}: {command}: want {want:?} in:\n{err}",
                case.name
            );
            assert!(
                err.contains("nothing was done (no AWS call was made)"),
                "{err}"
            );
            assert!(stdout(&out).is_empty(), "{}", stdout(&out));
        }
    }
    // --region must be the repository's own.
    let out = run(
        "plan",
        &example_dir(),
        &tripwire.endpoint(),
        &["--region", "us-east-1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("error: --region us-east-1 is not aws.region eu-central-1 of cluster.yaml"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tripwire.connections(), 0, "no request reached the endpoint");

    // The tripwire does catch a call: a valid repository connects.
    let out = run("plan", &example_dir(), &tripwire.endpoint(), &[]);
    assert!(!out.status.success());
    assert!(tripwire.connections() > 0);
    assert!(
        stderr(&out).contains(
            "error: resolving aws.ami: DescribeImages (name debian-12-amd64-* owner 136693071363)"
        ),
        "{}",
        stderr(&out)
    );
}
