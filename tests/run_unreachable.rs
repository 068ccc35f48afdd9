//! `mlobs run` against an API server that does not answer: the process stays up, retries, and
//! says why its caches do not fill (a warning per failed watch, not silence).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn an_unreachable_api_server_is_logged_as_a_failed_watch() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let dir = std::env::temp_dir().join(format!("mlobs-unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\nusers: [{{name: u, user: {{}}}}]\n\
             current-context: c\n"
        ),
    )
    .expect("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .args([
            "run",
            "--cluster-name=c",
            "--region=us-east-1",
            "--account-id=123456789012",
            "--leader-elect=false",
            "--metrics-addr=127.0.0.1:0",
            &format!("--aws-endpoint-url=http://127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mlobs run");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = vec![];
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("watch failed") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let still_running = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let line = found.unwrap_or_else(|| {
        panic!(
            "no 'watch failed' line within 60 s; the output was:\n{}",
            seen.join("\n")
        )
    });
    assert!(line.contains("WARN"), "a warning: {line}");
    assert!(
        line.contains(&port.to_string()) || line.contains("onnect"),
        "the line says what failed: {line}"
    );
    assert!(still_running, "the operator keeps running and retrying");
}
