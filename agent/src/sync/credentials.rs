//! Credentials for fetching over SSH and HTTPS: ssh-agent, then the default
//! key files, then git's credential helper; each tried once, so a rejected
//! credential ends the fetch instead of looping. Nothing secret is logged.

use std::collections::VecDeque;
use std::path::PathBuf;

use git2::{Config, Cred, CredentialType, RemoteCallbacks};

/// The user git hosts expect over SSH when the URL names none.
const DEFAULT_SSH_USER: &str = "git";

/// Private keys tried, in this order, from `$HOME/.ssh/` (as OpenSSH does).
const DEFAULT_KEY_FILES: &[&str] = &["id_ed25519", "id_ecdsa", "id_rsa"];

/// Which credentials have been offered so far during one fetch.
struct Attempts {
    config: Option<Config>,
    agent_tried: bool,
    key_files: VecDeque<PathBuf>,
    helper_tried: bool,
    default_tried: bool,
}

impl Attempts {
    fn new(config: Option<Config>) -> Attempts {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let key_files = home
            .map(|h| {
                DEFAULT_KEY_FILES
                    .iter()
                    .map(|name| h.join(".ssh").join(name))
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        Attempts {
            config,
            agent_tried: false,
            key_files,
            helper_tried: false,
            default_tried: false,
        }
    }

    fn next(
        &mut self,
        url: &str,
        username_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let user = username_from_url.unwrap_or(DEFAULT_SSH_USER);
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            if !self.agent_tried && std::env::var_os("SSH_AUTH_SOCK").is_some() {
                self.agent_tried = true;
                tracing::debug!(method = "ssh-agent", user, "offering git credentials");
                return Cred::ssh_key_from_agent(user);
            }
            if let Some(key) = self.key_files.pop_front() {
                tracing::debug!(method = "key file", key = %key.display(), user, "offering git credentials");
                return Cred::ssh_key(user, None, &key, None);
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !self.helper_tried {
            self.helper_tried = true;
            if let Some(config) = &self.config {
                tracing::debug!(method = "credential helper", "offering git credentials");
                return Cred::credential_helper(config, url, username_from_url);
            }
        }
        if allowed.contains(CredentialType::DEFAULT) && !self.default_tried {
            self.default_tried = true;
            return Cred::default();
        }
        Err(git2::Error::new(
            git2::ErrorCode::Auth,
            git2::ErrorClass::Callback,
            "no accepted credentials (tried ssh-agent, ~/.ssh/id_{ed25519,ecdsa,rsa}, the git credential helper)",
        ))
    }
}

/// Callbacks for one fetch. `config` (the clone's, which includes the
/// global and system git config) locates the credential helper.
pub(super) fn callbacks(config: Option<Config>) -> RemoteCallbacks<'static> {
    let mut attempts = Attempts::new(config);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |url, user, allowed| attempts.next(url, user, allowed));
    callbacks
}

/// `url` without the password of a `scheme://user:password@host/…` URL, for
/// errors and logs.
pub(super) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if user.len() == userinfo.len() {
                url.to_owned()
            } else {
                format!("{scheme}://{user}:***@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("https://bot:s3cret@git.example/ops/cluster.git"),
            "https://bot:***@git.example/ops/cluster.git"
        );
        assert_eq!(
            redact_url("https://git.example/a@b.git"),
            "https://git.example/a@b.git"
        );
        assert_eq!(
            redact_url("ssh://git@git.example/ops.git"),
            "ssh://git@git.example/ops.git"
        );
        assert_eq!(
            redact_url("git@git.example:ops.git"),
            "git@git.example:ops.git"
        );
        assert_eq!(redact_url("file:///srv/git/c.git"), "file:///srv/git/c.git");
    }
}
