//! The integration tests: one binary (`cargo test --test integration`), one module per area of
//! behaviour, every test against a real daemon started by the harness in `util`.

mod util;

mod foundation;
mod reset;
mod mail;
mod smtp;
mod service;
mod migration;
mod cli;
mod robustness;
mod crash;
