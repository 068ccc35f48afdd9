//! The real API server enforces every CEL rule of the CRDs it serves, with the rule's message.
//! The failing specs are the ones tests/cel_rules.rs evaluates client-side (tests/support/cel_cases.rs).

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use serde_json::{Value, json};

use crate::support::*;

#[path = "../../tests/support/cel_cases.rs"]
mod cel_cases;
use cel_cases::Kind;

/// (rule text as in the CRD, kind, a spec that breaks only that rule): the rejected case of each
/// rule in tests/support/cel_cases.rs, which tests/cel_rules.rs evaluates client-side.
fn failing_specs() -> Vec<(&'static str, Kind, Value)> {
    cel_cases::cases()
        .into_iter()
        .map(|c| (c.rule, c.kind, c.bad))
        .collect()
}

/// The transition rule: checked with an update of a real object.
const TRANSITION_RULE: &str = "self == oldSelf";

/// (rule, message) of every x-kubernetes-validations entry in a schema.
fn rules(schema: &Value, out: &mut Vec<(String, String)>) {
    for v in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rule = v.get("rule").and_then(Value::as_str).unwrap_or_default();
        let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
        out.push((rule.to_string(), message.to_string()));
    }
    for (_, v) in schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        rules(v, out);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(v) = schema.get(key).filter(|v| v.is_object()) {
            rules(v, out);
        }
    }
}

/// The rules of a CRD as the API server serves it.
async fn served_rules(c: &Client, crd: &str) -> Result<Vec<(String, String)>> {
    let crd = Api::<CustomResourceDefinition>::all(c.clone())
        .get(crd)
        .await
        .with_context(|| format!("get CRD {crd}"))?;
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .context("v1alpha1 served")?;
    let schema = serde_json::to_value(
        version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .context("openAPIV3Schema")?,
    )?;
    let mut out = vec![];
    rules(&schema, &mut out);
    Ok(out)
}

/// The 422 of a rejected request; an accepted one is an error.
fn rejection<T: std::fmt::Debug>(what: &str, r: kube::Result<T>) -> Result<String> {
    match r {
        Ok(o) => bail!("{what} was accepted: {o:?}"),
        Err(kube::Error::Api(s)) if s.code == 422 => Ok(s.message.clone()),
        Err(e) => bail!("{what}: expected 422 Invalid, got {e}"),
    }
}

#[tokio::test]
async fn admission_returns_every_cel_rule_message() -> Result<()> {
    let c = client().await?;
    let ns = TestNs::create(&c, "admission").await?;
    let ns = ns.name.as_str();
    let mut served: Vec<(Kind, String, String)> = vec![];
    for (kind, crd) in [
        (Kind::Pipeline, "mlobservabilitypipelines.mlobs.io"),
        (Kind::Policy, "gputelemetrypolicies.mlobs.io"),
    ] {
        for (rule, message) in served_rules(&c, crd).await? {
            served.push((kind, rule, message));
        }
    }
    ensure!(!served.is_empty(), "the served CRDs have no CEL rules");
    served.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
    served.dedup();
    // The same rule text guards several fields with their own messages (a duration minimum, say):
    // one case per rule text, as tests/cel_rules.rs keeps them, must get one of its messages.
    let mut by_rule: Vec<(Kind, String, Vec<String>)> = vec![];
    for (kind, rule, message) in &served {
        match by_rule.iter_mut().find(|(k, r, _)| k == kind && r == rule) {
            Some((_, _, messages)) => messages.push(message.clone()),
            None => by_rule.push((*kind, rule.clone(), vec![message.clone()])),
        }
    }

    let specs = failing_specs();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut checked = 0;
    let mut problems = vec![];
    for (kind, rule, messages) in &by_rule {
        if rule == TRANSITION_RULE {
            continue;
        }
        ensure!(messages.iter().all(|m| !m.is_empty()), "rule {rule:?} has no message");
        // A rule both kinds carry is sent with the kind its case was written for.
        if !specs.iter().any(|(r, k, _)| r == rule && k == kind)
            && specs.iter().any(|(r, _, _)| r == rule)
            && by_rule.iter().any(|(k2, r2, _)| r2 == rule && k2 != kind)
        {
            continue;
        }
        let Some((_, k, spec)) = specs.iter().find(|(r, k, _)| r == rule && k == kind) else {
            problems.push(format!(
                "no failing spec for {kind:?} rule {rule:?} (add one here and in tests/cel_rules.rs)"
            ));
            continue;
        };
        let what = format!("{k:?} breaking {rule:?}");
        let got = match k {
            Kind::Pipeline => {
                let p: MLObservabilityPipeline = serde_json::from_value(json!({
                    "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
                    "metadata": {"name": "bad", "namespace": ns}, "spec": spec
                }))?;
                rejection(&what, pipelines(&c, ns).create(&dry, &p).await)?
            }
            Kind::Policy => {
                let p: GpuTelemetryPolicy = serde_json::from_value(json!({
                    "apiVersion": "mlobs.io/v1alpha1", "kind": "GpuTelemetryPolicy",
                    "metadata": {"name": format!("{ns}-bad")}, "spec": spec
                }))?;
                rejection(&what, Api::<GpuTelemetryPolicy>::all(c.clone()).create(&dry, &p).await)?
            }
        };
        if messages.iter().any(|m| got.contains(m.as_str())) {
            checked += 1;
        } else {
            problems.push(format!(
                "{what}: 422 message {got:?} has none of the rule's messages {messages:?}"
            ));
        }
    }

    // The transition rule (log group class is immutable): an update of a real pipeline.
    // Two rules share the text `self == oldSelf` (the class here, archive.bucket): the class's.
    if let Some((_, _, message)) = served
        .iter()
        .find(|(_, r, m)| r == TRANSITION_RULE && m.contains("class"))
    {
        let p = pipeline(ns, "immutable", json!({"logs": {"logGroup": {"class": "STANDARD"}}}))?;
        create_pipeline(&c, &p).await?;
        let patch = Patch::Merge(json!({"spec": {"logs": {"logGroup": {"class": "INFREQUENT_ACCESS"}}}}));
        let pp = PatchParams {
            dry_run: true,
            ..Default::default()
        };
        let got = rejection(
            "changing logs.logGroup.class",
            pipelines(&c, ns).patch("immutable", &pp, &patch).await,
        )?;
        if got.contains(message.as_str()) {
            checked += 1;
        } else {
            problems.push(format!("class change: 422 message {got:?} lacks {message:?}"));
        }
    }
    println!(
        "{checked} of {} CEL rules (distinct texts per kind) rejected by the API server with their message",
        by_rule.len()
    );
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
