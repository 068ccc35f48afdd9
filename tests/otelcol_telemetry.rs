//! The pipeline-health SLO rules name the collector's own metrics: every name they use must be one
//! the real collector (../shared/otelcol) exposes, at the level and on the endpoint mlobs renders.
//! The collector runs with the rendered `service.telemetry` section (its host from `POD_IP`, here
//! 127.0.0.1; only the port moved to a free one), gets one log record and one metric point
//! through exporters that cannot deliver (so the failure counters exist too), and its /metrics is
//! read.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mlobs::desired::alerts::slo::SIGNALS;
use serde_json::json;
use support::otelcol::{self, Running, free_port};

/// One HTTP/1.1 request; the status code and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let code = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    Some((code, body))
}

/// The metric names the SLO rules read: each signal's failed and sent counters, and the queue's
/// size and capacity.
fn names_the_rules_use() -> Vec<String> {
    let mut names: Vec<String> = SIGNALS
        .iter()
        .flat_map(|(_, failed, sent)| [failed.to_string(), sent.to_string()])
        .collect();
    names.extend([
        "otelcol_exporter_queue_size".into(),
        "otelcol_exporter_queue_capacity".into(),
    ]);
    names
}

#[test]
fn every_collector_metric_the_slo_rules_read_is_one_the_real_collector_exposes() {
    let (otlp, telemetry) = (free_port(), free_port());
    let mut section = mlobs::desired::self_monitoring::telemetry();
    section["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"]["port"] = json!(telemetry);
    // Port 9 (discard) on loopback refuses: every send fails, so the failure counters exist.
    let config = json!({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": format!("127.0.0.1:{otlp}")}}}},
        "exporters": {"otlphttp": {"endpoint": "http://127.0.0.1:9", "retry_on_failure": {"enabled": false},
                                   "sending_queue": {"enabled": true}}},
        "service": {
            "pipelines": {
                "logs": {"receivers": ["otlp"], "exporters": ["otlphttp"]},
                "metrics": {"receivers": ["otlp"], "exporters": ["otlphttp"]},
            },
            "telemetry": section,
        },
    });
    let dir = std::env::temp_dir().join(format!("mlobs-telemetry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&config).expect("yaml")).expect("write config");
    let _collector = Running(
        Command::new(otelcol::binary())
            .arg(format!("--config={}", path.display()))
            .env(mlobs::desired::self_monitoring::POD_IP_ENV, "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the collector"),
    );
    let log = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "x"}}]}]}]});
    let metric = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "g", "gauge": {
        "dataPoints": [{"asDouble": 1.0, "timeUnixNano": "1800000000000000000"}]}}]}]}]});
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = names_the_rules_use();
    let mut missing = want.clone();
    while Instant::now() < deadline {
        let _ = http(otlp, "POST", "/v1/logs", &log.to_string());
        let _ = http(otlp, "POST", "/v1/metrics", &metric.to_string());
        if let Some((200, text)) = http(telemetry, "GET", "/metrics", "") {
            let exposed: Vec<&str> = (text.lines())
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .collect();
            missing = want
                .iter()
                .filter(|n| !exposed.contains(&n.as_str()))
                .cloned()
                .collect();
            if missing.is_empty() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        missing.is_empty(),
        "the rules read metrics the collector does not expose: {missing:?}"
    );
}
