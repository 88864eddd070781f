//! The one integration-test binary: in-process HTTP tests over a fake
//! engine, CLI tests against the built binary, and end-to-end tests against
//! the real Docker engine.

mod http;
mod support;
