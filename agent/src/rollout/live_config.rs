//! Which changes of a broker's `server.properties` Kafka can take at
//! runtime, decided by Kafka itself: `DescribeConfigs` says whether a key
//! is read-only. Pure: the caller fetches the broker's configs and applies
//! the operations.
//!
//! Every live key is set **per broker** (resource `BROKER/<id>`), never as
//! the cluster-wide default: a cluster default would also reach the
//! controllers (which get no broker settings in kraftops' model) and would
//! override a node's own `settings` from `nodes.yaml`, since a dynamic
//! default outranks the static file. Per broker, the value in effect is
//! exactly the file's.

use std::collections::{BTreeMap, BTreeSet};

use crate::kafka::{ConfigEntry, ConfigOp, ConfigSource};

/// What a config change asks of the running broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveChange {
    /// Applied through `IncrementalAlterConfigs`, no restart.
    pub ops: Vec<ConfigOp>,
    /// Keys Kafka cannot take live, each with why: any makes a restart due.
    pub restart_for: Vec<String>,
}

impl LiveChange {
    pub fn needs_restart(&self) -> bool {
        !self.restart_for.is_empty()
    }
}

/// Classifies the change from `before` (the file the running broker matches)
/// to `after` (the file now on disk) against `actual` (the broker's
/// `DescribeConfigs` with synonyms). Also puts back, live, a dynamic
/// override of a key the file sets that someone changed by hand.
pub fn classify(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    actual: &[ConfigEntry],
) -> LiveChange {
    let by_name: BTreeMap<&str, &ConfigEntry> =
        actual.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut change = LiveChange::default();
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let (old, new) = (before.get(key), after.get(key));
        if old == new {
            continue;
        }
        let Some(entry) = by_name.get(key.as_str()) else {
            change.restart_for.push(format!(
                "{key}: not a broker config Kafka reports, so it is read at start"
            ));
            continue;
        };
        if entry.read_only {
            change
                .restart_for
                .push(format!("{key}: read-only, Kafka reads it at start"));
            continue;
        }
        if entry.sensitive {
            change
                .restart_for
                .push(format!("{key}: a sensitive value cannot be checked live"));
            continue;
        }
        match new {
            Some(value) => change.ops.push(ConfigOp::Set {
                name: key.clone(),
                value: value.clone(),
            }),
            None => {
                // Deleting the dynamic override leaves whatever the broker
                // read at start (or a cluster-wide override): only a restart
                // drops a value the old file set.
                let shadowed = entry.synonyms.iter().any(|s| {
                    matches!(
                        s.source,
                        ConfigSource::StaticBroker | ConfigSource::DynamicDefaultBroker
                    )
                });
                if shadowed {
                    change.restart_for.push(format!(
                        "{key}: removed, but the broker still holds the value it started with"
                    ));
                } else {
                    change.ops.push(ConfigOp::Delete { name: key.clone() });
                }
            }
        }
    }
    // Drift: a per-broker override of a key the file sets, changed by hand.
    for entry in actual {
        if entry.source != ConfigSource::DynamicBroker || entry.sensitive {
            continue;
        }
        let Some(wanted) = after.get(&entry.name) else {
            continue;
        };
        let already = change.ops.iter().any(|op| match op {
            ConfigOp::Set { name, .. } | ConfigOp::Delete { name } => name == &entry.name,
        });
        if !already && entry.value.as_deref() != Some(wanted.as_str()) {
            change.ops.push(ConfigOp::Set {
                name: entry.name.clone(),
                value: wanted.clone(),
            });
        }
    }
    change
}

/// The operations that make a broker re-read its listener keystores and
/// truststores from the same paths (Kafka reloads a file whose content
/// changed when its location is set again, KAFKA-14136).
pub fn tls_reload_ops(config: &BTreeMap<String, String>) -> Vec<ConfigOp> {
    config
        .iter()
        .filter(|(key, _)| {
            key.starts_with("listener.name.")
                && !key.starts_with("listener.name.controller.")
                && (key.ends_with(".ssl.keystore.location")
                    || key.ends_with(".ssl.truststore.location"))
        })
        .map(|(key, value)| ConfigOp::Set {
            name: key.clone(),
            value: value.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::ConfigSynonym;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn entry(name: &str, value: &str, read_only: bool, source: ConfigSource) -> ConfigEntry {
        ConfigEntry {
            name: name.to_owned(),
            value: Some(value.to_owned()),
            read_only,
            sensitive: false,
            source,
            synonyms: vec![ConfigSynonym {
                name: name.to_owned(),
                value: Some(value.to_owned()),
                source,
            }],
        }
    }

    fn set(name: &str, value: &str) -> ConfigOp {
        ConfigOp::Set {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    #[test]
    fn a_dynamic_key_is_set_live_and_needs_no_restart() {
        let before = props(&[("log.retention.hours", "168"), ("log.dirs", "/d")]);
        let after = props(&[("log.retention.hours", "72"), ("log.dirs", "/d")]);
        let actual = [
            entry(
                "log.retention.hours",
                "168",
                false,
                ConfigSource::StaticBroker,
            ),
            entry("log.dirs", "/d", true, ConfigSource::StaticBroker),
        ];
        let change = classify(&before, &after, &actual);
        assert_eq!(change.ops, vec![set("log.retention.hours", "72")]);
        assert!(!change.needs_restart());
    }

    #[test]
    fn a_read_only_or_unknown_key_needs_a_restart_and_says_which() {
        let before = props(&[("num.io.threads", "16"), ("log.dirs", "/d")]);
        let after = props(&[
            ("num.io.threads", "8"),
            ("log.dirs", "/e"),
            ("my.plugin.setting", "x"),
        ]);
        let actual = [
            entry("num.io.threads", "16", false, ConfigSource::StaticBroker),
            entry("log.dirs", "/d", true, ConfigSource::StaticBroker),
        ];
        let change = classify(&before, &after, &actual);
        assert_eq!(change.ops, vec![set("num.io.threads", "8")]);
        assert_eq!(
            change.restart_for,
            vec![
                "log.dirs: read-only, Kafka reads it at start".to_owned(),
                "my.plugin.setting: not a broker config Kafka reports, so it is read at start"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn a_sensitive_key_needs_a_restart() {
        let before = props(&[("listener.name.client.ssl.key.password", "a")]);
        let after = props(&[("listener.name.client.ssl.key.password", "b")]);
        let mut e = entry(
            "listener.name.client.ssl.key.password",
            "",
            false,
            ConfigSource::StaticBroker,
        );
        e.sensitive = true;
        e.value = None;
        assert!(classify(&before, &after, &[e]).needs_restart());
    }

    #[test]
    fn a_removed_key_is_deleted_live_only_when_nothing_shadows_it() {
        // Set dynamically after the broker started: deleting the override
        // brings back the default.
        let before = props(&[("log.cleaner.threads", "2")]);
        let after = props(&[]);
        let mut dynamic = entry(
            "log.cleaner.threads",
            "2",
            false,
            ConfigSource::DynamicBroker,
        );
        dynamic.synonyms.push(ConfigSynonym {
            name: "log.cleaner.threads".to_owned(),
            value: Some("1".to_owned()),
            source: ConfigSource::Default,
        });
        let change = classify(&before, &after, &[dynamic.clone()]);
        assert_eq!(
            change.ops,
            vec![ConfigOp::Delete {
                name: "log.cleaner.threads".to_owned()
            }]
        );
        assert!(!change.needs_restart());
        // In the file the broker started with: only a restart drops it.
        dynamic.synonyms.insert(
            1,
            ConfigSynonym {
                name: "log.cleaner.threads".to_owned(),
                value: Some("2".to_owned()),
                source: ConfigSource::StaticBroker,
            },
        );
        let change = classify(&before, &after, &[dynamic]);
        assert!(change.ops.is_empty());
        assert_eq!(
            change.restart_for,
            vec!["log.cleaner.threads: removed, but the broker still holds the value it started with".to_owned()]
        );
    }

    #[test]
    fn a_hand_made_override_of_a_managed_key_is_put_back() {
        let file = props(&[("log.retention.hours", "168"), ("num.io.threads", "16")]);
        let actual = [
            entry(
                "log.retention.hours",
                "1",
                false,
                ConfigSource::DynamicBroker,
            ),
            entry("num.io.threads", "16", false, ConfigSource::DynamicBroker),
            // Not in the file (e.g. a reassignment throttle): left alone.
            entry(
                "leader.replication.throttled.rate",
                "100",
                false,
                ConfigSource::DynamicBroker,
            ),
        ];
        let change = classify(&file, &file, &actual);
        assert_eq!(change.ops, vec![set("log.retention.hours", "168")]);
        assert!(!change.needs_restart());
    }

    #[test]
    fn tls_reload_sets_each_listener_store_location_again() {
        let config = props(&[
            (
                "listener.name.client.ssl.keystore.location",
                "/etc/kafka/tls/node.pem",
            ),
            (
                "listener.name.client.ssl.truststore.location",
                "/etc/kafka/tls/ca.pem",
            ),
            (
                "listener.name.internal.ssl.keystore.location",
                "/etc/kafka/tls/node.pem",
            ),
            (
                "listener.name.controller.ssl.keystore.location",
                "/etc/kafka/tls/node.pem",
            ),
            ("log.dirs", "/d"),
        ]);
        assert_eq!(
            tls_reload_ops(&config),
            vec![
                set(
                    "listener.name.client.ssl.keystore.location",
                    "/etc/kafka/tls/node.pem"
                ),
                set(
                    "listener.name.client.ssl.truststore.location",
                    "/etc/kafka/tls/ca.pem"
                ),
                set(
                    "listener.name.internal.ssl.keystore.location",
                    "/etc/kafka/tls/node.pem"
                ),
            ]
        );
    }
}
