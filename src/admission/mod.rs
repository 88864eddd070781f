//! Request admission outside authentication: small, pure pieces, each
//! unit-tested.
//!
//! - [`client_addr`]: the client address, behind trusted proxies or not.
//! - [`slots`]: bounded counts per key (connections per address, waits per
//!   project).

pub mod client_addr;
pub mod slots;
