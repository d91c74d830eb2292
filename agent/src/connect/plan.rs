//! The connector planner (pure: no IO, the clock passed in): what to do to
//! make Connect hold exactly the connectors git declares.
//!
//! Rules, each tested below:
//! - a declared connector Connect lacks is created in its declared state;
//! - one whose config differs from the declaration (keys Connect adds
//!   itself, such as `name`, left out on both sides) gets the declared
//!   config, which replaces the whole config, so hand-made keys go too;
//! - a connector RUNNING, PAUSED or STOPPED other than declared is resumed,
//!   paused or stopped (a FAILED one declared stopped is stopped);
//! - a connector git does not declare is deleted: connectors are owned by
//!   git, as Strimzi's are. Connect's internal topics are not touched;
//! - a FAILED connector or task is restarted (`includeTasks`,
//!   `onlyFailed`) after `min(n² + n, 60)` minutes, `n` being the restarts
//!   so far (0, 2, 6, 12, … 60 minutes, as Strimzi does); a connector
//!   healthy for `HEALTHY_RESET` forgets its restarts;
//! - a declaration Connect rejected is refused and that connector is left
//!   as it is; one that could not be checked is left as it is too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use desired_state::InFile;
use desired_state::model::{Connector, ConnectorState};
use serde::{Deserialize, Serialize};

use super::client::{ObservedConnector, WorkerState};

/// Config keys Connect writes into a connector's config itself.
pub const CONNECT_ADDED_KEYS: [&str; 1] = ["name"];

/// Seconds a connector must be seen healthy, without a break, before its
/// restart count starts again from zero.
pub const HEALTHY_RESET: u64 = 10 * 60;

/// Seconds to wait after the `restarts`-th restart before the next one:
/// `min(n² + n, 60)` minutes.
pub fn restart_backoff(restarts: u32) -> u64 {
    let n = u64::from(restarts);
    n.saturating_mul(n).saturating_add(n).min(60) * 60
}

/// Whether Connect accepted a declaration it was asked to check.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict {
    /// Accepted, or nothing to check (no create or update needed).
    #[default]
    Accepted,
    /// Connect (or the plugin list) refused it: one line per problem.
    Rejected(Vec<String>),
    /// The check itself failed (Connect unreachable, a conflict): try again
    /// on the next reconcile.
    Unchecked(String),
}

/// One declared connector, as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredConnector {
    pub name: String,
    /// `file:line:col` of the connector's name in the repository.
    pub location: String,
    pub state: ConnectorState,
    /// As declared, values as the text Connect reads.
    pub config: BTreeMap<String, String>,
    pub verdict: Verdict,
}

impl DesiredConnector {
    pub fn from_model(declared: &InFile<Connector>) -> Self {
        let connector = &declared.item.value;
        Self {
            name: connector.name.as_str().to_owned(),
            location: format!("{}:{}", declared.file, connector.name.pos),
            state: connector.state,
            config: connector
                .config
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                .collect(),
            verdict: Verdict::Accepted,
        }
    }

    /// `connector.class`, if declared (the loader requires it).
    pub fn class(&self) -> Option<&str> {
        self.config.get("connector.class").map(String::as_str)
    }
}

/// The keys whose values differ between the declaration and what Connect
/// holds, keys Connect adds itself left out. Names only: values may be
/// secrets.
pub fn config_changes(
    desired: &BTreeMap<String, String>,
    observed: &BTreeMap<String, String>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = desired.keys().chain(observed.keys()).collect();
    keys.into_iter()
        .filter(|k| !CONNECT_ADDED_KEYS.contains(&k.as_str()))
        .filter(|k| desired.get(*k) != observed.get(*k))
        .cloned()
        .collect()
}

/// Whether applying `desired` would write its config (create or update):
/// the declarations Connect must validate first.
pub fn needs_write(desired: &DesiredConnector, observed: Option<&ObservedConnector>) -> bool {
    match observed {
        None => true,
        Some(o) => !config_changes(&desired.config, &o.config).is_empty(),
    }
}

/// One step of a plan. Applied in the order `plan` returns them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ConnectorAction {
    /// Not applied: Connect rejected the declaration.
    Refuse {
        name: String,
        location: String,
        problems: Vec<String>,
    },
    Delete {
        name: String,
    },
    Create {
        name: String,
        config: BTreeMap<String, String>,
        state: ConnectorState,
    },
    Update {
        name: String,
        config: BTreeMap<String, String>,
        /// The keys that change (added, removed or different).
        changed: Vec<String>,
    },
    SetState {
        name: String,
        from: String,
        to: ConnectorState,
    },
    RestartFailed {
        name: String,
        /// 1 for the first restart since the connector was last healthy.
        attempt: u32,
        /// `connector` and/or `task N`, as observed.
        failed: Vec<String>,
    },
}

impl ConnectorAction {
    pub fn name(&self) -> &str {
        match self {
            ConnectorAction::Refuse { name, .. }
            | ConnectorAction::Delete { name }
            | ConnectorAction::Create { name, .. }
            | ConnectorAction::Update { name, .. }
            | ConnectorAction::SetState { name, .. }
            | ConnectorAction::RestartFailed { name, .. } => name,
        }
    }

    /// The stable apply order: deletions first (they free names and
    /// workers), then creations, updates, state changes, restarts.
    fn rank(&self) -> u8 {
        match self {
            ConnectorAction::Refuse { .. } => 0,
            ConnectorAction::Delete { .. } => 1,
            ConnectorAction::Create { .. } => 2,
            ConnectorAction::Update { .. } => 3,
            ConnectorAction::SetState { .. } => 4,
            ConnectorAction::RestartFailed { .. } => 5,
        }
    }
}

/// One line for a status or a log; no config values.
impl fmt::Display for ConnectorAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectorAction::Refuse {
                location, problems, ..
            } => write!(f, "refused ({location}): {}", problems.join("; ")),
            ConnectorAction::Delete { .. } => f.write_str("deleted (not declared in git)"),
            ConnectorAction::Create { state, .. } => {
                write!(f, "created {}", state_word(*state))
            }
            ConnectorAction::Update { changed, .. } => {
                write!(f, "config updated ({})", changed.join(", "))
            }
            ConnectorAction::SetState { from, to, .. } => {
                write!(f, "{from} -> {}", state_word(*to))
            }
            ConnectorAction::RestartFailed {
                attempt, failed, ..
            } => write!(f, "restart {attempt} of failed {}", failed.join(", ")),
        }
    }
}

fn state_word(state: ConnectorState) -> &'static str {
    match state {
        ConnectorState::Running => "RUNNING",
        ConnectorState::Paused => "PAUSED",
        ConnectorState::Stopped => "STOPPED",
    }
}

/// Restart bookkeeping for one connector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartRecord {
    /// Restarts since the connector was last healthy for `HEALTHY_RESET`.
    pub restarts: u32,
    /// Unix seconds of the last restart.
    pub last_restart: Option<u64>,
    /// Since when the connector has been seen healthy without a break.
    pub healthy_since: Option<u64>,
}

/// What the reconciler remembers between rounds about restarts. The
/// caller keeps it (the coordinator in its state directory, so a restart
/// of the coordinator does not start the backoff over).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartMemory {
    records: BTreeMap<String, RestartRecord>,
}

impl RestartMemory {
    pub fn record(&self, name: &str) -> Option<&RestartRecord> {
        self.records.get(name)
    }

    /// When the next restart of `name` is allowed (Unix seconds); `None`
    /// when it has never been restarted, i.e. at once.
    pub fn next_restart_at(&self, name: &str) -> Option<u64> {
        let record = self.records.get(name)?;
        let last = record.last_restart?;
        Some(last.saturating_add(restart_backoff(record.restarts)))
    }

    pub fn record_restart(&mut self, name: &str, now: u64) {
        let record = self.records.entry(name.to_owned()).or_default();
        record.restarts = record.restarts.saturating_add(1);
        record.last_restart = Some(now);
        record.healthy_since = None;
    }

    /// Takes in what Connect shows: a connector healthy (RUNNING, PAUSED
    /// or STOPPED, no task FAILED or UNASSIGNED) since `HEALTHY_RESET`
    /// forgets its restarts; anything else breaks its healthy stretch; a
    /// connector that no longer exists is forgotten.
    pub fn observe(&mut self, observed: &BTreeMap<String, ObservedConnector>, now: u64) {
        self.records.retain(|name, _| observed.contains_key(name));
        for (name, connector) in observed {
            let healthy = connector.status.as_ref().is_some_and(|s| {
                matches!(
                    s.connector.state,
                    WorkerState::Running | WorkerState::Paused | WorkerState::Stopped
                ) && s
                    .tasks
                    .iter()
                    .all(|t| !matches!(t.state, WorkerState::Failed | WorkerState::Unassigned))
            });
            if !healthy {
                if let Some(record) = self.records.get_mut(name) {
                    record.healthy_since = None;
                }
                continue;
            }
            // Only connectors with restarts to forget are tracked.
            let Some(record) = self.records.get_mut(name) else {
                continue;
            };
            let since = *record.healthy_since.get_or_insert(now);
            if now.saturating_sub(since) >= HEALTHY_RESET {
                self.records.remove(name);
            }
        }
    }
}

/// The actions that make Connect match `desired`, in apply order.
pub fn plan(
    desired: &[DesiredConnector],
    observed: &BTreeMap<String, ObservedConnector>,
    now: u64,
    memory: &RestartMemory,
) -> Vec<ConnectorAction> {
    let mut actions = Vec::new();
    let mut declared = BTreeSet::new();
    for d in desired {
        // The loader refuses duplicates; should one slip through, the
        // first declaration wins rather than two fighting each round.
        if !declared.insert(d.name.as_str()) {
            continue;
        }
        match &d.verdict {
            Verdict::Accepted => {}
            Verdict::Rejected(problems) => {
                actions.push(ConnectorAction::Refuse {
                    name: d.name.clone(),
                    location: d.location.clone(),
                    problems: problems.clone(),
                });
                continue;
            }
            Verdict::Unchecked(_) => continue,
        }
        let Some(o) = observed.get(&d.name) else {
            actions.push(ConnectorAction::Create {
                name: d.name.clone(),
                config: d.config.clone(),
                state: d.state,
            });
            continue;
        };
        let changed = config_changes(&d.config, &o.config);
        if !changed.is_empty() {
            actions.push(ConnectorAction::Update {
                name: d.name.clone(),
                config: d.config.clone(),
                changed,
            });
        }
        // No status yet (just created, or a rebalance): the next round
        // sees one.
        let Some(status) = &o.status else { continue };
        let current = &status.connector.state;
        let state_matches = matches!(
            (d.state, current),
            (ConnectorState::Running, WorkerState::Running)
                | (ConnectorState::Paused, WorkerState::Paused)
                | (ConnectorState::Stopped, WorkerState::Stopped)
        );
        let settable = matches!(
            current,
            WorkerState::Running | WorkerState::Paused | WorkerState::Stopped
        ) || (d.state == ConnectorState::Stopped && *current == WorkerState::Failed);
        if !state_matches && settable {
            actions.push(ConnectorAction::SetState {
                name: d.name.clone(),
                from: current.to_string(),
                to: d.state,
            });
        }
        let stopping = d.state == ConnectorState::Stopped;
        if status.has_failed() && !stopping {
            let due = memory.next_restart_at(&d.name).is_none_or(|at| now >= at);
            if due {
                let mut failed = Vec::new();
                if *current == WorkerState::Failed {
                    failed.push("connector".to_owned());
                }
                failed.extend(
                    status
                        .tasks
                        .iter()
                        .filter(|t| t.state == WorkerState::Failed)
                        .map(|t| format!("task {}", t.id)),
                );
                actions.push(ConnectorAction::RestartFailed {
                    name: d.name.clone(),
                    attempt: memory
                        .record(&d.name)
                        .map_or(0, |r| r.restarts)
                        .saturating_add(1),
                    failed,
                });
            }
        }
    }
    for name in observed.keys() {
        if !declared.contains(name.as_str()) {
            actions.push(ConnectorAction::Delete { name: name.clone() });
        }
    }
    actions.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.name().cmp(b.name())));
    actions
}

#[cfg(test)]
mod tests {
    use super::super::client::{ConnectorStatus, InstanceStatus, TaskStatus};
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn desired(name: &str, state: ConnectorState) -> DesiredConnector {
        DesiredConnector {
            name: name.to_owned(),
            location: format!("connectors/{name}.yaml:3:11"),
            state,
            config: config(&[("connector.class", "C"), ("topic", "t")]),
            verdict: Verdict::Accepted,
        }
    }

    fn status(connector: &str, tasks: &[&str]) -> ConnectorStatus {
        ConnectorStatus {
            connector: InstanceStatus {
                state: WorkerState::from(connector.to_owned()),
                worker_id: "w:8083".into(),
                trace: None,
            },
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, s)| TaskStatus {
                    id: i as i64,
                    state: WorkerState::from((*s).to_owned()),
                    worker_id: "w:8083".into(),
                    trace: None,
                })
                .collect(),
        }
    }

    /// Connect's view of `d`: its config plus `name`, in `state`.
    fn observed_as(
        d: &DesiredConnector,
        connector: &str,
        tasks: &[&str],
    ) -> (String, ObservedConnector) {
        let mut config = d.config.clone();
        config.insert("name".into(), d.name.clone());
        (
            d.name.clone(),
            ObservedConnector {
                config,
                status: Some(status(connector, tasks)),
            },
        )
    }

    fn names(actions: &[ConnectorAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| format!("{}: {a}", a.name()))
            .collect()
    }

    #[test]
    fn a_missing_connector_is_created_in_its_declared_state() {
        let d = [
            desired("a", ConnectorState::Running),
            desired("b", ConnectorState::Paused),
            desired("c", ConnectorState::Stopped),
        ];
        let actions = plan(&d, &BTreeMap::new(), 0, &RestartMemory::default());
        assert_eq!(
            names(&actions),
            [
                "a: created RUNNING",
                "b: created PAUSED",
                "c: created STOPPED"
            ]
        );
        assert_eq!(
            actions[0],
            ConnectorAction::Create {
                name: "a".into(),
                config: d[0].config.clone(),
                state: ConnectorState::Running
            }
        );
    }

    #[test]
    fn a_matching_connector_needs_nothing_the_name_connect_adds_is_ignored() {
        let d = [desired("a", ConnectorState::Running)];
        let observed = BTreeMap::from([observed_as(&d[0], "RUNNING", &["RUNNING"])]);
        assert!(plan(&d, &observed, 0, &RestartMemory::default()).is_empty());
        assert!(!needs_write(&d[0], observed.get("a")));
        // A declared `name` (equal to the connector's, the loader checks) too.
        let mut with_name = d[0].clone();
        with_name.config.insert("name".into(), "a".into());
        assert!(plan(&[with_name], &observed, 0, &RestartMemory::default()).is_empty());
    }

    #[test]
    fn a_changed_added_or_removed_key_is_an_update_of_the_whole_config() {
        let d = [desired("a", ConnectorState::Running)];
        let (name, mut o) = observed_as(&d[0], "RUNNING", &["RUNNING"]);
        o.config.insert("topic".into(), "old".into());
        o.config.insert("by.hand".into(), "x".into());
        let mut declared = d[0].clone();
        declared.config.insert("tasks.max".into(), "2".into());
        let observed = BTreeMap::from([(name, o)]);
        assert!(needs_write(&declared, observed.get("a")));
        let actions = plan(&[declared.clone()], &observed, 0, &RestartMemory::default());
        assert_eq!(
            actions,
            [ConnectorAction::Update {
                name: "a".into(),
                config: declared.config,
                changed: vec!["by.hand".into(), "tasks.max".into(), "topic".into()],
            }]
        );
        assert_eq!(
            names(&actions),
            ["a: config updated (by.hand, tasks.max, topic)"]
        );
    }

    #[test]
    fn the_state_is_set_to_the_declared_one() {
        use ConnectorState::{Paused, Running, Stopped};
        let cases = [
            (Running, "PAUSED", Some("PAUSED -> RUNNING")),
            (Running, "STOPPED", Some("STOPPED -> RUNNING")),
            (Paused, "RUNNING", Some("RUNNING -> PAUSED")),
            (Paused, "STOPPED", Some("STOPPED -> PAUSED")),
            (Stopped, "RUNNING", Some("RUNNING -> STOPPED")),
            (Stopped, "PAUSED", Some("PAUSED -> STOPPED")),
            (Stopped, "FAILED", Some("FAILED -> STOPPED")),
            (Running, "RUNNING", None),
            (Paused, "PAUSED", None),
            (Stopped, "STOPPED", None),
            // Transient states are waited out.
            (Running, "UNASSIGNED", None),
            (Paused, "RESTARTING", None),
            (Paused, "SOMETHING-NEW", None),
        ];
        for (declared, current, expected) in cases {
            let d = [desired("a", declared)];
            let observed = BTreeMap::from([observed_as(&d[0], current, &[])]);
            let actions = plan(&d, &observed, 0, &RestartMemory::default());
            let got: Vec<String> = actions
                .iter()
                .filter(|a| matches!(a, ConnectorAction::SetState { .. }))
                .map(ToString::to_string)
                .collect();
            assert_eq!(
                got,
                expected.into_iter().map(str::to_owned).collect::<Vec<_>>(),
                "{declared:?} observed {current}"
            );
        }
    }

    #[test]
    fn a_connector_without_a_status_yet_is_left_to_the_next_round() {
        let d = [desired("a", ConnectorState::Paused)];
        let (name, mut o) = observed_as(&d[0], "RUNNING", &[]);
        o.status = None;
        let actions = plan(
            &d,
            &BTreeMap::from([(name, o)]),
            0,
            &RestartMemory::default(),
        );
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn connectors_not_in_git_are_deleted() {
        let d = [desired("kept", ConnectorState::Running)];
        let observed = BTreeMap::from([
            observed_as(&d[0], "RUNNING", &["RUNNING"]),
            observed_as(&desired("by-hand", ConnectorState::Running), "RUNNING", &[]),
            observed_as(&desired("old", ConnectorState::Running), "FAILED", &[]),
        ]);
        let actions = plan(&d, &observed, 0, &RestartMemory::default());
        assert_eq!(
            actions,
            [
                ConnectorAction::Delete {
                    name: "by-hand".into()
                },
                ConnectorAction::Delete { name: "old".into() },
            ]
        );
        // And an empty declaration deletes everything.
        assert_eq!(plan(&[], &observed, 0, &RestartMemory::default()).len(), 3);
    }

    #[test]
    fn a_rejected_declaration_is_refused_and_its_connector_left_as_it_is() {
        let mut d = desired("a", ConnectorState::Paused);
        d.config.insert("topic".into(), "new".into());
        d.verdict = Verdict::Rejected(vec!["topic: bad".into()]);
        // Existing, different config, wrong state, failed: nothing is done.
        let observed = BTreeMap::from([observed_as(
            &desired("a", ConnectorState::Running),
            "RUNNING",
            &["FAILED"],
        )]);
        let actions = plan(
            std::slice::from_ref(&d),
            &observed,
            0,
            &RestartMemory::default(),
        );
        assert_eq!(
            actions,
            [ConnectorAction::Refuse {
                name: "a".into(),
                location: "connectors/a.yaml:3:11".into(),
                problems: vec!["topic: bad".into()],
            }]
        );
        // Missing from Connect: not created either.
        let actions = plan(&[d], &BTreeMap::new(), 0, &RestartMemory::default());
        assert!(matches!(actions[..], [ConnectorAction::Refuse { .. }]));
    }

    #[test]
    fn an_unchecked_declaration_is_left_as_it_is_and_not_deleted() {
        let mut d = desired("a", ConnectorState::Running);
        d.verdict = Verdict::Unchecked("Connect did not answer".into());
        let observed = BTreeMap::from([observed_as(&d, "PAUSED", &[])]);
        assert!(plan(&[d.clone()], &observed, 0, &RestartMemory::default()).is_empty());
        assert!(plan(&[d], &BTreeMap::new(), 0, &RestartMemory::default()).is_empty());
    }

    #[test]
    fn failed_connectors_and_tasks_are_restarted_naming_what_failed() {
        let d = [
            desired("a", ConnectorState::Running),
            desired("b", ConnectorState::Running),
            desired("c", ConnectorState::Paused),
        ];
        let observed = BTreeMap::from([
            observed_as(&d[0], "RUNNING", &["RUNNING", "FAILED", "FAILED"]),
            observed_as(&d[1], "FAILED", &[]),
            observed_as(&d[2], "PAUSED", &["FAILED"]),
        ]);
        let actions = plan(&d, &observed, 0, &RestartMemory::default());
        assert_eq!(
            names(&actions),
            [
                "a: restart 1 of failed task 1, task 2",
                "b: restart 1 of failed connector",
                "c: restart 1 of failed task 0",
            ]
        );
    }

    #[test]
    fn a_failed_connector_declared_stopped_is_stopped_not_restarted() {
        let d = [desired("a", ConnectorState::Stopped)];
        let observed = BTreeMap::from([observed_as(&d[0], "FAILED", &["FAILED"])]);
        let actions = plan(&d, &observed, 0, &RestartMemory::default());
        assert_eq!(names(&actions), ["a: FAILED -> STOPPED"]);
    }

    #[test]
    fn apply_order_is_delete_create_update_state_restart_then_name() {
        let mut changed = desired("b-update", ConnectorState::Running);
        let observed_changed = observed_as(&changed, "RUNNING", &["FAILED"]);
        changed.config.insert("topic".into(), "new".into());
        let paused = desired("a-pause", ConnectorState::Paused);
        let d = [
            changed,
            paused.clone(),
            desired("z-create", ConnectorState::Running),
            desired("c-create", ConnectorState::Running),
        ];
        let observed = BTreeMap::from([
            observed_changed,
            observed_as(&paused, "RUNNING", &[]),
            observed_as(&desired("x-gone", ConnectorState::Running), "RUNNING", &[]),
        ]);
        let actions = plan(&d, &observed, 0, &RestartMemory::default());
        assert_eq!(
            names(&actions),
            [
                "x-gone: deleted (not declared in git)",
                "c-create: created RUNNING",
                "z-create: created RUNNING",
                "b-update: config updated (topic)",
                "a-pause: RUNNING -> PAUSED",
                "b-update: restart 1 of failed task 0",
            ]
        );
    }

    #[test]
    fn the_first_declaration_of_a_name_wins() {
        let first = desired("a", ConnectorState::Running);
        let mut second = desired("a", ConnectorState::Paused);
        second.config.insert("topic".into(), "other".into());
        let actions = plan(
            &[first, second],
            &BTreeMap::new(),
            0,
            &RestartMemory::default(),
        );
        assert_eq!(names(&actions), ["a: created RUNNING"]);
    }

    #[test]
    fn backoff_is_n_squared_plus_n_minutes_capped_at_an_hour() {
        let minutes: Vec<u64> = (0..12).map(|n| restart_backoff(n) / 60).collect();
        assert_eq!(minutes, [0, 2, 6, 12, 20, 30, 42, 56, 60, 60, 60, 60]);
        assert_eq!(restart_backoff(u32::MAX), 3600);
    }

    /// Runs rounds at `times` (seconds) with the connector failed at each:
    /// the times a restart was planned (and recorded, as `reconcile` does).
    fn restarts_at(times: impl IntoIterator<Item = u64>, memory: &mut RestartMemory) -> Vec<u64> {
        let d = [desired("a", ConnectorState::Running)];
        let observed = BTreeMap::from([observed_as(&d[0], "RUNNING", &["FAILED"])]);
        let mut restarted = Vec::new();
        for now in times {
            memory.observe(&observed, now);
            for action in plan(&d, &observed, now, memory) {
                if let ConnectorAction::RestartFailed { attempt, .. } = action {
                    assert_eq!(attempt as usize, restarted.len() + 1);
                    memory.record_restart("a", now);
                    restarted.push(now);
                }
            }
        }
        restarted
    }

    #[test]
    fn restarts_follow_the_backoff_sequence() {
        let mut memory = RestartMemory::default();
        // A round every 30 s for three hours.
        let restarted = restarts_at((0..=360).map(|i| i * 30), &mut memory);
        let minutes: Vec<u64> = restarted.iter().map(|s| s / 60).collect();
        // Gaps of 0 (at once), 2, 6, 12, 20, 30, 42, 56, 60, 60 minutes.
        assert_eq!(minutes, [0, 2, 8, 20, 40, 70, 112, 168]);
        assert_eq!(memory.record("a").map(|r| r.restarts), Some(8));
        assert_eq!(memory.next_restart_at("a"), Some((168 + 60) * 60));
    }

    #[test]
    fn a_connector_healthy_for_a_while_forgets_its_restarts() {
        let d = desired("a", ConnectorState::Running);
        let failed = BTreeMap::from([observed_as(&d, "RUNNING", &["FAILED"])]);
        let healthy = BTreeMap::from([observed_as(&d, "RUNNING", &["RUNNING"])]);
        let mut memory = RestartMemory::default();
        assert_eq!(restarts_at([0, 120, 480], &mut memory), [0, 120, 480]);
        assert_eq!(memory.record("a").map(|r| r.restarts), Some(3));

        // Healthy, but not long enough: still remembered.
        memory.observe(&healthy, 500);
        memory.observe(&healthy, 500 + HEALTHY_RESET - 1);
        assert_eq!(memory.record("a").map(|r| r.restarts), Some(3));
        // A failure breaks the stretch; healthy again starts a new one.
        memory.observe(&failed, 500 + HEALTHY_RESET);
        memory.observe(&healthy, 600 + HEALTHY_RESET);
        memory.observe(&healthy, 600 + 2 * HEALTHY_RESET - 1);
        assert!(memory.record("a").is_some());
        memory.observe(&healthy, 600 + 2 * HEALTHY_RESET);
        assert_eq!(memory.record("a"), None);
        // So the next failure is restarted at once, as attempt 1.
        let now = 700 + 2 * HEALTHY_RESET;
        let actions = plan(std::slice::from_ref(&d), &failed, now, &memory);
        assert!(
            matches!(
                &actions[..],
                [ConnectorAction::RestartFailed { attempt: 1, .. }]
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn unassigned_tasks_are_not_healthy_and_vanished_connectors_are_forgotten() {
        let d = desired("a", ConnectorState::Running);
        let mut memory = RestartMemory::default();
        memory.record_restart("a", 0);
        let unassigned = BTreeMap::from([observed_as(&d, "RUNNING", &["UNASSIGNED"])]);
        memory.observe(&unassigned, 0);
        memory.observe(&unassigned, 2 * HEALTHY_RESET);
        assert!(memory.record("a").is_some());
        memory.observe(&BTreeMap::new(), 2 * HEALTHY_RESET);
        assert_eq!(memory, RestartMemory::default());
    }

    #[test]
    fn config_changes_names_keys_only() {
        let d = config(&[("a", "1"), ("b", "2"), ("name", "x")]);
        let o = config(&[("a", "1"), ("b", "3"), ("c", "4"), ("name", "y")]);
        assert_eq!(config_changes(&d, &o), ["b", "c"]);
    }
}
