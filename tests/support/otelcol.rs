//! The real OpenTelemetry Collector of ../shared/otelcol (contrib v0.124.1 with the v0.125
//! awscloudwatchlogs placeholders): `otelcol validate` of rendered configs, a few at a time.
//!
//! A missing collector is a test failure naming where it was looked for, never a silent pass:
//! CI has ../shared beside the repository.

#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Overrides where the collector binary is.
pub const ENV: &str = "MLOBS_OTELCOL";
/// The node name the collector's `${env:KUBE_NODE_NAME}` references resolve to.
pub const NODE_NAME: &str = "ip-10-0-1-23.ec2.internal";
/// A validate takes ~0.4 s; one that runs far longer is hung, not slow.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);

/// `$MLOBS_OTELCOL`, else `<manifest_dir>/../shared/otelcol/otelcol`; an error says where it looked.
pub fn locate(env: Option<OsString>, manifest_dir: &Path) -> Result<PathBuf, String> {
    let (path, from) = match env {
        Some(p) => (PathBuf::from(p), format!("${ENV}")),
        None => (
            manifest_dir.join("../shared/otelcol/otelcol"),
            format!("<CARGO_MANIFEST_DIR>/../shared/otelcol/otelcol (${ENV} is unset)"),
        ),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no OpenTelemetry Collector at {} (from {from}): put the mlobs test collector there \
             (../shared/otelcol beside the repository) or set {ENV} to its path",
            path.display()
        ))
    }
}

/// The collector binary of this test run, its launcher run once alone first ([`warm_up`]: tests
/// that start collectors in parallel on a fresh machine raced on the unpacked file, "Text file
/// busy"); panics with where it looked when there is none.
pub fn binary() -> PathBuf {
    let collector =
        locate(std::env::var_os(ENV), Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|e| panic!("{e}"));
    warm_up(&collector);
    collector
}

/// A fresh directory for one validation (removed when dropped).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mlobs-otelcol-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir {}: {e}", dir.display()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The collector's command with a clean environment: what its launcher needs (it unpacks the
/// binary once under `$MLOBS_OTELCOL_HOME`, default `$HOME/.cache`) and `KUBE_NODE_NAME`.
fn command(collector: &Path) -> Command {
    let mut c = Command::new(collector);
    c.env_clear().env("KUBE_NODE_NAME", NODE_NAME);
    // sigv4auth resolves its credentials when the collector starts (in a pod: IRSA or EKS Pod
    // Identity). Static dummy ones keep it off the network; nothing is signed by `validate`.
    c.env("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for keep in ["PATH", "HOME", "MLOBS_OTELCOL_HOME", "TMPDIR"] {
        if let Some(v) = std::env::var_os(keep) {
            c.env(keep, v);
        }
    }
    c
}

/// Runs the collector once, alone: its launcher unpacks the binary on first use, and parallel
/// first runs would race on the unpacked file.
fn warm_up(collector: &Path) {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        let out = command(collector)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", collector.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} --version: {}\n{}",
                collector.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// `otelcol validate` of one configuration: `Err` carries the exit status and what the collector
/// printed. The test collector has no `datadog` exporter: a config with one is validated without
/// it (see [`datadog::split`]), and the removed block is checked against the exporter's
/// documented keys instead.
pub fn validate(collector: &Path, config_yaml: &str) -> Result<(), String> {
    let (config, block) = datadog::split(config_yaml)?;
    if let Some(block) = block {
        datadog::check(&block)?;
    }
    validate_as_is(collector, &config)
}

/// `otelcol validate` of exactly `config_yaml`.
pub fn validate_as_is(collector: &Path, config_yaml: &str) -> Result<(), String> {
    warm_up(collector);
    let dir = TempDir::new();
    let file = dir.0.join("config.yaml");
    std::fs::write(&file, config_yaml).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
    let mut child = command(collector)
        .arg("validate")
        .arg(format!("--config={}", file.display()))
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", collector.display()));
    // Read both pipes while waiting: a chatty collector must not block on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > VALIDATE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {}: {e}", collector.display()),
        }
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("otelcol validate: {s}\nstderr:\n{err}\nstdout:\n{out}")),
        None => Err(format!(
            "otelcol validate did not finish in {VALIDATE_TIMEOUT:?}\nstderr:\n{err}\nstdout:\n{out}"
        )),
    }
}

/// One configuration to validate and what it came from.
#[derive(Debug, Clone)]
pub struct Job {
    /// Where the config came from, e.g. `golden`, `sample`, `fuzz` (the summary counts by it).
    pub source: &'static str,
    /// Which case: a file name, `pipeline × policy`, a fuzz case number.
    pub name: String,
    /// What reproduces it, printed on failure (e.g. the spec YAML of a fuzz case).
    pub detail: String,
    pub config: String,
}

/// A job the collector rejected, with what it printed.
#[derive(Debug)]
pub struct Failure {
    pub job: Job,
    pub error: String,
}

/// Validates every job on `threads` threads (each collector run in its own temp dir) and returns
/// the rejected ones in job order.
pub fn validate_all(collector: &Path, jobs: &[Job], threads: usize) -> Vec<Failure> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    if let Err(error) = validate(collector, &job.config) {
                        let mut f = failures.lock().unwrap_or_else(|e| e.into_inner());
                        f.push((i, error));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|(i, _)| *i);
    failures
        .into_iter()
        .map(|(i, error)| Failure {
            job: jobs[i].clone(),
            error,
        })
        .collect()
}

/// The `datadog` exporter, which the test collector (and so `otelcol validate`) lacks.
pub mod datadog {
    use serde_json::Value;

    /// The exporter's name in mlobs' configs.
    pub const EXPORTER: &str = "datadog";
    /// Top-level keys the datadog exporter documents (contrib exporter/datadogexporter README and
    /// example config: api, hostname, only_metadata, host_metadata, metrics, traces, logs, and
    /// the exporterhelper's timeout, sending_queue, retry_on_failure).
    pub const KEYS: [&str; 10] = [
        "api",
        "hostname",
        "only_metadata",
        "host_metadata",
        "metrics",
        "traces",
        "logs",
        "timeout",
        "sending_queue",
        "retry_on_failure",
    ];
    /// Keys of its `api` section.
    pub const API_KEYS: [&str; 3] = ["key", "site", "fail_on_invalid_key"];

    /// The config without the datadog exporter (removed from `exporters` and from every pipeline;
    /// a pipeline left with no exporter gets `debug`, so the rest still validates) and the
    /// removed block. A config without one is returned unchanged.
    pub fn split(config_yaml: &str) -> Result<(String, Option<Value>), String> {
        let mut c: Value = serde_saphyr::from_str(config_yaml).map_err(|e| format!("config is not YAML: {e}"))?;
        let Some(block) = c["exporters"].as_object_mut().and_then(|x| x.remove(EXPORTER)) else {
            return Ok((config_yaml.to_string(), None));
        };
        let mut needs_debug = false;
        for p in c["service"]["pipelines"]
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            if let Some(list) = p["exporters"].as_array_mut() {
                list.retain(|x| x != EXPORTER);
                if list.is_empty() {
                    list.push(Value::from("debug"));
                    needs_debug = true;
                }
            }
        }
        if needs_debug {
            c["exporters"]["debug"] = serde_json::json!({});
        }
        let text = serde_saphyr::to_string(&c).map_err(|e| e.to_string())?;
        Ok((text, Some(block)))
    }

    /// The datadog block uses documented keys only, reads its API key from the environment (never
    /// a literal) and names a Datadog site.
    pub fn check(block: &Value) -> Result<(), String> {
        let unknown = |v: &Value, known: &[&str]| -> Vec<String> {
            (v.as_object().into_iter().flat_map(|m| m.keys()))
                .filter(|k| !known.contains(&k.as_str()))
                .cloned()
                .collect()
        };
        let bad = [unknown(block, &KEYS), unknown(&block["api"], &API_KEYS)].concat();
        if !bad.is_empty() {
            return Err(format!("datadog exporter: undocumented keys {bad:?} in {block}"));
        }
        if block["api"]["key"] != "${env:DD_API_KEY}" {
            return Err(format!(
                "datadog exporter: api.key must be ${{env:DD_API_KEY}}: {block}"
            ));
        }
        let site = block["api"]["site"].as_str().unwrap_or_default();
        let known_site = ["datadoghq.com", "datadoghq.eu", "ddog-gov.com"]
            .iter()
            .any(|d| site == *d || site.strip_suffix(d).is_some_and(|p| p.ends_with('.') && p.len() > 1));
        if !known_site {
            return Err(format!("datadog exporter: {site:?} is not a Datadog site"));
        }
        Ok(())
    }
}

/// A collector process that is stopped however the test ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}
