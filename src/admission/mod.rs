//! Request admission: the small, pure pieces that decide whether a request
//! gets as far as the policy and the engine.
//!
//! - [`auth`]: the timestamp and signature headers, HMAC-SHA256 verification.
//! - [`replay`]: the replay cache, bounded per project and in all.
//! - [`throttle`]: rate-limiting addresses that keep failing authentication.
//! - [`client_addr`]: the client address, behind trusted proxies or not.
//! - [`slots`]: bounded counts per key (connections per address, waits per
//!   project).

pub mod auth;
pub mod client_addr;
pub mod replay;
pub mod slots;
pub mod throttle;
