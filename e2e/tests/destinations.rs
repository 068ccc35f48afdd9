//! The destinations beyond CloudWatch with the real collector: spans sent to the collector's OTLP
//! receiver reach an OTLP/HTTP backend (a sink on 127.0.0.1), and the Prometheus remote write
//! carries exactly the selected DCGM fields. The AMP workspace is created in moto (the operator
//! checks it: `PrometheusReady`); only the remote write endpoint is pointed at the sink, because
//! moto takes no samples — the same loopback rule as for every other exporter.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use kube::api::DeleteParams;
use serde_json::json;

use crate::dataflow::SELECTED;
use crate::loopback::*;
use crate::sinks::{Sink, post_json, remote_write};
use crate::support::*;

/// An OTLP/JSON export request with one span named `name`.
fn spans(name: &str) -> serde_json::Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "e2e-trainer"}}]},
        "scopeSpans": [{"scope": {"name": "e2e"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "name": name, "kind": 1,
            "startTimeUnixNano": "1800000000000000000", "endTimeUnixNano": "1800000001000000000"
        }]}]
    }]})
}

#[tokio::test]
async fn the_real_collector_exports_spans_and_remote_writes_only_the_selected_fields() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "destinations").await?;
    let ns = guard.name.as_str();
    let aws = aws().await?;
    let ws = aws
        .amp
        .create_workspace()
        .alias(format!("e2e-{ns}"))
        .send()
        .await
        .context("creating an AMP workspace in moto")?;
    let sink = Sink::start().await?;

    let name = "dest";
    let p = pipeline(
        ns,
        name,
        json!({
            "metrics": {
                "dcgm": {"scrapeInterval": "5s", "metrics": SELECTED},
                "prometheus": {"workspaceArn": ws.arn()},
            },
            "traces": {"otlp": {"enabled": true},
                "destination": {"otlp": {"endpoint": sink.addr, "tls": {"insecure": true}}}},
            "collector": {"batch": {"timeout": "1s"}},
        }),
    )?;
    create_pipeline(&c, &p).await?;
    let p = wait_ready(&c, ns, name).await?;
    for t in ["TracesReady", "PrometheusReady"] {
        ensure!(condition_status(&p, t) == "True", "{t}: {}", conditions_summary(&p));
    }
    let dest = p.status.and_then(|s| s.destinations).context("status.destinations")?;
    let traces_url = format!("http://{}/v1/traces", sink.addr);
    ensure!(dest.traces_endpoint.as_deref() == Some(traces_url.as_str()), "{dest:?}");
    let rw_path = format!("/workspaces/{}/api/v1/remote_write", ws.workspace_id());
    ensure!(
        dest.remote_write_url.as_deref().is_some_and(|u| u.ends_with(&rw_path)),
        "{dest:?}"
    );

    let rendered = rendered_config(&c, ns, name).await?;
    let node = gpu_nodes(&c).await?.into_iter().next().context("a GPU node")?;
    let dcgm = FakeDcgm::start(&node, vec![]).await?;
    let tmp = std::env::temp_dir().join(format!("mlobs-destinations-{}", random_suffix()));
    let pods_dir = tmp.join("var/log/pods");
    std::fs::create_dir_all(&pods_dir)?;
    let kubeconfig = tmp.join("collector-kubeconfig");
    service_account_kubeconfig(ns, &format!("mlobs-{name}"), &kubeconfig)?;
    let lb = Loopback {
        pods_dir,
        storage_dir: tmp.join("storage"),
        aws_endpoint: env("MLOBS_E2E_MOTO_URL")?,
        kubeconfig,
        dcgm_addr: dcgm.addr.clone(),
        health_port: free_port()?,
        telemetry_port: free_port()?,
    };
    let mut config = loopback_config(&rendered, &lb)?;
    let rw = config["exporters"]
        .as_object_mut()
        .and_then(|x| x.iter_mut().find(|(k, _)| k.starts_with("prometheusremotewrite")))
        .map(|(_, v)| v)
        .context("a prometheusremotewrite exporter")?;
    rw["endpoint"] = json!(format!("http://{}{rw_path}", sink.addr));
    let otlp_http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .context("the OTLP/HTTP receiver's endpoint")?
        .to_string();
    let collector = Collector::start(&config, &tmp, &node, lb.health_port, 1).await?;
    let result = check_delivery(&sink, &otlp_http, &rw_path).await;
    let tail = collector.log_tail(30);
    collector.stop().await?;
    let _ = std::fs::remove_dir_all(&tmp);
    result.map_err(|e| anyhow::anyhow!("{e:#}\ncollector log:\n{tail}"))
}

async fn check_delivery(sink: &Sink, otlp_http: &str, rw_path: &str) -> Result<()> {
    // 1. A span in, the same span out at the backend.
    let span = format!("e2e-span-{}", random_suffix());
    let code = post_json(otlp_http, "/v1/traces", &spans(&span)).await?;
    ensure!(code == 200, "the OTLP receiver answered {code}");
    let at = wait_for("the span at the OTLP backend", Duration::from_secs(60), async || {
        for r in sink.requests("/v1/traces") {
            let body = r.decoded()?;
            if body.windows(span.len()).any(|w| w == span.as_bytes()) {
                return Ok(r);
            }
        }
        not_yet("no request carries the span yet")
    })
    .await?;
    println!(
        "span {span} reached the backend ({} bytes, content-encoding {:?})",
        at.body.len(),
        at.headers.get("content-encoding")
    );

    // 2. Remote write: every selected field arrives, nothing else.
    let selected: BTreeSet<String> = SELECTED.iter().map(|s| s.to_string()).collect();
    let names = wait_for(
        "remote write with every selected field",
        Duration::from_secs(90),
        async || {
            let mut names = BTreeSet::new();
            for r in sink.requests(rw_path) {
                for ts in remote_write(&r.body)?.timeseries {
                    names.extend(ts.labels.into_iter().filter(|l| l.name == "__name__").map(|l| l.value));
                }
            }
            if selected.is_subset(&names) {
                Ok(names)
            } else {
                not_yet(format!("names so far: {names:?}"))
            }
        },
    )
    .await?;
    let requests = sink.requests(rw_path);
    ensure!(
        requests.iter().all(|r| r
            .headers
            .get("authorization")
            .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256"))),
        "every remote write is SigV4-signed"
    );
    ensure!(
        names == selected,
        "only the selected fields are remote-written: {names:?}"
    );
    println!("remote write: {} requests, fields {names:?}", requests.len());
    Ok(())
}

/// `metrics.prometheus.workspaceAlias`: the operator (its own process, least-privilege token)
/// creates the workspace in moto before the collector, records it in status, and the collector's
/// ConfigMap on the API server names its id; deleting the pipeline under `deletionPolicy: Delete`
/// deletes it.
#[tokio::test]
async fn a_workspace_by_alias_is_created_before_the_collector_and_deleted_with_the_pipeline() -> Result<()> {
    let c = client().await?;
    let guard = TestNs::create(&c, "ampalias").await?;
    let ns = guard.name.as_str();
    let aws = aws().await?;
    let alias = format!("e2e-{ns}");
    let name = "byalias";
    let p = pipeline(
        ns,
        name,
        json!({
            "metrics": {"dcgm": {"metrics": SELECTED}, "prometheus": {"workspaceAlias": alias}},
            "deletionPolicy": "Delete",
        }),
    )?;
    create_pipeline(&c, &p).await?;
    let p = wait_ready(&c, ns, name).await?;
    ensure!(
        condition_status(&p, "PrometheusReady") == "True",
        "{}",
        conditions_summary(&p)
    );
    let recorded = p.status.and_then(|s| s.aws).context("status.aws")?;
    ensure!(
        recorded.amp_workspace_alias.as_deref() == Some(alias.as_str()),
        "{recorded:?}"
    );
    let arn = recorded.amp_workspace_arn.context("status.aws.ampWorkspaceArn")?;
    let listed = aws.amp.list_workspaces().alias(&alias).send().await?;
    let arns: Vec<&str> = listed.workspaces().iter().map(|w| w.arn()).collect();
    ensure!(arns == vec![arn.as_str()], "one workspace of the alias: {arns:?}");
    let id = arn.rsplit('/').next().unwrap_or_default().to_string();
    let rendered = rendered_config(&c, ns, name).await?;
    let endpoint = rendered["exporters"]
        .as_object()
        .and_then(|x| x.iter().find(|(k, _)| k.starts_with("prometheusremotewrite")))
        .and_then(|(_, v)| v["endpoint"].as_str())
        .context("the remote write endpoint")?
        .to_string();
    ensure!(
        endpoint.ends_with(&format!("/workspaces/{id}/api/v1/remote_write")),
        "{endpoint}"
    );
    println!("workspace {arn} created for alias {alias}; the collector writes to {endpoint}");

    pipelines(&c, ns).delete(name, &DeleteParams::default()).await?;
    wait_for(
        "the workspace deleted with the pipeline",
        Duration::from_secs(120),
        async || {
            let left = aws.amp.list_workspaces().alias(&alias).send().await?;
            let live: Vec<String> = (left.workspaces().iter())
                .filter(|w| w.status().is_some_and(|s| s.status_code().as_str() != "DELETING"))
                .map(|w| w.arn().to_string())
                .collect();
            if live.is_empty() {
                Ok(())
            } else {
                not_yet(format!("still there: {live:?}"))
            }
        },
    )
    .await?;
    Ok(())
}
