//! Where the workspace's binaries are.
//!
//! Cargo tells a test the path of a binary (`CARGO_BIN_EXE_*`) only for binaries of the test's
//! own package, so the CLI's tests could not name `latchkeyd`, nor the web example's tests
//! either. Every binary of the workspace is built into the same `target/<profile>/` directory
//! as the test executable itself, and `cargo test --workspace` (the README's test command)
//! builds them all before any test runs. A test run with `-p` alone may find a binary missing,
//! or older than the sources it is built from; either fails the test, saying how to build it,
//! rather than testing old code. (A nested `cargo build` from inside a test would resolve
//! features differently from the outer `cargo test --workspace` and rebuild much of the
//! dependency tree.)

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;

/// The daemon, `latchkeyd`. Located and checked once per test binary: every test starts a
/// daemon, and the check walks the sources.
pub fn latchkeyd() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            located(
                "latchkeyd",
                "latchkeyd",
                &["src", "client/src", "templates"],
            )
        })
        .clone()
}

/// The operator's command line, `latchkey`, located and checked once per test binary.
pub fn latchkey() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            located(
                "latchkey",
                "latchkey-cli",
                // The CLI links the daemon library for `backup --verify`.
                &["cli/src", "client/src", "src"],
            )
        })
        .clone()
}

/// The binary `name` of `package` in the test's own target directory, checked to be newer
/// than every file in `sources` (paths from the workspace root). Only files the binary is
/// compiled from: cargo rebuilds a package whenever one of those changes, but not for every
/// change to a manifest or to `Cargo.lock` (another member's new dependency), which would
/// make a fresh binary look stale.
fn located(name: &str, package: &str, sources: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lies in target/<profile>/deps");
    let binary = profile_dir.join(name);
    let build = format!(
        "build it with `cargo build -p {package}`, or run the whole suite with \
         `cargo test --workspace` (./scripts/test)"
    );
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("no {name} binary at {}: {e}; {build}", binary.display()));
    let root = crate::workspace_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for source in sources {
        newest_file(&root.join(source), &mut newest);
    }
    if let Some((changed, path)) = newest {
        assert!(
            changed <= built,
            "{} is older than {}: {build}",
            binary.display(),
            path.display()
        );
    }
    binary
}

/// Keeps in `newest` the most recently modified file at or below `path`.
fn newest_file(path: &Path, newest: &mut Option<(SystemTime, PathBuf)>) {
    let meta =
        std::fs::metadata(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    // Editors' swap and backup files are not sources.
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    {
        return;
    }
    if meta.is_dir() {
        let entries = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", path.display()));
            newest_file(&entry.path(), newest);
        }
        return;
    }
    let changed = meta
        .modified()
        .unwrap_or_else(|e| panic!("no modification time for {}: {e}", path.display()));
    if newest.as_ref().is_none_or(|(t, _)| changed > *t) {
        *newest = Some((changed, path.to_path_buf()));
    }
}
