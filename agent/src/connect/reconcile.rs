//! One reconcile of the connectors: list what Connect runs, have Connect
//! validate every declaration about to be written, plan, apply in the
//! plan's order, and report per connector.

use std::collections::{BTreeMap, BTreeSet};

use desired_state::InFile;
use desired_state::model::{Connector, ConnectorState};
use serde::Serialize;

use super::client::{ConnectApi, ConnectError, ConnectorStatus, ObservedConnector, shorten};
use super::plan::{ConnectorAction, DesiredConnector, RestartMemory, Verdict, needs_write, plan};
use crate::error_chain;

/// How much of Connect's answer to a rejected class a refusal keeps (the
/// answer lists every installed plugin).
const CLASS_MESSAGE_LIMIT: usize = 300;

/// The result of one reconcile, for the status API and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnectorsReport {
    /// Connect could not be listed: nothing was done this round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Declared and existing connectors, by name.
    pub connectors: Vec<ConnectorReport>,
}

impl ConnectorsReport {
    pub fn connector(&self, name: &str) -> Option<&ConnectorReport> {
        self.connectors.iter().find(|c| c.name == name)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConnectorReport {
    pub name: String,
    /// `file:line:col` of the declaration; `None` for one git does not declare.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<ConnectorState>,
    /// As Connect reports it (`RUNNING`, `PAUSED`, `FAILED`, …), after
    /// this round's actions; `None` when Connect has no status for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The first line of the connector's failure trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    pub tasks: Vec<TaskReport>,
    /// The last action applied this round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    /// An action or check that failed this round (retried next round).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Connect rejected the declaration: one line per problem. The
    /// connector was left as it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Vec<String>>,
    /// Restarts since it was last healthy for a while.
    pub restarts: u32,
    /// When a failed connector may be restarted next (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_restart_at: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskReport {
    pub id: i64,
    pub state: String,
    pub worker: String,
    /// The first line of the task's failure trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

fn first_line(trace: Option<&String>) -> Option<String> {
    trace
        .and_then(|t| t.lines().next())
        .map(|l| shorten(l.trim(), 500))
}

impl ConnectorReport {
    fn set_status(&mut self, status: Option<&ConnectorStatus>) {
        let Some(status) = status else {
            self.state = None;
            self.worker = None;
            self.trace = None;
            self.tasks.clear();
            return;
        };
        self.state = Some(status.connector.state.to_string());
        self.worker = Some(status.connector.worker_id.clone());
        self.trace = first_line(status.connector.trace.as_ref());
        self.tasks = status
            .tasks
            .iter()
            .map(|t| TaskReport {
                id: t.id,
                state: t.state.to_string(),
                worker: t.worker_id.clone(),
                trace: first_line(t.trace.as_ref()),
            })
            .collect();
    }
}

/// Whether Connect has a connector class called `class`: its full name,
/// its simple name, or its simple name without `Connector` (Connect's
/// aliases).
fn plugin_matches(plugin: &str, class: &str) -> bool {
    let simple = plugin.rsplit('.').next().unwrap_or(plugin);
    plugin == class || simple == class || simple.strip_suffix("Connector") == Some(class)
}

/// Asks Connect about a declaration before it is written: its class must
/// be installed and `validate` must find no problem.
fn check(
    client: &dyn ConnectApi,
    desired: &DesiredConnector,
    plugins: &mut Option<Result<Vec<String>, String>>,
) -> Verdict {
    let Some(class) = desired.class() else {
        return Verdict::Rejected(vec!["config.connector.class is missing".to_owned()]);
    };
    let installed = plugins.get_or_insert_with(|| {
        client
            .plugins()
            .map(|list| list.into_iter().map(|p| p.class).collect())
            .map_err(|e| error_chain(&e))
    });
    let installed = match installed {
        Ok(list) => list,
        Err(e) => return Verdict::Unchecked(e.clone()),
    };
    let mut problems = Vec::new();
    let known = installed.iter().any(|p| plugin_matches(p, class));
    if !known {
        problems.push(format!(
            "connector.class {class:?} is not installed on the Connect cluster (it has: {})",
            installed.join(", ")
        ));
    }
    let mut config = desired.config.clone();
    config
        .entry("name".to_owned())
        .or_insert_with(|| desired.name.clone());
    match client.validate(class, &config) {
        Ok(validation) => problems.extend(
            validation
                .errors
                .into_iter()
                .map(|(field, message)| format!("{field}: {message}")),
        ),
        Err(ConnectError::Http { message, .. }) if !known => {
            problems.push(format!(
                "Connect: {}",
                shorten(&message, CLASS_MESSAGE_LIMIT)
            ));
        }
        Err(e @ ConnectError::Http { .. }) if e.is_rejection() => {
            if let ConnectError::Http { message, .. } = e {
                problems.push(format!("Connect: {message}"));
            }
        }
        Err(e) if !known => {
            // The class is missing either way; Connect's word is a bonus.
            tracing::debug!(connector = %desired.name, error = %error_chain(&e), "validate failed");
        }
        Err(e) => return Verdict::Unchecked(error_chain(&e)),
    }
    if problems.is_empty() {
        Verdict::Accepted
    } else {
        Verdict::Rejected(problems)
    }
}

fn apply(
    client: &dyn ConnectApi,
    action: &ConnectorAction,
    memory: &mut RestartMemory,
    now: u64,
) -> Result<(), ConnectError> {
    match action {
        ConnectorAction::Refuse { .. } => Ok(()),
        ConnectorAction::Delete { name } => match client.delete(name) {
            // Gone already: what the action wanted.
            Err(ConnectError::Http { status: 404, .. }) => Ok(()),
            other => other,
        },
        ConnectorAction::Create {
            name,
            config,
            state,
        } => client.create(name, config, *state),
        ConnectorAction::Update { name, config, .. } => client.put_config(name, config),
        ConnectorAction::SetState { name, to, .. } => client.set_state(name, *to),
        ConnectorAction::RestartFailed { name, .. } => {
            client.restart_failed(name)?;
            memory.record_restart(name, now);
            Ok(())
        }
    }
}

/// Makes Connect hold the `desired` connectors: validates what is about
/// to be written, plans (`plan`), applies in the plan's order and reports.
/// A failed action stops that connector's later actions for this round;
/// the others go on. Blocks on HTTP: call it off async threads.
pub fn reconcile(
    client: &dyn ConnectApi,
    desired: &[InFile<Connector>],
    memory: &mut RestartMemory,
    now: u64,
) -> ConnectorsReport {
    let _span = tracing::info_span!("connectors", declared = desired.len()).entered();
    let observed: BTreeMap<String, ObservedConnector> = match client.list() {
        Ok(observed) => observed,
        Err(e) => {
            let error = error_chain(&e);
            tracing::warn!(error = %error, "cannot list connectors");
            return ConnectorsReport {
                error: Some(error),
                connectors: Vec::new(),
            };
        }
    };
    memory.observe(&observed, now);

    let mut desired: Vec<DesiredConnector> =
        desired.iter().map(DesiredConnector::from_model).collect();
    let mut plugins = None;
    let mut checked = BTreeSet::new();
    for d in &mut desired {
        if checked.insert(d.name.clone()) && needs_write(d, observed.get(&d.name)) {
            d.verdict = check(client, d, &mut plugins);
        }
    }

    let actions = plan(&desired, &observed, now, memory);

    let mut reports: BTreeMap<String, ConnectorReport> = BTreeMap::new();
    for d in desired.iter().rev() {
        // Reversed, so the first declaration of a name is the one kept.
        let report = ConnectorReport {
            name: d.name.clone(),
            location: Some(d.location.clone()),
            declared: Some(d.state),
            error: match &d.verdict {
                Verdict::Unchecked(e) => Some(format!("could not check the declaration: {e}")),
                _ => None,
            },
            ..ConnectorReport::default()
        };
        reports.insert(d.name.clone(), report);
    }
    for (name, o) in &observed {
        let report = reports
            .entry(name.clone())
            .or_insert_with(|| ConnectorReport {
                name: name.clone(),
                ..ConnectorReport::default()
            });
        report.set_status(o.status.as_ref());
    }

    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for action in &actions {
        let name = action.name().to_owned();
        let Some(report) = reports.get_mut(&name) else {
            continue;
        };
        if let ConnectorAction::Refuse {
            location, problems, ..
        } = action
        {
            tracing::warn!(connector = %name, location = %location, problems = %problems.join("; "), "declaration refused");
            report.refusal = Some(problems.clone());
            continue;
        }
        if failed.contains(&name) {
            continue;
        }
        match apply(client, action, memory, now) {
            Ok(()) => {
                tracing::info!(connector = %name, action = %action, "connector action applied");
                report.last_action = Some(action.to_string());
                touched.insert(name);
            }
            Err(e) => {
                let error = error_chain(&e);
                tracing::warn!(connector = %name, action = %action, error = %error, "connector action failed");
                report.error = Some(format!("{action}: {error}"));
                failed.insert(name);
            }
        }
    }

    // Show the state the actions left, as far as Connect knows it yet.
    for name in &touched {
        let Some(report) = reports.get_mut(name) else {
            continue;
        };
        if report.declared.is_none() {
            report.set_status(None);
            continue;
        }
        match client.status(name) {
            Ok(status) => report.set_status(Some(&status)),
            Err(e) => tracing::debug!(connector = %name, error = %error_chain(&e), "no status yet"),
        }
    }
    for report in reports.values_mut() {
        if let Some(record) = memory.record(&report.name) {
            report.restarts = record.restarts;
            report.next_restart_at = memory.next_restart_at(&report.name);
        }
    }
    ConnectorsReport {
        error: None,
        connectors: reports.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::super::client::{
        ConnectorPlugin, InstanceStatus, TaskStatus, Validation, WorkerState,
    };
    use super::*;

    /// A scripted Connect: holds connectors, records calls, answers
    /// validate with the errors scripted per class.
    #[derive(Default)]
    struct FakeConnect {
        connectors: RefCell<BTreeMap<String, ObservedConnector>>,
        calls: RefCell<Vec<String>>,
        plugins: Vec<String>,
        invalid: BTreeMap<String, Vec<(String, String)>>,
        fail_calls: BTreeSet<String>,
        list_fails: bool,
    }

    impl FakeConnect {
        fn call(&self, call: String) -> Result<(), ConnectError> {
            self.calls.borrow_mut().push(call.clone());
            if self.fail_calls.contains(&call) {
                return Err(ConnectError::Http {
                    connector: None,
                    call,
                    status: 409,
                    message: "rebalance in progress".into(),
                });
            }
            Ok(())
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    fn running(tasks: &[WorkerState]) -> ConnectorStatus {
        ConnectorStatus {
            connector: InstanceStatus {
                state: WorkerState::Running,
                worker_id: "w:8083".into(),
                trace: None,
            },
            tasks: tasks
                .iter()
                .enumerate()
                .map(|(i, s)| TaskStatus {
                    id: i as i64,
                    state: s.clone(),
                    worker_id: "w:8083".into(),
                    trace: Some("java.io.IOException: boom\n\tat Foo.bar".into()),
                })
                .collect(),
        }
    }

    impl ConnectApi for FakeConnect {
        fn list(&self) -> Result<BTreeMap<String, ObservedConnector>, ConnectError> {
            self.calls.borrow_mut().push("list".into());
            if self.list_fails {
                return Err(ConnectError::Http {
                    connector: None,
                    call: "GET /connectors".into(),
                    status: 503,
                    message: "down".into(),
                });
            }
            Ok(self.connectors.borrow().clone())
        }
        fn config(&self, name: &str) -> Result<BTreeMap<String, String>, ConnectError> {
            Ok(self.connectors.borrow()[name].config.clone())
        }
        fn status(&self, name: &str) -> Result<ConnectorStatus, ConnectError> {
            self.connectors
                .borrow()
                .get(name)
                .and_then(|c| c.status.clone())
                .ok_or_else(|| ConnectError::Http {
                    connector: Some(name.into()),
                    call: "status".into(),
                    status: 404,
                    message: "none".into(),
                })
        }
        fn create(
            &self,
            name: &str,
            config: &BTreeMap<String, String>,
            state: ConnectorState,
        ) -> Result<(), ConnectError> {
            self.call(format!("create {name} {state:?}"))?;
            let mut config = config.clone();
            config.insert("name".into(), name.into());
            self.connectors.borrow_mut().insert(
                name.into(),
                ObservedConnector {
                    config,
                    status: Some(running(&[WorkerState::Running])),
                },
            );
            Ok(())
        }
        fn put_config(
            &self,
            name: &str,
            config: &BTreeMap<String, String>,
        ) -> Result<(), ConnectError> {
            self.call(format!("put_config {name}"))?;
            let mut config = config.clone();
            config.insert("name".into(), name.into());
            if let Some(c) = self.connectors.borrow_mut().get_mut(name) {
                c.config = config;
            }
            Ok(())
        }
        fn set_state(&self, name: &str, state: ConnectorState) -> Result<(), ConnectError> {
            self.call(format!("set_state {name} {state:?}"))
        }
        fn delete(&self, name: &str) -> Result<(), ConnectError> {
            self.call(format!("delete {name}"))?;
            self.connectors.borrow_mut().remove(name);
            Ok(())
        }
        fn restart_failed(&self, name: &str) -> Result<(), ConnectError> {
            self.call(format!("restart {name}"))
        }
        fn plugins(&self) -> Result<Vec<ConnectorPlugin>, ConnectError> {
            self.calls.borrow_mut().push("plugins".into());
            Ok(self
                .plugins
                .iter()
                .map(|c| ConnectorPlugin {
                    class: c.clone(),
                    kind: "source".into(),
                    version: None,
                })
                .collect())
        }
        fn validate(
            &self,
            class: &str,
            config: &BTreeMap<String, String>,
        ) -> Result<Validation, ConnectError> {
            self.calls
                .borrow_mut()
                .push(format!("validate {}", config["name"]));
            if !self.plugins.iter().any(|p| plugin_matches(p, class)) {
                return Err(ConnectError::Http {
                    connector: None,
                    call: "validate".into(),
                    status: 500,
                    message: format!(
                        "Failed to find any class that implements Connector and which name matches {class}"
                    ),
                });
            }
            Ok(Validation {
                errors: self.invalid.get(class).cloned().unwrap_or_default(),
            })
        }
    }

    fn declared(yaml: &str) -> Vec<InFile<Connector>> {
        let file: desired_state::model::ConnectorsFile =
            serde_saphyr::from_str(yaml).expect("connectors yaml");
        file.connectors
            .into_iter()
            .map(|item| InFile {
                file: "connectors/c.yaml".into(),
                item,
            })
            .collect()
    }

    const TWO: &str = "connectors:
  - name: good
    config:
      connector.class: org.example.GoodConnector
      topic: t
  - name: bad
    state: paused
    config:
      connector.class: org.example.Missing
      topic: t
";

    fn fake() -> FakeConnect {
        FakeConnect {
            plugins: vec![
                "org.example.GoodConnector".into(),
                "org.example.Strict".into(),
            ],
            ..FakeConnect::default()
        }
    }

    #[test]
    fn creates_what_validates_and_refuses_an_unknown_class_with_its_location() {
        let connect = fake();
        let mut memory = RestartMemory::default();
        let report = reconcile(&connect, &declared(TWO), &mut memory, 0);
        assert_eq!(report.error, None);
        let calls = connect.calls();
        assert!(
            calls.contains(&"create good Running".to_owned()),
            "{calls:?}"
        );
        assert!(
            !calls.iter().any(|c| c.starts_with("create bad")),
            "{calls:?}"
        );
        // The plugin list is read once for all declarations.
        assert_eq!(calls.iter().filter(|c| *c == "plugins").count(), 1);

        let bad = report.connector("bad").expect("bad reported");
        assert_eq!(bad.location.as_deref(), Some("connectors/c.yaml:6:11"));
        let refusal = bad.refusal.as_ref().expect("refused");
        assert!(
            refusal[0].starts_with("connector.class \"org.example.Missing\" is not installed"),
            "{refusal:?}"
        );
        assert!(
            refusal[1].starts_with("Connect: Failed to find any class"),
            "{refusal:?}"
        );
        assert_eq!(bad.state, None);

        let good = report.connector("good").expect("good reported");
        assert_eq!(good.last_action.as_deref(), Some("created RUNNING"));
        assert_eq!(good.state.as_deref(), Some("RUNNING"));
        assert_eq!(good.refusal, None);

        // The second round: nothing to write, so nothing validated or done.
        connect.calls.borrow_mut().clear();
        let report = reconcile(&connect, &declared(TWO), &mut memory, 60);
        assert_eq!(connect.calls(), ["list", "plugins", "validate bad"]);
        assert!(
            report
                .connector("bad")
                .and_then(|b| b.refusal.as_ref())
                .is_some()
        );
    }

    #[test]
    fn field_errors_from_validate_are_refusals_per_field() {
        let mut connect = fake();
        connect.invalid.insert(
            "org.example.Strict".into(),
            vec![
                (
                    "topic".into(),
                    "Missing required configuration \"topic\"".into(),
                ),
                ("tasks.max".into(), "Not a number of type INT".into()),
            ],
        );
        let yaml = "connectors:\n  - name: strict\n    config:\n      connector.class: org.example.Strict\n";
        let report = reconcile(&connect, &declared(yaml), &mut RestartMemory::default(), 0);
        let strict = report.connector("strict").expect("reported");
        assert_eq!(
            strict.refusal.as_deref(),
            Some(
                &[
                    "topic: Missing required configuration \"topic\"".to_owned(),
                    "tasks.max: Not a number of type INT".to_owned()
                ][..]
            )
        );
        assert!(!connect.calls().iter().any(|c| c.starts_with("create")));
    }

    #[test]
    fn undeclared_connectors_are_deleted_and_reported_gone() {
        let connect = fake();
        connect.connectors.borrow_mut().insert(
            "by-hand".into(),
            ObservedConnector {
                config: BTreeMap::new(),
                status: Some(running(&[])),
            },
        );
        let report = reconcile(&connect, &[], &mut RestartMemory::default(), 0);
        assert_eq!(connect.calls(), ["list", "delete by-hand"]);
        let gone = report.connector("by-hand").expect("reported");
        assert_eq!(
            gone.last_action.as_deref(),
            Some("deleted (not declared in git)")
        );
        assert_eq!(gone.state, None);
    }

    #[test]
    fn a_failed_action_is_reported_and_stops_that_connectors_later_actions() {
        let mut connect = fake();
        connect.fail_calls.insert("put_config good".into());
        let yaml = "connectors:\n  - name: good\n    state: paused\n    config:\n      connector.class: org.example.GoodConnector\n      topic: new\n";
        connect.connectors.borrow_mut().insert(
            "good".into(),
            ObservedConnector {
                config: BTreeMap::from([
                    ("connector.class".into(), "org.example.GoodConnector".into()),
                    ("topic".into(), "old".into()),
                ]),
                status: Some(running(&[WorkerState::Failed])),
            },
        );
        let mut memory = RestartMemory::default();
        let report = reconcile(&connect, &declared(yaml), &mut memory, 0);
        let calls = connect.calls();
        assert!(calls.contains(&"put_config good".to_owned()), "{calls:?}");
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("set_state") || c.starts_with("restart")),
            "{calls:?}"
        );
        let good = report.connector("good").expect("reported");
        let error = good.error.as_deref().expect("error");
        assert!(error.starts_with("config updated (topic): "), "{error}");
        assert!(
            error.contains("409") && error.contains("rebalance in progress"),
            "{error}"
        );
        // Nothing was restarted, so nothing is remembered.
        assert_eq!(memory.record("good"), None);
    }

    #[test]
    fn restarts_are_recorded_and_reported_with_task_traces() {
        let connect = fake();
        let yaml = "connectors:\n  - name: good\n    config:\n      connector.class: org.example.GoodConnector\n      topic: t\n";
        connect.connectors.borrow_mut().insert(
            "good".into(),
            ObservedConnector {
                config: BTreeMap::from([
                    ("connector.class".into(), "org.example.GoodConnector".into()),
                    ("topic".into(), "t".into()),
                    ("name".into(), "good".into()),
                ]),
                status: Some(running(&[WorkerState::Running, WorkerState::Failed])),
            },
        );
        let mut memory = RestartMemory::default();
        let report = reconcile(&connect, &declared(yaml), &mut memory, 1000);
        assert_eq!(connect.calls(), ["list", "restart good"]);
        let good = report.connector("good").expect("reported");
        assert_eq!(good.restarts, 1);
        assert_eq!(good.next_restart_at, Some(1000 + 120));
        assert_eq!(
            good.last_action.as_deref(),
            Some("restart 1 of failed task 1")
        );
        assert_eq!(good.tasks[1].state, "FAILED");
        assert_eq!(
            good.tasks[1].trace.as_deref(),
            Some("java.io.IOException: boom")
        );

        connect.calls.borrow_mut().clear();
        reconcile(&connect, &declared(yaml), &mut memory, 1000 + 119);
        assert_eq!(connect.calls(), ["list"]);
        reconcile(&connect, &declared(yaml), &mut memory, 1000 + 120);
        assert_eq!(connect.calls(), ["list", "list", "restart good"]);
    }

    #[test]
    fn an_unreachable_connect_is_one_error_and_no_action() {
        let connect = FakeConnect {
            list_fails: true,
            ..fake()
        };
        let report = reconcile(&connect, &declared(TWO), &mut RestartMemory::default(), 0);
        assert_eq!(connect.calls(), ["list"]);
        assert_eq!(
            report.error.as_deref(),
            Some("GET /connectors: Connect answered 503: down")
        );
        assert!(report.connectors.is_empty());
    }

    #[test]
    fn class_aliases_match_like_connects() {
        let p = "org.apache.kafka.connect.file.FileStreamSourceConnector";
        assert!(plugin_matches(p, p));
        assert!(plugin_matches(p, "FileStreamSourceConnector"));
        assert!(plugin_matches(p, "FileStreamSource"));
        assert!(!plugin_matches(p, "FileStream"));
        assert!(!plugin_matches(
            p,
            "org.apache.kafka.connect.file.FileStreamSource"
        ));
    }
}
