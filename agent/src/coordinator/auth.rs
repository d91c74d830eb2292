//! Who is calling: join tokens compared in constant time, and the git host's
//! webhook signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a git host signs a webhook body in (GitHub, Gitea, Forgejo).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

pub(crate) use crate::http_auth::{TokenDigest, bearer_token, digests_equal, token_digest};

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
