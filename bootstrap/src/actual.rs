//! What exists on AWS for a cluster: every resource tagged
//! `kraftops:cluster=<name>`, as plain data (read by [`crate::ec2`], compared
//! by [`crate::diff`]).

use std::net::Ipv4Addr;

use crate::tags::{self, Tags};

/// A cluster's tagged resources. Terminated machines are left out: they
/// count as absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actual {
    pub vpcs: Vec<Vpc>,
    pub internet_gateways: Vec<InternetGateway>,
    pub route_tables: Vec<RouteTable>,
    pub subnets: Vec<Subnet>,
    pub security_groups: Vec<SecurityGroup>,
    pub instances: Vec<Instance>,
}

impl Actual {
    /// How many resources there are, of every kind.
    pub fn count(&self) -> usize {
        self.vpcs.len()
            + self.internet_gateways.len()
            + self.route_tables.len()
            + self.subnets.len()
            + self.security_groups.len()
            + self.instances.len()
    }

    /// Whether nothing is tagged for the cluster.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }
}

/// The `kraftops:resource` tag of a resource, if any.
pub fn resource_of(tags: &Tags) -> Option<&str> {
    tags.get(tags::RESOURCE).map(String::as_str)
}

/// The cluster's VPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vpc {
    pub id: String,
    pub cidr: String,
    pub dns_hostnames: bool,
    pub dns_support: bool,
    pub tags: Tags,
}

/// An internet gateway of the cluster (public subnets only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternetGateway {
    pub id: String,
    /// The VPCs it is attached to (at most one on AWS).
    pub attached_to: Vec<String>,
    pub tags: Tags,
}

/// The route table of the cluster's subnets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTable {
    pub id: String,
    pub vpc_id: String,
    /// Where `0.0.0.0/0` goes: a gateway id, or another target's id.
    pub default_route: Option<String>,
    /// Explicit subnet associations.
    pub associations: Vec<Association>,
    pub tags: Tags,
}

/// A route table's association with a subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Association {
    pub id: String,
    pub subnet_id: String,
}

/// The subnet of one availability zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub az: String,
    pub cidr: String,
    pub map_public_ip: bool,
    pub tags: Tags,
}

/// The nodes' security group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityGroup {
    pub id: String,
    pub vpc_id: String,
    pub name: String,
    /// One entry per (protocol, ports, source).
    pub ingress: Vec<Permission>,
    pub tags: Tags,
}

/// One ingress permission: a protocol and port range from one source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// `tcp`, `udp`, `icmp`, `-1` (all), or a protocol number.
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub source: Source,
}

impl Permission {
    /// The (port, cidr) of a single-port TCP rule from an IPv4 network; any
    /// other permission is not one kraftops makes.
    pub fn tcp_port_from_cidr(&self) -> Option<(u16, &str)> {
        match (&self.source, self.from_port, self.to_port) {
            (Source::Ipv4(cidr), Some(from), Some(to)) if self.protocol == "tcp" && from == to => {
                u16::try_from(from).ok().map(|p| (p, cidr.as_str()))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let proto = if self.protocol == "-1" {
            "all"
        } else {
            &self.protocol
        };
        match (self.from_port, self.to_port) {
            (Some(a), Some(b)) if a == b => write!(f, "{proto} {a}")?,
            (Some(a), Some(b)) => write!(f, "{proto} {a}-{b}")?,
            _ => write!(f, "{proto}")?,
        }
        write!(f, " from {}", self.source)
    }
}

/// Where an ingress permission admits traffic from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Ipv4(String),
    Ipv6(String),
    /// Another security group (or this one).
    Group(String),
    PrefixList(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ipv4(s) | Source::Ipv6(s) | Source::Group(s) | Source::PrefixList(s) => {
                f.write_str(s)
            }
        }
    }
}

/// A node's machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    pub instance_type: String,
    pub private_ip: Option<Ipv4Addr>,
    pub public_ip: Option<String>,
    pub subnet_id: Option<String>,
    pub vpc_id: Option<String>,
    pub az: Option<String>,
    pub tags: Tags,
}

impl Instance {
    /// The node it was made for (`kraftops:node`).
    pub fn node(&self) -> Option<&str> {
        self.tags.get(tags::NODE).map(String::as_str)
    }

    /// The role it was made for (`kraftops:role`).
    pub fn role(&self) -> Option<&str> {
        self.tags.get(tags::ROLE).map(String::as_str)
    }
}

/// An EC2 machine's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
    Unknown,
}

impl InstanceState {
    /// Whether the machine is gone or going: it counts as absent, and a new
    /// one may be made for its node.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }

    /// The state as EC2 names it.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
