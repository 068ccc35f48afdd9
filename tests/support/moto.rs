//! A moto server shared by the tests of one test binary, and SDK clients pointed at it.
//!
//! moto must be installed (`make venv` puts it in .venv). A missing moto is a test failure with
//! instructions, never a silent pass. Tests isolate themselves by unique resource names (moto
//! state is shared by the tests running in parallel in one binary).

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use mlobs::aws::AwsClients;

static ENDPOINT: OnceLock<String> = OnceLock::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The Python that runs moto: the one in `.venv` (`make venv`), else the `python3` on PATH next
/// to a `moto_server`.
fn moto_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("moto_server").exists() && dir.join("python3").exists() {
                return dir.join("python3");
            }
        }
    }
    panic!("moto_server not found: run `make venv` (installs moto[server] into .venv) or put it on PATH");
}

/// The endpoint of this binary's moto server, started on first use.
pub fn endpoint() -> String {
    ENDPOINT
        .get_or_init(|| {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port on 127.0.0.1");
            // moto's server, paging IAM's role listing and KMS's alias listing as AWS does.
            let server = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/moto_server.py");
            // The wrapper stops moto when this test process exits, however it exits.
            let script = format!(
                "'{}' '{}' -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $m",
                moto_python().display(),
                server.display(),
                std::process::id()
            );
            let child = Command::new("sh").arg("-c").arg(script).stdin(Stdio::null()).spawn().expect("start moto_server");
            // The wrapper outlives the tests on purpose: it reaps moto when this process exits.
            std::mem::forget(child);
            let deadline = Instant::now() + Duration::from_secs(60);
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "moto_server did not listen on {port} within 60 s");
                std::thread::sleep(Duration::from_millis(100));
            }
            format!("http://127.0.0.1:{port}")
        })
        .clone()
}

/// Fresh clients (with their own call counter) against moto, region us-east-1.
pub async fn clients() -> AwsClients {
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await;
    AwsClients::new(&conf)
}

/// A name no other test in this process uses, e.g. `t3-<pid>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}
