//! The client side of SCRAM-SHA-512 (RFC 5802, with SHA-512 as RFC 7677
//! does SHA-256): the messages Kafka's `SaslAuthenticate` carries, and the
//! check of the server's signature, so a server that does not know the
//! password cannot pose as the broker.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha512};

type HmacSha512 = Hmac<Sha512>;

/// The mechanism name in `SaslHandshake`.
pub(super) const MECHANISM: &str = "SCRAM-SHA-512";

/// Kafka refuses fewer (and RFC 7677 says at least 4096).
const MIN_ITERATIONS: u32 = 4096;
/// More than any broker uses (Kafka's maximum is 16384): a server asking for
/// more is refused rather than allowed to make the client spin.
const MAX_ITERATIONS: u32 = 1_000_000;

/// Why an exchange failed on the client's side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ScramError {
    #[error("the server's first message is malformed: {0}")]
    ServerFirst(String),
    #[error("the server's nonce does not extend the client's")]
    Nonce,
    #[error(
        "the server asked for {0} PBKDF2 iterations (allowed: {MIN_ITERATIONS}..={MAX_ITERATIONS})"
    )]
    Iterations(u32),
    #[error("the server refused: {0}")]
    ServerError(String),
    #[error("the server's final message is malformed: {0}")]
    ServerFinal(String),
    #[error("the server's signature is wrong: it does not know the password")]
    ServerSignature,
}

/// `name` as a SCRAM `saslname`: `=` and `,` escaped.
pub(super) fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A fresh client nonce: 24 random bytes, base64 (printable, no comma).
pub(super) fn new_nonce() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    BASE64.encode(bytes)
}

/// One client's exchange, message by message.
pub(super) struct ScramClient {
    password: String,
    nonce: String,
    client_first_bare: String,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("client_first_bare", &self.client_first_bare)
            .finish_non_exhaustive()
    }
}

/// What the client must check in the server's final message.
#[derive(Debug)]
pub(super) struct ExpectedServerFinal {
    server_key: Vec<u8>,
    auth_message: String,
}

impl ScramClient {
    pub(super) fn new(user: &str, password: &str, nonce: String) -> Self {
        let client_first_bare = format!("n={},r={nonce}", escape_name(user));
        ScramClient {
            password: password.to_owned(),
            nonce,
            client_first_bare,
        }
    }

    /// `client-first-message`: no channel binding, no authzid.
    pub(super) fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// `client-final-message` answering `server_first`, and what the
    /// server's final message must then prove.
    pub(super) fn client_final(
        &self,
        server_first: &str,
    ) -> Result<(String, ExpectedServerFinal), ScramError> {
        let first = parse_server_first(server_first)?;
        if !first.nonce.starts_with(&self.nonce) || first.nonce.len() == self.nonce.len() {
            return Err(ScramError::Nonce);
        }
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&first.iterations) {
            return Err(ScramError::Iterations(first.iterations));
        }
        let salted = salted_password(self.password.as_bytes(), &first.salt, first.iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha512::digest(&client_key);
        // "biws" is base64("n,,"): the GS2 header, no channel binding.
        let without_proof = format!("c=biws,r={}", first.nonce);
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let message = format!("{without_proof},p={}", BASE64.encode(proof));
        Ok((
            message,
            ExpectedServerFinal {
                server_key: hmac(&salted, b"Server Key"),
                auth_message,
            },
        ))
    }
}

impl ExpectedServerFinal {
    /// Checks `server-final-message` (`v=<signature>`, or `e=<error>`).
    pub(super) fn verify(&self, server_final: &str) -> Result<(), ScramError> {
        let mut verifier = None;
        for attribute in server_final.split(',') {
            if let Some(error) = attribute.strip_prefix("e=") {
                return Err(ScramError::ServerError(error.to_owned()));
            }
            if let Some(v) = attribute.strip_prefix("v=") {
                verifier = Some(v);
            }
        }
        let verifier =
            verifier.ok_or_else(|| ScramError::ServerFinal("no v= attribute".to_owned()))?;
        let signature = BASE64
            .decode(verifier)
            .map_err(|e| ScramError::ServerFinal(format!("v= is not base64: {e}")))?;
        let mut mac = new_mac(&self.server_key);
        mac.update(self.auth_message.as_bytes());
        // Constant time.
        mac.verify_slice(&signature)
            .map_err(|_| ScramError::ServerSignature)
    }
}

struct ServerFirst {
    nonce: String,
    salt: Vec<u8>,
    iterations: u32,
}

fn parse_server_first(message: &str) -> Result<ServerFirst, ScramError> {
    let bad = |what: &str| ScramError::ServerFirst(what.to_owned());
    let (mut nonce, mut salt, mut iterations) = (None, None, None);
    for attribute in message.split(',') {
        match attribute.split_once('=') {
            Some(("m", _)) => return Err(bad("it requires an unknown extension (m=)")),
            Some(("r", v)) => nonce = Some(v.to_owned()),
            Some(("s", v)) => {
                salt = Some(
                    BASE64
                        .decode(v)
                        .map_err(|e| ScramError::ServerFirst(format!("s= is not base64: {e}")))?,
                );
            }
            Some(("i", v)) => {
                iterations = Some(
                    v.parse::<u32>()
                        .map_err(|_| bad("i= is not a positive number"))?,
                );
            }
            _ => {}
        }
    }
    Ok(ServerFirst {
        nonce: nonce.ok_or_else(|| bad("no r= attribute"))?,
        salt: salt.ok_or_else(|| bad("no s= attribute"))?,
        iterations: iterations.ok_or_else(|| bad("no i= attribute"))?,
    })
}

/// Iterations Kafka accepts in a credential set through
/// `AlterUserScramCredentials`.
pub(super) const CREDENTIAL_ITERATIONS: std::ops::RangeInclusive<u32> = MIN_ITERATIONS..=16384;

/// What `AlterUserScramCredentials` carries for a new credential: a fresh
/// random salt and `SaltedPassword = Hi(password, salt, iterations)`. The
/// broker derives StoredKey and ServerKey from it; the password itself
/// never leaves the client.
pub(super) struct SaltedCredential {
    pub(super) salt: Vec<u8>,
    pub(super) salted_password: [u8; 64],
}

pub(super) fn new_credential(password: &str, iterations: u32) -> SaltedCredential {
    use rand::RngCore as _;
    let mut salt = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salted_password = salted_password(password.as_bytes(), &salt, iterations);
    SaltedCredential {
        salt,
        salted_password,
    }
}

/// `Hi(password, salt, iterations)` of RFC 5802 with HMAC-SHA-512, which is
/// PBKDF2-HMAC-SHA512 with a 64-byte output.
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

fn new_mac(key: &[u8]) -> HmacSha512 {
    match HmacSha512::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm cannot run.
        Err(_) => HmacSha512::new(&Default::default()),
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = new_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's side of RFC 5802, written from the RFC independently of
    /// the client: it stores only StoredKey and ServerKey, checks the proof
    /// by recovering ClientKey, and signs.
    struct TestServer {
        salt: Vec<u8>,
        iterations: u32,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
        nonce: String,
    }

    impl TestServer {
        fn new(password: &str) -> Self {
            let salt = b"kraftops-test-salt".to_vec();
            let iterations = 4096;
            let mut salted = [0u8; 64];
            pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, iterations, &mut salted);
            Self::from_salted(salt, iterations, &salted)
        }

        fn from_salted(salt: Vec<u8>, iterations: u32, salted: &[u8]) -> Self {
            let mut mac = HmacSha512::new_from_slice(salted).expect("key");
            mac.update(b"Client Key");
            let client_key = mac.finalize().into_bytes();
            let stored_key = Sha512::digest(client_key).to_vec();
            let mut mac = HmacSha512::new_from_slice(salted).expect("key");
            mac.update(b"Server Key");
            let server_key = mac.finalize().into_bytes().to_vec();
            TestServer {
                salt,
                iterations,
                stored_key,
                server_key,
                nonce: String::new(),
            }
        }

        fn first(&mut self, client_first: &str) -> String {
            let bare = client_first.strip_prefix("n,,").expect("gs2 header");
            let client_nonce = bare.split(",r=").nth(1).expect("nonce");
            self.nonce = format!("{client_nonce}server-part");
            format!(
                "r={},s={},i={}",
                self.nonce,
                BASE64.encode(&self.salt),
                self.iterations
            )
        }

        /// `Some(server-final)` when the proof is right.
        fn last(
            &self,
            client_first: &str,
            server_first: &str,
            client_final: &str,
        ) -> Option<String> {
            let (without_proof, proof) = client_final.rsplit_once(",p=").expect("proof");
            assert_eq!(without_proof, format!("c=biws,r={}", self.nonce));
            let proof = BASE64.decode(proof).expect("base64");
            let bare = client_first.strip_prefix("n,,").expect("gs2 header");
            let auth = format!("{bare},{server_first},{without_proof}");
            let mut mac = HmacSha512::new_from_slice(&self.stored_key).expect("key");
            mac.update(auth.as_bytes());
            let signature = mac.finalize().into_bytes();
            let client_key: Vec<u8> = proof
                .iter()
                .zip(signature.iter())
                .map(|(p, s)| p ^ s)
                .collect();
            if Sha512::digest(&client_key).to_vec() != self.stored_key {
                return None;
            }
            let mut mac = HmacSha512::new_from_slice(&self.server_key).expect("key");
            mac.update(auth.as_bytes());
            Some(format!("v={}", BASE64.encode(mac.finalize().into_bytes())))
        }
    }

    #[test]
    fn exchange_with_an_independent_server_succeeds_and_checks_the_signature() {
        let mut server = TestServer::new("s3cret");
        let client = ScramClient::new("admin", "s3cret", new_nonce());
        let first = client.client_first();
        assert!(first.starts_with("n,,n=admin,r="));
        let server_first = server.first(&first);
        let (client_final, expected) = client.client_final(&server_first).expect("final");
        let server_final = server
            .last(&first, &server_first, &client_final)
            .expect("the server accepts the proof");
        expected.verify(&server_final).expect("signature verifies");

        // A server that does not know the password cannot sign.
        let forged = format!("v={}", BASE64.encode([7u8; 64]));
        assert_eq!(expected.verify(&forged), Err(ScramError::ServerSignature));
        assert!(
            matches!(expected.verify("e=other-error"), Err(ScramError::ServerError(e)) if e == "other-error")
        );
        assert!(matches!(
            expected.verify("x=1"),
            Err(ScramError::ServerFinal(_))
        ));
    }

    #[test]
    fn a_wrong_password_gives_a_proof_the_server_refuses() {
        let mut server = TestServer::new("s3cret");
        let client = ScramClient::new("admin", "wrong", new_nonce());
        let first = client.client_first();
        let server_first = server.first(&first);
        let (client_final, _) = client.client_final(&server_first).expect("final");
        assert_eq!(server.last(&first, &server_first, &client_final), None);
    }

    #[test]
    fn refuses_a_nonce_that_does_not_extend_the_clients_and_bad_iterations() {
        let client = ScramClient::new("admin", "pw", "abc".to_owned());
        let salt = BASE64.encode(b"salt");
        assert_eq!(
            client
                .client_final(&format!("r=xyzabc,s={salt},i=4096"))
                .err(),
            Some(ScramError::Nonce)
        );
        assert_eq!(
            client.client_final(&format!("r=abc,s={salt},i=4096")).err(),
            Some(ScramError::Nonce)
        );
        assert_eq!(
            client.client_final(&format!("r=abcd,s={salt},i=10")).err(),
            Some(ScramError::Iterations(10))
        );
        assert!(matches!(
            client.client_final("r=abcd,i=4096"),
            Err(ScramError::ServerFirst(_))
        ));
        assert!(matches!(
            client.client_final(&format!("m=ext,r=abcd,s={salt},i=4096")),
            Err(ScramError::ServerFirst(_))
        ));
    }

    /// A known vector, computed independently with Python:
    /// `hashlib.pbkdf2_hmac("sha512", b"pencil", b"kraftops-salt", 4096).hex()`.
    #[test]
    fn salted_password_matches_pbkdf2_hmac_sha512() {
        let expected = "6d4dbea63b7806aecc9e21ca21e33e7ff295ba24c137b842198a5668cb5436aa\
                        44c68faeb0cd10a60e597ccc451c5fd9b9c0ad12da2b7845fb934d2273483dbf";
        let got = hex::encode(salted_password(b"pencil", b"kraftops-salt", 4096));
        assert_eq!(got, expected);
    }

    #[test]
    fn a_new_credential_has_a_fresh_salt_and_authenticates_against_a_server() {
        let one = new_credential("s3cret", 4096);
        let two = new_credential("s3cret", 4096);
        assert_eq!(one.salt.len(), 32);
        assert_ne!(one.salt, two.salt, "salts are random");
        assert_ne!(one.salted_password, two.salted_password);
        // A server holding only what the credential lets it derive accepts
        // the client's proof for that password.
        let mut server = TestServer::from_salted(one.salt.clone(), 4096, &one.salted_password);
        let client = ScramClient::new("alice", "s3cret", new_nonce());
        let first = client.client_first();
        let server_first = server.first(&first);
        let (client_final, expected) = client.client_final(&server_first).expect("final");
        let server_final = server
            .last(&first, &server_first, &client_final)
            .expect("the server accepts the proof");
        expected.verify(&server_final).expect("signature");
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape_name("a=b,c"), "a=3Db=2Cc");
        assert_eq!(escape_name("plain"), "plain");
        let client = ScramClient::new("x,y=z", "pw", "n0nce".to_owned());
        assert_eq!(client.client_first(), "n,,n=x=2Cy=3Dz,r=n0nce");
    }
}
