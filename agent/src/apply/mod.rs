//! Making a node match a `roles::Plan`, crash-safely and in phases.
//!
//! Phase 1 ([`Applier::apply`], no lease needed): system users, directories,
//! files and unit files (compared by content, owner and mode; only what
//! differs is written, atomically), artifacts, removal of what left the plan,
//! one `daemon-reload` when a unit file changed, masks, enables, starts of
//! units that are not running, and reloads. Restarts of running units are
//! only *recorded* ([`Applier::pending_restarts`]); phase 2
//! ([`Applier::restart`]) carries them out while the daemon holds the
//! coordinator's restart lease.
//!
//! Crash safety: every write is a temp file + fsync + rename + directory
//! fsync; what a change requires (restart, reload, daemon-reload) is written
//! to the state file *before* the change is made, so an apply killed at any
//! point and run again converges and still restarts what it must. Temporary
//! files of a killed apply are removed by the next one.
//!
//! Paths: the plan's absolute paths are placed below `root` (`/` on a node).
//! The report's `changed`/`removed` use the plan's (node) paths; [`Applier::drift`]
//! and [`Applier::managed_paths`] return rooted paths.

mod accounts;
mod artifacts;
pub(crate) mod atomic;
mod changes;
mod command;
mod error;
mod services;
mod state;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use roles::{OnChange, Plan, PlannedDir};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use artifacts::{parse_sha512_file, sha512_digest};
pub use atomic::TEMP_PREFIX;
pub use changes::{ChangeAction, change_action};
pub use error::{ApplyError, CommandError, DownloadError};
pub use services::{
    NoServiceManager, RecordingServiceManager, ServiceCall, ServiceManager, Systemctl, UNMANAGED,
    is_running,
};

use accounts::Accounts;
use atomic::Ownership;
use state::ApplyState;
pub use state::PendingKafka;

/// Where unit files go (below the root).
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The state file's name in the state directory.
pub const STATE_FILE: &str = state::STATE_FILE;

/// What one apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Node paths of files, unit files and directories written or fixed.
    pub changed: Vec<String>,
    /// How many files, unit files and directories already matched.
    pub unchanged: usize,
    /// Node paths of files the agent wrote earlier that left the plan.
    pub removed: Vec<String>,
    pub daemon_reloaded: bool,
    pub started: Vec<String>,
    pub reloaded: Vec<String>,
    /// Every restart due (this apply's and earlier ones'), for phase 2.
    pub pending_restarts: Vec<String>,
    /// Names of artifacts installed by this apply.
    pub artifacts_installed: Vec<String>,
}

/// Applies plans to one root. Holds an exclusive lock on the state directory
/// for its lifetime: two appliers never work on the same node at once.
#[derive(Debug)]
pub struct Applier {
    root: PathBuf,
    state_dir: PathBuf,
    services: Arc<dyn ServiceManager>,
    state: ApplyState,
    /// What the state file holds, so an apply that changes nothing writes nothing.
    saved: ApplyState,
    _lock: Flock<File>,
}

/// One file the plan wants on disk: a plan file, a unit file, or the apt
/// source list of an apt artifact.
#[derive(Debug)]
struct Desired<'p> {
    path: String,
    rooted: PathBuf,
    contents: Cow<'p, [u8]>,
    owner: &'p str,
    group: &'p str,
    mode: u32,
    sensitive: bool,
    on_change: OnChange,
    /// The unit, when this is a unit file.
    unit: Option<&'p str>,
}

/// `ActiveState` of units, asked once per apply (forgotten when the apply
/// changes a unit's state).
#[derive(Debug, Default)]
pub(crate) struct StatusCache {
    states: BTreeMap<String, String>,
}

impl StatusCache {
    fn active_state(
        &mut self,
        services: &dyn ServiceManager,
        unit: &str,
    ) -> Result<String, ApplyError> {
        if let Some(s) = self.states.get(unit) {
            return Ok(s.clone());
        }
        let s = services.status(unit)?.active_state;
        self.states.insert(unit.to_owned(), s.clone());
        Ok(s)
    }

    fn running(&mut self, services: &dyn ServiceManager, unit: &str) -> Result<bool, ApplyError> {
        Ok(is_running(&self.active_state(services, unit)?))
    }

    fn forget(&mut self, unit: &str) {
        self.states.remove(unit);
    }

    fn clear(&mut self) {
        self.states.clear();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether systemd reads this node path (a unit file or a drop-in).
fn in_unit_dir(path: &str) -> bool {
    path.strip_prefix(UNIT_DIR)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The unit a node path names when it is a unit file (directly in [`UNIT_DIR`]).
fn unit_of_path(path: &str) -> Option<&str> {
    path.strip_prefix(UNIT_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|name| !name.contains('/'))
}

impl Applier {
    /// `root`: prefix for every absolute path of the plan (`/` on a node, a
    /// temporary directory in tests). `state_dir`: the agent's state
    /// directory, already rooted; created (0700) if missing.
    pub fn new(
        root: PathBuf,
        state_dir: PathBuf,
        services: Arc<dyn ServiceManager>,
    ) -> Result<Applier, ApplyError> {
        if !state_dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&state_dir)
                .map_err(ApplyError::io("creating directory", &state_dir))?;
        }
        let lock_path = state_dir.join(state::LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(ApplyError::io("opening", &lock_path))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, Errno::EWOULDBLOCK)) => return Err(ApplyError::Locked { path: lock_path }),
            Err((_, errno)) => {
                return Err(ApplyError::io("locking", lock_path)(io::Error::from(errno)));
            }
        };
        let state = ApplyState::load(&state_dir)?;
        Ok(Applier {
            root,
            state_dir,
            services,
            saved: state.clone(),
            state,
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Phase 1 of a reconcile: everything safe to do without a restart lease.
    pub fn apply(&mut self, plan: &Plan) -> Result<ApplyReport, ApplyError> {
        let span = tracing::info_span!("apply", node = %plan.node);
        let _entered = span.enter();
        // Every path is checked before anything is touched.
        let desired = self.desired(plan)?;
        let dirs: Vec<(&PlannedDir, PathBuf)> = plan
            .directories
            .iter()
            .map(|d| Ok((d, atomic::rooted(&self.root, &d.path)?)))
            .collect::<Result<_, ApplyError>>()?;
        let mut report = ApplyReport::default();

        // What an interrupted apply left behind.
        self.clean_temp_files(plan, &desired)?;
        self.collect_garbage()?;

        // Users, then everyone's ids, before writing anything.
        accounts::ensure_users(&self.root, &plan.users)?;
        let accounts = self.accounts()?;
        let owners: Vec<Ownership> = desired
            .iter()
            .map(|d| {
                let (uid, gid) = accounts.resolve(d.owner, d.group, &d.path)?;
                Ok(Ownership {
                    uid,
                    gid,
                    mode: d.mode,
                })
            })
            .collect::<Result<_, ApplyError>>()?;
        let dir_owners: Vec<Ownership> = dirs
            .iter()
            .map(|(d, _)| {
                let (uid, gid) = accounts.resolve(&d.owner, &d.group, &d.path)?;
                Ok(Ownership {
                    uid,
                    gid,
                    mode: d.mode,
                })
            })
            .collect::<Result<_, ApplyError>>()?;

        for ((d, path), own) in dirs.iter().zip(&dir_owners) {
            if ensure_directory(path, *own)? {
                tracing::info!(path = %d.path, mode = format_args!("{:o}", d.mode), owner = %d.owner, "directory created or fixed");
                report.changed.push(d.path.clone());
            } else {
                report.unchanged += 1;
            }
        }

        // Diff files by content, owner and mode.
        let mut status = StatusCache::default();
        let mut to_write = Vec::new();
        for (d, own) in desired.iter().zip(&owners) {
            if atomic::matches(&d.rooted, &d.contents, *own)? {
                report.unchanged += 1;
                // A write confirmed after a crash: the bytes are ours.
                if self.state.intents.remove(&d.path).is_some() {
                    self.state.files.insert(d.path.clone());
                }
            } else {
                to_write.push((d, *own));
            }
        }
        let wanted: BTreeSet<&str> = desired.iter().map(|d| d.path.as_str()).collect();
        let removals: BTreeSet<String> = self
            .state
            .files
            .iter()
            .chain(self.state.intents.keys())
            .filter(|p| !wanted.contains(p.as_str()))
            .cloned()
            .collect();

        // Intent first: what the writes will require survives a crash.
        for (d, _) in &to_write {
            self.state
                .intents
                .insert(d.path.clone(), sha256_hex(&d.contents));
            if let Some(unit) = d.unit {
                self.state.enabled.remove(unit);
            }
            if in_unit_dir(&d.path) {
                self.state.daemon_reload_needed = true;
            }
            self.note_change(&d.on_change, &mut status, &d.rooted)?;
        }
        if removals.iter().any(|p| in_unit_dir(p)) {
            self.state.daemon_reload_needed = true;
        }
        self.save_state()?;

        for (d, own) in &to_write {
            atomic::ensure_dir_all(atomic::parent(&d.rooted))?;
            atomic::write_atomic(&d.rooted, &d.contents, *own)?;
            if d.sensitive {
                tracing::info!(path = %d.path, sensitive = true, "wrote file");
            } else {
                tracing::info!(path = %d.path, bytes = d.contents.len(), "wrote file");
            }
            self.state.intents.remove(&d.path);
            self.state.files.insert(d.path.clone());
            report.changed.push(d.path.clone());
        }
        self.save_state()?;

        for a in &plan.artifacts {
            self.install_artifact(a, &mut status, &mut report)?;
        }
        self.state
            .artifacts
            .retain(|name, _| plan.artifacts.iter().any(|a| &a.name == name));
        self.save_state()?;

        for path in &removals {
            if self.remove_managed(path, &mut status)? {
                report.removed.push(path.clone());
            }
        }

        if self.state.daemon_reload_needed {
            self.services.daemon_reload()?;
            tracing::info!("systemd daemon-reload");
            self.state.daemon_reload_needed = false;
            self.save_state()?;
            report.daemon_reloaded = true;
            status.clear();
        }

        for unit in &plan.masked_units {
            if self.state.masked.contains(unit) {
                continue;
            }
            self.services.mask(unit)?;
            // Masking does not stop a running unit (it may hold our port).
            if status.running(&*self.services, unit)? {
                self.services.stop(unit)?;
                status.forget(unit);
            }
            tracing::info!(unit = %unit, "masked unit");
            self.state.masked.insert(unit.clone());
            self.save_state()?;
        }
        self.state.masked.retain(|u| plan.masked_units.contains(u));

        for unit in &plan.units {
            let enabled = self.state.enabled.contains(&unit.name);
            if unit.enable && !enabled {
                self.services.enable(&unit.name)?;
                tracing::info!(unit = %unit.name, "enabled unit");
                self.state.enabled.insert(unit.name.clone());
                self.save_state()?;
            } else if !unit.enable && enabled {
                self.services.disable(&unit.name)?;
                tracing::info!(unit = %unit.name, "disabled unit");
                self.state.enabled.remove(&unit.name);
                self.save_state()?;
            }
        }

        for unit in plan.units.iter().filter(|u| u.start) {
            let state = status.active_state(&*self.services, &unit.name)?;
            if state == UNMANAGED || is_running(&state) {
                continue;
            }
            self.services.start(&unit.name)?;
            tracing::info!(unit = %unit.name, was = %state, "started unit");
            status.forget(&unit.name);
            // A unit that was not running starts with every new input.
            self.state.pending_restarts.remove(&unit.name);
            self.state.pending_kafka.remove(&unit.name);
            self.forget_running_version(&unit.name);
            self.save_state()?;
            report.started.push(unit.name.clone());
        }

        for unit in self.state.pending_reloads.clone() {
            if status.running(&*self.services, &unit)? {
                self.services.reload(&unit)?;
                tracing::info!(unit = %unit, "reloaded unit");
                report.reloaded.push(unit.clone());
            }
            self.state.pending_reloads.remove(&unit);
            self.save_state()?;
        }

        self.save_state()?;
        report.pending_restarts = self.pending_restarts();
        tracing::info!(
            changed = report.changed.len(),
            unchanged = report.unchanged,
            removed = report.removed.len(),
            daemon_reloaded = report.daemon_reloaded,
            started = report.started.len(),
            reloaded = report.reloaded.len(),
            pending_restarts = report.pending_restarts.len(),
            artifacts_installed = report.artifacts_installed.len(),
            "applied plan"
        );
        Ok(report)
    }

    /// Units whose restart is due, persisted in the state file: a crash
    /// between writing a file and restarting its unit still restarts it later.
    pub fn pending_restarts(&self) -> Vec<String> {
        self.state.pending_restarts.iter().cloned().collect()
    }

    /// Kafka units with changes to apply through the Admin API (live
    /// configs, keystore reloads), persisted like restarts.
    pub fn pending_kafka(&self) -> BTreeMap<String, PendingKafka> {
        self.state.pending_kafka.clone()
    }

    /// The Kafka work of `unit` is done: what Kafka took live is applied,
    /// and `restart` says whether the rest needs a restart (then pending,
    /// under the lease).
    pub fn kafka_done(&mut self, unit: &str, restart: bool) -> Result<(), ApplyError> {
        self.state.pending_kafka.remove(unit);
        if restart && self.state.pending_restarts.insert(unit.to_owned()) {
            tracing::info!(unit = %unit, "restart pending: Kafka cannot take the change live");
        }
        self.save_state()
    }

    /// Phase 2, called while the daemon holds the coordinator's lease:
    /// restarts these units (in order) and clears each from the pending set
    /// once its restart succeeded. Stops at the first failure, which stays pending.
    pub fn restart(&mut self, units: &[String]) -> Result<(), ApplyError> {
        for unit in units {
            if unit == roles::layout::AGENT_UNIT {
                // Restarting our own unit ends this process before the call
                // returns: forget it first, or the agent would restart itself
                // on every start.
                self.state.pending_restarts.remove(unit);
                self.forget_running_version(unit);
                self.save_state()?;
                tracing::info!(unit = %unit, "restarting the agent's own unit");
                self.services.restart(unit)?;
                continue;
            }
            self.services.restart(unit)?;
            tracing::info!(unit = %unit, "restarted unit");
            self.state.pending_restarts.remove(unit);
            // The restart read every new input.
            self.state.pending_kafka.remove(unit);
            self.forget_running_version(unit);
            self.save_state()?;
        }
        Ok(())
    }

    /// Managed paths (rooted) whose content, owner or mode on disk differs
    /// from the plan, and installed artifacts that are not what was
    /// installed: drift. A plan that cannot be placed below the root has no drift
    /// to report ([`Applier::apply`] reports its error).
    pub fn drift(&self, plan: &Plan) -> Vec<String> {
        let Ok(desired) = self.desired(plan) else {
            return Vec::new();
        };
        let accounts = self.accounts().unwrap_or_default();
        let mut drifted = Vec::new();
        for d in &desired {
            let same = accounts
                .resolve(d.owner, d.group, &d.path)
                .and_then(|(uid, gid)| {
                    atomic::matches(
                        &d.rooted,
                        &d.contents,
                        Ownership {
                            uid,
                            gid,
                            mode: d.mode,
                        },
                    )
                });
            if !matches!(same, Ok(true)) {
                drifted.push(d.rooted.to_string_lossy().into_owned());
            }
        }
        for a in &plan.artifacts {
            if let Some(path) = self.artifact_drift(a) {
                drifted.push(path.to_string_lossy().into_owned());
            }
        }
        drifted
    }

    /// Every rooted path the agent manages for this plan (files, unit files,
    /// apt source lists, artifact install paths), to watch for drift. Writes
    /// replace files by rename, so watch their parent directories.
    /// Directories are not listed: their contents are not the agent's.
    pub fn managed_paths(&self, plan: &Plan) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .desired(plan)
            .map(|d| d.into_iter().map(|d| d.rooted).collect())
            .unwrap_or_default();
        paths.extend(
            plan.artifacts
                .iter()
                .filter(|a| a.apt.is_none())
                .filter_map(|a| atomic::rooted(&self.root, &a.install_to).ok()),
        );
        paths
    }

    // -------------------------------------------------------------- internals

    fn accounts(&self) -> Result<Accounts, ApplyError> {
        Accounts::read(&self.root)
    }

    /// Writes the state file if it differs from what is on disk.
    fn save_state(&mut self) -> Result<(), ApplyError> {
        if self.state != self.saved {
            self.state.save(&self.state_dir)?;
            self.saved = self.state.clone();
        }
        Ok(())
    }

    /// Records what a change with this class requires of its unit, if the
    /// unit is running (see [`change_action`]).
    /// `path`: the file about to be replaced (its current bytes are the
    /// baseline of a Kafka config change).
    fn note_change(
        &mut self,
        on_change: &OnChange,
        status: &mut StatusCache,
        path: &Path,
    ) -> Result<(), ApplyError> {
        match change_action(on_change) {
            ChangeAction::Nothing => {}
            ChangeAction::ReloadNow(unit) => {
                if status.running(&*self.services, unit)? {
                    self.state.pending_reloads.insert(unit.to_owned());
                }
            }
            ChangeAction::RestartWithLease(unit) => {
                if status.running(&*self.services, unit)?
                    && self.state.pending_restarts.insert(unit.to_owned())
                {
                    tracing::info!(unit = %unit, "restart pending");
                }
            }
            ChangeAction::KafkaConfig(unit) => {
                if status.running(&*self.services, unit)? {
                    let pending = self.state.pending_kafka.entry(unit.to_owned()).or_default();
                    // Several changes before the agent gets to Kafka: the
                    // baseline stays the file the running Kafka matched.
                    if pending.config_before.is_none() {
                        let before = atomic::read_regular(path)?.unwrap_or_default();
                        pending.config_before = Some(String::from_utf8_lossy(&before).into_owned());
                    }
                    tracing::info!(unit = %unit, "Kafka config change pending (live where Kafka allows)");
                }
            }
            ChangeAction::KafkaReload(unit) => {
                if status.running(&*self.services, unit)? {
                    self.state
                        .pending_kafka
                        .entry(unit.to_owned())
                        .or_default()
                        .reload_tls = true;
                    tracing::info!(unit = %unit, "TLS reload pending");
                }
            }
        }
        Ok(())
    }

    /// The files the plan wants, with every path checked.
    fn desired<'p>(&self, plan: &'p Plan) -> Result<Vec<Desired<'p>>, ApplyError> {
        let mut out = Vec::with_capacity(plan.files.len() + plan.units.len());
        for f in &plan.files {
            out.push(Desired {
                path: f.path.clone(),
                rooted: atomic::rooted(&self.root, &f.path)?,
                contents: Cow::Borrowed(&f.contents),
                owner: &f.owner,
                group: &f.group,
                mode: f.mode,
                sensitive: f.sensitive,
                on_change: f.on_change.clone(),
                unit: None,
            });
        }
        for u in &plan.units {
            if u.name.is_empty() || u.name.contains('/') || u.name.starts_with('.') {
                return Err(ApplyError::InvalidPath {
                    path: u.name.clone(),
                    reason: "not a unit file name",
                });
            }
            let path = format!("{UNIT_DIR}/{}", u.name);
            out.push(Desired {
                rooted: atomic::rooted(&self.root, &path)?,
                path,
                contents: Cow::Borrowed(u.contents.as_bytes()),
                owner: "root",
                group: "root",
                mode: 0o644,
                sensitive: false,
                // A changed definition of a running unit needs a restart.
                on_change: OnChange::Restart(u.name.clone()),
                unit: Some(&u.name),
            });
        }
        for a in &plan.artifacts {
            if let Some(apt) = &a.apt {
                let path = artifacts::apt_source_path(&a.name);
                out.push(Desired {
                    rooted: atomic::rooted(&self.root, &path)?,
                    path,
                    contents: Cow::Owned(
                        format!("# {}\n{}\n", roles::layout::MANAGED_HEADER, apt.source)
                            .into_bytes(),
                    ),
                    owner: "root",
                    group: "root",
                    mode: 0o644,
                    sensitive: false,
                    on_change: OnChange::Nothing,
                    unit: None,
                });
            } else {
                atomic::rooted(&self.root, &a.install_to)?;
            }
        }
        let mut seen = BTreeSet::new();
        for d in &out {
            if !seen.insert(d.path.as_str()) {
                return Err(ApplyError::InvalidPath {
                    path: d.path.clone(),
                    reason: "the plan lists it twice",
                });
            }
        }
        Ok(out)
    }

    /// Removes `.kraftops-tmp-*` leftovers in every directory this apply
    /// writes to or removes from, and in the state directory.
    fn clean_temp_files(&self, plan: &Plan, desired: &[Desired<'_>]) -> Result<(), ApplyError> {
        let mut dirs: BTreeSet<PathBuf> = desired
            .iter()
            .map(|d| atomic::parent(&d.rooted).to_owned())
            .collect();
        for a in plan.artifacts.iter().filter(|a| a.apt.is_none()) {
            dirs.insert(atomic::parent(&atomic::rooted(&self.root, &a.install_to)?).to_owned());
        }
        for p in self.state.files.iter().chain(self.state.intents.keys()) {
            if let Ok(rooted) = atomic::rooted(&self.root, p) {
                dirs.insert(atomic::parent(&rooted).to_owned());
            }
        }
        dirs.insert(self.state_dir.clone());
        for dir in &dirs {
            atomic::clean_temp_files(dir)?;
        }
        Ok(())
    }

    /// Removes a file the agent wrote that left the plan (a unit is stopped
    /// and disabled first). A path only recorded as an unconfirmed write is
    /// removed only if it holds the bytes that write was about to put there.
    /// Returns whether the path was the agent's.
    fn remove_managed(&mut self, path: &str, status: &mut StatusCache) -> Result<bool, ApplyError> {
        let rooted = atomic::rooted(&self.root, path)?;
        let ours = self.state.files.contains(path)
            || match self.state.intents.get(path) {
                Some(hash) => {
                    atomic::read_regular(&rooted)?.is_some_and(|b| &sha256_hex(&b) == hash)
                }
                None => false,
            };
        if ours {
            if let Some(unit) = unit_of_path(path) {
                if status.running(&*self.services, unit)? {
                    self.services.stop(unit)?;
                    status.forget(unit);
                }
                self.services.disable(unit)?;
                self.state.enabled.remove(unit);
                self.state.pending_restarts.remove(unit);
                self.state.pending_reloads.remove(unit);
                self.state.pending_kafka.remove(unit);
                self.forget_running_version(unit);
                self.state.daemon_reload_needed = true;
                self.save_state()?;
            }
            atomic::remove_file(&rooted)?;
            tracing::info!(path = %path, "removed file that left the plan");
        } else {
            tracing::info!(path = %path, "forgetting an unconfirmed write that left the plan; not removing it");
        }
        self.state.files.remove(path);
        self.state.intents.remove(path);
        self.save_state()?;
        Ok(ours)
    }
}

/// Creates a planned directory (never emptying one) or fixes its owner and
/// mode; whether anything changed. A symlink to a directory is followed.
fn ensure_directory(path: &Path, own: Ownership) -> Result<bool, ApplyError> {
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            if m.uid() == own.uid && m.gid() == own.gid && m.mode() & 0o7777 == own.mode {
                return Ok(false);
            }
            std::os::unix::fs::chown(path, Some(own.uid), Some(own.gid))
                .map_err(ApplyError::io("setting the owner of", path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(own.mode))
                .map_err(ApplyError::io("setting the mode of", path))?;
            Ok(true)
        }
        Ok(_) => Err(ApplyError::NotADirectory {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = atomic::parent(path);
            atomic::ensure_dir_all(parent)?;
            // Never wider than planned, even for a moment (umask may narrow it).
            fs::DirBuilder::new()
                .mode(own.mode & 0o777)
                .create(path)
                .map_err(ApplyError::io("creating directory", path))?;
            std::os::unix::fs::chown(path, Some(own.uid), Some(own.gid))
                .map_err(ApplyError::io("setting the owner of", path))?;
            fs::set_permissions(path, fs::Permissions::from_mode(own.mode))
                .map_err(ApplyError::io("setting the mode of", path))?;
            atomic::fsync_dir(parent)?;
            Ok(true)
        }
        Err(e) => Err(ApplyError::io("inspecting", path)(e)),
    }
}
