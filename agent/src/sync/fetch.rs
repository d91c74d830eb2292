//! One fetch of the followed branch, bounded by the fetch timeout, so a remote
//! that accepts the connection and then says nothing (or drips its answer)
//! cannot hang the reconcile loop.
//!
//! **How.** libgit2 has no per-operation timeout, and its process-wide socket
//! timeouts (`GIT_OPT_SET_SERVER_CONNECT_TIMEOUT`, `GIT_OPT_SET_SERVER_TIMEOUT`)
//! are reachable only through `unsafe` git2 calls, which the workspace
//! forbids (`unsafe_code = "forbid"`). So each fetch runs on a thread of its
//! own, with its own handle on the clone, and the caller stops waiting at the
//! deadline. On top of that the fetch's `transfer_progress` and
//! `sideband_progress` callbacks return `false` (which makes libgit2 abort)
//! once the deadline has passed or the caller has given up, so a fetch that
//! is still receiving data stops itself instead of running on.
//!
//! **What the timeout covers:** the whole fetch, every transport and phase
//! alike: DNS, TCP connect, the TLS handshake of `https://` (OpenSSL), the SSH
//! handshake and authentication of `ssh://` (libssh2), credential helpers,
//! the ref advertisement, negotiation and the pack transfer, on `git://`,
//! `http(s)://`, `ssh://` and `file://`. The caller always gets an answer by
//! the deadline (plus thread scheduling).
//!
//! **What it does not cover:** a thread blocked in a `connect`/`read` that
//! never returns cannot be interrupted from outside (libgit2 offers no such
//! call, and its own socket timeouts are out of reach, see above). Such a
//! fetch is left behind, "hung", until the remote answers or closes, or TCP
//! keepalive ends it (libgit2 turns it on for IPv4 connections and declares
//! a peer that stopped answering at the TCP level dead after about 90 s); a
//! peer that is alive and silent keeps it forever. At most
//! [`MAX_HUNG_FETCHES`] per [`super::Repo`] are left behind; past that a
//! fetch fails at once with [`SyncError::FetchesHung`] until one ends. When a
//! hung fetch's remote does answer later, the fetch aborts at its next
//! progress callback; only an answer that needs no new objects can still
//! complete, and then it records what the remote advertised, exactly as a
//! successful fetch would (should that collide with a newer fetch on a lock
//! file, the newer one fails with a local git error and the next reconcile
//! retries). Nothing is ever deleted, so every commit fetched before stays
//! readable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use git2::{AutotagOption, ErrorClass, FetchOptions, Oid};

use super::{REMOTE, SyncError, credentials, git_error};

/// How long a fetch may take unless configured otherwise
/// (`repository.fetch_timeout` in `agent.yaml`).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest fetch timeout honoured; longer ones are cut to this.
pub const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// How many timed-out fetches of one [`super::Repo`] may still be waiting on
/// their remote before no new fetch is started.
pub const MAX_HUNG_FETCHES: usize = 3;

/// When a fetch (including any retry it makes) must have finished.
#[derive(Clone, Copy, Debug)]
pub(super) struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// `timeout` from now. `Repo` keeps timeouts to at most
    /// [`MAX_FETCH_TIMEOUT`], so the addition cannot overflow.
    pub(super) fn after(timeout: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            at: now.checked_add(timeout).unwrap_or(now),
            timeout,
        }
    }

    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }
}

/// What one fetch needs, owned so it can move to the fetch thread.
pub(super) struct FetchJob {
    /// The clone (its `origin` remote holds the real URL).
    pub(super) dir: PathBuf,
    /// The URL without credentials, for errors and logs.
    pub(super) shown_url: String,
    pub(super) branch: String,
    /// 0 = incremental, no limit.
    pub(super) depth: i32,
}

/// The fetch threads a `Repo` started that have not ended yet; shared with
/// those threads, which count themselves out.
#[derive(Clone, Debug, Default)]
pub(super) struct FetchThreads(Arc<AtomicUsize>);

impl FetchThreads {
    fn running(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    fn enter(&self) -> ThreadCount {
        self.0.fetch_add(1, Ordering::AcqRel);
        ThreadCount(self.clone())
    }
}

/// One running fetch thread; counts it out when dropped, also when the
/// thread could not be spawned or unwinds.
struct ThreadCount(FetchThreads);

impl Drop for ThreadCount {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells the fetch thread's callbacks to abort.
#[derive(Clone)]
struct Stop {
    given_up: Arc<AtomicBool>,
    deadline: Instant,
}

impl Stop {
    fn now(&self) -> bool {
        self.given_up.load(Ordering::Acquire) || Instant::now() >= self.deadline
    }
}

/// Runs `job` on a thread of its own and waits for it until `deadline`;
/// returns the head the remote advertised for the branch.
///
/// A fetch still running at the deadline is told to stop and left behind;
/// the caller gets [`SyncError::TimedOut`] naming the URL and the timeout.
pub(super) fn fetch_until(
    job: FetchJob,
    deadline: Deadline,
    threads: &FetchThreads,
) -> Result<Oid, SyncError> {
    let url = job.shown_url.clone();
    // A `Repo` waits for each fetch it starts unless the fetch timed out,
    // so every thread still running now is a hung one.
    let hung = threads.running();
    if hung >= MAX_HUNG_FETCHES {
        return Err(SyncError::FetchesHung { url, hung });
    }
    let stop = Stop {
        given_up: Arc::new(AtomicBool::new(false)),
        deadline: deadline.at,
    };
    let (send, receive) = mpsc::sync_channel(1);
    let count = threads.enter();
    let worker_stop = stop.clone();
    let span = tracing::Span::current();
    let spawned = std::thread::Builder::new()
        .name("kraftops-fetch".to_owned())
        .spawn(move || {
            let result = span.in_scope(|| fetch_in_clone(&job, deadline, &worker_stop));
            // Counted out before the result is seen, so the next fetch never
            // mistakes this finished thread for a hung one.
            drop(count);
            // The caller may have given up already; then nobody listens.
            let _ = send.send(result);
        });
    if let Err(source) = spawned {
        return Err(SyncError::FetchThread { url, source });
    }
    match receive.recv_timeout(deadline.remaining()) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            stop.given_up.store(true, Ordering::Release);
            // The caller reports the error; this only says what is left behind.
            tracing::info!(url, timeout = ?deadline.timeout, hung = threads.running(),
                "fetch timed out; its thread is left to end on its own");
            Err(SyncError::TimedOut {
                url,
                timeout: deadline.timeout,
            })
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(SyncError::FetchThread {
            url,
            source: std::io::Error::other("it ended without a result"),
        }),
    }
}

/// The fetch itself, on the fetch thread: fetches the branch with
/// `job.depth` into the tracking ref and returns the head the remote
/// advertised.
fn fetch_in_clone(job: &FetchJob, deadline: Deadline, stop: &Stop) -> Result<Oid, SyncError> {
    let url = &job.shown_url;
    let timed_out = || SyncError::TimedOut {
        url: url.clone(),
        timeout: deadline.timeout,
    };
    let unreachable = |source| {
        if stop.now() {
            timed_out()
        } else {
            SyncError::Unreachable {
                url: url.clone(),
                source,
            }
        }
    };
    let repo = super::open_clone(&job.dir)?;
    let branch_ref = format!("refs/heads/{}", job.branch);
    let tracking_ref = super::tracking_ref(&job.branch);
    let refspec = format!("+{branch_ref}:{tracking_ref}");
    let mut remote = repo.find_remote(REMOTE).map_err(git_error(format!(
        "read the remote of {}",
        job.dir.display()
    )))?;
    let mut callbacks = credentials::callbacks(repo.config().ok());
    let on_transfer = stop.clone();
    callbacks.transfer_progress(move |_| !on_transfer.now());
    let on_sideband = stop.clone();
    callbacks.sideband_progress(move |_| !on_sideband.now());
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .download_tags(AutotagOption::None)
        .update_fetchhead(false)
        .depth(job.depth);
    tracing::debug!(url, branch = %job.branch, depth = job.depth, timeout = ?deadline.timeout, "fetching");
    remote
        .fetch(
            &[refspec.as_str()],
            Some(&mut options),
            Some("kraftops-agent: fetch"),
        )
        .map_err(|e| {
            if stop.now() {
                timed_out()
            } else if is_local_failure(&e) {
                SyncError::Git {
                    context: format!("store objects fetched from {url}"),
                    source: e,
                }
            } else {
                unreachable(e)
            }
        })?;
    let advertised = remote
        .list()
        .map_err(unreachable)?
        .iter()
        .find(|head| head.name() == branch_ref)
        .map(|head| head.oid());
    let Some(head) = advertised else {
        return Err(SyncError::BranchMissing {
            url: url.clone(),
            branch: job.branch.clone(),
        });
    };
    // The refspec already moved the tracking ref; make sure it names
    // exactly what the remote advertised.
    repo.reference(&tracking_ref, head, true, "kraftops-agent: fetched head")
        .map_err(git_error(format!("record fetched head {head}")))?;
    Ok(head)
}

/// Whether a fetch failed on our side (storing what arrived) rather than in
/// reaching the remote or receiving from it.
fn is_local_failure(e: &git2::Error) -> bool {
    matches!(
        e.class(),
        ErrorClass::Odb
            | ErrorClass::NoMemory
            | ErrorClass::Config
            | ErrorClass::Reference
            | ErrorClass::Filesystem
            | ErrorClass::Thread
    )
}
