//! What Kafka reports about cluster-scope resources, as plain data: the
//! snapshot [`Observed`] the planner compares git against, and the ACL and
//! SCRAM enums named and numbered exactly as Kafka names and numbers them
//! (`org.apache.kafka.common.acl.AclOperation`, `…resource.ResourceType`,
//! `…resource.PatternType`, `…acl.AclPermissionType`,
//! `…clients.admin.ScramMechanism`), so the admin client maps wire codes
//! with `from_kafka_code` / `kafka_code` and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::PasswordDigest;

macro_rules! kafka_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal, $kafka:literal;)* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in Kafka's code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value's code on the wire.
            pub fn kafka_code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)*
                }
            }

            /// The value with this wire code; `None` for codes kraftops
            /// does not manage (`UNKNOWN`, `ANY`, filters, newer values).
            pub fn from_kafka_code(code: i8) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)*
                    _ => None,
                }
            }

            /// The name Kafka's tools print, e.g. `TRANSACTIONAL_ID`.
            pub fn kafka_name(self) -> &'static str {
                match self {
                    $($name::$variant => $kafka,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.kafka_name())
            }
        }
    };
}

kafka_enum! {
    /// The type of resource an ACL is about.
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        /// Not declarable in git; only ever seen in Kafka (and removed
        /// from managed principals).
        DelegationToken = 6, "DELEGATION_TOKEN";
        /// Not declarable in git; only ever seen in Kafka.
        User = 7, "USER";
    }
}

kafka_enum! {
    /// How an ACL's resource name matches.
    PatternType {
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
}

kafka_enum! {
    /// What an ACL allows or denies.
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        /// Not declarable in git; only ever seen in Kafka.
        CreateTokens = 13, "CREATE_TOKENS";
        /// Not declarable in git; only ever seen in Kafka.
        DescribeTokens = 14, "DESCRIBE_TOKENS";
        /// Not declarable in git; only ever seen in Kafka (4.0 and later).
        TwoPhaseCommit = 15, "TWO_PHASE_COMMIT";
    }
}

kafka_enum! {
    /// Whether an ACL allows or denies (a deny wins).
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
}

kafka_enum! {
    /// A SCRAM mechanism a credential is stored for.
    ScramMechanism {
        ScramSha256 = 1, "SCRAM-SHA-256";
        ScramSha512 = 2, "SCRAM-SHA-512";
    }
}

impl From<desired_state::AclResource> for ResourceType {
    fn from(r: desired_state::AclResource) -> Self {
        use desired_state::AclResource as R;
        match r {
            R::Topic => ResourceType::Topic,
            R::Group => ResourceType::Group,
            R::Cluster => ResourceType::Cluster,
            R::TransactionalId => ResourceType::TransactionalId,
        }
    }
}

impl From<desired_state::AclPattern> for PatternType {
    fn from(p: desired_state::AclPattern) -> Self {
        match p {
            desired_state::AclPattern::Literal => PatternType::Literal,
            desired_state::AclPattern::Prefixed => PatternType::Prefixed,
        }
    }
}

impl From<desired_state::AclOperation> for Operation {
    fn from(o: desired_state::AclOperation) -> Self {
        use desired_state::AclOperation as O;
        match o {
            O::All => Operation::All,
            O::Read => Operation::Read,
            O::Write => Operation::Write,
            O::Create => Operation::Create,
            O::Delete => Operation::Delete,
            O::Alter => Operation::Alter,
            O::Describe => Operation::Describe,
            O::ClusterAction => Operation::ClusterAction,
            O::DescribeConfigs => Operation::DescribeConfigs,
            O::AlterConfigs => Operation::AlterConfigs,
            O::IdempotentWrite => Operation::IdempotentWrite,
        }
    }
}

impl From<desired_state::AclPermission> for Permission {
    fn from(p: desired_state::AclPermission) -> Self {
        match p {
            desired_state::AclPermission::Allow => Permission::Allow,
            desired_state::AclPermission::Deny => Permission::Deny,
        }
    }
}

/// The name of Kafka's one cluster resource.
pub const CLUSTER_RESOURCE_NAME: &str = "kafka-cluster";

/// The prefix of a SCRAM user's principal.
pub const USER_PRINCIPAL_PREFIX: &str = "User:";

/// One ACL binding, as `DescribeAcls` returns it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// `User:<name>` for SCRAM users.
    pub principal: String,
    pub resource_type: ResourceType,
    /// `kafka-cluster` for the cluster; `*` for every resource of the type.
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub operation: Operation,
    pub permission: Permission,
    /// The client host, `*` for any.
    pub host: String,
}

impl AclBinding {
    /// The SCRAM user this binding is about, if its principal is one user
    /// (`User:*`, every user, is none).
    pub fn user(&self) -> Option<&str> {
        self.principal
            .strip_prefix(USER_PRINCIPAL_PREFIX)
            .filter(|name| *name != "*")
    }
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {} {} ({}) from host {}",
            self.principal,
            self.permission,
            self.operation,
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.host
        )
    }
}

/// A topic as Kafka reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObservedTopic {
    pub partitions: u32,
    /// The replica count of the topic's partitions (of its first partition
    /// if they differ; Kafka creates them equal).
    pub replication_factor: u16,
    /// Configs set on the topic itself (`DescribeConfigs` source
    /// `DYNAMIC_TOPIC_CONFIG`), not inherited defaults.
    pub configs: BTreeMap<String, String>,
    /// Kafka's own `isInternal` flag.
    pub internal: bool,
}

/// One SCRAM credential of a user (`DescribeUserScramCredentials`: Kafka
/// returns the mechanism and iterations, never the password or its hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScramCredentialInfo {
    pub mechanism: ScramMechanism,
    pub iterations: u32,
}

/// What Kafka holds of the resources kraftops manages, read just before
/// planning, plus the caller's own record of the passwords it set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Every topic, by name, internal ones included.
    pub topics: BTreeMap<String, ObservedTopic>,
    /// Every SCRAM user with its credentials, by user name.
    pub scram_users: BTreeMap<String, Vec<ScramCredentialInfo>>,
    /// Every ACL binding.
    pub acls: BTreeSet<AclBinding>,
    /// User quotas by user name (entity `user=<name>`, no client id), each
    /// a map of Kafka's quota key (`producer_byte_rate`, …) to its value.
    pub quotas: BTreeMap<String, BTreeMap<String, f64>>,
    /// Not Kafka's: the caller's record of the [`PasswordDigest`] of the
    /// SCRAM-SHA-512 credential it last set for each user (Kafka cannot
    /// tell which password a credential holds). Record the digest an
    /// upsert carries once it succeeded; forget a user's digest once its
    /// SCRAM-SHA-512 credential is deleted.
    pub password_digests: BTreeMap<String, PasswordDigest>,
}

impl Observed {
    /// Every user Kafka knows of in any way: SCRAM credentials, ACLs with a
    /// `User:` principal, or quotas.
    pub fn known_users(&self) -> BTreeSet<&str> {
        self.scram_users
            .keys()
            .map(String::as_str)
            .chain(self.acls.iter().filter_map(AclBinding::user))
            .chain(self.quotas.keys().map(String::as_str))
            .collect()
    }
}
