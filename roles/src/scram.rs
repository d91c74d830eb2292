//! SCRAM-SHA-512 credentials in the salted form `kafka-storage.sh format
//! --add-scram` accepts, so the plaintext password never appears on a
//! command line.
//!
//! Rendering must be deterministic, so the salt is derived, not random: it is
//! SHA-512 over the cluster id and the user name, cut to 32 bytes. Salts
//! stay unique per cluster and user, which is what a salt is for.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha512};

/// A salted SCRAM-SHA-512 credential.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub user: String,
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ScramCredential({}, {} iterations, <redacted>)",
            self.user, self.iterations
        )
    }
}

impl ScramCredential {
    /// Derives the credential: `SaltedPassword = PBKDF2-HMAC-SHA-512(password, salt, iterations)`.
    pub fn derive(cluster_id: &str, user: &str, password: &str, iterations: u32) -> Self {
        let mut hasher = Sha512::new();
        hasher.update(b"kraftops-scram-salt\0");
        hasher.update(cluster_id.as_bytes());
        hasher.update(b"\0");
        hasher.update(user.as_bytes());
        let salt = hasher.finalize()[..32].to_vec();
        let mut salted_password = vec![0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, iterations, &mut salted_password);
        Self {
            user: user.to_owned(),
            iterations,
            salt,
            salted_password,
        }
    }

    /// The `--add-scram` argument: `SCRAM-SHA-512=[name=…,iterations=…,salt="…",saltedpassword="…"]`.
    pub fn add_scram_arg(&self) -> String {
        format!(
            "SCRAM-SHA-512=[name={},iterations={},salt=\"{}\",saltedpassword=\"{}\"]",
            self.user,
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.salted_password)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbkdf2_matches_rfc_vector() {
        // PBKDF2-HMAC-SHA512, P="password", S="salt", c=1 (RFC 6070 style vector
        // for SHA-512, as published with the test vectors of many libraries).
        let mut out = [0u8; 64];
        pbkdf2::pbkdf2_hmac::<Sha512>(b"password", b"salt", 1, &mut out);
        assert_eq!(
            out.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce"
        );
    }

    #[test]
    fn deterministic_and_distinct_per_user() {
        let a = ScramCredential::derive("cid", "broker", "pw", 4096);
        let b = ScramCredential::derive("cid", "broker", "pw", 4096);
        let c = ScramCredential::derive("cid", "admin", "pw", 4096);
        assert_eq!(a, b);
        assert_ne!(a.salt, c.salt);
        assert!(
            a.add_scram_arg()
                .starts_with("SCRAM-SHA-512=[name=broker,iterations=4096,salt=\"")
        );
        assert!(!format!("{a:?}").contains(&STANDARD.encode(&a.salted_password)));
    }
}
