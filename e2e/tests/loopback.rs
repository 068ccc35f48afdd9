//! What a data-flow test serves or runs on 127.0.0.1: a fake DCGM exporter, a TCP proxy in front
//! of moto that can go down (an AWS outage without losing moto's state), and the real collector
//! (`../shared/otelcol/otelcol`) running the operator's rendered configuration, rewritten only
//! where a process outside the cluster must differ (see [`loopback_config`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Fake DCGM exporter

/// dcgm-exporter's fields (default-counters.csv and dcp-metrics-included.csv of 3.3/4.x) with
/// their Prometheus type: 46 fields, so about 40 per GPU as on a real node.
pub const DCGM_FIELDS: [(&str, &str); 46] = [
    ("DCGM_FI_DEV_SM_CLOCK", "gauge"),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge"),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter"),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge"),
    ("DCGM_FI_DEV_ENC_UTIL", "gauge"),
    ("DCGM_FI_DEV_DEC_UTIL", "gauge"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge"),
    ("DCGM_FI_DEV_FB_FREE", "gauge"),
    ("DCGM_FI_DEV_FB_USED", "gauge"),
    ("DCGM_FI_DEV_FB_RESERVED", "gauge"),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "counter"),
    ("DCGM_FI_DEV_VGPU_LICENSE_STATUS", "gauge"),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "counter"),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "counter"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge"),
    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "counter"),
    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter"),
    ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "counter"),
    ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "counter"),
    ("DCGM_FI_DEV_THERMAL_VIOLATION", "counter"),
    ("DCGM_FI_DEV_POWER_VIOLATION", "counter"),
    ("DCGM_FI_DEV_SYNC_BOOST_VIOLATION", "counter"),
    ("DCGM_FI_DEV_BOARD_LIMIT_VIOLATION", "counter"),
    ("DCGM_FI_DEV_LOW_UTIL_VIOLATION", "counter"),
    ("DCGM_FI_DEV_RELIABILITY_VIOLATION", "counter"),
    ("DCGM_FI_DEV_RETIRED_SBE", "counter"),
    ("DCGM_FI_DEV_RETIRED_DBE", "counter"),
    ("DCGM_FI_DEV_RETIRED_PENDING", "counter"),
    ("DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", "counter"),
    ("DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", "counter"),
    ("DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", "counter"),
    ("DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", "counter"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge"),
    ("DCGM_FI_PROF_SM_ACTIVE", "gauge"),
    ("DCGM_FI_PROF_SM_OCCUPANCY", "gauge"),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge"),
    ("DCGM_FI_PROF_DRAM_ACTIVE", "gauge"),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", "gauge"),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", "gauge"),
    ("DCGM_FI_PROF_NVLINK_TX_BYTES", "gauge"),
    ("DCGM_FI_PROF_NVLINK_RX_BYTES", "gauge"),
];

pub const GPUS: usize = 8;

/// dcgm-exporter's exposition for one node of 8 A100s: every field for every GPU with its
/// labels (`gpu`, `UUID`, `pci_bus_id`, `device`, `modelName`, `Hostname`,
/// `DCGM_FI_DRIVER_VERSION`, and from pod mapping `container`, `namespace`, `pod`). GPU `i` is
/// used by `pods[i % pods.len()]` (namespace, pod).
pub fn dcgm_exposition(hostname: &str, pods: &[(String, String)], scrape: u64) -> String {
    let mut out = String::new();
    for (field, kind) in DCGM_FIELDS {
        out.push_str(&format!(
            "# HELP {field} {field} as read by DCGM.\n# TYPE {field} {kind}\n"
        ));
        for gpu in 0..GPUS {
            let (ns, pod) = pods.get(gpu % pods.len().max(1)).cloned().unwrap_or_default();
            let value = (scrape * 7 + gpu as u64 * 3 + field.len() as u64) % 100;
            out.push_str(&format!(
                "{field}{{gpu=\"{gpu}\",UUID=\"GPU-5a1c0e1e-0000-4000-8000-00000000000{gpu}\",pci_bus_id=\"00000000:{:02X}:1C.0\",\
                 device=\"nvidia{gpu}\",modelName=\"NVIDIA A100-SXM4-40GB\",Hostname=\"{hostname}\",\
                 DCGM_FI_DRIVER_VERSION=\"535.183.01\",container=\"trainer\",namespace=\"{ns}\",pod=\"{pod}\"}} {value}\n",
                0x10 + gpu * 0x10
            ));
        }
    }
    out
}

/// The fake exporter: GET /metrics on 127.0.0.1 answers [`dcgm_exposition`]; counts scrapes.
pub struct FakeDcgm {
    pub addr: String,
    pub scrapes: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDcgm {
    pub async fn start(hostname: &str, pods: Vec<(String, String)>) -> Result<FakeDcgm> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake DCGM exporter")?;
        let addr = listener.local_addr()?.to_string();
        let scrapes = Arc::new(Mutex::new(0u64));
        let (count, host) = (scrapes.clone(), hostname.to_string());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (count, host, pods) = (count.clone(), host.clone(), pods.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let n = {
                        let mut c = count.lock().unwrap_or_else(|p| p.into_inner());
                        *c += 1;
                        *c
                    };
                    let body = dcgm_exposition(&host, &pods, n);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(body.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Ok(FakeDcgm { addr, scrapes, task })
    }

    pub fn scrapes(&self) -> u64 {
        *self.scrapes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for FakeDcgm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// A proxy in front of moto that can go down

/// Forwards 127.0.0.1:`port` to `target`. [`Proxy::down`] closes the listener and every open
/// connection (clients then get "connection refused", as during an outage); [`Proxy::up`] listens
/// on the same port again. moto keeps its state meanwhile.
pub struct Proxy {
    pub port: u16,
    target: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the proxy")?;
        let port = listener.local_addr()?.port();
        let mut p = Proxy {
            port,
            target: target.to_string(),
            task: None,
        };
        p.serve(listener);
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping the JoinSet (when this task is aborted) aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        let target = target.clone();
                        conns.spawn(async move {
                            if let Ok(mut outbound) = TcpStream::connect(&target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
    }

    pub fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub async fn up(&mut self) -> Result<()> {
        ensure!(self.task.is_none(), "the proxy is already up");
        // The aborted task drops its listener shortly after the abort: retry the bind briefly.
        let addr = format!("127.0.0.1:{}", self.port);
        let listener = wait_for(&format!("rebinding {addr}"), Duration::from_secs(10), async || {
            Ok(TcpListener::bind(&addr).await?)
        })
        .await?;
        self.serve(listener);
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

// ---------------------------------------------------------------------------------------------
// The real collector

/// `$MLOBS_OTELCOL`, else ../shared/otelcol/otelcol beside the repository.
pub fn otelcol_path() -> Result<PathBuf> {
    let path = match std::env::var("MLOBS_OTELCOL") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/otelcol/otelcol"),
    };
    ensure!(
        path.exists(),
        "the real collector is missing at {} (set MLOBS_OTELCOL)",
        path.display()
    );
    Ok(path)
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Where a loopback collector reads and writes instead of the node's paths.
pub struct Loopback {
    /// Replaces `/var/log/pods` in filelog's include/exclude globs.
    pub pods_dir: PathBuf,
    /// file_storage's directory (queue and filelog checkpoints).
    pub storage_dir: PathBuf,
    /// Both exporters' `endpoint`.
    pub aws_endpoint: String,
    /// A kubeconfig for k8sattributes and Kubernetes service discovery.
    pub kubeconfig: PathBuf,
    /// The DCGM exporter every discovered target is rewritten to.
    pub dcgm_addr: String,
    pub health_port: u16,
    pub telemetry_port: u16,
}

/// The rendered configuration with only these changes, each one because the collector runs as a
/// local process instead of a Pod: exporters' `endpoint` → moto (behind the proxy); filelog globs
/// and file_storage under a temp dir; k8sattributes and the prometheus receiver's pod discovery
/// authenticate with a kubeconfig instead of the in-cluster ServiceAccount; each discovered
/// exporter Pod's address (a Pod IP, never reachable here) → the fake exporter on 127.0.0.1 by
/// one relabel rule appended after the rendered ones; listening ports → free loopback ports.
/// Everything else — processors, their order, redaction, filters, declarations — is the
/// operator's.
pub fn loopback_config(rendered: &Value, lb: &Loopback) -> Result<Value> {
    let mut c = rendered.clone();
    let pods = lb.pods_dir.to_str().context("temp path is UTF-8")?;
    for exporter in ["awscloudwatchlogs", "awsemf"] {
        if let Some(x) = c["exporters"].get_mut(exporter) {
            x["endpoint"] = json!(lb.aws_endpoint);
        }
    }
    if let Some(filelog) = c["receivers"].get_mut("filelog") {
        for key in ["include", "exclude"] {
            let globs = filelog[key]
                .as_array_mut()
                .with_context(|| format!("filelog.{key} is a list"))?;
            for g in globs.iter_mut() {
                let s = g.as_str().context("a glob is a string")?;
                let rest = s
                    .strip_prefix("/var/log/pods")
                    .with_context(|| format!("filelog.{key} {s:?} is not under /var/log/pods"))?;
                *g = json!(format!("{pods}{rest}"));
            }
        }
    }
    c["extensions"]["file_storage"]["directory"] = json!(lb.storage_dir.to_str().context("UTF-8")?);
    c["extensions"]["health_check"]["endpoint"] = json!(format!("127.0.0.1:{}", lb.health_port));
    if let Some(otlp) = c["receivers"].get_mut("otlp") {
        otlp["protocols"]["grpc"]["endpoint"] = json!(format!("127.0.0.1:{}", free_port()?));
        otlp["protocols"]["http"]["endpoint"] = json!(format!("127.0.0.1:{}", free_port()?));
    }
    let kubeconfig = lb.kubeconfig.to_str().context("UTF-8")?;
    if let Some(k) = c["processors"].get_mut("k8sattributes") {
        ensure!(
            k["auth_type"] == "serviceAccount",
            "k8sattributes auth_type {}",
            k["auth_type"]
        );
        k["auth_type"] = json!("kubeConfig");
    }
    if let Some(prom) = c["receivers"].get_mut("prometheus") {
        let jobs = prom["config"]["scrape_configs"]
            .as_array_mut()
            .context("scrape_configs")?;
        for job in jobs {
            for sd in job["kubernetes_sd_configs"].as_array_mut().into_iter().flatten() {
                sd["kubeconfig_file"] = json!(kubeconfig);
            }
            let relabel = job["relabel_configs"].as_array_mut().context("relabel_configs")?;
            relabel.push(json!({"target_label": "__address__", "replacement": lb.dcgm_addr, "action": "replace"}));
        }
    }
    let telemetry = json!({"level": "basic", "readers": [{"pull": {"exporter": {"prometheus": {
        "host": "127.0.0.1", "port": lb.telemetry_port}}}}]});
    c["service"]["telemetry"]["metrics"] = telemetry;
    Ok(c)
}

/// The collector configuration the operator rendered into the pipeline's ConfigMap.
pub async fn rendered_config(c: &kube::Client, ns: &str, name: &str) -> Result<Value> {
    let cms = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(c.clone(), ns)
        .list(&kube::api::ListParams::default().labels(&child_selector(ns, name)))
        .await?;
    let cm = cms.items.first().context("the collector ConfigMap")?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("config.yaml"))
        .context("config.yaml")?;
    serde_saphyr::from_str(text).context("the ConfigMap holds YAML")
}

/// A kubeconfig for the collector's own ServiceAccount (a TokenRequest token), so the test also
/// proves the collector's RBAC: k8sattributes and pod discovery fail without it.
pub fn service_account_kubeconfig(ns: &str, sa: &str, path: &Path) -> Result<()> {
    let kubectl = env("MLOBS_E2E_KUBECTL")?;
    let run = |args: &[&str]| -> Result<String> {
        let out = Command::new(&kubectl).args(args).output().context("running kubectl")?;
        ensure!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let token = run(&["-n", ns, "create", "token", sa, "--duration=1h"])?;
    let server = run(&[
        "config",
        "view",
        "--minify",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])?;
    let ca = run(&[
        "config",
        "view",
        "--minify",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ])?;
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": sa, "namespace": ns}}],
        "current-context": "e2e",
    });
    std::fs::write(path, serde_json::to_string(&kc)?).with_context(|| format!("writing {}", path.display()))
}

/// A running collector process.
pub struct Collector {
    child: Child,
    pub log: PathBuf,
}

impl Collector {
    /// Validates `config` with the real collector, starts it and waits for its health check.
    pub async fn start(config: &Value, dir: &Path, node: &str, health_port: u16, run: u32) -> Result<Collector> {
        let bin = otelcol_path()?;
        let path = dir.join("config.yaml");
        std::fs::write(&path, serde_saphyr::to_string(config)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let log = dir.join(format!("collector-{run}.log"));
        let envs = [
            ("KUBE_NODE_NAME", node),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", REGION),
        ];
        let out = Command::new(&bin)
            .arg("validate")
            .arg(format!("--config={}", path.display()))
            .envs(envs)
            .output()
            .context("running otelcol validate")?;
        ensure!(
            out.status.success(),
            "otelcol validate refused the loopback config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = std::fs::File::create(&log)?;
        let child = Command::new(&bin)
            .arg(format!("--config={}", path.display()))
            .envs(envs)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting the collector")?;
        let mut c = Collector { child, log };
        let addr = format!("127.0.0.1:{health_port}");
        let started = wait_for("the collector's health check", Duration::from_secs(60), async || {
            if let Ok(Some(status)) = c.child.try_wait() {
                bail!("the collector exited with {status}");
            }
            http_get(&addr, "/").await
        })
        .await;
        if let Err(e) = started {
            bail!("{e:#}\n{}", c.log_tail(40));
        }
        Ok(c)
    }

    /// Stops it with SIGTERM (a graceful shutdown flushes and persists the queue) and waits.
    pub async fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let st = Command::new("kill").args(["-TERM", &pid]).status().context("kill")?;
        ensure!(st.success(), "kill -TERM {pid}");
        let child = &mut self.child;
        wait_for("the collector to exit", Duration::from_secs(30), async || {
            match child.try_wait()? {
                Some(_) => Ok(()),
                None => not_yet("still running"),
            }
        })
        .await
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends CRI-format lines (`<RFC3339Nano> stdout F <message>`) to a container's log file under
/// `<pods_dir>/<ns>_<pod>_<uid>/<container>/0.log`, as the kubelet does.
pub struct PodLog {
    pub path: PathBuf,
}

impl PodLog {
    pub fn new(pods_dir: &Path, ns: &str, pod: &str, uid: &str, container: &str) -> Result<PodLog> {
        let dir = pods_dir.join(format!("{ns}_{pod}_{uid}")).join(container);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(PodLog {
            path: dir.join("0.log"),
        })
    }

    pub fn write(&self, lines: &[String]) -> Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let mut text = String::new();
        for l in lines {
            let now = k8s_openapi::jiff::Timestamp::now();
            text.push_str(&format!("{now} stdout F {l}\n"));
        }
        f.write_all(text.as_bytes())?;
        f.flush()?;
        Ok(())
    }
}

/// Every event of a log group by stream (all pages), oldest first.
pub async fn events_by_stream(aws: &mlobs::aws::AwsClients, group: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let mut token = None;
    let mut streams = Vec::new();
    loop {
        let page = aws
            .logs
            .describe_log_streams()
            .log_group_name(group)
            .set_next_token(token)
            .send()
            .await
            .with_context(|| format!("DescribeLogStreams {group}"))?;
        streams.extend(
            page.log_streams()
                .iter()
                .filter_map(|s| s.log_stream_name().map(String::from)),
        );
        token = page.next_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    for stream in streams {
        let mut events = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = aws
                .logs
                .get_log_events()
                .log_group_name(group)
                .log_stream_name(&stream)
                .start_from_head(true)
                .set_next_token(token.clone())
                .send()
                .await
                .with_context(|| format!("GetLogEvents {group} {stream}"))?;
            let n = page.events().len();
            events.extend(page.events().iter().filter_map(|e| e.message().map(String::from)));
            let next = page.next_forward_token().map(String::from);
            if n == 0 || next == token {
                break;
            }
            token = next;
        }
        out.insert(stream, events);
    }
    Ok(out)
}
