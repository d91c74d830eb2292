//! What the reconcile loop shares with the HTTP API: the current status,
//! counters for `/metrics`, and the channel that asks for a reconcile.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::protocol::{Phase, StatusReport};

/// Why a reconcile runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The poll timer fired.
    Timer,
    /// `POST /v1/reconcile`.
    Api,
    /// The coordinator said the repository changed.
    Nudge,
    /// A managed file changed on disk.
    Drift(String),
    /// A retry after a failure.
    Retry,
}

/// Counters and gauges for `/metrics`. Durations in microseconds.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles_ok: AtomicU64,
    pub reconciles_failed: AtomicU64,
    pub reconciles_refused: AtomicU64,
    /// Sum and count of reconcile durations, for a Prometheus summary.
    pub reconcile_micros_sum: AtomicU64,
    pub reconcile_count: AtomicU64,
    pub last_reconcile_unix: AtomicU64,
    pub drift_events: AtomicU64,
    pub files_written: AtomicU64,
    pub restarts: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// State shared between the loop and the API.
#[derive(Debug)]
pub struct AgentState {
    status: Mutex<StatusReport>,
    pub metrics: Metrics,
    /// Asks the loop for a reconcile; full means one is already queued.
    pub triggers: mpsc::Sender<Trigger>,
    /// Bearer token `POST /v1/reconcile` requires; `None` refuses every call.
    pub api_token: Option<String>,
}

impl AgentState {
    pub fn new(
        initial: StatusReport,
        triggers: mpsc::Sender<Trigger>,
        api_token: Option<String>,
    ) -> Self {
        Self {
            status: Mutex::new(initial),
            metrics: Metrics::default(),
            triggers,
            api_token,
        }
    }

    /// A copy of the current status.
    pub fn status(&self) -> StatusReport {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes the status in place.
    pub fn update(&self, f: impl FnOnce(&mut StatusReport)) {
        let mut guard = match self.status.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard);
    }

    /// Whether the last reconcile left the node converged.
    pub fn ready(&self) -> bool {
        self.status().phase == Phase::Converged
    }
}
