//! Helpers shared by the keymeshctl CLI tests (`cli.rs`, `accounts.rs`):
//! every invocation is a child process with a cleared environment, so each
//! test states exactly what the operator's shell would hold and this
//! process's environment is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

/// `keymeshctl ARGS` with an empty environment (the caller adds its own).
pub fn keymeshctl(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keymeshctl"));
    cmd.args(args).env_clear();
    cmd
}

/// The stdout of `out`, which must come from a successful run of `args`.
pub fn stdout_ok(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `out`, a failed run of `args`, said `needle` on stderr.
pub fn assert_stderr_has(args: &[&str], out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err}");
}
