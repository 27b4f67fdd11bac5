//! The integration tests: one binary (`cargo test --test integration`), one module per area of
//! behaviour, every test against a real daemon started by the harness in `util`.

mod util;

mod cli;
mod crash;
mod foundation;
mod mail;
mod migration;
mod reset;
mod robustness;
mod service;
mod smtp;
