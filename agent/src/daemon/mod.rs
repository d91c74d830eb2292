//! The node daemon (`kraftops-agent run`): a level-triggered reconcile loop
//! woken by a timer with jitter, the coordinator's nudges, `POST
//! /v1/reconcile`, and changes to managed files (drift); plus the agent's
//! HTTP API and its reports to the coordinator.

pub mod api;
pub mod client;
pub mod reconcile;
pub mod state;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::AgentConfig;
use crate::protocol::{DriftEvent, Phase, StatusReport};
use reconcile::{Outcome, Reconciler, now};
use state::{AgentState, Metrics, Trigger};

/// How many drift events the status keeps.
const DRIFT_HISTORY: usize = 20;
/// How often the status is pushed to the coordinator without a reconcile.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How often the status is pushed while a long reconcile (a restart) runs.
const PROGRESS_REPORT: Duration = Duration::from_secs(5);

fn initial_status(config: &AgentConfig) -> StatusReport {
    StatusReport {
        node: config.node.clone(),
        role: String::new(),
        revision_seen: None,
        revision_applied: None,
        signer: None,
        phase: Phase::Starting,
        units: Vec::new(),
        certificates: Vec::new(),
        last_error: None,
        drift: Vec::new(),
        reported_at: now(),
        waiting: None,
        restarts: Vec::new(),
    }
}

fn record(state: &AgentState, outcome: &Outcome, elapsed: Duration) {
    let m = &state.metrics;
    match outcome.phase {
        Phase::Converged | Phase::RepoUnreachable => Metrics::add(&m.reconciles_ok, 1),
        Phase::Refused => Metrics::add(&m.reconciles_refused, 1),
        _ => Metrics::add(&m.reconciles_failed, 1),
    }
    Metrics::add(&m.reconcile_micros_sum, elapsed.as_micros() as u64);
    Metrics::add(&m.reconcile_count, 1);
    m.last_reconcile_unix
        .store(now(), std::sync::atomic::Ordering::Relaxed);
    Metrics::add(&m.drift_events, outcome.drift.len() as u64);
    Metrics::add(&m.files_written, outcome.files_written);
    Metrics::add(&m.restarts, outcome.restarts);
    state.update(|s| {
        if let Some(role) = &outcome.role {
            s.role.clone_from(role);
        }
        s.phase = outcome.phase;
        s.revision_seen.clone_from(&outcome.revision_seen);
        s.revision_applied.clone_from(&outcome.revision_applied);
        s.signer.clone_from(&outcome.signer);
        s.units.clone_from(&outcome.units);
        s.certificates.clone_from(&outcome.certificates);
        s.last_error.clone_from(&outcome.error);
        s.restarts.clone_from(&outcome.restart_log);
        // What the rollout waits for stays shown while it waits.
        if outcome.phase != Phase::WaitingForLease {
            s.waiting = None;
        }
        let at = now();
        s.drift.extend(outcome.drift.iter().map(|path| DriftEvent {
            path: path.clone(),
            at,
        }));
        let excess = s.drift.len().saturating_sub(DRIFT_HISTORY);
        s.drift.drain(..excess);
        s.reported_at = at;
    });
}

/// Watches the directories of the managed files and turns a change to one
/// of them into a `Trigger::Drift`.
struct DriftWatch {
    watcher: Option<notify::RecommendedWatcher>,
    paths: BTreeSet<PathBuf>,
}

impl DriftWatch {
    fn update(&mut self, paths: Vec<PathBuf>, triggers: &mpsc::Sender<Trigger>) {
        use notify::Watcher as _;
        let paths: BTreeSet<PathBuf> = paths.into_iter().collect();
        if paths == self.paths && self.watcher.is_some() {
            return;
        }
        let watched = Arc::new(paths.clone());
        let tx = triggers.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && !matches!(event.kind, notify::EventKind::Access(_))
                && let Some(path) = event.paths.iter().find(|p| watched.contains(*p))
            {
                let _ = tx.try_send(Trigger::Drift(path.display().to_string()));
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch managed files; drift is found by the periodic reconcile only");
                return;
            }
        };
        let dirs: BTreeSet<PathBuf> = paths
            .iter()
            .filter_map(|p| p.parent().map(PathBuf::from))
            .collect();
        for dir in dirs {
            if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %dir.display(), error = %e, "not watching");
            }
        }
        self.watcher = Some(watcher);
        self.paths = paths;
    }
}

/// Keeps a long-poll open to the coordinator and turns each new generation
/// into a `Trigger::Nudge`: nodes need no inbound port.
async fn nudges(
    client: client::CoordinatorClient,
    triggers: mpsc::Sender<Trigger>,
    stop: CancellationToken,
) {
    let mut seen: Option<u64> = None;
    // A poll failed (coordinator down or restarting): nudges sent meanwhile
    // were missed, so the first answer after it triggers a fetch.
    let mut missed = false;
    loop {
        let poll = client.wait_for_nudge(seen.unwrap_or(0));
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = poll => r,
        };
        match result {
            Ok(generation) => {
                if missed || seen.is_some_and(|s| s != generation) {
                    let _ = triggers.try_send(Trigger::Nudge);
                }
                missed = false;
                seen = Some(generation);
            }
            Err(e) => {
                tracing::debug!(error = %e, "nudge poll failed; retrying");
                missed = true;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

async fn report(client: &Option<client::CoordinatorClient>, state: &AgentState) {
    if let Some(client) = client
        && let Err(e) = client.report(&state.status()).await
    {
        tracing::debug!(error = %e, "status report failed; the next one catches up");
    }
}

fn read_token(config: &AgentConfig) -> anyhow::Result<Option<String>> {
    match &config.api_token_file {
        None => Ok(None),
        Some(path) => {
            let path = config.rooted(path);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the API token {}", path.display()))?;
            Ok(Some(text.trim().to_owned()))
        }
    }
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<Trigger>(1);
    let state = Arc::new(AgentState::new(
        initial_status(&config),
        tx.clone(),
        read_token(&config)?,
    ));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the API to {}", config.listen))?;
    tracing::info!(node = %config.node, listen = %config.listen, "agent starting");
    let api = tokio::spawn(api::serve(listener, state.clone(), stop.clone()));

    // A new machine enrols first: it has no identity to decrypt its
    // secrets until the coordinator hands it over. The coordinator may not
    // be up yet, so keep trying (and keep systemd's start timeout at bay).
    let mut wait = Duration::from_secs(2);
    loop {
        let enrolled = tokio::task::spawn_blocking({
            let config = config.clone();
            move || reconcile::enrol_if_needed(&config)
        })
        .await
        .context("the enrolment thread panicked")?;
        match enrolled {
            Ok(true) => {
                tracing::info!(node = %config.node, "enrolled: identity and client certificate received");
                break;
            }
            Ok(false) => break,
            Err(e) => {
                tracing::warn!(error = %format!("{:#}", anyhow::Error::from(e)), retry_in_seconds = wait.as_secs(), "cannot enrol yet");
                let _ = sd_notify::notify(&[
                    sd_notify::NotifyState::Status("enrolling with the coordinator"),
                    sd_notify::NotifyState::ExtendTimeoutUsec(
                        u32::try_from((wait + Duration::from_secs(30)).as_micros())
                            .unwrap_or(u32::MAX),
                    ),
                ]);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
    let mut reconciler = tokio::task::spawn_blocking({
        let config = config.clone();
        move || Reconciler::new(config)
    })
    .await
    .context("starting the reconciler")?
    .context("setting up the agent")?;
    reconciler.on_waiting({
        let state = state.clone();
        Arc::new(move |waiting| state.update(|s| s.waiting = waiting))
    });
    let client = reconciler.client().cloned();
    if let Some(c) = client.clone() {
        tokio::spawn(nudges(c, tx.clone(), stop.clone()));
    }
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("shutting down");
            stop.cancel();
        });
    }
    if let Some(timeout) = sd_notify::watchdog_enabled() {
        let stop = stop.clone();
        tokio::spawn(async move {
            let every = timeout / 2;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => { let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]); }
                }
            }
        });
    }

    let mut drift = DriftWatch {
        watcher: None,
        paths: BTreeSet::new(),
    };
    let mut trigger = Trigger::Timer;
    let mut notified_ready = false;
    let mut failures: u32 = 0;
    loop {
        let started = std::time::Instant::now();
        let span = tracing::info_span!("reconcile", trigger = ?trigger);
        let phase_state = state.clone();
        let t = trigger.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let outcome =
                reconciler.reconcile(&t, &|phase| phase_state.update(|s| s.phase = phase));
            (reconciler, outcome)
        });
        // A reconcile that restarts waits for leases, gates and health:
        // the coordinator keeps hearing what it waits for meanwhile.
        let (back, outcome) = loop {
            tokio::select! {
                done = &mut task => break done.context("the reconcile thread panicked")?,
                () = tokio::time::sleep(PROGRESS_REPORT) => report(&client, &state).await,
            }
        };
        reconciler = back;
        if let Some(commit) = &outcome.revision_applied {
            tracing::info!(commit = %commit, phase = ?outcome.phase, files_written = outcome.files_written, "reconciled");
        }
        record(&state, &outcome, started.elapsed());
        drift.update(reconciler.managed_paths(), &tx);
        if !notified_ready {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            notified_ready = true;
        }
        report(&client, &state).await;

        let (interval, jitter) = reconciler.poll_interval();
        let mut wait = interval + jitter.mul_f64(rand::thread_rng().r#gen::<f64>());
        if matches!(outcome.phase, Phase::Failed | Phase::RepoUnreachable) {
            failures = failures.saturating_add(1);
            let backoff = Duration::from_secs(2u64.saturating_pow(failures.min(6)));
            wait = wait.min(backoff);
        } else {
            failures = 0;
        }
        if outcome.phase == Phase::WaitingForLease {
            // A restart blocked by the lease or a gate: ask again soon.
            wait = wait.min(reconcile::BLOCKED_RETRY);
        }
        let deadline = tokio::time::Instant::now() + wait;
        trigger = loop {
            tokio::select! {
                () = stop.cancelled() => {
                    let _ = api.await;
                    return Ok(());
                }
                t = rx.recv() => break t.unwrap_or(Trigger::Timer),
                () = tokio::time::sleep_until(deadline) => break if failures > 0 { Trigger::Retry } else { Trigger::Timer },
                () = tokio::time::sleep(HEARTBEAT) => report(&client, &state).await,
            }
        };
        if matches!(trigger, Trigger::Drift(_)) {
            // Let a burst of writes settle before looking.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while let Ok(next) = rx.try_recv() {
                if !matches!(next, Trigger::Drift(_)) {
                    trigger = next;
                }
            }
        }
    }
}
