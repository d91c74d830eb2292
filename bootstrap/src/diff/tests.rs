use super::*;
use crate::actual::{Association, InternetGateway, RouteTable, SecurityGroup, Source, Subnet, Vpc};
use crate::desired::Desired;

fn example() -> Desired {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed");
    let model = desired_state::load_dir(&dir).unwrap_or_else(|d| panic!("{d}"));
    Desired::from_model(&model).unwrap_or_else(|e| panic!("{e}"))
}

/// What AWS holds after a successful apply of `d`.
fn converged(d: &Desired) -> Actual {
    let vpc = "vpc-1".to_owned();
    let subnets: Vec<Subnet> = d
        .subnets
        .iter()
        .enumerate()
        .map(|(n, s)| Subnet {
            id: format!("subnet-{n}"),
            vpc_id: vpc.clone(),
            az: s.az.clone(),
            cidr: s.cidr.clone(),
            map_public_ip: d.public,
            tags: d.tags(&ResourceKey::Subnet(s.az.clone())),
        })
        .collect();
    let subnet_of = |az: &str| subnets.iter().find(|s| s.az == az).map(|s| s.id.clone());
    Actual {
        vpcs: vec![Vpc {
            id: vpc.clone(),
            cidr: d.vpc_cidr.clone(),
            dns_hostnames: true,
            dns_support: true,
            tags: d.tags(&ResourceKey::Vpc),
        }],
        internet_gateways: if d.public {
            vec![InternetGateway {
                id: "igw-1".into(),
                attached_to: vec![vpc.clone()],
                tags: d.tags(&ResourceKey::InternetGateway),
            }]
        } else {
            Vec::new()
        },
        route_tables: vec![RouteTable {
            id: "rtb-1".into(),
            vpc_id: vpc.clone(),
            default_route: d.public.then(|| "igw-1".to_owned()),
            associations: subnets
                .iter()
                .enumerate()
                .map(|(n, s)| Association {
                    id: format!("rtbassoc-{n}"),
                    subnet_id: s.id.clone(),
                })
                .collect(),
            tags: d.tags(&ResourceKey::RouteTable),
        }],
        security_groups: vec![SecurityGroup {
            id: "sg-1".into(),
            vpc_id: vpc.clone(),
            name: d.security_group_name(),
            ingress: d
                .ingress
                .iter()
                .map(|r| Permission {
                    protocol: "tcp".into(),
                    from_port: Some(r.port.into()),
                    to_port: Some(r.port.into()),
                    source: Source::Ipv4(r.cidr.clone()),
                })
                .collect(),
            tags: d.tags(&ResourceKey::SecurityGroup),
        }],
        instances: d
            .instances
            .iter()
            .enumerate()
            .map(|(n, i)| Instance {
                id: format!("i-{n}"),
                state: InstanceState::Running,
                instance_type: i.instance_type.clone(),
                private_ip: Some(i.address),
                public_ip: Some(format!("198.51.100.{n}")),
                subnet_id: subnet_of(&i.az),
                vpc_id: Some(vpc.clone()),
                az: Some(i.az.clone()),
                tags: d.node_tags(&ResourceKey::Instance, i),
            })
            .collect(),
        subnets,
    }
}

fn lines(plan: &Plan) -> Vec<String> {
    plan.steps.iter().map(ToString::to_string).collect()
}

fn changes(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .filter(|s| !matches!(s, Step::Keep(_)))
        .map(ToString::to_string)
        .collect()
}

#[test]
fn nothing_exists_so_everything_is_created_network_first() {
    let d = example();
    let plan = diff(&d, &Actual::default());
    let kinds: Vec<&str> = plan
        .actions()
        .map(|a| match a {
            Action::CreateVpc { .. } => "vpc",
            Action::CreateInternetGateway => "igw",
            Action::CreateSubnet { .. } => "subnet",
            Action::CreateRouteTable { .. } => "route-table",
            Action::CreateSecurityGroup { .. } => "sg",
            Action::RunInstance { .. } => "instance",
            other => panic!("unexpected {other}"),
        })
        .collect();
    let mut want = vec![
        "vpc",
        "igw",
        "subnet",
        "subnet",
        "subnet",
        "route-table",
        "sg",
    ];
    want.extend(["instance"; 9]);
    assert_eq!(kinds, want);
    assert_eq!(
        plan.counts(),
        Counts {
            create: 16,
            keep: 0,
            change: 0,
            delete: 0,
            refuse: 0
        }
    );
    assert!(lines(&plan).contains(
        &"create instance broker-1: broker, t3.small, eu-central-1a, 10.0.1.11".to_owned()
    ));
    assert!(lines(&plan).contains(&"create route table with 0.0.0.0/0 → internet gateway, for subnets eu-central-1a, eu-central-1b, eu-central-1c".to_owned()));
    assert_eq!(plan.kept, Kept::default());
}

#[test]
fn a_converged_cluster_plans_nothing() {
    let d = example();
    let plan = diff(&d, &converged(&d));
    assert!(plan.is_noop(), "{:#?}", changes(&plan));
    assert_eq!(plan.counts().keep, 1 + 1 + 3 + 1 + 1 + 9);
    assert_eq!(plan.kept.vpc.as_deref(), Some("vpc-1"));
    assert_eq!(plan.kept.subnets.len(), 3);
    assert_eq!(plan.kept.internet_gateway.as_deref(), Some("igw-1"));
}

#[test]
fn an_instance_type_change_is_the_only_change() {
    let mut d = example();
    d.instances[0].instance_type = "t3.medium".into();
    let plan = diff(&d, &converged(&example()));
    assert_eq!(
        changes(&plan),
        ["change broker-1 instance type t3.small → t3.medium (i-0: stop, modify, start)"]
    );
    assert_eq!(plan.counts().change, 1);
    assert!(plan.refused().is_empty());
}

#[test]
fn a_stopped_machine_is_started() {
    let d = example();
    let mut a = converged(&d);
    a.instances[2].state = InstanceState::Stopped;
    assert_eq!(
        changes(&diff(&d, &a)),
        ["change start broker-3 (i-2 is stopped)"]
    );
}

#[test]
fn a_missing_machine_is_created_and_a_removed_node_terminated() {
    let mut d = example();
    let a = converged(&d);
    d.instances.retain(|i| i.node != "connect-1");
    let mut a2 = a.clone();
    a2.instances.retain(|i| i.node() != Some("broker-4"));
    let plan = diff(&d, &a2);
    assert_eq!(
        changes(&plan),
        [
            "delete instance connect-1 i-7 (not in nodes.yaml)",
            "wait for the machines to terminate",
            "create instance broker-4: broker, t3.small, eu-central-1b, 10.0.2.12",
        ]
    );
}

#[test]
fn terminated_or_shutting_down_machines_count_as_absent() {
    let d = example();
    let mut a = converged(&d);
    a.instances[0].state = InstanceState::ShuttingDown;
    a.instances[1].state = InstanceState::Terminated;
    let plan = diff(&d, &a);
    assert_eq!(
        changes(&plan),
        [
            "wait for the machines to terminate (already shutting down: i-0)",
            "create instance broker-1: broker, t3.small, eu-central-1a, 10.0.1.11",
            "create instance broker-2: broker, t3.small, eu-central-1b, 10.0.2.11",
        ]
    );
}

#[test]
fn duplicates_are_reduced_to_one() {
    let d = example();
    let mut a = converged(&d);
    // A second machine for broker-1 (a create whose answer was lost), stopped.
    let mut dup = a.instances[0].clone();
    dup.id = "i-dup".into();
    dup.state = InstanceState::Stopped;
    a.instances.push(dup);
    // An empty second VPC with a stray subnet and an unattached gateway.
    a.vpcs.push(Vpc {
        id: "vpc-0".into(),
        ..a.vpcs[0].clone()
    });
    let mut stray = a.subnets[0].clone();
    stray.id = "subnet-stray".into();
    stray.vpc_id = "vpc-0".into();
    a.subnets.push(stray);
    a.internet_gateways.push(InternetGateway {
        id: "igw-0".into(),
        attached_to: Vec::new(),
        tags: d.tags(&ResourceKey::InternetGateway),
    });
    let plan = diff(&d, &a);
    assert_eq!(
        changes(&plan),
        [
            "delete instance broker-1 i-dup (a second machine for the node)",
            "wait for the machines to terminate",
            "delete subnet eu-central-1a subnet-stray",
            "delete internet gateway igw-0",
            "delete vpc vpc-0",
        ]
    );
    assert_eq!(plan.kept.vpc.as_deref(), Some("vpc-1"));
}

#[test]
fn addresses_zones_roles_and_networks_are_refused() {
    let d = example();
    let mut a = converged(&d);
    a.instances[0].private_ip = Some([10, 0, 1, 99].into());
    a.instances[1]
        .tags
        .insert(tags::ROLE.into(), "controller".into());
    a.vpcs[0].cidr = "10.9.0.0/16".into();
    a.subnets[1].cidr = "10.0.9.0/24".into();
    let plan = diff(&d, &a);
    let refused = plan.refused();
    assert_eq!(refused.len(), 4, "{refused:#?}");
    assert!(refused[0].starts_with("vpc vpc-1 is 10.9.0.0/16, aws.vpc_cidr says 10.0.0.0/16"));
    assert!(refused[1].starts_with("subnet eu-central-1b (subnet-1) is 10.0.9.0/24"));
    assert!(refused[2].starts_with("broker-1 (i-0) is at 10.0.1.99 in eu-central-1a, nodes.yaml says 10.0.1.11 in eu-central-1a"));
    assert!(
        refused[3]
            .starts_with("broker-2 (i-1) was made as a controller machine, nodes.yaml says broker")
    );
    assert_eq!(plan.counts().refuse, 4);
}

#[test]
fn security_group_rules_are_added_and_revoked_one_by_one() {
    let d = example();
    let mut a = converged(&d);
    let sg = &mut a.security_groups[0];
    // Someone opened SSH to the world and everything within the group, and
    // removed Grafana from the admin network.
    sg.ingress
        .retain(|r| r.tcp_port_from_cidr() != Some((3000, "203.0.113.0/24")));
    sg.ingress.push(Permission {
        protocol: "tcp".into(),
        from_port: Some(22),
        to_port: Some(22),
        source: Source::Ipv4("0.0.0.0/0".into()),
    });
    sg.ingress.push(Permission {
        protocol: "-1".into(),
        from_port: None,
        to_port: None,
        source: Source::Group("sg-1".into()),
    });
    let plan = diff(&d, &a);
    assert_eq!(
        changes(&plan),
        [
            "change security group sg-1: revoke tcp 22 from 0.0.0.0/0, all from sg-1",
            "change security group sg-1: allow tcp 3000 from 203.0.113.0/24",
        ]
    );
}

#[test]
fn network_drift_is_repaired() {
    let d = example();
    let mut a = converged(&d);
    a.vpcs[0].dns_hostnames = false;
    a.route_tables[0].default_route = None;
    a.route_tables[0].associations.pop();
    a.subnets[0].tags.remove("Project");
    let plan = diff(&d, &a);
    assert_eq!(
        changes(&plan),
        [
            "change vpc vpc-1: turn on DNS hostnames and support",
            "change tags of subnet eu-central-1a subnet-0: Project=DataStreamingCase",
            "change route table rtb-1: 0.0.0.0/0 → internet gateway",
            "change route table: associate subnet eu-central-1c",
        ]
    );
}

#[test]
fn private_subnets_have_no_internet_gateway() {
    let mut d = example();
    d.public = false;
    let plan = diff(&d, &Actual::default());
    assert!(
        !plan
            .actions()
            .any(|a| matches!(a, Action::CreateInternetGateway))
    );
    assert!(lines(&plan).contains(&"create subnet eu-central-1a 10.0.1.0/24 (private)".to_owned()));
    assert!(lines(&plan).contains(
        &"create route table, for subnets eu-central-1a, eu-central-1b, eu-central-1c".to_owned()
    ));

    // Switching a running cluster to private is refused (its machines have
    // public addresses); an empty network is switched.
    let public = example();
    let plan = diff(&d, &converged(&public));
    assert_eq!(plan.refused().len(), 1);
    assert!(plan.refused()[0].starts_with("aws.subnets is now private"));
    let mut empty = converged(&public);
    empty.instances.clear();
    d.instances.clear();
    let plan = diff(&d, &empty);
    assert!(plan.refused().is_empty());
    assert_eq!(
        changes(&plan),
        [
            "change subnet eu-central-1a subnet-0: public addresses on launch off",
            "change subnet eu-central-1b subnet-1: public addresses on launch off",
            "change subnet eu-central-1c subnet-2: public addresses on launch off",
            "change route table rtb-1: remove 0.0.0.0/0",
            "delete internet gateway igw-1 (detach from vpc-1)",
        ]
    );
}

#[test]
fn destroy_removes_machines_first_then_the_network_inside_out() {
    let d = example();
    let mut a = converged(&d);
    a.instances[8].state = InstanceState::ShuttingDown;
    let plan = destroy(&a);
    let l = lines(&plan);
    assert_eq!(l.len(), 8 + 1 + 1 + 3 + 1 + 1 + 1);
    assert_eq!(l[0], "delete instance broker-1 i-0");
    assert_eq!(
        l[8],
        "wait for the machines to terminate (already shutting down: i-8)"
    );
    assert_eq!(
        &l[9..],
        [
            "delete security group sg-1",
            "delete subnet eu-central-1a subnet-0",
            "delete subnet eu-central-1b subnet-1",
            "delete subnet eu-central-1c subnet-2",
            "delete route table rtb-1",
            "delete internet gateway igw-1 (detach from vpc-1)",
            "delete vpc vpc-1",
        ]
    );
    assert_eq!(plan.counts().delete, 8 + 7);
    assert!(destroy(&Actual::default()).steps.is_empty());
}
