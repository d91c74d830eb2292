//! The AWS side: reading a cluster's tagged resources, resolving the image,
//! and carrying out a [`Plan`]. The only module that talks to EC2.
//!
//! Every create tags the resource in the same call (`TagSpecifications`),
//! so a resource that exists is always found again by its tags: a run that
//! stops part way is resumed by running again. Machines are launched with a
//! `ClientToken` derived from the cluster and node, so a create the SDK
//! retries is not made twice.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    self as t, AttributeBooleanValue, AttributeValue, BlockDeviceMapping, EbsBlockDevice, Filter,
    HttpTokensState, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, IpPermission,
    IpRange, Ipv6Range, PrefixListId, ResourceType, Tag, TagSpecification, UserIdGroupPair,
    VolumeType, VpcAttributeName,
};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::actual::{
    Actual, Association, Instance, InstanceState, InternetGateway, Permission, RouteTable,
    SecurityGroup, Source, Subnet, Vpc,
};
use crate::desired::{Desired, IngressRule};
use crate::diff::{Action, Kept, Plan, Verb};
use crate::tags::{self, ResourceKey, Tags};

/// EC2's limit on user-data, before base64.
pub const USER_DATA_LIMIT: usize = 16 * 1024;

/// How long to wait for machines to reach a state.
const STATE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How long to retry while EC2 has not caught up with a change
/// (`DependencyViolation` right after a termination, `*.NotFound` right
/// after a create).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

/// What went wrong talking to EC2.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// An EC2 call failed.
    #[error("{operation} ({resource})")]
    Aws {
        operation: &'static str,
        resource: String,
        #[source]
        cause: AwsCause,
    },
    #[error(
        "no image named {pattern} owned by {owner} (DescribeImages found none that is available)"
    )]
    NoImage { pattern: String, owner: String },
    #[error("image {id} was not found (DescribeImages)")]
    ImageNotFound { id: String },
    #[error("image {id} has no root device name")]
    NoRootDevice { id: String },
    #[error("{operation} ({resource}) answered without {field}")]
    Incomplete {
        operation: &'static str,
        resource: String,
        field: &'static str,
    },
    #[error("gave up after {} s waiting for {what}", .waited.as_secs())]
    Timeout { what: String, waited: Duration },
    #[error("{what} is needed but neither exists nor was made earlier in this run")]
    MissingDependency { what: String },
    #[error("no user-data was rendered for {node}")]
    NoUserData { node: String },
    #[error("the plan has refused changes; nothing was applied")]
    Refused,
    #[error(
        "{node}: ClientToken {token} belongs to machine {instance}, which is {state}; launched again with another token but EC2 returned a gone machine again"
    )]
    GoneAgain {
        node: String,
        token: String,
        instance: String,
        state: InstanceState,
    },
}

/// EC2's own words: the error code and message of a failed call, or the
/// transport error's whole chain.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AwsCause {
    /// The EC2 error code, e.g. `InvalidSubnet.Conflict`.
    pub code: Option<String>,
    message: String,
}

impl Ec2Error {
    /// The EC2 error code, for a failed call.
    pub fn code(&self) -> Option<&str> {
        match self {
            Ec2Error::Aws { cause, .. } => cause.code.as_deref(),
            _ => None,
        }
    }
}

fn aws_error<E, R>(
    operation: &'static str,
    resource: impl fmt::Display,
) -> impl FnOnce(SdkError<E, R>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    move |err| {
        let (code, message) = match err.as_service_error() {
            Some(e) if e.code().is_some() => {
                let code = e.code().map(str::to_owned);
                let message = match (e.code(), e.message()) {
                    (Some(c), Some(m)) => format!("{c}: {m}"),
                    (Some(c), None) => c.to_owned(),
                    _ => error_chain(&err),
                };
                (code, message)
            }
            _ => (None, error_chain(&err)),
        };
        Ec2Error::Aws {
            operation,
            resource: resource.to_string(),
            cause: AwsCause { code, message },
        }
    }
}

/// An error and its sources, one after the other (`a: b: c`), skipping a
/// source whose text its parent already shows.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// The image machines boot, resolved at plan time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub created: Option<String>,
    /// Where the root volume is attached (`/dev/xvda`, `/dev/sda1`): the
    /// root volume's size and type are set on this device.
    pub root_device_name: String,
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if let Some(name) = &self.name {
            write!(f, " ({name}")?;
            if let Some(created) = &self.created {
                write!(f, ", created {created}")?;
            }
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// A node's cloud-init user-data. It holds the node's join token (and on
/// the observability node the age identity), so `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserData(String);

impl UserData {
    /// The rendered `#cloud-config` document.
    pub fn new(text: String) -> Self {
        Self(text)
    }
    /// The size in bytes, before base64.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there is no user-data at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.as_bytes())
    }
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserData(<{} bytes, redacted>)", self.0.len())
    }
}

/// How new machines are launched: what the diff does not compare (a
/// machine's image, key pair, volume and user-data only matter when it is
/// made).
#[derive(Clone, Debug)]
pub struct Launch {
    pub image: Image,
    pub key_pair: Option<String>,
    pub root_volume_gib: u32,
    /// Node name → its user-data.
    pub user_data: BTreeMap<String, UserData>,
}

/// The `ClientToken` of a node's machine: the same for every retry of the
/// same launch, different for another cluster or node (at most 64 ASCII
/// characters).
pub fn client_token(cluster: &str, node: &str, attempt: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(cluster.as_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    for a in attempt {
        h.update([0]);
        h.update(a.as_bytes());
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(24).map(|b| format!("{b:02x}")).collect();
    format!("kraftops-{hex}")
}

/// What `apply` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub created: usize,
    pub changed: usize,
    pub deleted: usize,
}

/// A cluster's view of EC2: every call filters on, or tags with,
/// `kraftops:cluster=<cluster>`.
#[derive(Clone, Debug)]
pub struct Ec2 {
    client: Client,
    cluster: String,
}

fn tag_filter(cluster: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{}", tags::CLUSTER))
        .values(cluster)
        .build()
}

fn tags_of(list: &[Tag]) -> Tags {
    list.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn tag_spec(kind: ResourceType, tags: &Tags) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tag_list(tags)))
        .build()
}

fn tag_list(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

fn state_of(name: Option<&t::InstanceStateName>) -> InstanceState {
    match name {
        Some(t::InstanceStateName::Pending) => InstanceState::Pending,
        Some(t::InstanceStateName::Running) => InstanceState::Running,
        Some(t::InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(t::InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(t::InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(t::InstanceStateName::Terminated) => InstanceState::Terminated,
        _ => InstanceState::Unknown,
    }
}

fn instance_of(i: &t::Instance) -> Option<Instance> {
    Some(Instance {
        id: i.instance_id()?.to_owned(),
        state: state_of(i.state().and_then(|s| s.name())),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        private_ip: i
            .private_ip_address()
            .and_then(|a| a.parse::<Ipv4Addr>().ok()),
        public_ip: i.public_ip_address().map(str::to_owned),
        subnet_id: i.subnet_id().map(str::to_owned),
        vpc_id: i.vpc_id().map(str::to_owned),
        az: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        tags: tags_of(i.tags()),
    })
}

fn permissions_of(p: &IpPermission) -> Vec<Permission> {
    let protocol = p.ip_protocol().unwrap_or("-1").to_owned();
    let (from_port, to_port) = if protocol == "-1" {
        (None, None)
    } else {
        (p.from_port(), p.to_port())
    };
    let mut sources: Vec<Source> = Vec::new();
    sources.extend(
        p.ip_ranges()
            .iter()
            .filter_map(|r| r.cidr_ip())
            .map(|c| Source::Ipv4(c.to_owned())),
    );
    sources.extend(
        p.ipv6_ranges()
            .iter()
            .filter_map(|r| r.cidr_ipv6())
            .map(|c| Source::Ipv6(c.to_owned())),
    );
    sources.extend(
        p.user_id_group_pairs()
            .iter()
            .filter_map(|g| g.group_id())
            .map(|g| Source::Group(g.to_owned())),
    );
    sources.extend(
        p.prefix_list_ids()
            .iter()
            .filter_map(|l| l.prefix_list_id())
            .map(|l| Source::PrefixList(l.to_owned())),
    );
    sources
        .into_iter()
        .map(|source| Permission {
            protocol: protocol.clone(),
            from_port,
            to_port,
            source,
        })
        .collect()
}

/// The EC2 form of ingress rules: one permission per port, holding every
/// network that may reach it.
fn ip_permissions(rules: &[IngressRule]) -> Vec<IpPermission> {
    let mut by_port: BTreeMap<u16, Vec<&IngressRule>> = BTreeMap::new();
    for r in rules {
        by_port.entry(r.port).or_default().push(r);
    }
    by_port
        .into_iter()
        .map(|(port, rules)| {
            IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(i32::from(port))
                .to_port(i32::from(port))
                .set_ip_ranges(Some(
                    rules
                        .iter()
                        .map(|r| {
                            IpRange::builder()
                                .cidr_ip(&r.cidr)
                                .description(&r.description)
                                .build()
                        })
                        .collect(),
                ))
                .build()
        })
        .collect()
}

fn revoke_permission(p: &Permission) -> IpPermission {
    let mut b = IpPermission::builder()
        .ip_protocol(&p.protocol)
        .set_from_port(p.from_port)
        .set_to_port(p.to_port);
    b = match &p.source {
        Source::Ipv4(c) => b.ip_ranges(IpRange::builder().cidr_ip(c).build()),
        Source::Ipv6(c) => b.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(c).build()),
        Source::Group(g) => b.user_id_group_pairs(UserIdGroupPair::builder().group_id(g).build()),
        Source::PrefixList(l) => {
            b.prefix_list_ids(PrefixListId::builder().prefix_list_id(l).build())
        }
    };
    b.build()
}

fn yes() -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(true).build()
}

fn boolean(v: bool) -> AttributeBooleanValue {
    AttributeBooleanValue::builder().value(v).build()
}

/// Calls `f` again while EC2 answers with a code that means "not yet"
/// (a resource just made is not visible everywhere yet, or a machine just
/// terminated still holds an interface), up to [`SETTLE_TIMEOUT`].
async fn settle<T, F, Fut>(mut f: F) -> Result<T, Ec2Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Ec2Error>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(500);
    loop {
        match f().await {
            Err(e) if not_yet(e.code()) && start.elapsed() < SETTLE_TIMEOUT => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            other => return other,
        }
    }
}

fn not_yet(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "DependencyViolation"
                | "InvalidVpcID.NotFound"
                | "InvalidSubnetID.NotFound"
                | "InvalidGroup.NotFound"
                | "InvalidInternetGatewayID.NotFound"
                | "InvalidRouteTableID.NotFound"
                | "InvalidInstanceID.NotFound"
        )
    )
}

const TERMINATE: &str = "to terminate";

/// Writes one progress line; progress is best effort (a closed stderr does
/// not stop an apply half way).
fn say(out: &mut dyn Write, line: impl fmt::Display) {
    let _ = writeln!(out, "{line}");
}

impl Ec2 {
    /// A view of `cluster`'s resources through `client`.
    pub fn new(client: Client, cluster: impl Into<String>) -> Self {
        Self {
            client,
            cluster: cluster.into(),
        }
    }

    /// Every resource tagged for the cluster. Terminated machines are left out.
    pub async fn read(&self) -> Result<Actual, Ec2Error> {
        let c = &self.client;
        let resource = format!("tag {}={}", tags::CLUSTER, self.cluster);
        let filter = tag_filter(&self.cluster);

        let vpcs: Vec<t::Vpc> = c
            .describe_vpcs()
            .filters(filter.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(aws_error("DescribeVpcs", &resource))?;
        let mut actual = Actual::default();
        for v in &vpcs {
            let Some(id) = v.vpc_id() else { continue };
            let hostnames = c
                .describe_vpc_attribute()
                .vpc_id(id)
                .attribute(VpcAttributeName::EnableDnsHostnames)
                .send()
                .await
                .map_err(aws_error("DescribeVpcAttribute", format!("vpc {id}")))?;
            let support = c
                .describe_vpc_attribute()
                .vpc_id(id)
                .attribute(VpcAttributeName::EnableDnsSupport)
                .send()
                .await
                .map_err(aws_error("DescribeVpcAttribute", format!("vpc {id}")))?;
            actual.vpcs.push(Vpc {
                id: id.to_owned(),
                cidr: v.cidr_block().unwrap_or_default().to_owned(),
                dns_hostnames: hostnames
                    .enable_dns_hostnames()
                    .and_then(|a| a.value())
                    .unwrap_or(false),
                dns_support: support
                    .enable_dns_support()
                    .and_then(|a| a.value())
                    .unwrap_or(false),
                tags: tags_of(v.tags()),
            });
        }

        let igws: Vec<t::InternetGateway> = c
            .describe_internet_gateways()
            .filters(filter.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(aws_error("DescribeInternetGateways", &resource))?;
        actual.internet_gateways = igws
            .iter()
            .filter_map(|g| {
                Some(InternetGateway {
                    id: g.internet_gateway_id()?.to_owned(),
                    attached_to: g
                        .attachments()
                        .iter()
                        .filter_map(|a| a.vpc_id())
                        .map(str::to_owned)
                        .collect(),
                    tags: tags_of(g.tags()),
                })
            })
            .collect();

        let tables: Vec<t::RouteTable> = c
            .describe_route_tables()
            .filters(filter.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(aws_error("DescribeRouteTables", &resource))?;
        actual.route_tables = tables
            .iter()
            .filter_map(|r| {
                Some(RouteTable {
                    id: r.route_table_id()?.to_owned(),
                    vpc_id: r.vpc_id().unwrap_or_default().to_owned(),
                    default_route: r
                        .routes()
                        .iter()
                        .find(|x| x.destination_cidr_block() == Some("0.0.0.0/0"))
                        .map(|x| {
                            x.gateway_id()
                                .or(x.nat_gateway_id())
                                .or(x.network_interface_id())
                                .or(x.instance_id())
                                .or(x.transit_gateway_id())
                                .or(x.vpc_peering_connection_id())
                                .unwrap_or("(another target)")
                                .to_owned()
                        }),
                    associations: r
                        .associations()
                        .iter()
                        .filter(|a| a.main() != Some(true))
                        .filter_map(|a| {
                            Some(Association {
                                id: a.route_table_association_id()?.to_owned(),
                                subnet_id: a.subnet_id()?.to_owned(),
                            })
                        })
                        .collect(),
                    tags: tags_of(r.tags()),
                })
            })
            .collect();

        let subnets: Vec<t::Subnet> = c
            .describe_subnets()
            .filters(filter.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(aws_error("DescribeSubnets", &resource))?;
        actual.subnets = subnets
            .iter()
            .filter_map(|s| {
                Some(Subnet {
                    id: s.subnet_id()?.to_owned(),
                    vpc_id: s.vpc_id().unwrap_or_default().to_owned(),
                    az: s.availability_zone().unwrap_or_default().to_owned(),
                    cidr: s.cidr_block().unwrap_or_default().to_owned(),
                    map_public_ip: s.map_public_ip_on_launch().unwrap_or(false),
                    tags: tags_of(s.tags()),
                })
            })
            .collect();

        let groups: Vec<t::SecurityGroup> = c
            .describe_security_groups()
            .filters(filter.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(aws_error("DescribeSecurityGroups", &resource))?;
        actual.security_groups = groups
            .iter()
            .filter_map(|g| {
                Some(SecurityGroup {
                    id: g.group_id()?.to_owned(),
                    vpc_id: g.vpc_id().unwrap_or_default().to_owned(),
                    name: g.group_name().unwrap_or_default().to_owned(),
                    ingress: g.ip_permissions().iter().flat_map(permissions_of).collect(),
                    tags: tags_of(g.tags()),
                })
            })
            .collect();

        actual.instances = self.instances(&[], false).await?;
        Ok(actual)
    }

    /// The cluster's machines (only those of `ids`, when given). Terminated
    /// ones only with `with_terminated`.
    async fn instances(
        &self,
        ids: &[String],
        with_terminated: bool,
    ) -> Result<Vec<Instance>, Ec2Error> {
        let mut states = vec!["pending", "running", "shutting-down", "stopping", "stopped"];
        if with_terminated {
            states.push("terminated");
        }
        let state_filter = Filter::builder()
            .name("instance-state-name")
            .set_values(Some(states.into_iter().map(str::to_owned).collect()))
            .build();
        let mut req = self
            .client
            .describe_instances()
            .filters(tag_filter(&self.cluster))
            .filters(state_filter);
        if !ids.is_empty() {
            req = req.filters(
                Filter::builder()
                    .name("instance-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            );
        }
        let reservations: Vec<t::Reservation> = req
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(aws_error(
                "DescribeInstances",
                format!("tag {}={}", tags::CLUSTER, self.cluster),
            ))?;
        Ok(reservations
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(instance_of)
            .collect())
    }

    /// The image of `aws.ami`: the given id, or the newest available image
    /// (by creation date) whose name matches the pattern and whose owner is
    /// the given one.
    pub async fn resolve_image(&self, ami: &desired_state::AmiSpec) -> Result<Image, Ec2Error> {
        let image_of = |i: &t::Image| -> Result<Image, Ec2Error> {
            let id = i.image_id().unwrap_or_default().to_owned();
            Ok(Image {
                root_device_name: i
                    .root_device_name()
                    .ok_or_else(|| Ec2Error::NoRootDevice { id: id.clone() })?
                    .to_owned(),
                name: i.name().map(str::to_owned),
                created: i.creation_date().map(str::to_owned),
                id,
            })
        };
        if let Some(id) = &ami.id {
            let images = self
                .client
                .describe_images()
                .image_ids(id.as_str())
                .send()
                .await
                .map_err(aws_error("DescribeImages", format!("image {id}")))?;
            let image = images
                .images()
                .iter()
                .find(|i| i.image_id() == Some(id.as_str()))
                .ok_or_else(|| Ec2Error::ImageNotFound { id: id.to_string() })?;
            return image_of(image);
        }
        let pattern = ami.name.as_ref().map(|n| n.as_str()).unwrap_or_default();
        let owner = ami.owner.as_ref().map(|o| o.as_str()).unwrap_or_default();
        let images: Vec<t::Image> = self
            .client
            .describe_images()
            .owners(owner)
            .filters(Filter::builder().name("name").values(pattern).build())
            .filters(Filter::builder().name("state").values("available").build())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<_, _>>()
            .await
            .map_err(aws_error(
                "DescribeImages",
                format!("name {pattern} owner {owner}"),
            ))?;
        // Creation dates are ISO 8601 in UTC, so they sort as text; the id
        // breaks ties so the choice is stable.
        let newest = images
            .iter()
            .filter(|i| i.image_id().is_some())
            .max_by_key(|i| {
                (
                    i.creation_date().unwrap_or_default(),
                    i.image_id().unwrap_or_default(),
                )
            })
            .ok_or_else(|| Ec2Error::NoImage {
                pattern: pattern.to_owned(),
                owner: owner.to_owned(),
            })?;
        image_of(newest)
    }

    /// Carries out `plan`, writing a line per step to `progress`. Stops at
    /// the first failure; running again resumes (the plan is recomputed
    /// from what exists by then).
    pub async fn apply(
        &self,
        plan: &Plan,
        desired: &Desired,
        launch: &Launch,
        progress: &mut dyn Write,
    ) -> Result<Applied, Ec2Error> {
        self.execute(plan, desired, Some(launch), progress).await
    }

    /// Carries out a [`crate::diff::destroy`] plan (it launches nothing).
    pub async fn destroy(
        &self,
        plan: &Plan,
        desired: &Desired,
        progress: &mut dyn Write,
    ) -> Result<Applied, Ec2Error> {
        self.execute(plan, desired, None, progress).await
    }

    async fn execute(
        &self,
        plan: &Plan,
        desired: &Desired,
        launch: Option<&Launch>,
        progress: &mut dyn Write,
    ) -> Result<Applied, Ec2Error> {
        if !plan.refused().is_empty() {
            return Err(Ec2Error::Refused);
        }
        let mut run = Run {
            ec2: self,
            desired,
            launch,
            kept: plan.kept.clone(),
            terminating: Vec::new(),
            launched: Vec::new(),
        };
        let actions: Vec<&Action> = plan.actions().collect();
        let total = actions.len();
        let mut applied = Applied::default();
        for (n, action) in actions.into_iter().enumerate() {
            say(progress, format_args!("[{}/{total}] {action}", n + 1));
            if let Some(done) = run.action(action, progress).await? {
                say(progress, format_args!("[{}/{total}] {done}", n + 1));
            }
            match action.verb() {
                Verb::Create => applied.created += 1,
                Verb::Change => applied.changed += 1,
                Verb::Delete => applied.deleted += 1,
                Verb::Wait => {}
            }
        }
        if !run.launched.is_empty() {
            let ids = std::mem::take(&mut run.launched);
            self.wait_for(&ids, "to be running", progress, |i| {
                i.state == InstanceState::Running
            })
            .await?;
        }
        Ok(applied)
    }

    /// The cluster's live machines, for the table `apply` ends with.
    pub async fn machines(&self) -> Result<Vec<Instance>, Ec2Error> {
        self.instances(&[], false).await
    }

    /// Polls `ids` until every one satisfies `done` (a machine no longer
    /// listed counts as terminated).
    async fn wait_for(
        &self,
        ids: &[String],
        what: &str,
        progress: &mut dyn Write,
        done: impl Fn(&Instance) -> bool,
    ) -> Result<(), Ec2Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        let mut delay = Duration::from_millis(200);
        let mut last_report = None;
        loop {
            let seen = settle(|| self.instances(ids, true)).await?;
            // A terminated machine eventually drops out of the listing; a
            // new one may not be listed yet.
            let gone_is_done = what == TERMINATE;
            let pending: Vec<&str> = ids
                .iter()
                .filter(|id| match seen.iter().find(|i| &i.id == *id) {
                    Some(i) => !done(i),
                    None => !gone_is_done,
                })
                .map(String::as_str)
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited > STATE_TIMEOUT {
                return Err(Ec2Error::Timeout {
                    what: format!("{} {what}", pending.join(", ")),
                    waited,
                });
            }
            let report = pending.len();
            if last_report != Some(report) {
                say(
                    progress,
                    format_args!("waiting for {report} of {} machines {what}", ids.len()),
                );
                last_report = Some(report);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// One apply: the ids of what exists or was made so far.
struct Run<'a> {
    ec2: &'a Ec2,
    desired: &'a Desired,
    launch: Option<&'a Launch>,
    kept: Kept,
    terminating: Vec<String>,
    launched: Vec<String>,
}

fn need<'v>(value: &'v Option<String>, what: &str) -> Result<&'v str, Ec2Error> {
    value.as_deref().ok_or_else(|| Ec2Error::MissingDependency {
        what: what.to_owned(),
    })
}

impl Run<'_> {
    /// Does one action; returns what to report when it made something.
    async fn action(
        &mut self,
        action: &Action,
        progress: &mut dyn Write,
    ) -> Result<Option<String>, Ec2Error> {
        let c = &self.ec2.client;
        let d = self.desired;
        match action {
            Action::CreateVpc { cidr } => {
                let out = c
                    .create_vpc()
                    .cidr_block(cidr)
                    .tag_specifications(tag_spec(ResourceType::Vpc, &d.tags(&ResourceKey::Vpc)))
                    .send()
                    .await
                    .map_err(aws_error("CreateVpc", cidr))?;
                let id = out
                    .vpc()
                    .and_then(|v| v.vpc_id())
                    .ok_or(Ec2Error::Incomplete {
                        operation: "CreateVpc",
                        resource: cidr.clone(),
                        field: "VpcId",
                    })?
                    .to_owned();
                self.kept.vpc = Some(id.clone());
                self.enable_dns(&id).await?;
                Ok(Some(format!("created vpc {id}")))
            }
            Action::EnableVpcDns { vpc_id } => {
                self.enable_dns(vpc_id).await?;
                Ok(None)
            }
            Action::CreateInternetGateway => {
                let vpc = need(&self.kept.vpc, "the vpc")?.to_owned();
                let out = c
                    .create_internet_gateway()
                    .tag_specifications(tag_spec(
                        ResourceType::InternetGateway,
                        &d.tags(&ResourceKey::InternetGateway),
                    ))
                    .send()
                    .await
                    .map_err(aws_error("CreateInternetGateway", "internet gateway"))?;
                let id = out
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or(Ec2Error::Incomplete {
                        operation: "CreateInternetGateway",
                        resource: "internet gateway".into(),
                        field: "InternetGatewayId",
                    })?
                    .to_owned();
                self.attach_igw(&id, &vpc).await?;
                self.kept.internet_gateway = Some(id.clone());
                Ok(Some(format!(
                    "created internet gateway {id}, attached to {vpc}"
                )))
            }
            Action::AttachInternetGateway { igw_id } => {
                let vpc = need(&self.kept.vpc, "the vpc")?.to_owned();
                self.attach_igw(igw_id, &vpc).await?;
                self.kept.internet_gateway = Some(igw_id.clone());
                Ok(None)
            }
            Action::CreateSubnet { az, cidr, public } => {
                let vpc = need(&self.kept.vpc, "the vpc")?.to_owned();
                let what = format!("subnet {az} {cidr} in {vpc}");
                let out = settle(|| async {
                    c.create_subnet()
                        .vpc_id(&vpc)
                        .cidr_block(cidr)
                        .availability_zone(az)
                        .tag_specifications(tag_spec(
                            ResourceType::Subnet,
                            &d.tags(&ResourceKey::Subnet(az.clone())),
                        ))
                        .send()
                        .await
                        .map_err(aws_error("CreateSubnet", &what))
                })
                .await?;
                let id = out
                    .subnet()
                    .and_then(|s| s.subnet_id())
                    .ok_or(Ec2Error::Incomplete {
                        operation: "CreateSubnet",
                        resource: what.clone(),
                        field: "SubnetId",
                    })?
                    .to_owned();
                self.kept.subnets.insert(az.clone(), id.clone());
                if *public {
                    self.map_public_ip(&id, true).await?;
                }
                Ok(Some(format!("created subnet {az} {id}")))
            }
            Action::SetMapPublicIp {
                subnet_id, public, ..
            } => {
                self.map_public_ip(subnet_id, *public).await?;
                Ok(None)
            }
            Action::CreateRouteTable { public, subnets } => {
                let vpc = need(&self.kept.vpc, "the vpc")?.to_owned();
                let out = settle(|| async {
                    c.create_route_table()
                        .vpc_id(&vpc)
                        .tag_specifications(tag_spec(
                            ResourceType::RouteTable,
                            &d.tags(&ResourceKey::RouteTable),
                        ))
                        .send()
                        .await
                        .map_err(aws_error(
                            "CreateRouteTable",
                            format!("route table in {vpc}"),
                        ))
                })
                .await?;
                let id = out
                    .route_table()
                    .and_then(|r| r.route_table_id())
                    .ok_or(Ec2Error::Incomplete {
                        operation: "CreateRouteTable",
                        resource: format!("route table in {vpc}"),
                        field: "RouteTableId",
                    })?
                    .to_owned();
                self.kept.route_table = Some(id.clone());
                if *public {
                    self.default_route(&id, false).await?;
                }
                for az in subnets {
                    self.associate(az, None).await?;
                }
                Ok(Some(format!("created route table {id}")))
            }
            Action::SetDefaultRoute {
                route_table_id,
                replace,
            } => {
                self.default_route(route_table_id, *replace).await?;
                Ok(None)
            }
            Action::RemoveDefaultRoute { route_table_id } => {
                c.delete_route()
                    .route_table_id(route_table_id)
                    .destination_cidr_block("0.0.0.0/0")
                    .send()
                    .await
                    .map_err(aws_error(
                        "DeleteRoute",
                        format!("0.0.0.0/0 of route table {route_table_id}"),
                    ))?;
                Ok(None)
            }
            Action::AssociateSubnet { az, replace } => {
                self.associate(az, replace.as_deref()).await?;
                Ok(None)
            }
            Action::CreateSecurityGroup { rules } => {
                let vpc = need(&self.kept.vpc, "the vpc")?.to_owned();
                let name = d.security_group_name();
                let out = settle(|| async {
                    c.create_security_group()
                        .group_name(&name)
                        .description(format!("kraftops nodes of cluster {}", d.cluster))
                        .vpc_id(&vpc)
                        .tag_specifications(tag_spec(
                            ResourceType::SecurityGroup,
                            &d.tags(&ResourceKey::SecurityGroup),
                        ))
                        .send()
                        .await
                        .map_err(aws_error("CreateSecurityGroup", format!("{name} in {vpc}")))
                })
                .await?;
                let id = out
                    .group_id()
                    .ok_or(Ec2Error::Incomplete {
                        operation: "CreateSecurityGroup",
                        resource: name.clone(),
                        field: "GroupId",
                    })?
                    .to_owned();
                self.kept.security_group = Some(id.clone());
                self.authorize(&id, rules).await?;
                Ok(Some(format!(
                    "created security group {id} ({} ingress rules)",
                    rules.len()
                )))
            }
            Action::AuthorizeIngress { group_id, rules } => {
                self.authorize(group_id, rules).await?;
                Ok(None)
            }
            Action::RevokeIngress {
                group_id,
                permissions,
            } => {
                c.revoke_security_group_ingress()
                    .group_id(group_id)
                    .set_ip_permissions(Some(permissions.iter().map(revoke_permission).collect()))
                    .send()
                    .await
                    .map_err(aws_error(
                        "RevokeSecurityGroupIngress",
                        format!("security group {group_id}"),
                    ))?;
                Ok(None)
            }
            Action::SetTags { what, id, tags } => {
                settle(|| async {
                    c.create_tags()
                        .resources(id)
                        .set_tags(Some(tag_list(tags)))
                        .send()
                        .await
                        .map_err(aws_error("CreateTags", format!("{what} {id}")))
                })
                .await?;
                Ok(None)
            }
            Action::TerminateInstance { what, id, .. } => {
                c.terminate_instances()
                    .instance_ids(id)
                    .send()
                    .await
                    .map_err(aws_error(
                        "TerminateInstances",
                        format!("instance {what} {id}"),
                    ))?;
                self.terminating.push(id.clone());
                Ok(None)
            }
            Action::AwaitTermination { instances } => {
                let mut ids = std::mem::take(&mut self.terminating);
                ids.extend(instances.iter().cloned());
                self.ec2
                    .wait_for(&ids, TERMINATE, progress, |i| {
                        i.state == InstanceState::Terminated
                    })
                    .await?;
                Ok(None)
            }
            Action::RunInstance { node, .. } => {
                let id = self.run_instance(node).await?;
                self.launched.push(id.clone());
                Ok(Some(format!("created instance {node} {id}")))
            }
            Action::ChangeInstanceType {
                node,
                instance_id,
                to,
                ..
            } => {
                let ids = [instance_id.clone()];
                let what = format!("instance {node} {instance_id}");
                c.stop_instances()
                    .instance_ids(instance_id)
                    .send()
                    .await
                    .map_err(aws_error("StopInstances", &what))?;
                self.ec2
                    .wait_for(&ids, "to stop", progress, |i| {
                        i.state == InstanceState::Stopped
                    })
                    .await?;
                c.modify_instance_attribute()
                    .instance_id(instance_id)
                    .instance_type(AttributeValue::builder().value(to).build())
                    .send()
                    .await
                    .map_err(aws_error(
                        "ModifyInstanceAttribute",
                        format!("{what} instance type {to}"),
                    ))?;
                c.start_instances()
                    .instance_ids(instance_id)
                    .send()
                    .await
                    .map_err(aws_error("StartInstances", &what))?;
                // One machine at a time: the next one stops only when this
                // one runs again.
                self.ec2
                    .wait_for(&ids, "to be running", progress, |i| {
                        i.state == InstanceState::Running
                    })
                    .await?;
                Ok(Some(format!("changed {node} to {to}")))
            }
            Action::StartInstance {
                node, instance_id, ..
            } => {
                let ids = [instance_id.clone()];
                self.ec2
                    .wait_for(&ids, "to stop", progress, |i| {
                        i.state != InstanceState::Stopping
                    })
                    .await?;
                c.start_instances()
                    .instance_ids(instance_id)
                    .send()
                    .await
                    .map_err(aws_error(
                        "StartInstances",
                        format!("instance {node} {instance_id}"),
                    ))?;
                self.launched.push(instance_id.clone());
                Ok(None)
            }
            Action::DeleteSecurityGroup { id } => {
                settle(|| async {
                    c.delete_security_group()
                        .group_id(id)
                        .send()
                        .await
                        .map_err(aws_error(
                            "DeleteSecurityGroup",
                            format!("security group {id}"),
                        ))
                })
                .await?;
                Ok(None)
            }
            Action::DeleteSubnet { what, id } => {
                settle(|| async {
                    c.delete_subnet()
                        .subnet_id(id)
                        .send()
                        .await
                        .map_err(aws_error("DeleteSubnet", format!("subnet {what} {id}")))
                })
                .await?;
                Ok(None)
            }
            Action::DeleteRouteTable { id } => {
                // Associations with subnets that are not the cluster's would
                // block the delete; the cluster's own went with their subnets.
                let tables = c
                    .describe_route_tables()
                    .route_table_ids(id)
                    .send()
                    .await
                    .map_err(aws_error(
                        "DescribeRouteTables",
                        format!("route table {id}"),
                    ))?;
                for assoc in tables
                    .route_tables()
                    .iter()
                    .flat_map(|r| r.associations())
                    .filter(|a| a.main() != Some(true))
                    .filter_map(|a| a.route_table_association_id())
                {
                    c.disassociate_route_table()
                        .association_id(assoc)
                        .send()
                        .await
                        .map_err(aws_error(
                            "DisassociateRouteTable",
                            format!("{assoc} of route table {id}"),
                        ))?;
                }
                settle(|| async {
                    c.delete_route_table()
                        .route_table_id(id)
                        .send()
                        .await
                        .map_err(aws_error("DeleteRouteTable", format!("route table {id}")))
                })
                .await?;
                Ok(None)
            }
            Action::DeleteInternetGateway { id, attached_to } => {
                for vpc in attached_to {
                    settle(|| async {
                        c.detach_internet_gateway()
                            .internet_gateway_id(id)
                            .vpc_id(vpc)
                            .send()
                            .await
                            .map_err(aws_error(
                                "DetachInternetGateway",
                                format!("internet gateway {id} from {vpc}"),
                            ))
                    })
                    .await?;
                }
                settle(|| async {
                    c.delete_internet_gateway()
                        .internet_gateway_id(id)
                        .send()
                        .await
                        .map_err(aws_error(
                            "DeleteInternetGateway",
                            format!("internet gateway {id}"),
                        ))
                })
                .await?;
                Ok(None)
            }
            Action::DeleteVpc { id } => {
                settle(|| async {
                    c.delete_vpc()
                        .vpc_id(id)
                        .send()
                        .await
                        .map_err(aws_error("DeleteVpc", format!("vpc {id}")))
                })
                .await?;
                Ok(None)
            }
        }
    }

    async fn enable_dns(&self, vpc: &str) -> Result<(), Ec2Error> {
        let c = &self.ec2.client;
        // One attribute per call (EC2's rule); support before hostnames.
        settle(|| async {
            c.modify_vpc_attribute()
                .vpc_id(vpc)
                .enable_dns_support(yes())
                .send()
                .await
                .map_err(aws_error(
                    "ModifyVpcAttribute",
                    format!("vpc {vpc} enableDnsSupport"),
                ))
        })
        .await?;
        settle(|| async {
            c.modify_vpc_attribute()
                .vpc_id(vpc)
                .enable_dns_hostnames(yes())
                .send()
                .await
                .map_err(aws_error(
                    "ModifyVpcAttribute",
                    format!("vpc {vpc} enableDnsHostnames"),
                ))
        })
        .await?;
        Ok(())
    }

    async fn attach_igw(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        let c = &self.ec2.client;
        settle(|| async {
            c.attach_internet_gateway()
                .internet_gateway_id(igw)
                .vpc_id(vpc)
                .send()
                .await
                .map_err(aws_error(
                    "AttachInternetGateway",
                    format!("internet gateway {igw} to {vpc}"),
                ))
        })
        .await?;
        Ok(())
    }

    async fn map_public_ip(&self, subnet: &str, public: bool) -> Result<(), Ec2Error> {
        let c = &self.ec2.client;
        settle(|| async {
            c.modify_subnet_attribute()
                .subnet_id(subnet)
                .map_public_ip_on_launch(boolean(public))
                .send()
                .await
                .map_err(aws_error(
                    "ModifySubnetAttribute",
                    format!("subnet {subnet} MapPublicIpOnLaunch"),
                ))
        })
        .await?;
        Ok(())
    }

    async fn default_route(&self, table: &str, replace: bool) -> Result<(), Ec2Error> {
        let c = &self.ec2.client;
        let igw = need(&self.kept.internet_gateway, "the internet gateway")?;
        let what = format!("0.0.0.0/0 → {igw} in route table {table}");
        if replace {
            c.replace_route()
                .route_table_id(table)
                .destination_cidr_block("0.0.0.0/0")
                .gateway_id(igw)
                .send()
                .await
                .map_err(aws_error("ReplaceRoute", &what))?;
        } else {
            settle(|| async {
                c.create_route()
                    .route_table_id(table)
                    .destination_cidr_block("0.0.0.0/0")
                    .gateway_id(igw)
                    .send()
                    .await
                    .map_err(aws_error("CreateRoute", &what))
            })
            .await?;
        }
        Ok(())
    }

    async fn associate(&self, az: &str, replace: Option<&str>) -> Result<(), Ec2Error> {
        let c = &self.ec2.client;
        let table = need(&self.kept.route_table, "the route table")?;
        let subnet = need(
            &self.kept.subnets.get(az).cloned(),
            &format!("the subnet of {az}"),
        )?
        .to_owned();
        let what = format!("subnet {az} {subnet} with route table {table}");
        match replace {
            Some(association) => {
                c.replace_route_table_association()
                    .association_id(association)
                    .route_table_id(table)
                    .send()
                    .await
                    .map_err(aws_error("ReplaceRouteTableAssociation", &what))?;
            }
            None => {
                settle(|| async {
                    c.associate_route_table()
                        .route_table_id(table)
                        .subnet_id(&subnet)
                        .send()
                        .await
                        .map_err(aws_error("AssociateRouteTable", &what))
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn authorize(&self, group: &str, rules: &[IngressRule]) -> Result<(), Ec2Error> {
        if rules.is_empty() {
            return Ok(());
        }
        let c = &self.ec2.client;
        settle(|| async {
            c.authorize_security_group_ingress()
                .group_id(group)
                .set_ip_permissions(Some(ip_permissions(rules)))
                .send()
                .await
                .map_err(aws_error(
                    "AuthorizeSecurityGroupIngress",
                    format!("security group {group}"),
                ))
        })
        .await?;
        Ok(())
    }

    async fn run_instance(&self, node: &str) -> Result<String, Ec2Error> {
        let d = self.desired;
        let launch = self.launch.ok_or_else(|| Ec2Error::MissingDependency {
            what: "the launch settings (image, key pair, user-data)".to_owned(),
        })?;
        let spec = d.instances.iter().find(|i| i.node == node).ok_or_else(|| {
            Ec2Error::MissingDependency {
                what: format!("node {node} in nodes.yaml"),
            }
        })?;
        let subnet = need(
            &self.kept.subnets.get(&spec.az).cloned(),
            &format!("the subnet of {}", spec.az),
        )?
        .to_owned();
        let group = need(&self.kept.security_group, "the security group")?.to_owned();
        let user_data = launch
            .user_data
            .get(node)
            .ok_or_else(|| Ec2Error::NoUserData {
                node: node.to_owned(),
            })?
            .base64();
        let what = format!("instance {node} {} in {subnet}", spec.address);
        let mut attempt: Vec<String> = Vec::new();
        loop {
            let token = client_token(
                &d.cluster,
                node,
                &attempt.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            let out = settle(|| async {
                self.ec2
                    .client
                    .run_instances()
                    .image_id(&launch.image.id)
                    .instance_type(t::InstanceType::from(spec.instance_type.as_str()))
                    .min_count(1)
                    .max_count(1)
                    .set_key_name(launch.key_pair.clone())
                    .subnet_id(&subnet)
                    .private_ip_address(spec.address.to_string())
                    .security_group_ids(&group)
                    .metadata_options(
                        InstanceMetadataOptionsRequest::builder()
                            .http_tokens(HttpTokensState::Required)
                            .http_endpoint(InstanceMetadataEndpointState::Enabled)
                            .build(),
                    )
                    .block_device_mappings(
                        BlockDeviceMapping::builder()
                            .device_name(&launch.image.root_device_name)
                            .ebs(
                                EbsBlockDevice::builder()
                                    .volume_size(
                                        i32::try_from(launch.root_volume_gib).unwrap_or(i32::MAX),
                                    )
                                    .volume_type(VolumeType::Gp3)
                                    .encrypted(true)
                                    .delete_on_termination(true)
                                    .build(),
                            )
                            .build(),
                    )
                    .user_data(&user_data)
                    .client_token(&token)
                    .tag_specifications(tag_spec(
                        ResourceType::Instance,
                        &d.node_tags(&ResourceKey::Instance, spec),
                    ))
                    .tag_specifications(tag_spec(
                        ResourceType::Volume,
                        &d.node_tags(&ResourceKey::RootVolume, spec),
                    ))
                    .send()
                    .await
                    .map_err(aws_error("RunInstances", &what))
            })
            .await?;
            let instance =
                out.instances()
                    .first()
                    .and_then(instance_of)
                    .ok_or(Ec2Error::Incomplete {
                        operation: "RunInstances",
                        resource: what.clone(),
                        field: "InstanceId",
                    })?;
            if !instance.state.is_gone() {
                return Ok(instance.id);
            }
            // The token was used for a machine of this node that has been
            // terminated since (EC2 remembers tokens for a while): launch
            // with a token that names the gone machine, once.
            if !attempt.is_empty() {
                return Err(Ec2Error::GoneAgain {
                    node: node.to_owned(),
                    token,
                    instance: instance.id,
                    state: instance.state,
                });
            }
            attempt.push(instance.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_stable_short_and_distinct() {
        let a = client_token("kafka-prod", "broker-1", &[]);
        assert_eq!(a, client_token("kafka-prod", "broker-1", &[]));
        assert!(a.len() <= 64 && a.is_ascii(), "{a}");
        assert_ne!(a, client_token("kafka-prod", "broker-2", &[]));
        assert_ne!(a, client_token("other", "broker-1", &[]));
        assert_ne!(a, client_token("kafka-prod", "broker-1", &["i-0123"]));
        // No ambiguity from concatenation.
        assert_ne!(client_token("ab", "c", &[]), client_token("a", "bc", &[]));
    }

    #[test]
    fn rules_become_one_permission_per_port() {
        let rule = |port: u16, cidr: &str| IngressRule {
            port,
            cidr: cidr.into(),
            description: "kraftops: x".into(),
        };
        let perms = ip_permissions(&[
            rule(22, "203.0.113.0/24"),
            rule(9093, "10.0.0.0/16"),
            rule(9093, "203.0.113.0/24"),
        ]);
        assert_eq!(perms.len(), 2);
        assert_eq!(perms[1].from_port(), Some(9093));
        assert_eq!(perms[1].ip_ranges().len(), 2);
        let back: Vec<Permission> = perms.iter().flat_map(permissions_of).collect();
        let pairs: Vec<_> = back
            .iter()
            .filter_map(Permission::tcp_port_from_cidr)
            .collect();
        assert_eq!(
            pairs,
            [
                (22, "203.0.113.0/24"),
                (9093, "10.0.0.0/16"),
                (9093, "203.0.113.0/24")
            ]
        );
    }

    #[test]
    fn user_data_is_not_shown_by_debug() {
        let u = UserData::new("#cloud-config\njoin_token: s3cret\n".into());
        assert_eq!(format!("{u:?}"), "UserData(<33 bytes, redacted>)");
        assert_eq!(u.base64(), "I2Nsb3VkLWNvbmZpZwpqb2luX3Rva2VuOiBzM2NyZXQK");
    }
}
