//! The tags that are kraftops-bootstrap's state: every resource it makes
//! carries `kraftops:cluster` and `kraftops:resource`, and is found again by
//! them.

use std::collections::BTreeMap;
use std::fmt;

/// Tags as a sorted map, key → value.
pub type Tags = BTreeMap<String, String>;

/// The cluster a resource belongs to (`cluster.yaml` `name`).
pub const CLUSTER: &str = "kraftops:cluster";
/// Which of the cluster's resources it is, e.g. `vpc` or `subnet-eu-central-1a`.
pub const RESOURCE: &str = "kraftops:resource";
/// On machines and their volumes: the node's name.
pub const NODE: &str = "kraftops:node";
/// On machines: the node's role.
pub const ROLE: &str = "kraftops:role";
/// The console's name column.
pub const NAME: &str = "Name";

/// One of a cluster's resources, as named by its `kraftops:resource` tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKey {
    Vpc,
    InternetGateway,
    RouteTable,
    /// The subnet of one availability zone.
    Subnet(String),
    SecurityGroup,
    /// A node's machine (its node is in the `kraftops:node` tag).
    Instance,
    /// A node's root volume.
    RootVolume,
}

impl ResourceKey {
    /// The `kraftops:resource` tag value.
    pub fn tag_value(&self) -> String {
        match self {
            ResourceKey::Vpc => "vpc".to_owned(),
            ResourceKey::InternetGateway => "igw".to_owned(),
            ResourceKey::RouteTable => "route-table".to_owned(),
            ResourceKey::Subnet(az) => format!("subnet-{az}"),
            ResourceKey::SecurityGroup => "security-group".to_owned(),
            ResourceKey::Instance => "instance".to_owned(),
            ResourceKey::RootVolume => "root-volume".to_owned(),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag_value())
    }
}

/// The tags of one resource: the operator's `aws.tags`, then ours (which win
/// over an `aws.tags` entry of the same key).
pub fn resource_tags(
    cluster: &str,
    extra: &Tags,
    key: &ResourceKey,
    node: Option<(&str, &str)>,
) -> Tags {
    let mut tags = extra.clone();
    let name = match (key, node) {
        (ResourceKey::Instance, Some((node, _))) => format!("{cluster}-{node}"),
        (ResourceKey::RootVolume, Some((node, _))) => format!("{cluster}-{node}-root"),
        _ => format!("{cluster}-{key}"),
    };
    tags.insert(NAME.to_owned(), name);
    tags.insert(CLUSTER.to_owned(), cluster.to_owned());
    tags.insert(RESOURCE.to_owned(), key.tag_value());
    if let Some((node, role)) = node {
        tags.insert(NODE.to_owned(), node.to_owned());
        if *key == ResourceKey::Instance {
            tags.insert(ROLE.to_owned(), role.to_owned());
        }
    }
    tags
}

/// The entries of `want` that `have` lacks or holds with another value.
/// Tags on the resource that are not in `want` are left alone: someone else
/// may have put them there.
pub fn missing(want: &Tags, have: &Tags) -> Tags {
    want.iter()
        .filter(|(k, v)| have.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_win_over_the_operators_tags() {
        let extra: Tags = [
            ("Name".to_owned(), "mine".to_owned()),
            ("Env".to_owned(), "prod".to_owned()),
        ]
        .into_iter()
        .collect();
        let t = resource_tags(
            "kafka-prod",
            &extra,
            &ResourceKey::Instance,
            Some(("broker-1", "broker")),
        );
        assert_eq!(t["Name"], "kafka-prod-broker-1");
        assert_eq!(t["Env"], "prod");
        assert_eq!(t[CLUSTER], "kafka-prod");
        assert_eq!(t[RESOURCE], "instance");
        assert_eq!(t[NODE], "broker-1");
        assert_eq!(t[ROLE], "broker");
        let s = resource_tags(
            "kafka-prod",
            &Tags::new(),
            &ResourceKey::Subnet("eu-central-1a".into()),
            None,
        );
        assert_eq!(s[RESOURCE], "subnet-eu-central-1a");
        assert_eq!(s["Name"], "kafka-prod-subnet-eu-central-1a");
    }

    #[test]
    fn missing_ignores_foreign_tags() {
        let want: Tags = [
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ]
        .into();
        let have: Tags = [
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "3".to_owned()),
            ("c".to_owned(), "x".to_owned()),
        ]
        .into();
        assert_eq!(
            missing(&want, &have),
            [("b".to_owned(), "2".to_owned())].into()
        );
    }
}
