//! Runs the `mlobs` binary of this build in the repository root.

#![allow(dead_code)]

use std::process::Command;

/// (exit code, stdout, stderr) of `mlobs args...`.
pub fn mlobs(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("mlobs runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
