//! The seam to systemd: a small trait, the real `systemctl`, a manager that
//! manages nothing (tests, dry environments) and a scripted recorder for tests.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::command;
use super::error::{ApplyError, CommandError};
use crate::protocol::UnitStatus;

/// What the applier asks of the service manager. Every call names one unit
/// (except `daemon_reload`) and blocks until the manager is done.
pub trait ServiceManager: Send + Sync + fmt::Debug {
    fn daemon_reload(&self) -> Result<(), ApplyError>;
    fn enable(&self, unit: &str) -> Result<(), ApplyError>;
    fn start(&self, unit: &str) -> Result<(), ApplyError>;
    fn stop(&self, unit: &str) -> Result<(), ApplyError>;
    fn restart(&self, unit: &str) -> Result<(), ApplyError>;
    fn reload(&self, unit: &str) -> Result<(), ApplyError>;
    fn mask(&self, unit: &str) -> Result<(), ApplyError>;
    fn disable(&self, unit: &str) -> Result<(), ApplyError>;
    fn status(&self, unit: &str) -> Result<UnitStatus, ApplyError>;
}

/// The `active_state` [`NoServiceManager`] reports.
pub const UNMANAGED: &str = "unmanaged";

/// Whether a unit in this `ActiveState` runs (or is about to): a change to
/// its inputs then needs a reload or restart, and it needs no start.
pub fn is_running(active_state: &str) -> bool {
    matches!(
        active_state,
        "active" | "activating" | "reloading" | "refreshing"
    )
}

// ------------------------------------------------------------ systemctl

/// The real thing: `systemctl` on the host, each call bounded by a timeout,
/// a failure carrying systemctl's stderr.
#[derive(Clone, Debug)]
pub struct Systemctl {
    program: PathBuf,
    timeout: Duration,
}

impl Default for Systemctl {
    fn default() -> Self {
        Self::new()
    }
}

impl Systemctl {
    /// `systemctl` from `PATH`; calls time out after 10 minutes (Kafka's
    /// controlled shutdown alone may take minutes; the unit says
    /// `TimeoutStopSec=600`).
    pub fn new() -> Self {
        Self {
            program: PathBuf::from("systemctl"),
            timeout: Duration::from_secs(660),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Another binary in place of `systemctl` (tests use a script).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    fn run(&self, action: &'static str, args: &[&str], unit: &str) -> Result<String, ApplyError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(args);
        if !unit.is_empty() {
            cmd.arg("--").arg(unit);
        }
        tracing::debug!(action, unit, "systemctl");
        command::run(cmd, self.timeout)
            .map(|out| out.stdout)
            .map_err(|source| ApplyError::Service {
                action,
                unit: unit.to_owned(),
                source,
            })
    }
}

impl ServiceManager for Systemctl {
    fn daemon_reload(&self) -> Result<(), ApplyError> {
        self.run("daemon-reload", &["daemon-reload"], "").map(drop)
    }
    fn enable(&self, unit: &str) -> Result<(), ApplyError> {
        self.run("enable", &["enable"], unit).map(drop)
    }
    fn start(&self, unit: &str) -> Result<(), ApplyError> {
        self.run("start", &["start"], unit).map(drop)
    }
    fn stop(&self, unit: &str) -> Result<(), ApplyError> {
        self.run("stop", &["stop"], unit).map(drop)
    }
    fn restart(&self, unit: &str) -> Result<(), ApplyError> {
        self.run("restart", &["restart"], unit).map(drop)
    }
    fn reload(&self, unit: &str) -> Result<(), ApplyError> {
        self.run("reload", &["reload"], unit).map(drop)
    }
    fn mask(&self, unit: &str) -> Result<(), ApplyError> {
        self.run("mask", &["mask"], unit).map(drop)
    }
    fn disable(&self, unit: &str) -> Result<(), ApplyError> {
        self.run("disable", &["disable"], unit).map(drop)
    }
    fn status(&self, unit: &str) -> Result<UnitStatus, ApplyError> {
        let out = self.run(
            "status",
            &["show", "--property=ActiveState", "--property=SubState"],
            unit,
        )?;
        let mut status = UnitStatus {
            name: unit.to_owned(),
            active_state: "unknown".to_owned(),
            sub_state: "unknown".to_owned(),
        };
        for line in out.lines() {
            if let Some(v) = line.strip_prefix("ActiveState=") {
                v.trim().clone_into(&mut status.active_state);
            } else if let Some(v) = line.strip_prefix("SubState=") {
                v.trim().clone_into(&mut status.sub_state);
            }
        }
        Ok(status)
    }
}

// ------------------------------------------------------------ no manager

/// Manages nothing: every call succeeds without touching systemd, and every
/// unit reports `active_state` [`UNMANAGED`], which the applier neither
/// starts nor restarts. For rendering onto a directory and for tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoServiceManager;

impl ServiceManager for NoServiceManager {
    fn daemon_reload(&self) -> Result<(), ApplyError> {
        Ok(())
    }
    fn enable(&self, _unit: &str) -> Result<(), ApplyError> {
        Ok(())
    }
    fn start(&self, _unit: &str) -> Result<(), ApplyError> {
        Ok(())
    }
    fn stop(&self, _unit: &str) -> Result<(), ApplyError> {
        Ok(())
    }
    fn restart(&self, _unit: &str) -> Result<(), ApplyError> {
        Ok(())
    }
    fn reload(&self, _unit: &str) -> Result<(), ApplyError> {
        Ok(())
    }
    fn mask(&self, _unit: &str) -> Result<(), ApplyError> {
        Ok(())
    }
    fn disable(&self, _unit: &str) -> Result<(), ApplyError> {
        Ok(())
    }
    fn status(&self, unit: &str) -> Result<UnitStatus, ApplyError> {
        Ok(UnitStatus {
            name: unit.to_owned(),
            active_state: UNMANAGED.to_owned(),
            sub_state: UNMANAGED.to_owned(),
        })
    }
}

// ------------------------------------------------------------ recorder

/// One call a [`RecordingServiceManager`] received (status queries are
/// kept apart: they change nothing).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServiceCall {
    DaemonReload,
    Enable(String),
    Start(String),
    Stop(String),
    Restart(String),
    Reload(String),
    Mask(String),
    Disable(String),
}

impl ServiceCall {
    fn action(&self) -> &'static str {
        match self {
            ServiceCall::DaemonReload => "daemon-reload",
            ServiceCall::Enable(_) => "enable",
            ServiceCall::Start(_) => "start",
            ServiceCall::Stop(_) => "stop",
            ServiceCall::Restart(_) => "restart",
            ServiceCall::Reload(_) => "reload",
            ServiceCall::Mask(_) => "mask",
            ServiceCall::Disable(_) => "disable",
        }
    }
    fn unit(&self) -> &str {
        match self {
            ServiceCall::DaemonReload => "",
            ServiceCall::Enable(u)
            | ServiceCall::Start(u)
            | ServiceCall::Stop(u)
            | ServiceCall::Restart(u)
            | ServiceCall::Reload(u)
            | ServiceCall::Mask(u)
            | ServiceCall::Disable(u) => u,
        }
    }
}

impl fmt::Display for ServiceCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceCall::DaemonReload => f.write_str("daemon-reload"),
            other => write!(f, "{} {}", other.action(), other.unit()),
        }
    }
}

#[derive(Debug, Default)]
struct Recording {
    calls: Vec<ServiceCall>,
    status_queries: Vec<String>,
    /// `ActiveState` per unit; a unit not listed is `inactive`.
    states: BTreeMap<String, String>,
    /// Calls that fail, with the stderr they report.
    failures: BTreeMap<ServiceCall, String>,
}

/// A fake systemd for tests: records every call in order, keeps each unit's
/// `ActiveState` (start/restart make it `active`, stop makes it `inactive`),
/// and fails the calls a test scripts to fail (a failed call changes no state).
#[derive(Debug, Default)]
pub struct RecordingServiceManager {
    inner: Mutex<Recording>,
}

impl RecordingServiceManager {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Sets the `ActiveState` `status` reports for `unit`.
    pub fn set_active_state(&self, unit: &str, active_state: &str) {
        self.lock()
            .states
            .insert(unit.to_owned(), active_state.to_owned());
    }

    /// Makes `call` fail (every time) with `stderr`, until [`Self::clear_failures`].
    pub fn fail(&self, call: ServiceCall, stderr: &str) {
        self.lock().failures.insert(call, stderr.to_owned());
    }

    pub fn clear_failures(&self) {
        self.lock().failures.clear();
    }

    /// Every call but status queries, in order.
    pub fn calls(&self) -> Vec<ServiceCall> {
        self.lock().calls.clone()
    }

    /// The calls so far, forgetting them.
    pub fn take_calls(&self) -> Vec<ServiceCall> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The units whose status was asked, in order.
    pub fn status_queries(&self) -> Vec<String> {
        self.lock().status_queries.clone()
    }

    fn record(&self, call: ServiceCall) -> Result<(), ApplyError> {
        let mut rec = self.lock();
        rec.calls.push(call.clone());
        if let Some(stderr) = rec.failures.get(&call) {
            return Err(ApplyError::Service {
                action: call.action(),
                unit: call.unit().to_owned(),
                source: CommandError::Failed {
                    program: "recording-service-manager".to_owned(),
                    status: "scripted failure".to_owned(),
                    stderr: stderr.clone(),
                },
            });
        }
        let new_state = match &call {
            ServiceCall::Start(u) | ServiceCall::Restart(u) => Some((u, "active")),
            ServiceCall::Stop(u) => Some((u, "inactive")),
            _ => None,
        };
        if let Some((unit, state)) = new_state {
            rec.states.insert(unit.clone(), state.to_owned());
        }
        Ok(())
    }
}

impl ServiceManager for RecordingServiceManager {
    fn daemon_reload(&self) -> Result<(), ApplyError> {
        self.record(ServiceCall::DaemonReload)
    }
    fn enable(&self, unit: &str) -> Result<(), ApplyError> {
        self.record(ServiceCall::Enable(unit.to_owned()))
    }
    fn start(&self, unit: &str) -> Result<(), ApplyError> {
        self.record(ServiceCall::Start(unit.to_owned()))
    }
    fn stop(&self, unit: &str) -> Result<(), ApplyError> {
        self.record(ServiceCall::Stop(unit.to_owned()))
    }
    fn restart(&self, unit: &str) -> Result<(), ApplyError> {
        self.record(ServiceCall::Restart(unit.to_owned()))
    }
    fn reload(&self, unit: &str) -> Result<(), ApplyError> {
        self.record(ServiceCall::Reload(unit.to_owned()))
    }
    fn mask(&self, unit: &str) -> Result<(), ApplyError> {
        self.record(ServiceCall::Mask(unit.to_owned()))
    }
    fn disable(&self, unit: &str) -> Result<(), ApplyError> {
        self.record(ServiceCall::Disable(unit.to_owned()))
    }
    fn status(&self, unit: &str) -> Result<UnitStatus, ApplyError> {
        let mut rec = self.lock();
        rec.status_queries.push(unit.to_owned());
        let active_state = rec
            .states
            .get(unit)
            .cloned()
            .unwrap_or_else(|| "inactive".to_owned());
        let sub_state = match active_state.as_str() {
            "active" => "running",
            "inactive" => "dead",
            other => other,
        }
        .to_owned();
        Ok(UnitStatus {
            name: unit.to_owned(),
            active_state,
            sub_state,
        })
    }
}
