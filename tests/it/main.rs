//! The one integration-test binary: in-process HTTP tests over a fake
//! engine, and end-to-end tests against the real Docker engine.

mod architecture;
mod attacks;
mod browser;
mod ci_steps;
mod cli;
mod clock;
mod compose_model;
mod e2e;
mod http;
mod judge_table;
mod limits;
mod notify;
mod oidc;
mod oidc_tls;
mod operations;
mod refusals;
mod releases;
mod safe_deploys;
mod support;
mod swarm;
mod ui;
