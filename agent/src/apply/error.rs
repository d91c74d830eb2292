//! Why applying a plan failed: one enum with the path, unit or artifact it is
//! about. No variant carries the contents of a file, so a sensitive file can
//! never reach a log line through an error.

use std::path::PathBuf;
use std::time::Duration;

/// Why applying a plan (or part of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A filesystem operation on `path` failed; `action` says which.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A planned directory exists as something else.
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    /// The plan names a path that is not a clean absolute path (or a unit
    /// name that is not a plain file name).
    #[error("refusing {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    /// A file or directory belongs to a user missing from `<root>/etc/passwd`.
    #[error("user {name:?} (owner of {path}) is not in {passwd}")]
    UnknownUser {
        name: String,
        path: String,
        passwd: PathBuf,
    },
    /// A file or directory belongs to a group missing from `<root>/etc/group`.
    #[error("group {name:?} (group of {path}) is not in {group}")]
    UnknownGroup {
        name: String,
        path: String,
        group: PathBuf,
    },
    /// `<root>/etc/passwd` or `<root>/etc/group` has a line that does not parse.
    #[error("{path}:{line}: not a valid account line")]
    AccountFile { path: PathBuf, line: usize },
    /// `useradd` failed.
    #[error("creating system user {name}")]
    CreateUser {
        name: String,
        #[source]
        source: CommandError,
    },
    /// A service manager call failed.
    #[error("{action} {unit}")]
    Service {
        action: &'static str,
        unit: String,
        #[source]
        source: CommandError,
    },
    /// The state file exists but cannot be read as the agent's state.
    #[error("state file {path} is not valid (move it away to start over)")]
    State {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// Another applier holds the lock on the state directory.
    #[error("another apply holds the lock {path}")]
    Locked { path: PathBuf },
    /// Fetching an artifact (or its digest) failed.
    #[error("downloading {url} (artifact {artifact})")]
    Download {
        artifact: String,
        url: String,
        #[source]
        source: DownloadError,
    },
    /// The artifact URL is neither `https://`, `file://` nor a local path.
    #[error("artifact {artifact}: unsupported URL {url:?} (use https://, file:// or a local path)")]
    UnsupportedUrl { artifact: String, url: String },
    /// Neither `sha512` nor `sha512_url` was given, or what was given does not
    /// hold a SHA-512 digest.
    #[error("artifact {artifact}: {reason}")]
    Digest { artifact: String, reason: String },
    /// The download does not have the expected digest (truncated, corrupt or
    /// not the file the plan names). Nothing was installed.
    #[error("artifact {artifact}: SHA-512 mismatch: expected {expected}, downloaded {actual}")]
    DigestMismatch {
        artifact: String,
        expected: String,
        actual: String,
    },
    /// The archive has an entry that would land outside its directory, or a
    /// kind of entry an install directory has no use for.
    #[error("artifact {artifact}: refusing archive entry {entry:?}: {reason}")]
    UnsafeArchiveEntry {
        artifact: String,
        entry: String,
        reason: &'static str,
    },
    /// The archive is not one top directory holding the distribution.
    #[error("artifact {artifact}: {reason}")]
    ArchiveLayout { artifact: String, reason: String },
    /// Reading or unpacking the archive failed.
    #[error("artifact {artifact}: unpacking {path}")]
    Unpack {
        artifact: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A tarball's `install_to` exists and is not a symlink the agent can switch.
    #[error(
        "artifact {artifact}: {path} exists and is not a symlink; move it away so the agent can manage it"
    )]
    NotASymlink { artifact: String, path: PathBuf },
    /// Apt artifacts are installed only on the node itself.
    #[error(
        "artifact {artifact}: apt package {package} can only be installed when the root is \"/\" (root is {root})"
    )]
    AptNeedsHostRoot {
        artifact: String,
        package: String,
        root: PathBuf,
    },
    /// `apt-get` or `dpkg-query` failed.
    #[error("artifact {artifact}: apt package {package}")]
    Apt {
        artifact: String,
        package: String,
        #[source]
        source: CommandError,
    },
}

/// Why running an external command (`systemctl`, `useradd`, `apt-get`) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not run {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {timeout:?} and was killed")]
    Timeout { program: String, timeout: Duration },
    /// The command ran and failed; `stderr` is what it said (trimmed).
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// Why a download failed before its digest could be checked.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the digest file is larger than {0} bytes")]
    TooLarge(u64),
}

impl ApplyError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ApplyError::Io {
            action,
            path,
            source,
        }
    }
}
