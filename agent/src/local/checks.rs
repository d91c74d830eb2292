//! Looking at a running local cluster: commands inside a node, and the
//! wait for "healthy" that `local up` does phase by phase (boot, agents,
//! install, format, quorum, brokers, Connect, converged).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use desired_state::{Model, Role};

use super::{ClusterState, Layout, node_views, progress};
use crate::protocol::Phase;

/// A command run inside `node` (all its namespaces, as its root).
pub fn in_node(state: &ClusterState, node: &str, args: &[&str]) -> anyhow::Result<Command> {
    let leader = state
        .leader(node)
        .with_context(|| format!("node {node} is not running"))?;
    let mut cmd = Command::new("nsenter");
    cmd.arg("-t")
        .arg(leader.to_string())
        .args(["-m", "-u", "-i", "-n", "-p", "--"])
        .args(args);
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

/// Runs `args` inside `node` and returns its output (whatever the status).
pub fn run_in_node(state: &ClusterState, node: &str, args: &[&str]) -> anyhow::Result<Output> {
    in_node(state, node, args)?
        .output()
        .with_context(|| format!("running {args:?} in {node}"))
}

/// `systemctl is-system-running` inside `node`: booted when it says
/// `running` or `degraded`.
fn booted(state: &ClusterState, node: &str) -> bool {
    run_in_node(state, node, &["systemctl", "is-system-running"]).is_ok_and(|o| {
        let s = String::from_utf8_lossy(&o.stdout);
        matches!(s.trim(), "running" | "degraded")
    })
}

/// The controllers' quorum as Kafka's own tool describes it, run on the
/// first controller: `kafka-metadata-quorum.sh describe --status`.
pub fn quorum_status(state: &ClusterState, model: &Model) -> anyhow::Result<String> {
    describe_quorum(state, model, "--status")
}

/// The replication view (`describe --replication`): voters and observers
/// (the brokers), one line each.
pub fn quorum_replication(state: &ClusterState, model: &Model) -> anyhow::Result<String> {
    describe_quorum(state, model, "--replication")
}

/// `kafka-metadata-quorum.sh describe <what>` on the first controller,
/// over its mTLS listener with the node's own client config.
fn describe_quorum(state: &ClusterState, model: &Model, what: &str) -> anyhow::Result<String> {
    let controller = model
        .nodes
        .iter()
        .find(|n| n.role.value == Role::Controller)
        .context("the cluster has no controller")?;
    let bootstrap = format!(
        "{}:{}",
        model.fqdn(controller),
        model.cluster.ports.controller
    );
    let tool = format!(
        "{}/bin/kafka-metadata-quorum.sh",
        model.cluster.kafka.install_dir
    );
    let out = run_in_node(
        state,
        controller.name.as_str(),
        &[
            &tool,
            "--bootstrap-controller",
            &bootstrap,
            "--command-config",
            roles::layout::CONTROLLER_CLIENT_PROPERTIES,
            "describe",
            what,
        ],
    )?;
    if !out.status.success() {
        bail!(
            "kafka-metadata-quorum describe {what} on {}: {}",
            controller.name.value,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Voter ids from `describe --status` output (`CurrentVoters: [{"id": 3001, …`).
pub fn current_voters(status: &str) -> Vec<u32> {
    let Some(line) = status
        .lines()
        .find(|l| l.trim_start().starts_with("CurrentVoters:"))
    else {
        return Vec::new();
    };
    line.split("\"id\":")
        .skip(1)
        .filter_map(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

/// The replica ids the replication view lists with `status`
/// (`Leader`, `Follower` or `Observer`).
pub fn replicas_with_status(replication: &str, status: &str) -> Vec<u32> {
    replication
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().any(|w| w == status))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Whether `meta.properties` exists in `dir` of `node`'s root.
fn formatted(layout: &Layout, node: &str, dir: &str) -> bool {
    layout
        .node_root(node)
        .join(dir.trim_start_matches('/'))
        .join("meta.properties")
        .is_file()
}

fn http_ok(url: &str) -> bool {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .ok()
        .and_then(|c| c.get(url).send().ok())
        .is_some_and(|r| r.status().is_success())
}

/// How long `local up` waits for Connect after everything else is healthy.
const CONNECT_GRACE_SECONDS: f64 = 60.0;

/// Waits until every phase is done (Connect: see `CONNECT_GRACE_SECONDS`); prints each as it completes and
/// returns (phase, seconds since `start`). On timeout the error names the
/// phase still open and what each node reports.
pub fn wait_healthy(
    layout: &Layout,
    state: &ClusterState,
    model: &Model,
    head: &str,
    start: Instant,
    timeout: Duration,
) -> anyhow::Result<Vec<(String, f64)>> {
    let deadline = Instant::now() + timeout;
    let mut done: Vec<(String, f64)> = Vec::new();
    let names_of = |role: Role| -> Vec<String> {
        model
            .nodes
            .iter()
            .filter(|n| n.role.value == role)
            .map(|n| n.name.to_string())
            .collect()
    };
    let controllers = names_of(Role::Controller);
    let brokers = names_of(Role::Broker);
    let connect = names_of(Role::Connect);
    let broker_ids: Vec<u32> = model
        .nodes
        .iter()
        .filter(|n| n.role.value == Role::Broker)
        .filter_map(|n| n.node_id.as_ref().map(|i| i.value))
        .collect();
    let data_dir = model
        .cluster
        .broker
        .log_dirs
        .first()
        .map_or_else(|| "/var/lib/kafka/data".to_owned(), ToString::to_string);
    let metadata_dir = model.cluster.controller.metadata_dir.to_string();
    let connect_port = model.cluster.ports.connect_rest;
    let mut last_note = String::new();
    loop {
        let phase_done = |name: &str, done: &[(String, f64)]| done.iter().any(|(n, _)| n == name);
        let complete = |name: &str, ok: bool, done: &mut Vec<(String, f64)>| {
            if ok && !phase_done(name, done) {
                let t = start.elapsed().as_secs_f64();
                progress(start, &format!("{name}: done"));
                done.push((name.to_owned(), t));
            }
        };
        if !phase_done("boot", &done) {
            let ok = state.nodes.iter().all(|n| booted(state, &n.name));
            complete("boot", ok, &mut done);
        }
        let views = node_views(state).unwrap_or_default();
        let reports: BTreeMap<&str, &crate::protocol::StatusReport> = views
            .iter()
            .filter_map(|v| v.report.as_ref().map(|r| (v.node.as_str(), r)))
            .collect();
        complete(
            "agents",
            state
                .nodes
                .iter()
                .all(|n| reports.contains_key(n.name.as_str())),
            &mut done,
        );
        complete(
            "install",
            state.nodes.iter().all(|n| {
                reports
                    .get(n.name.as_str())
                    .and_then(|r| r.revision_applied.as_deref())
                    == Some(head)
            }),
            &mut done,
        );
        complete(
            "format",
            controllers
                .iter()
                .all(|n| formatted(layout, n, &metadata_dir))
                && brokers.iter().all(|n| formatted(layout, n, &data_dir)),
            &mut done,
        );
        if phase_done("format", &done) && !phase_done("quorum", &done) {
            let ok = quorum_status(state, model)
                .map(|s| current_voters(&s).len() == controllers.len() && s.contains("LeaderId"))
                .unwrap_or(false);
            complete("quorum", ok, &mut done);
        }
        if phase_done("quorum", &done) && !phase_done("brokers", &done) {
            let ok = quorum_replication(state, model).is_ok_and(|r| {
                let observers = replicas_with_status(&r, "Observer");
                broker_ids.iter().all(|id| observers.contains(id))
            });
            complete("brokers", ok, &mut done);
        }
        if !phase_done("connect", &done) {
            let ok = connect.iter().all(|name| {
                state
                    .node(name)
                    .is_ok_and(|n| http_ok(&format!("http://{}:{connect_port}/", n.address)))
            });
            complete("connect", ok, &mut done);
        }
        let converged = state.nodes.iter().all(|n| {
            reports.get(n.name.as_str()).is_some_and(|r| {
                r.phase == Phase::Converged && r.revision_applied.as_deref() == Some(head)
            })
        });
        let required = ["boot", "agents", "install", "format", "quorum", "brokers"];
        complete(
            "converged",
            converged && required.iter().all(|p| phase_done(p, &done)),
            &mut done,
        );
        if phase_done("converged", &done) {
            if phase_done("connect", &done) {
                return Ok(done);
            }
            // Connect needs its SCRAM user and ACLs, which the coordinator's
            // cluster-scope reconciler creates; give it a little longer, then
            // report it instead of failing the whole cluster.
            let since = done
                .iter()
                .find(|(n, _)| n == "converged")
                .map_or(0.0, |(_, t)| *t);
            if start.elapsed().as_secs_f64() - since > CONNECT_GRACE_SECONDS {
                for name in &connect {
                    let tail = journal(state, name, roles::layout::CONNECT_UNIT, 200);
                    let why = tail
                        .lines()
                        .rev()
                        .find(|l| l.contains("Exception") || l.contains("ERROR"))
                        .unwrap_or("no error logged");
                    progress(start, &format!("connect: {name}'s worker is not up: {why}"));
                }
                return Ok(done);
            }
        }
        let note = state
            .nodes
            .iter()
            .map(|n| {
                let phase = reports
                    .get(n.name.as_str())
                    .map_or("no report".to_owned(), |r| format!("{:?}", r.phase));
                format!("{}={phase}", n.name)
            })
            .collect::<Vec<_>>()
            .join(" ");
        if note != last_note {
            progress(start, &note);
            last_note = note;
        }
        if Instant::now() > deadline {
            let open: Vec<&str> = [
                "boot",
                "agents",
                "install",
                "format",
                "quorum",
                "brokers",
                "connect",
                "converged",
            ]
            .into_iter()
            .filter(|p| !phase_done(p, &done))
            .collect();
            let errors: Vec<String> = reports
                .iter()
                .filter_map(|(n, r)| {
                    r.last_error
                        .as_ref()
                        .map(|e| format!("{n}: {} {}", e.message, e.problems.join("; ")))
                })
                .collect();
            bail!(
                "the local cluster was not healthy after {}s; still open: {}; nodes: {last_note}; errors: {}; console logs in {}",
                timeout.as_secs(),
                open.join(", "),
                if errors.is_empty() {
                    "none".to_owned()
                } else {
                    errors.join(" | ")
                },
                layout.dir.join("nodes/<node>/console.log").display()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Unit `unit`'s ActiveState inside `node` (systemctl show).
pub fn unit_state(state: &ClusterState, node: &str, unit: &str) -> anyhow::Result<String> {
    let out = run_in_node(
        state,
        node,
        &[
            "systemctl",
            "show",
            "--property=ActiveState",
            "--value",
            unit,
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The journal of `unit` inside `node` (last `lines` lines), for messages.
pub fn journal(state: &ClusterState, node: &str, unit: &str, lines: u32) -> String {
    run_in_node(
        state,
        node,
        &[
            "journalctl",
            "--no-pager",
            "-o",
            "cat",
            "-n",
            &lines.to_string(),
            "-u",
            unit,
        ],
    )
    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    .unwrap_or_default()
}

/// Whether a path exists in the node's root as the host sees it.
pub fn exists_in_node(layout: &Layout, node: &str, path: &str) -> bool {
    layout
        .node_root(node)
        .join(Path::new(path.trim_start_matches('/')))
        .exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_quorum_tools_output() {
        let status = "ClusterId:              BBO6LcW7aWKqrWwQnn1JRA\nLeaderId:               3002\nCurrentVoters:          [{\"id\": 3001, \"directoryId\": \"x\", \"endpoints\": [\"CONTROLLER://c1:9093\"]}, {\"id\": 3002, \"endpoints\": []}, {\"id\": 3003}]\nCurrentObservers:       [{\"id\": 1}]\n";
        assert_eq!(current_voters(status), vec![3001, 3002, 3003]);
        assert!(current_voters("nothing").is_empty());
        let replication = "NodeId\tDirectoryId\tLogEndOffset\tLag\tLastFetchTimestamp\tLastCaughtUpTimestamp\tStatus\n3002\tx\t120\t0\t1\t1\tLeader\n3001\ty\t120\t0\t1\t1\tFollower\n1\tz\t120\t0\t1\t1\tObserver\n2\tw\t120\t0\t1\t1\tObserver\n";
        assert_eq!(replicas_with_status(replication, "Observer"), vec![1, 2]);
        assert_eq!(replicas_with_status(replication, "Leader"), vec![3002]);
    }
}
