//! The git side of the agent: keep a bare clone of the desired-state
//! repository under the state directory, fetch the configured branch, read a
//! commit's files without a checkout, verify SSH commit signatures, and tell
//! whether a fetched head descends from the last applied commit.
//!
//! Everything here blocks (libgit2); the daemon calls it from
//! `tokio::task::spawn_blocking`. Every fetch is bounded by the fetch
//! timeout ([`Repo::with_fetch_timeout`], default [`DEFAULT_FETCH_TIMEOUT`]):
//! it runs on a thread of its own and is given up at the deadline with
//! [`SyncError::TimedOut`], which counts as unreachable (`fetch.rs` says
//! what exactly is and is not covered).
//!
//! **Invariant:** a failed fetch leaves the clone as it was, so every commit
//! fetched before stays readable with [`Repo::files_at`]; nothing here ever
//! deletes objects (libgit2 has no gc). A timed-out fetch left running can
//! only add objects and record what the remote advertised.
//!
//! **Shallow fetches.** The first fetch of a branch is shallow (depth 1)
//! where the transport supports it (git://, ssh, https; libgit2's local
//! transport for `file://` and paths does not). Later fetches are ordinary
//! incremental fetches: they bring every commit between the heads already
//! held and the new head, so "does the new head descend from the last
//! applied commit" is answered locally for anything fetched since the clone
//! was made, and a force-pushed unrelated history (fetched complete) is a
//! local "no" too. Only when the answer would be "no" while the new head's
//! history runs into the shallow boundary (the clone was recreated after
//! the last applied commit) does [`Repo::is_descendant`] fetch the full
//! history once. A shallow clone therefore never gives a false "no" (a
//! refused fast-forward) nor a false "yes" (a missed rollback).

mod credentials;
mod error;
mod fetch;
mod files;
mod signature;

use std::cell::RefCell;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ErrorCode, Oid, Reference, Repository, RepositoryInitOptions, RepositoryOpenFlags};

pub use error::SyncError;
pub use fetch::{DEFAULT_FETCH_TIMEOUT, MAX_FETCH_TIMEOUT, MAX_HUNG_FETCHES};
pub use files::MAX_FILE_BYTES;
pub use signature::TrustedSigners;

use fetch::{Deadline, FetchJob, FetchThreads};

/// The remote's name in the clone's config.
const REMOTE: &str = "origin";

/// libgit2's `GIT_FETCH_DEPTH_UNSHALLOW`: fetch everything the shallow
/// boundary cut off.
const DEPTH_UNSHALLOW: i32 = i32::MAX;

/// libgit2's `GIT_ENOTSUPPORTED`.
const GIT_ENOTSUPPORTED: i32 = -39;

/// A bare clone of the desired-state repository, following one branch.
pub struct Repo {
    /// Replaced after every fetch (see [`Repo::refresh_handle`]).
    repo: RefCell<Repository>,
    dir: PathBuf,
    /// As configured; may hold credentials, so never logged: use `shown_url`.
    url: String,
    shown_url: String,
    branch: String,
    fetch_timeout: Duration,
    /// Fetch threads still running (only timed-out ones between calls).
    fetch_threads: FetchThreads,
}

impl fmt::Debug for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repo")
            .field("dir", &self.dir)
            .field("url", &self.shown_url)
            .field("branch", &self.branch)
            .field("fetch_timeout", &self.fetch_timeout)
            .finish_non_exhaustive()
    }
}

impl Repo {
    /// Opens the clone in `dir`, or creates it there (bare, with `url` as
    /// its `origin`).
    ///
    /// This never touches the network: a new clone is empty until the first
    /// [`Repo::fetch`], so the agent can start while the remote is down.
    /// An existing clone whose `origin` URL differs is re-pointed at `url`.
    /// Fetches are bounded by [`DEFAULT_FETCH_TIMEOUT`] until
    /// [`Repo::with_fetch_timeout`] says otherwise.
    pub fn open_or_clone(url: &str, branch: &str, dir: &Path) -> Result<Repo, SyncError> {
        if branch.is_empty() || !Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(SyncError::InvalidBranch {
                branch: branch.to_owned(),
            });
        }
        let shown_url = credentials::redact_url(url);
        let repo = if is_empty_or_missing(dir)? {
            init_bare(url, dir)?
        } else {
            open_clone(dir)?
        };
        match repo.find_remote(REMOTE) {
            Ok(remote) if remote.url_bytes() == url.as_bytes() => {}
            Ok(_) => {
                tracing::info!(dir = %dir.display(), url = %shown_url, "re-pointing the clone at a new URL");
                repo.remote_set_url(REMOTE, url)
                    .map_err(git_error(format!("set the URL of {}", dir.display())))?;
            }
            Err(e) if e.code() == ErrorCode::NotFound => {
                repo.remote(REMOTE, url)
                    .map_err(git_error(format!("add a remote to {}", dir.display())))?;
            }
            Err(e) => {
                return Err(SyncError::Git {
                    context: format!("read the remote of {}", dir.display()),
                    source: e,
                });
            }
        }
        tracing::debug!(dir = %dir.display(), url = %shown_url, branch, "opened clone");
        Ok(Repo {
            repo: RefCell::new(repo),
            dir: dir.to_owned(),
            url: url.to_owned(),
            shown_url,
            branch: branch.to_owned(),
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            fetch_threads: FetchThreads::default(),
        })
    }

    /// Bounds every later fetch (including the full-history fetch of
    /// [`Repo::is_descendant`]) to `timeout`, from the start of the call to
    /// its answer. Cut to the range 1 ms ..= [`MAX_FETCH_TIMEOUT`].
    #[must_use]
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Repo {
        self.fetch_timeout = timeout.clamp(Duration::from_millis(1), MAX_FETCH_TIMEOUT);
        self
    }

    /// How long a fetch may take.
    pub fn fetch_timeout(&self) -> Duration {
        self.fetch_timeout
    }

    /// Fetches the branch and returns the remote head's commit id (40 hex).
    ///
    /// The first fetch is shallow (depth 1) where the transport allows; later
    /// ones are incremental and keep every commit in between (see the module
    /// docs). On failure the clone is unchanged and earlier commits stay
    /// readable; [`SyncError::is_unreachable`] tells a dead remote apart.
    ///
    /// Returns by the fetch timeout: a remote that has not answered
    /// completely by then gives [`SyncError::TimedOut`] (unreachable), and
    /// the fetch is left to end on its own in the background; while
    /// [`MAX_HUNG_FETCHES`] of those still wait on the remote, a fetch fails
    /// at once with [`SyncError::FetchesHung`] (unreachable too).
    pub fn fetch(&mut self) -> Result<String, SyncError> {
        let deadline = Deadline::after(self.fetch_timeout);
        let first = self
            .repo
            .borrow()
            .find_reference(&self.tracking_ref())
            .is_err();
        let head = if first && !is_local_transport(&self.url) {
            match self.fetch_with_depth(1, deadline) {
                Err(SyncError::Unreachable { source, .. })
                    if source.raw_code() == GIT_ENOTSUPPORTED =>
                {
                    tracing::debug!(url = %self.shown_url, "shallow fetch not supported; fetching in full");
                    self.fetch_with_depth(0, deadline)?
                }
                other => other?,
            }
        } else {
            self.fetch_with_depth(0, deadline)?
        };
        let commit = head.to_string();
        tracing::debug!(url = %self.shown_url, branch = %self.branch, commit, shallow = self.repo.borrow().is_shallow(), "fetched");
        Ok(commit)
    }

    /// Every regular file of the tree at `commit` (path relative to the root
    /// with `/` separators → bytes), read from git objects; no checkout.
    /// A blob over [`MAX_FILE_BYTES`] is refused with
    /// [`SyncError::TooLarge`]; symlinks and submodules are skipped.
    pub fn files_at(&self, commit: &str) -> Result<desired_state::FileSet, SyncError> {
        let (oid, commit) = self.find_commit(commit)?;
        let repo = self.repo.borrow();
        let tree = repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(git_error(format!("read the tree of {commit}")))?;
        let files = files::read_tree(&repo, &commit, tree)?;
        tracing::debug!(commit, files = files.len(), "read commit tree");
        Ok(files)
    }

    /// Verifies the SSH signature of `commit` (git `gpg.format=ssh`: an
    /// SSHSIG with namespace `git`) against `trusted`, in process, and
    /// describes the signer: `ssh-ed25519 SHA256:… ops@example`.
    ///
    /// Unsigned → [`SyncError::Unsigned`]; another key →
    /// [`SyncError::UntrustedSigner`]; a signature that does not verify →
    /// [`SyncError::BadSignature`]; GPG or X.509 →
    /// [`SyncError::UnsupportedSignature`].
    pub fn verify_signature(
        &self,
        commit: &str,
        trusted: &TrustedSigners,
    ) -> Result<String, SyncError> {
        let (oid, commit) = self.find_commit(commit)?;
        let extracted = self.repo.borrow().extract_signature(&oid, None);
        let (signature, signed_data) = match extracted {
            Ok(extracted) => extracted,
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(SyncError::Unsigned { commit });
            }
            Err(e) => {
                return Err(SyncError::Git {
                    context: format!("read the signature of {commit}"),
                    source: e,
                });
            }
        };
        let signer = trusted.verify(&commit, &signature, &signed_data)?;
        tracing::debug!(commit, signer, "commit signature verified");
        Ok(signer)
    }

    /// Whether `commit` has `ancestor` in its history, or is `ancestor`.
    ///
    /// `commit` must be in the clone; `ancestor` need not be (a commit the
    /// full history does not contain is not an ancestor). If the clone is
    /// shallow and the local answer would be "no", this fetches the full
    /// history once (network!, bounded by the fetch timeout) and answers
    /// from that.
    pub fn is_descendant(&self, commit: &str, ancestor: &str) -> Result<bool, SyncError> {
        let (commit_oid, commit) = self.find_commit(commit)?;
        let ancestor_oid = parse_commit_id(ancestor)?;
        let ancestor = ancestor_oid.to_string();
        if commit_oid == ancestor_oid {
            return Ok(true);
        }
        let decided = descends(&self.repo.borrow(), commit_oid, ancestor_oid)?;
        if let Some(answer) = decided {
            tracing::debug!(commit, ancestor, answer, "ancestry decided");
            return Ok(answer);
        }
        tracing::info!(commit, ancestor, url = %self.shown_url,
            "shallow clone cannot show the ancestry; fetching the full history");
        // libgit2's local transport never fetches shallow, and refuses any
        // depth; a plain fetch there brings whatever is missing.
        let depth = if is_local_transport(&self.url) {
            0
        } else {
            DEPTH_UNSHALLOW
        };
        self.fetch_with_depth(depth, Deadline::after(self.fetch_timeout))?;
        let decided = descends(&self.repo.borrow(), commit_oid, ancestor_oid)?;
        match decided {
            Some(answer) => {
                tracing::debug!(commit, ancestor, answer, "ancestry decided on full history");
                Ok(answer)
            }
            None => Err(SyncError::HistoryIncomplete { commit, ancestor }),
        }
    }

    fn tracking_ref(&self) -> String {
        tracking_ref(&self.branch)
    }

    /// Fetches the branch with `depth` (0 = incremental, no limit) into the
    /// tracking ref by `deadline` and returns the head the remote advertised.
    fn fetch_with_depth(&self, depth: i32, deadline: Deadline) -> Result<Oid, SyncError> {
        let job = FetchJob {
            dir: self.dir.clone(),
            shown_url: self.shown_url.clone(),
            branch: self.branch.clone(),
            depth,
        };
        let head = fetch::fetch_until(job, deadline, &self.fetch_threads)?;
        self.refresh_handle()?;
        Ok(head)
    }

    /// Replaces the handle on the clone with a fresh one. A fetch writes
    /// through the fetch thread's own handle, and one opened before it may
    /// not see the new packs, and may still hold commits parsed with the
    /// shallow boundary's missing parents.
    fn refresh_handle(&self) -> Result<(), SyncError> {
        let fresh = open_clone(&self.dir)?;
        // No method holds a borrow across a fetch, so this always succeeds.
        match self.repo.try_borrow_mut() {
            Ok(mut repo) => {
                *repo = fresh;
                Ok(())
            }
            Err(_) => Err(SyncError::Git {
                context: format!(
                    "replace the handle on {} while it is in use",
                    self.dir.display()
                ),
                source: git2::Error::from_str("the clone's handle is borrowed"),
            }),
        }
    }

    /// Parses `commit` and checks it is a commit in the clone.
    fn find_commit(&self, commit: &str) -> Result<(Oid, String), SyncError> {
        let oid = parse_commit_id(commit)?;
        let hex = oid.to_string();
        let found = self.repo.borrow().find_commit(oid).map(|_| ());
        match found {
            Ok(_) => Ok((oid, hex)),
            Err(e) if matches!(e.code(), ErrorCode::NotFound | ErrorCode::Invalid) => {
                Err(SyncError::NotFound { commit: hex })
            }
            Err(e) => Err(SyncError::Git {
                context: format!("read commit {hex}"),
                source: e,
            }),
        }
    }
}

/// Decides ancestry from what `repo` holds: `None` when the answer is not a
/// certain "yes" and `commit`'s history in the clone reaches a shallow
/// boundary, behind which `ancestor` may hide.
fn descends(repo: &Repository, commit: Oid, ancestor: Oid) -> Result<Option<bool>, SyncError> {
    let walked = repo
        .find_commit(ancestor)
        .is_ok()
        .then(|| repo.graph_descendant_of(commit, ancestor));
    if let Some(Ok(true)) = walked {
        return Ok(Some(true));
    }
    if !history_complete(repo, commit)? {
        return Ok(None);
    }
    match walked {
        Some(Err(e)) => Err(SyncError::Git {
            context: format!("walk the history from {commit} to {ancestor}"),
            source: e,
        }),
        // A complete history that lacks the ancestor does not contain it.
        Some(Ok(_)) | None => Ok(Some(false)),
    }
}

/// Whether every ancestor of `commit` is in the clone: no shallow boundary
/// (a commit whose parents were not fetched) is reachable from it.
fn history_complete(repo: &Repository, commit: Oid) -> Result<bool, SyncError> {
    let shallow_file = repo.path().join("shallow");
    let roots: Vec<Oid> = match std::fs::read_to_string(&shallow_file) {
        Ok(text) => text
            .lines()
            .filter_map(|line| Oid::from_str(line.trim()).ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(SyncError::Io {
                path: shallow_file,
                source,
            });
        }
    };
    // Walk even without a shallow file: a parent missing for any other
    // reason cuts the history just the same.
    let mut walk = repo
        .revwalk()
        .map_err(git_error(format!("walk the history of {commit}")))?;
    if walk.push(commit).is_err() {
        return Ok(false);
    }
    for step in walk {
        match step {
            Ok(oid) if roots.contains(&oid) => return Ok(false),
            Ok(_) => {}
            // A missing parent: the history is cut here.
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// A full, 40-hex-digit commit id (libgit2 would pad a short one with zeros).
fn parse_commit_id(commit: &str) -> Result<Oid, SyncError> {
    let bad = || SyncError::BadCommitId {
        commit: commit.to_owned(),
    };
    if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Oid::from_str(commit).map_err(|_| bad())
}

/// Whether libgit2 serves `url` with its in-process local transport, which
/// cannot fetch shallow: `file://` URLs and existing local paths.
fn is_local_transport(url: &str) -> bool {
    url.starts_with("file://") || (!url.contains("://") && Path::new(url).exists())
}

/// The ref that holds the fetched head of `branch`.
fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/{REMOTE}/{branch}")
}

fn is_empty_or_missing(dir: &Path) -> Result<bool, SyncError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(SyncError::Io {
            path: dir.to_owned(),
            source: e,
        }),
    }
}

/// Creates the bare clone next to `dir` and renames it into place, so a
/// crash never leaves a half-initialised repository at `dir`.
fn init_bare(url: &str, dir: &Path) -> Result<Repository, SyncError> {
    let io = |source| SyncError::Io {
        path: dir.to_owned(),
        source,
    };
    let name = dir.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the clone directory has no name",
        ))
    })?;
    let mut partial_name = name.to_owned();
    partial_name.push(".partial");
    let partial = dir.with_file_name(partial_name);
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::remove_dir_all(&partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        _ => {}
    }
    let mut options = RepositoryInitOptions::new();
    options.bare(true).no_reinit(true);
    let repo = Repository::init_opts(&partial, &options).map_err(git_error(format!(
        "create a clone at {}",
        partial.display()
    )))?;
    repo.remote(REMOTE, url)
        .map_err(git_error(format!("add a remote to {}", partial.display())))?;
    drop(repo);
    std::fs::rename(&partial, dir).map_err(io)?;
    tracing::info!(dir = %dir.display(), url = %credentials::redact_url(url), "created clone");
    Repository::open_bare(dir).map_err(git_error(format!("open the clone at {}", dir.display())))
}

/// Opens the existing clone in `dir`, without searching parent directories.
fn open_clone(dir: &Path) -> Result<Repository, SyncError> {
    Repository::open_ext(
        dir,
        RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&OsStr>(),
    )
    .map_err(git_error(format!("open the clone at {}", dir.display())))
}

/// Wraps a libgit2 error with what was being done.
fn git_error(context: String) -> impl FnOnce(git2::Error) -> SyncError {
    move |source| SyncError::Git { context, source }
}
