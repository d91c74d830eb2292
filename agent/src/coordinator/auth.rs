//! Who is calling: join tokens compared in constant time, and the git host's
//! webhook signature.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The header a git host signs a webhook body in (GitHub, Gitea, Forgejo).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// A join token as the coordinator keeps it: its SHA-256, so the tokens
/// themselves are not held in memory and every comparison is over 32 bytes
/// whatever the presented token's length.
pub(crate) type TokenDigest = [u8; 32];

pub(crate) fn token_digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal digests, without an early exit on the first differing byte.
pub(crate) fn digests_equal(a: &TokenDigest, b: &TokenDigest) -> bool {
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The token of `Authorization: Bearer <token>`, if the header has one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under
/// `secret`. The comparison is the MAC's own constant-time one.
pub(crate) fn webhook_signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_mac) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(presented) = hex::decode(hex_mac) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&presented).is_ok()
}
