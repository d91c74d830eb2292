//! Commit signature checks: the trusted SSH keys from the agent's own
//! configuration, and in-process verification of git's SSH signatures
//! (SSHSIG, namespace `git`) against them. No `gpg` or `ssh-keygen` is run.

use ssh_key::{Algorithm, HashAlg, PublicKey, SshSig};

use super::SyncError;

/// The namespace git uses when it signs commits and tags with SSH keys.
const GIT_NAMESPACE: &str = "git";

/// The SSH public keys whose commit signatures the agent accepts.
///
/// They come from the agent's configuration, never from the repository being
/// verified.
#[derive(Debug, Clone, Default)]
pub struct TrustedSigners {
    keys: Vec<PublicKey>,
}

impl TrustedSigners {
    /// Parses OpenSSH public key lines (`ssh-ed25519 AAAA… comment`; also
    /// ECDSA, RSA and their FIDO `sk-` forms). The first bad line is an
    /// error naming its 0-based index. DSA keys are refused.
    pub fn parse(lines: &[String]) -> Result<TrustedSigners, SyncError> {
        let mut keys = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                return Err(SyncError::TrustedKey {
                    index,
                    reason: "the line is empty".to_owned(),
                });
            }
            let key = PublicKey::from_openssh(line).map_err(|e| SyncError::TrustedKey {
                index,
                reason: e.to_string(),
            })?;
            match key.algorithm() {
                Algorithm::Ed25519
                | Algorithm::Ecdsa { .. }
                | Algorithm::Rsa { .. }
                | Algorithm::SkEd25519
                | Algorithm::SkEcdsaSha2NistP256 => keys.push(key),
                other => {
                    return Err(SyncError::TrustedKey {
                        index,
                        reason: format!("{other} keys are not accepted for commit signatures"),
                    });
                }
            }
        }
        Ok(TrustedSigners { keys })
    }

    /// Whether no keys are configured (signature checks are then off).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Checks the `gpgsig` header value `signature` of `commit` over
    /// `signed_data` (the commit object without that header) and describes
    /// the signer as `<algorithm> SHA256:<fingerprint> [comment]`.
    pub(super) fn verify(
        &self,
        commit: &str,
        signature: &[u8],
        signed_data: &[u8],
    ) -> Result<String, SyncError> {
        let bad = |reason: String| SyncError::BadSignature {
            commit: commit.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(signature)
            .map_err(|_| bad("the signature is not valid UTF-8".to_owned()))?
            .trim();
        if let Some(kind) = foreign_kind(text) {
            return Err(SyncError::UnsupportedSignature {
                commit: commit.to_owned(),
                kind,
            });
        }
        let sig = SshSig::from_pem(text)
            .map_err(|e| bad(format!("not a readable SSH signature ({e})")))?;
        let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
        let Some(key) = self.keys.iter().find(|k| k.key_data() == sig.public_key()) else {
            return Err(SyncError::UntrustedSigner {
                commit: commit.to_owned(),
                fingerprint,
            });
        };
        if sig.namespace() != GIT_NAMESPACE {
            return Err(bad(format!(
                "signature namespace is {:?}, expected {GIT_NAMESPACE:?}",
                sig.namespace()
            )));
        }
        key.verify(GIT_NAMESPACE, signed_data, &sig)
            .map_err(|e| match e {
                ssh_key::Error::Crypto => bad("the signature does not match the commit".to_owned()),
                other => bad(other.to_string()),
            })?;
        let mut signer = format!("{} {fingerprint}", key.algorithm().as_str());
        if !key.comment().is_empty() {
            signer.push(' ');
            signer.push_str(key.comment());
        }
        Ok(signer)
    }
}

/// Names a signature format other than SSH by its armor, if it is one.
fn foreign_kind(armored: &str) -> Option<&'static str> {
    if armored.starts_with("-----BEGIN SSH SIGNATURE-----") {
        None
    } else if armored.starts_with("-----BEGIN PGP SIGNATURE-----") {
        Some("GPG (OpenPGP)")
    } else if armored.starts_with("-----BEGIN SIGNED MESSAGE-----") {
        Some("X.509 (gpgsm)")
    } else if armored.starts_with("-----BEGIN ") {
        Some("non-SSH")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti ops@example";

    #[test]
    fn parse_names_the_bad_line() {
        let lines = vec![ED25519.to_owned(), "ssh-ed25519 not-base64".to_owned()];
        match TrustedSigners::parse(&lines) {
            Err(SyncError::TrustedKey { index, .. }) => assert_eq!(index, 1),
            other => panic!("expected TrustedKey at index 1, got {other:?}"),
        }
        let ok = TrustedSigners::parse(&lines[..1]).map(|t| t.len());
        assert!(matches!(ok, Ok(1)), "{ok:?}");
        assert!(TrustedSigners::parse(&[]).is_ok_and(|t| t.is_empty()));
    }

    #[test]
    fn gpg_armor_is_unsupported_not_bad() {
        let t = TrustedSigners::parse(&[ED25519.to_owned()]);
        let Ok(t) = t else { panic!("{t:?}") };
        let err = t.verify(
            "c",
            b"-----BEGIN PGP SIGNATURE-----\n\nx\n-----END PGP SIGNATURE-----",
            b"",
        );
        assert!(
            matches!(
                err,
                Err(SyncError::UnsupportedSignature {
                    kind: "GPG (OpenPGP)",
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
