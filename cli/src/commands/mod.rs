//! One module per command group, each a `run` that makes the group's calls and returns what
//! to print. `health` and `metrics`, one call each with nothing to add, are run by
//! `main.rs`'s dispatch itself.

pub(crate) mod backup;
pub(crate) mod events;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod outbox;
pub(crate) mod reset;
pub(crate) mod user;
