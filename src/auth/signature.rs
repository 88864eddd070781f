//! Request authentication: header parsing, the timestamp window and HMAC-SHA256.
//!
//! The message is the raw request body (or, for a request without one, its
//! request target) followed by the `X-Timestamp` string exactly as sent. This
//! is the seed tool's scheme, so `openssl dgst -sha256 -hmac` signs correctly.
//!
//! Everything here is pure: callers pass the current time, so tests pin it.

use std::borrow::Cow;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Digits allowed in `X-Timestamp`; twenty digits would overflow `u64`.
const MAX_TIMESTAMP_DIGITS: usize = 19;

/// Which authentication rule a request broke. The message names the rule,
/// never a project, a container or anything computed from a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    MissingTimestamp,
    InvalidTimestamp,
    TimestampOutOfWindow { skew_secs: u64, tolerance_secs: u64 },
    MissingSignature,
    InvalidSignature,
    MissingProject,
    InvalidProject,
    SignatureMismatch,
}

impl AuthError {
    /// The message for a person; fixed text but for the clock skew, so a
    /// refusal formats nothing.
    pub fn message(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            AuthError::MissingTimestamp => "the X-Timestamp header is missing",
            AuthError::InvalidTimestamp => {
                "X-Timestamp must be Unix time in seconds, decimal digits only"
            }
            AuthError::TimestampOutOfWindow {
                skew_secs,
                tolerance_secs,
            } => {
                return Cow::Owned(format!(
                    "X-Timestamp is {skew_secs} s away from the gateway's clock; at most {tolerance_secs} s is accepted (check the client's clock)"
                ));
            }
            AuthError::MissingSignature => "the X-Signature header is missing",
            AuthError::InvalidSignature => {
                "X-Signature must be 64 hex digits of HMAC-SHA256, optionally prefixed with sha256="
            }
            AuthError::MissingProject => "the X-Project header is required for this request",
            AuthError::InvalidProject => "X-Project is not a valid project name",
            AuthError::SignatureMismatch => {
                "the signature does not match a key allowed for this request"
            }
        })
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for AuthError {}

/// A parsed `X-Timestamp`: the value, and the exact text that was signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp<'a> {
    pub secs: u64,
    pub text: &'a str,
}

/// Parses `X-Timestamp`: one to nineteen ASCII digits, nothing else.
pub fn parse_timestamp(raw: Option<&str>) -> Result<Timestamp<'_>, AuthError> {
    let text = raw.ok_or(AuthError::MissingTimestamp)?;
    // One spelling per instant: with leading zeros allowed, the digits of a
    // GET's signed message (target then timestamp) could move between the
    // query and the timestamp and keep the same MAC.
    if text.is_empty()
        || text.len() > MAX_TIMESTAMP_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return Err(AuthError::InvalidTimestamp);
    }
    let secs = text.parse().map_err(|_| AuthError::InvalidTimestamp)?;
    Ok(Timestamp { secs, text })
}

/// Rule 1: `|now - timestamp| <= tolerance`, in both directions.
pub fn check_window(timestamp: u64, now: u64, tolerance_secs: u64) -> Result<(), AuthError> {
    let skew_secs = timestamp.abs_diff(now);
    if skew_secs > tolerance_secs {
        Err(AuthError::TimestampOutOfWindow {
            skew_secs,
            tolerance_secs,
        })
    } else {
        Ok(())
    }
}

/// A MAC as sent in `X-Signature`, decoded.
pub type Signature = [u8; 32];

/// Parses `X-Signature`: 64 hex digits of either case, optionally after `sha256=`.
pub fn parse_signature(raw: Option<&str>) -> Result<Signature, AuthError> {
    let text = raw.ok_or(AuthError::MissingSignature)?;
    let hex_digits = text.strip_prefix("sha256=").unwrap_or(text);
    let mut signature = [0u8; 32];
    if hex_digits.len() != 64 {
        return Err(AuthError::InvalidSignature);
    }
    hex::decode_to_slice(hex_digits, &mut signature).map_err(|_| AuthError::InvalidSignature)?;
    Ok(signature)
}

/// One secret of a project, keyed once so that each request only clones the state.
#[derive(Clone)]
pub struct SigningKey {
    mac: Hmac<Sha256>,
}

impl SigningKey {
    /// Keys HMAC-SHA256 with the UTF-8 bytes of the secret, as the seed did.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            mac: Hmac::new_from_slice(secret).expect("HMAC accepts keys of any length"),
        }
    }

    fn keyed(&self, payload: &[u8], timestamp: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(payload);
        mac.update(timestamp.as_bytes());
        mac
    }

    /// Compares in constant time (the `hmac` crate compares with `subtle`).
    pub fn verify(&self, payload: &[u8], timestamp: &str, signature: &Signature) -> bool {
        self.keyed(payload, timestamp)
            .verify_slice(signature)
            .is_ok()
    }

    /// The signature a client sends; used by `delivery-hook sign` and `trigger`.
    pub fn sign(&self, payload: &[u8], timestamp: &str) -> Signature {
        self.keyed(payload, timestamp)
            .finalize()
            .into_bytes()
            .into()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

/// What holds signing keys: a project.
pub trait Keyed {
    fn keys(&self) -> &[SigningKey];
}

/// A signed request's headers, checked: the one path every signed request
/// takes, a deploy (which signs its body) and a read (which signs its
/// request target) alike.
#[derive(Debug)]
pub struct Signed<'a> {
    pub timestamp: Timestamp<'a>,
    pub signature: Signature,
}

impl<'a> Signed<'a> {
    /// Parses `X-Timestamp`, checks rule 1 at `now`, then parses
    /// `X-Signature`: each failure is named, before anything is read.
    pub fn check(
        timestamp: Option<&'a str>,
        signature: Option<&str>,
        now: u64,
        tolerance_secs: u64,
    ) -> Result<Self, AuthError> {
        let timestamp = parse_timestamp(timestamp)?;
        check_window(timestamp.secs, now, tolerance_secs)?;
        let signature = parse_signature(signature)?;
        Ok(Self {
            timestamp,
            signature,
        })
    }

    /// The first of `candidates` with a key that verifies `message`
    /// followed by the timestamp, and that key's place in its list.
    /// Without candidates one MAC is still computed, so that an unknown
    /// project and a wrong key take the same time.
    pub fn signer<'p, P: Keyed + ?Sized>(
        &self,
        candidates: &[&'p P],
        message: &[u8],
    ) -> Result<(&'p P, usize), AuthError> {
        let text = self.timestamp.text;
        if candidates.is_empty() {
            verify_any([], message, text, &self.signature);
        }
        candidates
            .iter()
            .find_map(|p| verify_any(p.keys(), message, text, &self.signature).map(|k| (*p, k)))
            .ok_or(AuthError::SignatureMismatch)
    }
}

/// Tries `keys` in turn and returns the index of the first that verifies.
///
/// When there is no key to try, one MAC is still computed with a throwaway key
/// so that "no candidate" and "wrong signature" take the same time.
pub fn verify_any<'k>(
    keys: impl IntoIterator<Item = &'k SigningKey>,
    payload: &[u8],
    timestamp: &str,
    signature: &Signature,
) -> Option<usize> {
    let mut tried = false;
    for (index, key) in keys.into_iter().enumerate() {
        tried = true;
        if key.verify(payload, timestamp, signature) {
            return Some(index);
        }
    }
    if !tried {
        let decoy = SigningKey::new(&[0u8; MIN_SECRET_LEN]);
        let _ = decoy.verify(payload, timestamp, signature);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_SECRET: &str = "your-very-secret-key";
    const SEED_BODY: &str = r#"{"container_name": "my-container-name"}"#;

    #[derive(Debug)]
    struct Team(Vec<SigningKey>);

    impl Keyed for Team {
        fn keys(&self) -> &[SigningKey] {
            &self.0
        }
    }

    /// Every signed request takes one path: the timestamp, its window, the
    /// signature's form, then the first candidate key that verifies.
    #[test]
    fn a_signed_request_names_its_signer_or_the_rule_it_failed() {
        let a = Team(vec![SigningKey::new(b"a-secret-0123456789")]);
        let b = Team(vec![
            SigningKey::new(b"b-old-0123456789ab"),
            SigningKey::new(b"b-new-0123456789ab"),
        ]);
        let mac = hex::encode(b.0[1].sign(b"/jobs/x", "1000"));
        let signed = Signed::check(Some("1000"), Some(&mac), 1100, 300).unwrap();
        let (who, key) = signed.signer(&[&a, &b], b"/jobs/x").unwrap();
        assert!(std::ptr::eq(who, &b));
        assert_eq!(key, 1);
        assert_eq!(
            signed.signer(&[&a], b"/jobs/x").unwrap_err(),
            AuthError::SignatureMismatch
        );
        assert_eq!(
            signed.signer::<Team>(&[], b"/jobs/x").unwrap_err(),
            AuthError::SignatureMismatch
        );
        assert_eq!(
            Signed::check(None, Some(&mac), 1100, 300).unwrap_err(),
            AuthError::MissingTimestamp
        );
        assert!(matches!(
            Signed::check(Some("1000"), None, 2000, 300).unwrap_err(),
            AuthError::TimestampOutOfWindow { .. }
        ));
        assert_eq!(
            Signed::check(Some("1000"), None, 1100, 300).unwrap_err(),
            AuthError::MissingSignature
        );
    }

    #[test]
    fn seed_vector_computed_by_openssl_verifies() {
        // MESSAGE="${PAYLOAD}${TIMESTAMP}"; echo -n "$MESSAGE" | openssl dgst -sha256 -hmac "$SECRET_KEY"
        // with the seed README's payload and secret, TIMESTAMP=1700000000.
        let openssl = "448353b29e590d7fec7943fecb867e3ecd3943790e67d1e5c46d78abd5f6b986";
        let key = SigningKey::new(SEED_SECRET.as_bytes());
        let signature = parse_signature(Some(openssl)).unwrap();
        assert!(key.verify(SEED_BODY.as_bytes(), "1700000000", &signature));
        assert_eq!(
            hex::encode(key.sign(SEED_BODY.as_bytes(), "1700000000")),
            openssl
        );
    }

    #[test]
    fn signature_header_forms() {
        let lower = "ab".repeat(32);
        let upper = "AB".repeat(32);
        assert_eq!(parse_signature(Some(&lower)), Ok([0xab; 32]));
        assert_eq!(parse_signature(Some(&upper)), Ok([0xab; 32]));
        assert_eq!(
            parse_signature(Some(&format!("sha256={lower}"))),
            Ok([0xab; 32])
        );
        for bad in [
            "",
            "sha256=",
            &"ab".repeat(31),
            &"ab".repeat(33),
            &format!("sha1={lower}"),
            &format!("{}zz", "ab".repeat(31)),
            &format!(" {}", &lower[1..]),
        ] {
            assert_eq!(
                parse_signature(Some(bad)),
                Err(AuthError::InvalidSignature),
                "{bad:?}"
            );
        }
        assert_eq!(parse_signature(None), Err(AuthError::MissingSignature));
    }

    #[test]
    fn timestamp_header_forms() {
        assert_eq!(
            parse_timestamp(Some("1700000000")).unwrap().secs,
            1_700_000_000
        );
        assert_eq!(parse_timestamp(Some("0")).unwrap().secs, 0);
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "1e9",
            " 1",
            "1 ",
            "0x10",
            "01700000000",
            "00",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_timestamp(Some(bad)),
                Err(AuthError::InvalidTimestamp),
                "{bad:?}"
            );
        }
        assert_eq!(parse_timestamp(None), Err(AuthError::MissingTimestamp));
    }

    #[test]
    fn window_edges_in_both_directions() {
        let now = 1_700_000_000;
        assert!(check_window(now, now, 300).is_ok());
        assert!(check_window(now - 300, now, 300).is_ok());
        assert!(check_window(now + 300, now, 300).is_ok());
        assert_eq!(
            check_window(now - 301, now, 300),
            Err(AuthError::TimestampOutOfWindow {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert!(check_window(now + 301, now, 300).is_err());
        assert!(check_window(0, now, 300).is_err());
        assert!(check_window(u64::MAX, now, 300).is_err());
    }

    #[test]
    fn the_message_is_body_then_timestamp() {
        let key = SigningKey::new(b"0123456789abcdef");
        let signature = key.sign(b"body", "17");
        assert!(key.verify(b"body", "17", &signature));
        assert!(
            key.verify(b"body1", "7", &signature),
            "concatenation is the message"
        );
        assert!(!key.verify(b"body", "18", &signature));
        assert!(!key.verify(b"Body", "17", &signature));
    }

    #[test]
    fn rotation_accepts_either_key_and_nothing_else() {
        let old = SigningKey::new(b"old-secret-0123456789");
        let new = SigningKey::new(b"new-secret-0123456789");
        let other = SigningKey::new(b"another-project-secret");
        let keys = [old.clone(), new.clone()];
        let by_old = old.sign(b"{}", "5");
        let by_new = new.sign(b"{}", "5");
        let by_other = other.sign(b"{}", "5");
        assert_eq!(verify_any(&keys, b"{}", "5", &by_old), Some(0));
        assert_eq!(verify_any(&keys, b"{}", "5", &by_new), Some(1));
        assert_eq!(verify_any(&keys, b"{}", "5", &by_other), None);
        assert_eq!(verify_any([], b"{}", "5", &by_old), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = SigningKey::new(b"super-secret-value-1234");
        assert!(!format!("{key:?}").contains("super"));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn timestamp_parser_never_panics_and_accepts_only_digits(text in "\\PC{0,30}") {
                match parse_timestamp(Some(&text)) {
                    Ok(t) => {
                        prop_assert!(!text.is_empty() && text.len() <= 19);
                        prop_assert!(text.bytes().all(|b| b.is_ascii_digit()));
                        prop_assert_eq!(t.secs, text.parse::<u64>().unwrap());
                        prop_assert_eq!(t.secs.to_string(), text.as_str(), "one spelling per instant");
                        prop_assert_eq!(t.text, text.as_str());
                    }
                    Err(e) => prop_assert_eq!(e, AuthError::InvalidTimestamp),
                }
            }

            #[test]
            fn digit_strings_parse(secs in any::<u64>()) {
                let text = secs.to_string();
                let parsed = parse_timestamp(Some(&text));
                prop_assert_eq!(parsed.is_ok(), text.len() <= 19);
            }

            #[test]
            fn window_is_symmetric(now in 0u64..u64::MAX / 2, skew in 0u64..10_000, tolerance in 0u64..5_000) {
                let inside = skew <= tolerance;
                prop_assert_eq!(check_window(now + skew, now, tolerance).is_ok(), inside);
                if now >= skew {
                    prop_assert_eq!(check_window(now - skew, now, tolerance).is_ok(), inside);
                }
            }

            #[test]
            fn signature_parser_never_panics(text in "\\PC{0,80}") {
                if let Ok(bytes) = parse_signature(Some(&text)) {
                    let digits = text.strip_prefix("sha256=").unwrap_or(&text);
                    prop_assert_eq!(digits.len(), 64);
                    prop_assert_eq!(hex::encode(bytes), digits.to_ascii_lowercase());
                }
            }

            #[test]
            fn hex_of_any_mac_parses_back(bytes in any::<[u8; 32]>(), upper in any::<bool>(), prefix in any::<bool>()) {
                let mut text = hex::encode(bytes);
                if upper { text = text.to_uppercase(); }
                if prefix { text = format!("sha256={text}"); }
                prop_assert_eq!(parse_signature(Some(&text)), Ok(bytes));
            }

            /// A signature is accepted only if it is the true MAC for one of the keys.
            #[test]
            fn only_the_true_mac_verifies(
                secrets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 16..48), 1..4),
                payload in proptest::collection::vec(any::<u8>(), 0..256),
                timestamp in "[0-9]{1,19}",
                forged in any::<[u8; 32]>(),
                pick in any::<prop::sample::Index>(),
                flip in any::<prop::sample::Index>(),
            ) {
                let keys: Vec<SigningKey> = secrets.iter().map(|s| SigningKey::new(s)).collect();
                let macs: Vec<Signature> = keys.iter().map(|k| k.sign(&payload, &timestamp)).collect();
                // A random signature verifies only if it happens to be one of the MACs.
                let accepted = verify_any(&keys, &payload, &timestamp, &forged);
                prop_assert_eq!(accepted.is_some(), macs.contains(&forged));
                // Each true MAC verifies, against its own key.
                let i = pick.index(keys.len());
                let found = verify_any(&keys, &payload, &timestamp, &macs[i]).unwrap();
                prop_assert_eq!(macs[found], macs[i]);
                // One flipped bit is refused.
                let mut bent = macs[i];
                let bit = flip.index(256);
                bent[bit / 8] ^= 1 << (bit % 8);
                prop_assert_eq!(verify_any(&keys, &payload, &timestamp, &bent).is_some(), macs.contains(&bent));
            }
        }
    }
}
