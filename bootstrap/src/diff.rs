//! Desired against actual: the plan (pure).
//!
//! [`diff`] says, for every resource of the cluster, whether it is created,
//! kept, changed or deleted, in an order that can be carried out: the
//! network first (VPC, internet gateway, subnets, route table, security
//! group), then machines that must go (so their addresses are free), then
//! the machines, then network resources that must go. Where a tagged
//! resource exists twice (a create whose answer was lost, a copy made by
//! hand), one is kept and the others are deleted.
//!
//! Some differences cannot be made in place without losing a machine's
//! disk: a VPC's or subnet's network, a machine's address, zone or role.
//! They are *refused*: the plan names them and `apply` does nothing at all.
//! An instance type change is made by stop, modify, start.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::actual::{Actual, Instance, InstanceState, Permission};
use crate::desired::{Desired, IngressRule};
use crate::tags::{self, ResourceKey, Tags};

/// What `apply` will do, line by line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The ids of the existing resources the plan builds on; `apply` adds
    /// those it creates.
    pub kept: Kept,
}

/// The existing resources the cluster keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub vpc: Option<String>,
    pub internet_gateway: Option<String>,
    pub route_table: Option<String>,
    /// Availability zone → subnet id.
    pub subnets: BTreeMap<String, String>,
    pub security_group: Option<String>,
}

/// One line of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A resource that is already as it should be.
    Keep(String),
    /// A difference that cannot be made in place; `apply` refuses the plan.
    Refuse(String),
    /// Something to do.
    Do(Action),
}

/// Whether an action makes, changes or removes a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Create,
    Change,
    Delete,
    /// Waiting for something already under way; not counted.
    Wait,
}

/// One thing to do. Actions on resources made in the same run (the VPC,
/// the internet gateway, subnets, the security group) find their ids in
/// [`Kept`] as `apply` fills it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A VPC with DNS hostnames and DNS support on.
    CreateVpc {
        cidr: String,
    },
    EnableVpcDns {
        vpc_id: String,
    },
    /// An internet gateway, attached to the cluster's VPC.
    CreateInternetGateway,
    AttachInternetGateway {
        igw_id: String,
    },
    CreateSubnet {
        az: String,
        cidr: String,
        public: bool,
    },
    SetMapPublicIp {
        az: String,
        subnet_id: String,
        public: bool,
    },
    /// A route table (with `0.0.0.0/0` → the internet gateway when
    /// public), associated with every subnet of the cluster.
    CreateRouteTable {
        public: bool,
        subnets: Vec<String>,
    },
    /// Routes `0.0.0.0/0` of the kept route table to the internet gateway.
    SetDefaultRoute {
        route_table_id: String,
        replace: bool,
    },
    RemoveDefaultRoute {
        route_table_id: String,
    },
    /// Associates an availability zone's subnet with the cluster's route
    /// table, replacing its association with another of the cluster's
    /// tables if it has one.
    AssociateSubnet {
        az: String,
        replace: Option<String>,
    },
    /// The security group, with every ingress rule.
    CreateSecurityGroup {
        rules: Vec<IngressRule>,
    },
    AuthorizeIngress {
        group_id: String,
        rules: Vec<IngressRule>,
    },
    RevokeIngress {
        group_id: String,
        permissions: Vec<Permission>,
    },
    /// Adds or corrects tags of an existing resource.
    SetTags {
        what: String,
        id: String,
        tags: Tags,
    },
    /// `why` is empty or says, in parentheses, why the machine goes.
    TerminateInstance {
        what: String,
        id: String,
        why: String,
    },
    /// Waits until every machine terminated in this run, and these machines
    /// already shutting down, are gone.
    AwaitTermination {
        instances: Vec<String>,
    },
    RunInstance {
        node: String,
        summary: String,
    },
    ChangeInstanceType {
        node: String,
        instance_id: String,
        from: String,
        to: String,
    },
    StartInstance {
        node: String,
        instance_id: String,
        state: InstanceState,
    },
    DeleteSecurityGroup {
        id: String,
    },
    DeleteSubnet {
        what: String,
        id: String,
    },
    DeleteRouteTable {
        id: String,
    },
    DeleteInternetGateway {
        id: String,
        attached_to: Vec<String>,
    },
    DeleteVpc {
        id: String,
    },
}

impl Action {
    /// Whether the action creates, changes or deletes (for the counts).
    pub fn verb(&self) -> Verb {
        use Action::*;
        match self {
            CreateVpc { .. }
            | CreateInternetGateway
            | CreateSubnet { .. }
            | CreateRouteTable { .. }
            | CreateSecurityGroup { .. }
            | RunInstance { .. } => Verb::Create,
            EnableVpcDns { .. }
            | AttachInternetGateway { .. }
            | SetMapPublicIp { .. }
            | SetDefaultRoute { .. }
            | RemoveDefaultRoute { .. }
            | AssociateSubnet { .. }
            | AuthorizeIngress { .. }
            | RevokeIngress { .. }
            | SetTags { .. }
            | ChangeInstanceType { .. }
            | StartInstance { .. } => Verb::Change,
            TerminateInstance { .. }
            | DeleteSecurityGroup { .. }
            | DeleteSubnet { .. }
            | DeleteRouteTable { .. }
            | DeleteInternetGateway { .. }
            | DeleteVpc { .. } => Verb::Delete,
            AwaitTermination { .. } => Verb::Wait,
        }
    }
}

fn rule_list(rules: &[IngressRule]) -> String {
    rules
        .iter()
        .map(|r| format!("tcp {} from {}", r.port, r.cidr))
        .collect::<Vec<_>>()
        .join(", ")
}

fn tag_list(tags: &Tags) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Action::*;
        match self {
            CreateVpc { cidr } => write!(f, "create vpc {cidr} (DNS hostnames and support on)"),
            EnableVpcDns { vpc_id } => {
                write!(f, "change vpc {vpc_id}: turn on DNS hostnames and support")
            }
            CreateInternetGateway => write!(f, "create internet gateway, attached to the vpc"),
            AttachInternetGateway { igw_id } => {
                write!(f, "change internet gateway {igw_id}: attach to the vpc")
            }
            CreateSubnet { az, cidr, public } => write!(
                f,
                "create subnet {az} {cidr} ({})",
                if *public {
                    "public addresses on launch"
                } else {
                    "private"
                }
            ),
            SetMapPublicIp {
                az,
                subnet_id,
                public,
            } => write!(
                f,
                "change subnet {az} {subnet_id}: public addresses on launch {}",
                if *public { "on" } else { "off" }
            ),
            CreateRouteTable { public, subnets } => {
                write!(f, "create route table")?;
                if *public {
                    write!(f, " with 0.0.0.0/0 → internet gateway")?;
                }
                write!(f, ", for subnets {}", subnets.join(", "))
            }
            SetDefaultRoute { route_table_id, .. } => write!(
                f,
                "change route table {route_table_id}: 0.0.0.0/0 → internet gateway"
            ),
            RemoveDefaultRoute { route_table_id } => {
                write!(f, "change route table {route_table_id}: remove 0.0.0.0/0")
            }
            AssociateSubnet { az, .. } => {
                write!(f, "change route table: associate subnet {az}")
            }
            CreateSecurityGroup { rules } => write!(
                f,
                "create security group with {} ingress rules: {}",
                rules.len(),
                rule_list(rules)
            ),
            AuthorizeIngress { group_id, rules } => write!(
                f,
                "change security group {group_id}: allow {}",
                rule_list(rules)
            ),
            RevokeIngress {
                group_id,
                permissions,
            } => write!(
                f,
                "change security group {group_id}: revoke {}",
                permissions
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            SetTags { what, id, tags } => {
                write!(f, "change tags of {what} {id}: {}", tag_list(tags))
            }
            TerminateInstance { what, id, why } => write!(f, "delete instance {what} {id}{why}"),
            AwaitTermination { instances } => {
                write!(f, "wait for the machines to terminate")?;
                if !instances.is_empty() {
                    write!(f, " (already shutting down: {})", instances.join(", "))?;
                }
                Ok(())
            }
            RunInstance { node, summary } => write!(f, "create instance {node}: {summary}"),
            ChangeInstanceType {
                node,
                instance_id,
                from,
                to,
            } => write!(
                f,
                "change {node} instance type {from} → {to} ({instance_id}: stop, modify, start)"
            ),
            StartInstance {
                node,
                instance_id,
                state,
            } => write!(f, "change start {node} ({instance_id} is {state})"),
            DeleteSecurityGroup { id } => write!(f, "delete security group {id}"),
            DeleteSubnet { what, id } => write!(f, "delete subnet {what} {id}"),
            DeleteRouteTable { id } => write!(f, "delete route table {id}"),
            DeleteInternetGateway { id, attached_to } => {
                write!(f, "delete internet gateway {id}")?;
                if !attached_to.is_empty() {
                    write!(f, " (detach from {})", attached_to.join(", "))?;
                }
                Ok(())
            }
            DeleteVpc { id } => write!(f, "delete vpc {id}"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Keep(what) => write!(f, "keep {what}"),
            Step::Refuse(why) => write!(f, "refuse {why}"),
            Step::Do(action) => write!(f, "{action}"),
        }
    }
}

/// How many resources a plan creates, keeps, changes and deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub create: usize,
    pub keep: usize,
    pub change: usize,
    pub delete: usize,
    pub refuse: usize,
}

impl Plan {
    /// The actions, in order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.steps.iter().filter_map(|s| match s {
            Step::Do(a) => Some(a),
            _ => None,
        })
    }

    /// The differences that cannot be made in place.
    pub fn refused(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Refuse(why) => Some(why.as_str()),
                _ => None,
            })
            .collect()
    }

    /// How many resources the plan creates, keeps, changes and deletes.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in &self.steps {
            match s {
                Step::Keep(_) => c.keep += 1,
                Step::Refuse(_) => c.refuse += 1,
                Step::Do(a) => match a.verb() {
                    Verb::Create => c.create += 1,
                    Verb::Change => c.change += 1,
                    Verb::Delete => c.delete += 1,
                    Verb::Wait => {}
                },
            }
        }
        c
    }

    /// Whether applying would do nothing.
    pub fn is_noop(&self) -> bool {
        let c = self.counts();
        c.create + c.change + c.delete + c.refuse == 0
            && !self
                .actions()
                .any(|a| matches!(a, Action::AwaitTermination { .. }))
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} to create, {} to change, {} to delete, {} unchanged",
            self.create, self.change, self.delete, self.keep
        )?;
        if self.refuse > 0 {
            write!(f, ", {} refused", self.refuse)?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Builder {
    steps: Vec<Step>,
    kept: Kept,
}

impl Builder {
    fn keep(&mut self, what: String) {
        self.steps.push(Step::Keep(what));
    }
    fn refuse(&mut self, why: String) {
        self.steps.push(Step::Refuse(why));
    }
    fn act(&mut self, action: Action) {
        self.steps.push(Step::Do(action));
    }
    fn tags(&mut self, what: &str, id: &str, want: &Tags, have: &Tags) {
        let missing = tags::missing(want, have);
        if !missing.is_empty() {
            self.act(Action::SetTags {
                what: what.to_owned(),
                id: id.to_owned(),
                tags: missing,
            });
        }
    }
}

/// The plan that makes `actual` what `desired` says.
pub fn diff(desired: &Desired, actual: &Actual) -> Plan {
    let d = desired;
    let a = actual;
    let mut p = Builder::default();

    // ---------------------------------------------------------------- VPC
    // Of several tagged VPCs keep the one with the right network and the
    // most of the cluster's resources in it.
    let dependents = |vpc: &str| {
        a.subnets.iter().filter(|s| s.vpc_id == vpc).count()
            + a.instances
                .iter()
                .filter(|i| i.vpc_id.as_deref() == Some(vpc))
                .count()
    };
    let vpc = a.vpcs.iter().min_by_key(|v| {
        (
            v.cidr != d.vpc_cidr,
            std::cmp::Reverse(dependents(&v.id)),
            v.id.clone(),
        )
    });
    match vpc {
        None => p.act(Action::CreateVpc {
            cidr: d.vpc_cidr.clone(),
        }),
        Some(v) => {
            if v.cidr == d.vpc_cidr {
                p.keep(format!("vpc {} {}", v.id, v.cidr));
            } else {
                p.refuse(format!(
                    "vpc {} is {}, aws.vpc_cidr says {}: a VPC's network cannot change in place (destroy the cluster first)",
                    v.id, v.cidr, d.vpc_cidr
                ));
            }
            if !(v.dns_hostnames && v.dns_support) {
                p.act(Action::EnableVpcDns {
                    vpc_id: v.id.clone(),
                });
            }
            p.tags("vpc", &v.id, &d.tags(&ResourceKey::Vpc), &v.tags);
            p.kept.vpc = Some(v.id.clone());
        }
    }
    let vpc_id = p.kept.vpc.clone();
    let in_vpc = |id: &str| vpc_id.as_deref() == Some(id);

    // ---------------------------------------------------- internet gateway
    let mut igw_kept = None;
    if d.public {
        let attached = a
            .internet_gateways
            .iter()
            .filter(|g| g.attached_to.iter().any(|v| in_vpc(v)))
            .min_by_key(|g| &g.id);
        let detached = a
            .internet_gateways
            .iter()
            .filter(|g| g.attached_to.is_empty())
            .min_by_key(|g| &g.id);
        match (attached, detached) {
            (Some(g), _) => {
                p.keep(format!("internet gateway {}", g.id));
                igw_kept = Some(g);
            }
            (None, Some(g)) if vpc_id.is_some() => {
                p.act(Action::AttachInternetGateway {
                    igw_id: g.id.clone(),
                });
                igw_kept = Some(g);
            }
            _ => p.act(Action::CreateInternetGateway),
        }
        if let Some(g) = igw_kept {
            p.tags(
                "internet gateway",
                &g.id,
                &d.tags(&ResourceKey::InternetGateway),
                &g.tags,
            );
            p.kept.internet_gateway = Some(g.id.clone());
        }
    }

    // ------------------------------------------------------------- subnets
    let mut subnet_switch = false;
    for s in &d.subnets {
        let key = ResourceKey::Subnet(s.az.clone());
        let tag = key.tag_value();
        let chosen = a
            .subnets
            .iter()
            .filter(|x| in_vpc(&x.vpc_id) && crate::actual::resource_of(&x.tags) == Some(&tag))
            .min_by_key(|x| (x.cidr != s.cidr || x.az != s.az, x.id.clone()));
        match chosen {
            None => p.act(Action::CreateSubnet {
                az: s.az.clone(),
                cidr: s.cidr.clone(),
                public: d.public,
            }),
            Some(x) => {
                if x.cidr != s.cidr || x.az != s.az {
                    p.refuse(format!(
                        "subnet {} ({}) is {} in {}, network.azs says {} in {}: a subnet's network cannot change in place (move its nodes elsewhere, remove the zone, apply, then add it back)",
                        s.az, x.id, x.cidr, x.az, s.cidr, s.az
                    ));
                } else {
                    p.keep(format!("subnet {} {} {}", s.az, x.id, x.cidr));
                }
                if x.map_public_ip != d.public {
                    subnet_switch = true;
                    p.act(Action::SetMapPublicIp {
                        az: s.az.clone(),
                        subnet_id: x.id.clone(),
                        public: d.public,
                    });
                }
                p.tags(&format!("subnet {}", s.az), &x.id, &d.tags(&key), &x.tags);
                p.kept.subnets.insert(s.az.clone(), x.id.clone());
            }
        }
    }

    // --------------------------------------------------------- route table
    let route_table = a
        .route_tables
        .iter()
        .filter(|r| in_vpc(&r.vpc_id))
        .min_by_key(|r| (std::cmp::Reverse(r.associations.len()), r.id.clone()));
    match route_table {
        None => p.act(Action::CreateRouteTable {
            public: d.public,
            subnets: d.subnets.iter().map(|s| s.az.clone()).collect(),
        }),
        Some(rt) => {
            p.keep(format!("route table {}", rt.id));
            let igw = p.kept.internet_gateway.clone();
            if d.public {
                if igw.is_none() || rt.default_route != igw {
                    p.act(Action::SetDefaultRoute {
                        route_table_id: rt.id.clone(),
                        replace: rt.default_route.is_some(),
                    });
                }
            } else if rt.default_route.is_some() {
                subnet_switch = true;
                p.act(Action::RemoveDefaultRoute {
                    route_table_id: rt.id.clone(),
                });
            }
            for s in &d.subnets {
                let subnet_id = p.kept.subnets.get(&s.az).cloned();
                let associated = |r: &crate::actual::RouteTable| {
                    r.associations
                        .iter()
                        .find(|x| Some(&x.subnet_id) == subnet_id.as_ref())
                        .map(|x| x.id.clone())
                };
                if associated(rt).is_some() {
                    continue;
                }
                let elsewhere = a.route_tables.iter().find_map(associated);
                p.act(Action::AssociateSubnet {
                    az: s.az.clone(),
                    replace: elsewhere,
                });
            }
            p.tags(
                "route table",
                &rt.id,
                &d.tags(&ResourceKey::RouteTable),
                &rt.tags,
            );
            p.kept.route_table = Some(rt.id.clone());
        }
    }

    // ------------------------------------------------------ security group
    let group = a
        .security_groups
        .iter()
        .filter(|g| in_vpc(&g.vpc_id))
        .min_by_key(|g| (g.name != d.security_group_name(), g.id.clone()));
    match group {
        None => p.act(Action::CreateSecurityGroup {
            rules: d.ingress.clone(),
        }),
        Some(g) => {
            p.keep(format!(
                "security group {} ({} ingress rules)",
                g.id,
                g.ingress.len()
            ));
            let want: BTreeSet<(u16, &str)> = d
                .ingress
                .iter()
                .map(|r| (r.port, r.cidr.as_str()))
                .collect();
            let have: BTreeSet<(u16, &str)> = g
                .ingress
                .iter()
                .filter_map(Permission::tcp_port_from_cidr)
                .collect();
            let missing: Vec<IngressRule> = d
                .ingress
                .iter()
                .filter(|r| !have.contains(&(r.port, r.cidr.as_str())))
                .cloned()
                .collect();
            let extra: Vec<Permission> = g
                .ingress
                .iter()
                .filter(|x| !x.tcp_port_from_cidr().is_some_and(|k| want.contains(&k)))
                .cloned()
                .collect();
            if !extra.is_empty() {
                p.act(Action::RevokeIngress {
                    group_id: g.id.clone(),
                    permissions: extra,
                });
            }
            if !missing.is_empty() {
                p.act(Action::AuthorizeIngress {
                    group_id: g.id.clone(),
                    rules: missing,
                });
            }
            p.tags(
                "security group",
                &g.id,
                &d.tags(&ResourceKey::SecurityGroup),
                &g.tags,
            );
            p.kept.security_group = Some(g.id.clone());
        }
    }

    // ------------------------------------------------------------ machines
    let live: Vec<&Instance> = a.instances.iter().filter(|i| !i.state.is_gone()).collect();
    let mut chosen_instances: BTreeSet<&str> = BTreeSet::new();
    let mut machine_steps = Builder::default();
    for spec in &d.instances {
        let subnet = p.kept.subnets.get(&spec.az);
        let rank = |i: &Instance| {
            let state = match i.state {
                InstanceState::Running | InstanceState::Pending => 0,
                InstanceState::Stopping | InstanceState::Stopped => 1,
                _ => 2,
            };
            (i.subnet_id.as_ref() != subnet, state, i.id.clone())
        };
        let chosen = live
            .iter()
            .filter(|i| i.node() == Some(spec.node.as_str()))
            .min_by_key(|i| rank(i));
        let Some(i) = chosen else {
            machine_steps.act(Action::RunInstance {
                node: spec.node.clone(),
                summary: format!(
                    "{}, {}, {}, {}",
                    spec.role, spec.instance_type, spec.az, spec.address
                ),
            });
            continue;
        };
        chosen_instances.insert(&i.id);
        let mut refused = false;
        if i.role() != Some(spec.role.as_str()) {
            refused = true;
            machine_steps.refuse(format!(
                "{} ({}) was made as a {} machine, nodes.yaml says {}: a machine's role cannot change in place (remove the node, apply, then add it back)",
                spec.node,
                i.id,
                i.role().unwrap_or("(untagged)"),
                spec.role
            ));
        }
        if i.private_ip != Some(spec.address) || i.az.as_deref() != Some(spec.az.as_str()) {
            refused = true;
            machine_steps.refuse(format!(
                "{} ({}) is at {} in {}, nodes.yaml says {} in {}: a machine's address and zone cannot change in place (remove the node, apply, then add it back)",
                spec.node,
                i.id,
                i.private_ip.map_or_else(|| "no address".to_owned(), |a| a.to_string()),
                i.az.as_deref().unwrap_or("no zone"),
                spec.address,
                spec.az
            ));
        } else if subnet.is_some() && i.subnet_id.as_ref() != subnet {
            refused = true;
            machine_steps.refuse(format!(
                "{} ({}) is in subnet {}, not in the cluster's subnet of {}",
                spec.node,
                i.id,
                i.subnet_id.as_deref().unwrap_or("(none)"),
                spec.az
            ));
        }
        if i.instance_type != spec.instance_type {
            machine_steps.act(Action::ChangeInstanceType {
                node: spec.node.clone(),
                instance_id: i.id.clone(),
                from: i.instance_type.clone(),
                to: spec.instance_type.clone(),
            });
        } else if matches!(i.state, InstanceState::Stopped | InstanceState::Stopping) {
            machine_steps.act(Action::StartInstance {
                node: spec.node.clone(),
                instance_id: i.id.clone(),
                state: i.state,
            });
        } else if !refused {
            machine_steps.keep(format!(
                "instance {} {} ({}, {}, {})",
                spec.node, i.id, i.instance_type, spec.address, i.state
            ));
        }
        machine_steps.tags(
            &format!("instance {}", spec.node),
            &i.id,
            &d.node_tags(&ResourceKey::Instance, spec),
            &i.tags,
        );
    }
    if subnet_switch && !chosen_instances.is_empty() {
        p.refuse(format!(
            "aws.subnets is now {} but the cluster's machines were made {}: their public addresses cannot be {} in place (destroy the cluster first)",
            if d.public { "public" } else { "private" },
            if d.public { "private" } else { "public" },
            if d.public { "added" } else { "taken away" },
        ));
    }

    // Machines that must go first, so their addresses are free.
    let extra_instances: Vec<&Instance> = live
        .iter()
        .copied()
        .filter(|i| !chosen_instances.contains(i.id.as_str()))
        .collect();
    let shutting_down: Vec<String> = a
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::ShuttingDown)
        .map(|i| i.id.clone())
        .collect();
    terminate(&mut p, &extra_instances, &shutting_down, d);
    p.steps.extend(machine_steps.steps);

    // Network resources that are not the cluster's (any more).
    let kept = p.kept.clone();
    let not_kept = |id: &str, kept: Option<&String>| kept.map(String::as_str) != Some(id);
    let extra = Actual {
        vpcs: a
            .vpcs
            .iter()
            .filter(|v| not_kept(&v.id, kept.vpc.as_ref()))
            .cloned()
            .collect(),
        internet_gateways: a
            .internet_gateways
            .iter()
            .filter(|g| not_kept(&g.id, kept.internet_gateway.as_ref()))
            .cloned()
            .collect(),
        route_tables: a
            .route_tables
            .iter()
            .filter(|r| not_kept(&r.id, kept.route_table.as_ref()))
            .cloned()
            .collect(),
        subnets: a
            .subnets
            .iter()
            .filter(|s| !kept.subnets.values().any(|k| *k == s.id))
            .cloned()
            .collect(),
        security_groups: a
            .security_groups
            .iter()
            .filter(|g| not_kept(&g.id, kept.security_group.as_ref()))
            .cloned()
            .collect(),
        instances: Vec::new(),
    };
    delete_network(&mut p, &extra);

    Plan {
        steps: p.steps,
        kept: p.kept,
    }
}

/// The plan that removes everything tagged for the cluster: machines first
/// (and waits until they are gone), then the security group, subnets,
/// route table, internet gateway and VPC.
pub fn destroy(actual: &Actual) -> Plan {
    let mut p = Builder::default();
    let live: Vec<&Instance> = actual
        .instances
        .iter()
        .filter(|i| !i.state.is_gone())
        .collect();
    let shutting_down: Vec<String> = actual
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::ShuttingDown)
        .map(|i| i.id.clone())
        .collect();
    let reason = |_: &Instance| "";
    terminate_with(&mut p, &live, &shutting_down, reason);
    delete_network(&mut p, actual);
    Plan {
        steps: p.steps,
        kept: Kept::default(),
    }
}

fn terminate(p: &mut Builder, extra: &[&Instance], shutting_down: &[String], d: &Desired) {
    let known: BTreeSet<&str> = d.instances.iter().map(|i| i.node.as_str()).collect();
    let reason = |i: &Instance| match i.node() {
        Some(node) if known.contains(node) => " (a second machine for the node)",
        Some(_) => " (not in nodes.yaml)",
        None => " (no kraftops:node tag)",
    };
    terminate_with(p, extra, shutting_down, reason);
}

fn terminate_with<'a>(
    p: &mut Builder,
    extra: &[&'a Instance],
    shutting_down: &[String],
    reason: impl Fn(&'a Instance) -> &'static str,
) {
    for i in extra {
        p.act(Action::TerminateInstance {
            what: i.node().unwrap_or("(no node)").to_owned(),
            id: i.id.clone(),
            why: reason(i).to_owned(),
        });
    }
    if !extra.is_empty() || !shutting_down.is_empty() {
        p.act(Action::AwaitTermination {
            instances: shutting_down.to_vec(),
        });
    }
}

fn delete_network(p: &mut Builder, x: &Actual) {
    for g in &x.security_groups {
        p.act(Action::DeleteSecurityGroup { id: g.id.clone() });
    }
    for s in &x.subnets {
        let what = crate::actual::resource_of(&s.tags)
            .and_then(|r| r.strip_prefix("subnet-"))
            .unwrap_or(&s.az)
            .to_owned();
        p.act(Action::DeleteSubnet {
            what,
            id: s.id.clone(),
        });
    }
    for r in &x.route_tables {
        p.act(Action::DeleteRouteTable { id: r.id.clone() });
    }
    for g in &x.internet_gateways {
        p.act(Action::DeleteInternetGateway {
            id: g.id.clone(),
            attached_to: g.attached_to.clone(),
        });
    }
    for v in &x.vpcs {
        p.act(Action::DeleteVpc { id: v.id.clone() });
    }
}

#[cfg(test)]
mod tests;
