//! Secrets: age-encrypted files in `secrets/`, referenced by name.
//!
//! The model holds only ciphertext. Decryption takes an identity and returns
//! a [`SecretValue`] whose `Debug` and `Display` never show the plaintext, so
//! it cannot reach a log line by accident.

use std::fmt;
use std::io::Read;
use std::str::FromStr;

/// An age-encrypted value as stored in `secrets/<name>.age`.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedSecret {
    /// Path relative to the repository root.
    pub file: String,
    ciphertext: Vec<u8>,
}

impl fmt::Debug for EncryptedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EncryptedSecret({}, {} bytes)",
            self.file,
            self.ciphertext.len()
        )
    }
}

/// Why a secret could not be read or decrypted.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{file}: not an age-encrypted file")]
    NotAgeFile {
        file: String,
        #[source]
        source: age::DecryptError,
    },
    #[error("{file}: cannot be decrypted with the given identity")]
    Decrypt {
        file: String,
        #[source]
        source: age::DecryptError,
    },
    #[error("{file}: decrypted value is not UTF-8 text")]
    NotText { file: String },
    #[error("secret {name}: the value must be a single line without control characters")]
    NotSingleLine { name: String },
    #[error("{file}: reading the decrypted stream failed")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {name:?} is not defined (expected secrets/{name}.age)")]
    Unknown { name: String },
    #[error("identity file: {0}")]
    Identity(String),
}

impl EncryptedSecret {
    /// Checks that `ciphertext` is an age file (armored or binary) without
    /// decrypting it.
    pub fn parse(file: impl Into<String>, ciphertext: Vec<u8>) -> Result<Self, SecretError> {
        let file = file.into();
        let reader = age::armor::ArmoredReader::new(ciphertext.as_slice());
        match age::Decryptor::new_buffered(reader) {
            Ok(_) => Ok(Self { file, ciphertext }),
            Err(source) => Err(SecretError::NotAgeFile { file, source }),
        }
    }

    /// Decrypts the value. A single trailing newline (as `echo | age` leaves)
    /// is removed. Multi-line values (PEM keys) are kept as they are; where a
    /// value must be one line, [`SecretValue::single_line`] checks it.
    pub fn decrypt(&self, identity: &Identity) -> Result<SecretValue, SecretError> {
        let reader = age::armor::ArmoredReader::new(self.ciphertext.as_slice());
        let decryptor =
            age::Decryptor::new_buffered(reader).map_err(|source| SecretError::NotAgeFile {
                file: self.file.clone(),
                source,
            })?;
        let mut stream = decryptor
            .decrypt(identity.keys.iter().map(|k| k as &dyn age::Identity))
            .map_err(|source| SecretError::Decrypt {
                file: self.file.clone(),
                source,
            })?;
        let mut bytes = Vec::new();
        stream
            .read_to_end(&mut bytes)
            .map_err(|source| SecretError::Read {
                file: self.file.clone(),
                source,
            })?;
        let mut text = String::from_utf8(bytes).map_err(|_| SecretError::NotText {
            file: self.file.clone(),
        })?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(SecretValue(text))
    }

    /// Encrypts `plaintext` to `recipients` as an armored age file, the form
    /// kept in git.
    pub fn encrypt(
        file: impl Into<String>,
        plaintext: &str,
        recipients: &[age::x25519::Recipient],
    ) -> Result<Self, SecretError> {
        let file = file.into();
        let recipients: Vec<&dyn age::Recipient> = recipients
            .iter()
            .map(|r| r as &dyn age::Recipient)
            .collect();
        let encryptor = age::Encryptor::with_recipients(recipients.into_iter())
            .map_err(|e| SecretError::Identity(format!("cannot encrypt {file}: {e}")))?;
        let mut out = Vec::new();
        let io = |e: std::io::Error| SecretError::Read {
            file: file.clone(),
            source: e,
        };
        let armored =
            age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
                .map_err(io)?;
        let mut writer = encryptor.wrap_output(armored).map_err(io)?;
        std::io::Write::write_all(&mut writer, plaintext.as_bytes()).map_err(io)?;
        writer
            .finish()
            .and_then(|armor| armor.finish())
            .map_err(io)?;
        Ok(Self {
            file,
            ciphertext: out,
        })
    }

    /// The armored ciphertext, as it is stored in git.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }
}

/// One or more age X25519 identities (the contents of an age identity file).
pub struct Identity {
    keys: Vec<age::x25519::Identity>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({} key(s), redacted)", self.keys.len())
    }
}

impl Identity {
    /// Parses an age identity file: `AGE-SECRET-KEY-1…` lines, `#` comments
    /// and blank lines.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = age::x25519::Identity::from_str(line).map_err(|_| {
                SecretError::Identity(format!("line {}: not an AGE-SECRET-KEY-1… identity", i + 1))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(SecretError::Identity(
                "no AGE-SECRET-KEY-1… line found".to_owned(),
            ));
        }
        Ok(Self { keys })
    }

    /// The public recipients of these identities (`age1…`).
    pub fn recipients(&self) -> Vec<age::x25519::Recipient> {
        self.keys
            .iter()
            .map(age::x25519::Identity::to_public)
            .collect()
    }
}

/// A decrypted secret. Its `Debug` and `Display` are redacted; read it with
/// [`SecretValue::expose`] at the one place that writes it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value, if it is one line without control characters (passwords,
    /// which are written into properties files). `name` is for the error.
    pub fn single_line(&self, name: &str) -> Result<&str, SecretError> {
        if self.0.is_empty() || self.0.chars().any(char::is_control) {
            Err(SecretError::NotSingleLine {
                name: name.to_owned(),
            })
        } else {
            Ok(&self.0)
        }
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AGE-SECRET-KEY-15JS8AG043CP86VKALTJMTLUY2M5KQK0T72R2Y27VL2UG8V8F474SW9S0YW";

    #[test]
    fn round_trip_and_redaction() {
        let id = Identity::parse(&format!("# example\n{KEY}\n")).expect("identity parses");
        let secret = EncryptedSecret::encrypt("secrets/x.age", "s3cr3t\n", &id.recipients())
            .expect("encrypts");
        assert!(
            String::from_utf8_lossy(secret.ciphertext())
                .starts_with("-----BEGIN AGE ENCRYPTED FILE-----")
        );
        let reparsed = EncryptedSecret::parse("secrets/x.age", secret.ciphertext().to_vec())
            .expect("is an age file");
        let value = reparsed.decrypt(&id).expect("decrypts");
        assert_eq!(value.expose(), "s3cr3t");
        assert_eq!(
            format!("{value:?} {value}"),
            "SecretValue(<redacted>) <redacted>"
        );
        assert!(!format!("{id:?}").contains("AGE-SECRET"));
    }

    #[test]
    fn wrong_identity_and_garbage_are_errors() {
        let id = Identity::parse(KEY).expect("identity parses");
        let other = age::x25519::Identity::generate();
        let secret =
            EncryptedSecret::encrypt("secrets/x.age", "v", &[other.to_public()]).expect("encrypts");
        let err = secret.decrypt(&id).expect_err("wrong key");
        assert!(err.to_string().contains("cannot be decrypted"), "{err}");
        let err = EncryptedSecret::parse("secrets/y.age", b"plaintext password".to_vec())
            .expect_err("not age");
        assert_eq!(err.to_string(), "secrets/y.age: not an age-encrypted file");
        assert!(Identity::parse("nonsense").is_err());
    }

    #[test]
    fn multi_line_secret_refused() {
        let id = Identity::parse(KEY).expect("identity parses");
        let secret =
            EncryptedSecret::encrypt("secrets/x.age", "a\nb", &id.recipients()).expect("encrypts");
        let value = secret.decrypt(&id).expect("multi-line values decrypt");
        assert_eq!(value.expose(), "a\nb");
        let err = value.single_line("x").expect_err("not one line");
        assert_eq!(
            err.to_string(),
            "secret x: the value must be a single line without control characters"
        );
    }
}
