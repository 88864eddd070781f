//! Authentication: who sent a request, and whether it was seen before.
//!
//! - [`signature`]: the timestamp and signature headers, HMAC-SHA256
//!   verification with constant-time comparison.
//! - [`oidc`]: CI systems' OpenID Connect tokens, and the issuers' key sets.
//! - [`replay`]: the replay memory, bounded per project and in all.
//! - [`throttle`]: rate-limiting addresses that keep failing authentication.
//!
//! The gateway (`gateway::admit`) puts them in order for a request, and its
//! outcome is one `Admitted`: the project, what the body asks for, the
//! request's replay mark and how long it is valid.

pub mod oidc;
pub mod replay;
pub mod signature;
pub mod throttle;
