//! What can go wrong while syncing the desired-state repository, and which of
//! those failures mean "the remote could not be reached" rather than "what it
//! served was refused".

use std::path::PathBuf;
use std::time::Duration;

/// An error from [`super::Repo`] or [`super::TrustedSigners`].
///
/// Every variant names what it was working on (URL, commit, path). URLs are
/// stored with any password removed, so the error can be logged as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The remote could not be reached or did not serve the repository:
    /// network down, DNS, connection refused, authentication failed, missing
    /// repository. The local clone is unchanged.
    #[error("git remote {url} is unreachable")]
    Unreachable {
        url: String,
        #[source]
        source: git2::Error,
    },
    /// The fetch did not finish within the configured fetch timeout: the
    /// remote accepted the connection and then went silent, or sent too
    /// slowly. The local clone is unchanged (see [`super::Repo::fetch`] for
    /// what a fetch given up on may still add later).
    #[error("fetching from git remote {url} did not finish within {}", shown_duration(*.timeout))]
    TimedOut { url: String, timeout: Duration },
    /// Earlier fetches from `url` that timed out are still waiting on the
    /// remote, as many as the agent lets linger; no new fetch is started
    /// until one of them ends.
    #[error(
        "{hung} earlier fetches from git remote {url} are still waiting on it; not starting another"
    )]
    FetchesHung { url: String, hung: usize },
    /// The thread that runs a fetch could not be started, or died.
    #[error("the thread fetching from {url} failed")]
    FetchThread {
        url: String,
        #[source]
        source: std::io::Error,
    },
    /// The remote answered but does not have the configured branch.
    #[error("branch {branch:?} does not exist on {url}")]
    BranchMissing { url: String, branch: String },
    /// The configured branch is not a valid git branch name.
    #[error("{branch:?} is not a valid git branch name")]
    InvalidBranch { branch: String },
    /// The clone's directory or a file in it could not be read or created.
    #[error("cannot access {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A local git operation failed; `context` says which.
    #[error("git: {context}")]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
    /// The clone is shallow and even after fetching the remote's full history
    /// the ancestry of `commit` could not be decided (it is no longer on the
    /// remote branch). Fetch again and retry.
    #[error(
        "cannot tell whether {commit} descends from {ancestor}: the clone's history is incomplete"
    )]
    HistoryIncomplete { commit: String, ancestor: String },
    /// `commit` is not a full 40-hex-digit commit id.
    #[error("{commit:?} is not a full 40-hex-digit commit id")]
    BadCommitId { commit: String },
    /// The commit is not in the local clone (never fetched, or not a commit).
    #[error("commit {commit} is not in the local clone")]
    NotFound { commit: String },
    /// A file in the commit's tree is bigger than kraftops reads.
    #[error("{path} in commit {commit} is {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge {
        commit: String,
        path: String,
        bytes: u64,
        limit: u64,
    },
    /// A path in the commit's tree is not UTF-8 (shown lossily).
    #[error("path {path:?} in commit {commit} is not valid UTF-8")]
    NonUtf8Path { commit: String, path: String },
    /// The commit carries no signature, but trusted keys are configured.
    #[error("commit {commit} is not signed")]
    Unsigned { commit: String },
    /// The commit is signed by a key that is not among the trusted keys.
    #[error("commit {commit} is signed by {fingerprint}, which is not a trusted key")]
    UntrustedSigner { commit: String, fingerprint: String },
    /// The signature is malformed or does not match the commit.
    #[error("commit {commit} has a bad signature: {reason}")]
    BadSignature { commit: String, reason: String },
    /// The commit is signed with something other than SSH (`gpg.format=ssh`).
    #[error(
        "commit {commit} has a {kind} signature; only SSH signatures (git gpg.format=ssh) are supported"
    )]
    UnsupportedSignature { commit: String, kind: &'static str },
    /// Trusted key number `index` (0-based) in the configuration is unusable.
    #[error("trusted signer #{index} is not a usable SSH public key: {reason}")]
    TrustedKey { index: usize, reason: String },
}

impl SyncError {
    /// Whether the remote could not be reached (network, DNS, refused,
    /// authentication, missing repository, no complete answer within the
    /// fetch timeout) as opposed to a refusal of what it served. The node
    /// keeps its last good revision in both cases; this only tells the
    /// caller which one to report.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            SyncError::Unreachable { .. }
                | SyncError::TimedOut { .. }
                | SyncError::FetchesHung { .. }
        )
    }
}

/// `60s`, `1500ms`: how a timeout reads in a message.
fn shown_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::SyncError;

    #[test]
    fn timeouts_are_unreachable_and_name_url_and_limit() {
        let e = SyncError::TimedOut {
            url: "git://git.example/ops.git".to_owned(),
            timeout: Duration::from_secs(60),
        };
        assert!(e.is_unreachable());
        assert_eq!(
            e.to_string(),
            "fetching from git remote git://git.example/ops.git did not finish within 60s"
        );
        let e = SyncError::TimedOut {
            url: "u".to_owned(),
            timeout: Duration::from_millis(1500),
        };
        assert!(e.to_string().ends_with("within 1500ms"), "{e}");
        let e = SyncError::FetchesHung {
            url: "u".to_owned(),
            hung: 3,
        };
        assert!(e.is_unreachable());
        let e = SyncError::FetchThread {
            url: "u".to_owned(),
            source: std::io::Error::other("no threads left"),
        };
        assert!(!e.is_unreachable());
    }
}
