//! What the applier remembers between applies and across crashes, in
//! `<state_dir>/apply-state.json` (written atomically, mode 0600).
//!
//! Intent is recorded *before* the side effect it is about: the restart a
//! file change needs is persisted before the file is renamed into place, so a
//! crash between the two still restarts the unit on a later apply.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{self, Ownership};
use super::error::ApplyError;

pub(crate) const STATE_FILE: &str = "apply-state.json";
pub(crate) const LOCK_FILE: &str = "apply.lock";

/// The persisted state. Paths are node paths (as the plan names them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ApplyState {
    pub version: u32,
    /// Files and unit files the agent wrote: only these are ever removed.
    pub files: BTreeSet<String>,
    /// Writes begun but not confirmed, with the SHA-256 of the bytes being
    /// written. An unconfirmed path that leaves the plan is removed only if it
    /// holds exactly those bytes (the write happened; the crash came after).
    pub intents: BTreeMap<String, String>,
    /// Units to restart under a lease.
    pub pending_restarts: BTreeSet<String>,
    /// Units to reload (no lease needed), done before the apply returns.
    pub pending_reloads: BTreeSet<String>,
    /// Kafka units with changes the agent applies through Kafka's Admin API
    /// after the apply (live configs, keystore reloads); what Kafka cannot
    /// take live becomes a pending restart.
    pub pending_kafka: BTreeMap<String, PendingKafka>,
    /// A unit file changed or was removed since the last daemon-reload.
    pub daemon_reload_needed: bool,
    /// Units the agent enabled (enabled once, again when their file changes).
    pub enabled: BTreeSet<String>,
    /// Units the agent masked (masked once).
    pub masked: BTreeSet<String>,
    /// Installed artifacts by name.
    pub artifacts: BTreeMap<String, ArtifactRecord>,
    /// Directories the agent unpacked and no longer needs (old versions),
    /// deleted at the start of the next apply.
    pub garbage: BTreeSet<String>,
}

/// Kafka work recorded by an apply, done by the agent through the Admin API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PendingKafka {
    /// `server.properties` as it was before the first change not yet
    /// applied to the running Kafka (`None`: no config change pending).
    pub config_before: Option<String>,
    /// A listener keystore or truststore was rewritten.
    pub reload_tls: bool,
}

/// Where an artifact came from and what is installed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ArtifactRecord {
    pub url: String,
    pub sha512_url: Option<String>,
    /// The verified digest (lowercase hex).
    pub sha512: String,
    pub install_to: String,
    /// The versioned directory `install_to` links to (tarballs), node path.
    pub dir: Option<String>,
    /// The version before `dir`, kept for a rollback (tarballs).
    pub previous: Option<String>,
    /// The version the artifact's running unit was started from, while
    /// that unit waits for its restart (tarballs): the link has moved on,
    /// but the running process still reads from this directory, so it is
    /// kept on disk until the unit restarts, however many versions come
    /// in between.
    pub running: Option<RunningVersion>,
}

/// A versioned directory a running unit was started from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RunningVersion {
    /// The unit whose restart makes it use the new version.
    pub unit: String,
    /// The versioned directory (node path).
    pub dir: String,
}

pub(crate) const STATE_VERSION: u32 = 1;

impl ApplyState {
    pub(crate) fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    pub(crate) fn load(state_dir: &Path) -> Result<Self, ApplyError> {
        let path = Self::path(state_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    version: STATE_VERSION,
                    ..Self::default()
                });
            }
            Err(e) => return Err(ApplyError::io("reading", path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| ApplyError::State { path, source })
    }

    pub(crate) fn save(&self, state_dir: &Path) -> Result<(), ApplyError> {
        let path = Self::path(state_dir);
        let mut json = serde_json::to_vec_pretty(self).map_err(|source| ApplyError::State {
            path: path.clone(),
            source,
        })?;
        json.push(b'\n');
        let own = Ownership {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mode: 0o600,
        };
        atomic::write_atomic(&path, &json, own)
    }
}
