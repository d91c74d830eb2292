//! What a cluster needs on AWS, derived from its validated model (pure).
//!
//! The security group opens, port by port, exactly what the nodes present
//! listen on (`desired_state::ports_of`) to the VPC's own network; SSH and
//! the operators' endpoints to `aws.admin_cidrs`; the brokers' client
//! listener to `aws.client_cidrs`. Nothing is open "to the group" and
//! nothing to the whole internet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use desired_state::{Model, Role, ports_of};

use crate::tags::{ResourceKey, Tags, resource_tags};

/// Why a model cannot be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    #[error(
        "cluster.yaml has no aws section: kraftops-bootstrap needs aws.vpc_cidr, aws.ami and the rest (see the example's cluster.yaml)"
    )]
    NoAwsSection,
}

/// The cluster's AWS resources as the repository describes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// `cluster.yaml` `name`: the `kraftops:cluster` tag.
    pub cluster: String,
    pub vpc_cidr: String,
    /// `aws.subnets: public`: an internet gateway, a default route to it,
    /// and public addresses on launch.
    pub public: bool,
    /// One per `network.azs` entry, in that order.
    pub subnets: Vec<SubnetSpec>,
    /// Sorted and unique by (port, cidr).
    pub ingress: Vec<IngressRule>,
    /// One per node, in the order of `nodes.yaml`.
    pub instances: Vec<InstanceSpec>,
    /// `aws.tags`: on every resource.
    pub extra_tags: Tags,
}

/// The subnet of one availability zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetSpec {
    pub az: String,
    pub cidr: String,
}

/// One TCP ingress rule of the cluster's security group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IngressRule {
    pub port: u16,
    pub cidr: String,
    /// What listens there; informational (rules are matched by port and cidr).
    pub description: String,
}

/// One node's machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    pub node: String,
    pub role: Role,
    pub az: String,
    pub address: Ipv4Addr,
    pub instance_type: String,
}

impl Desired {
    /// The AWS side of `model`. The model has been validated by
    /// `desired_state::load_dir`, so zones, subnets and addresses agree.
    pub fn from_model(model: &Model) -> Result<Self, DesiredError> {
        let aws = model
            .cluster
            .aws
            .as_ref()
            .ok_or(DesiredError::NoAwsSection)?;
        Ok(Self {
            cluster: model.cluster.name.as_str().to_owned(),
            vpc_cidr: aws.vpc_cidr.to_string(),
            public: aws.subnets == desired_state::SubnetKind::Public,
            subnets: model
                .cluster
                .network
                .azs
                .iter()
                .map(|az| SubnetSpec {
                    az: az.name.as_str().to_owned(),
                    cidr: az.subnet.to_string(),
                })
                .collect(),
            ingress: ingress_rules(model),
            instances: model
                .nodes
                .iter()
                .map(|n| InstanceSpec {
                    node: n.name.as_str().to_owned(),
                    role: *n.role,
                    az: n.az.as_str().to_owned(),
                    address: *n.address,
                    instance_type: n.instance_type.as_str().to_owned(),
                })
                .collect(),
            extra_tags: aws
                .tags
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                .collect(),
        })
    }

    /// The tags of one of the cluster's resources.
    pub fn tags(&self, key: &ResourceKey) -> Tags {
        resource_tags(&self.cluster, &self.extra_tags, key, None)
    }

    /// The tags of a node's machine or root volume.
    pub fn node_tags(&self, key: &ResourceKey, instance: &InstanceSpec) -> Tags {
        resource_tags(
            &self.cluster,
            &self.extra_tags,
            key,
            Some((&instance.node, instance.role.as_str())),
        )
    }

    /// The security group's name (unique in its VPC).
    pub fn security_group_name(&self) -> String {
        format!("kraftops-{}", self.cluster)
    }

    /// The subnet spec of an availability zone.
    pub fn subnet(&self, az: &str) -> Option<&SubnetSpec> {
        self.subnets.iter().find(|s| s.az == az)
    }
}

/// The security group's ingress rules for `model`:
///
/// - from the VPC's network, every port a role present listens on;
/// - from each `aws.admin_cidrs` entry, SSH (`aws.ssh_port`), the agents'
///   API, and where an observability node exists Prometheus, Alertmanager,
///   the coordinator's HTTP API and (when enabled) Grafana;
/// - from each `aws.client_cidrs` entry, the brokers' client listener.
///
/// A port that two roles share from the same network is one rule whose
/// description names both.
pub fn ingress_rules(model: &Model) -> Vec<IngressRule> {
    let Some(aws) = &model.cluster.aws else {
        return Vec::new();
    };
    let ports = &model.cluster.ports;
    let present: BTreeSet<Role> = model.nodes.iter().map(|n| *n.role).collect();
    let mut rules: BTreeMap<(u16, String), BTreeSet<&'static str>> = BTreeMap::new();
    let mut add = |port: u16, cidr: String, what: &'static str| {
        rules.entry((port, cidr)).or_default().insert(what);
    };
    let vpc = aws.vpc_cidr.to_string();
    for role in &present {
        for (port, what) in ports_of(*role, ports) {
            add(port, vpc.clone(), what);
        }
    }
    for cidr in &aws.admin_cidrs {
        let cidr = cidr.to_string();
        add(*aws.ssh_port, cidr.clone(), "SSH");
        if !present.is_empty() {
            add(ports.agent, cidr.clone(), "agent");
        }
        if present.contains(&Role::Observability) {
            add(ports.prometheus, cidr.clone(), "Prometheus");
            add(ports.alertmanager, cidr.clone(), "Alertmanager");
            add(ports.coordinator, cidr.clone(), "coordinator");
            if model.cluster.observability.grafana.enabled {
                add(ports.grafana, cidr.clone(), "Grafana");
            }
        }
    }
    if present.contains(&Role::Broker) {
        for cidr in &aws.client_cidrs {
            add(ports.client, cidr.to_string(), "client listener");
        }
    }
    rules
        .into_iter()
        .map(|((port, cidr), whats)| IngressRule {
            port,
            cidr,
            description: rule_description(&whats.into_iter().collect::<Vec<_>>().join(", ")),
        })
        .collect()
}

/// An EC2 rule description: at most 255 characters of
/// `a-zA-Z0-9 ._-:/()#,@[]+=&;{}!$*`.
fn rule_description(what: &str) -> String {
    let allowed = |c: char| c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c);
    let text: String = format!("kraftops: {what}")
        .chars()
        .filter(|c| allowed(*c))
        .collect();
    text.chars().take(255).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Model {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../desired-state/examples/seed");
        match desired_state::load_dir(&dir) {
            Ok(m) => m,
            Err(d) => panic!("{d}"),
        }
    }

    fn pairs(rules: &[IngressRule]) -> BTreeSet<(u16, &str)> {
        rules.iter().map(|r| (r.port, r.cidr.as_str())).collect()
    }

    #[test]
    fn the_examples_rules_open_each_port_from_where_it_is_needed() {
        let model = example();
        let rules = ingress_rules(&model);
        let vpc = "10.0.0.0/16";
        let admin = "203.0.113.0/24";
        let want: BTreeSet<(u16, &str)> = [
            // Inside the VPC: every port of every role present.
            (9100, vpc),
            (9170, vpc), // node_exporter, agent (all)
            (9093, vpc),
            (8079, vpc), // controller listener + Alertmanager, JMX (controller, connect)
            (9092, vpc),
            (9091, vpc),
            (8080, vpc), // brokers
            (8083, vpc), // Connect REST
            (9171, vpc),
            (9172, vpc),
            (9090, vpc),
            (9094, vpc),
            (3000, vpc), // observability
            // From the admin network: SSH and the operators' endpoints.
            (22, admin),
            (9170, admin),
            (9090, admin),
            (9093, admin),
            (9171, admin),
            (3000, admin),
        ]
        .into();
        assert_eq!(pairs(&rules), want);
        let shared = rules
            .iter()
            .find(|r| r.port == 9093 && r.cidr == vpc)
            .map(|r| r.description.as_str());
        assert_eq!(shared, Some("kraftops: Alertmanager, controller listener"));
        assert!(rules.iter().all(|r| r.cidr != "0.0.0.0/0"));
        // The apostrophe of "coordinator's" is not allowed in a description.
        let tls = rules
            .iter()
            .find(|r| r.port == 9172)
            .map(|r| r.description.as_str());
        assert_eq!(tls, Some("kraftops: coordinators agent API (mutual TLS)"));
    }

    #[test]
    fn rules_follow_the_roles_present_grafana_and_client_networks() {
        let mut model = example();
        model.nodes.retain(|n| *n.role == Role::Broker);
        model.cluster.observability.grafana.enabled = false;
        let aws = model.cluster.aws.as_mut().map(|a| &mut a.value);
        let Some(aws) = aws else {
            panic!("the example has an aws section")
        };
        aws.client_cidrs = vec![
            desired_state::types::Cidr::try_from("198.51.100.0/24".to_owned())
                .unwrap_or_else(|e| panic!("{e}"))
                .into(),
        ];
        aws.ssh_port = 2222.into();
        let rules = ingress_rules(&model);
        let vpc = "10.0.0.0/16";
        let admin = "203.0.113.0/24";
        let want: BTreeSet<(u16, &str)> = [
            (9100, vpc),
            (9170, vpc),
            (9092, vpc),
            (9091, vpc),
            (8080, vpc),
            (2222, admin),
            (9170, admin),
            (9092, "198.51.100.0/24"),
        ]
        .into();
        assert_eq!(pairs(&rules), want);
    }

    #[test]
    fn the_example_becomes_nine_machines_in_three_subnets() {
        let d = Desired::from_model(&example()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.cluster, "kafka-prod");
        assert_eq!(d.vpc_cidr, "10.0.0.0/16");
        assert!(d.public);
        assert_eq!(d.subnets.len(), 3);
        assert_eq!(
            d.subnet("eu-central-1c").map(|s| s.cidr.as_str()),
            Some("10.0.3.0/24")
        );
        assert_eq!(d.instances.len(), 9);
        let obs = d.instances.iter().find(|i| i.node == "observability-1");
        assert_eq!(obs.map(|i| i.instance_type.as_str()), Some("t3.medium"));
        assert_eq!(
            d.extra_tags.get("Project").map(String::as_str),
            Some("DataStreamingCase")
        );
    }

    #[test]
    fn descriptions_keep_only_what_ec2_accepts() {
        assert_eq!(rule_description("it's \"ok\" <x>"), "kraftops: its ok x");
        assert_eq!(rule_description(&"a".repeat(400)).len(), 255);
    }

    #[test]
    fn no_aws_section_is_an_error() {
        let mut model = example();
        model.cluster.aws = None;
        assert!(matches!(
            Desired::from_model(&model),
            Err(DesiredError::NoAwsSection)
        ));
    }
}
