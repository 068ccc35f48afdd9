//! The real API server enforces every CEL rule of the CRDs it serves, with the rule's message.
//! The failing specs are the ones tests/cel_rules.rs evaluates client-side.

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use serde_json::{Value, json};

use crate::support::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Pipeline,
    Policy,
}

/// (rule text as in the CRD, kind, a spec that breaks only that rule)
fn failing_specs() -> Vec<(&'static str, Kind, Value)> {
    use Kind::*;
    vec![
        (
            "!(has(self.logs) && has(self.logs.logGroup) && has(self.logs.logGroup.name) && has(self.metrics) && has(self.metrics.cloudwatch) && has(self.metrics.cloudwatch.logGroup) && has(self.metrics.cloudwatch.logGroup.name)) || self.logs.logGroup.name != self.metrics.cloudwatch.logGroup.name",
            Pipeline,
            json!({"logs": {"logGroup": {"name": "/aws/eks/e2e/same"}}, "metrics": {"cloudwatch": {"logGroup": {"name": "/aws/eks/e2e/same"}}}}),
        ),
        (
            "self in [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]",
            Pipeline,
            json!({"logs": {"logGroup": {"retentionInDays": 42}}}),
        ),
        (
            "self.all(k, !k.startsWith('aws:') && !k.startsWith('mlobs.io/') && size(k) <= 128 && size(self[k]) <= 256)",
            Pipeline,
            json!({"logs": {"logGroup": {"tags": {"mlobs.io/pipeline": "spoofed"}}}}),
        ),
        (
            "!has(self.class) || self.class == 'STANDARD'",
            Pipeline,
            json!({"metrics": {"cloudwatch": {"logGroup": {"class": "INFREQUENT_ACCESS"}}}}),
        ),
        (
            "!self.startsWith('AWS/')",
            Pipeline,
            json!({"metrics": {"cloudwatch": {"namespace": "AWS/EC2"}}}),
        ),
        (
            "!(has(self.keyArn) && has(self.create))",
            Pipeline,
            json!({"encryption": {"kms": {"keyArn": "arn:aws:kms:us-east-1:123456789012:key/k", "create": {}}}}),
        ),
        (
            "!(has(self.disabled) && self.disabled && (has(self.keyArn) || has(self.create)))",
            Pipeline,
            json!({"encryption": {"kms": {"disabled": true, "create": {}}}}),
        ),
        (
            "!self.startsWith('alias/aws/')",
            Pipeline,
            json!({"encryption": {"kms": {"create": {"alias": "alias/aws/logs"}}}}),
        ),
        (
            "!has(self.mode) || self.mode != 'IRSA' || has(self.oidcProviderArn) || has(self.existingRoleArn)",
            Pipeline,
            json!({"identity": {"mode": "IRSA"}}),
        ),
        (
            "!(has(self.roleName) && has(self.existingRoleArn))",
            Pipeline,
            json!({"identity": {"mode": "PodIdentity", "roleName": "r", "existingRoleArn": "arn:aws:iam::123456789012:role/r"}}),
        ),
        (
            "!(has(self.existingRoleArn) && has(self.permissionsBoundaryArn))",
            Pipeline,
            json!({"identity": {"mode": "PodIdentity", "existingRoleArn": "arn:aws:iam::123456789012:role/r", "permissionsBoundaryArn": "arn:aws:iam::123456789012:policy/b"}}),
        ),
        (
            "!has(self.mode) || self.mode != 'External' || (has(self.__namespace__) && has(self.podSelector))",
            Policy,
            json!({"dcgmExporter": {"mode": "External", "namespace": "gpu-operator"}}),
        ),
        (
            "!has(self.podSelector) || (has(self.mode) && self.mode == 'External')",
            Policy,
            json!({"dcgmExporter": {"mode": "Managed", "podSelector": {"app": "x"}}}),
        ),
        (
            "!has(self.mode) || self.mode != 'External' || !(has(self.image) || has(self.collectIntervalMs))",
            Policy,
            json!({"dcgmExporter": {"mode": "External", "namespace": "g", "podSelector": {"a": "b"}, "collectIntervalMs": 5000}}),
        ),
        (
            "!has(self.allowed) || !has(self.defaults) || self.defaults.all(m, m in self.allowed)",
            Policy,
            json!({"metrics": {"allowed": ["DCGM_FI_DEV_GPU_UTIL"], "defaults": ["DCGM_FI_DEV_FB_USED"]}}),
        ),
        (
            "!has(self.defaults) || !has(self.maxMetricsPerGpu) || size(self.defaults) <= self.maxMetricsPerGpu",
            Policy,
            json!({"metrics": {"defaults": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"], "maxMetricsPerGpu": 1}}),
        ),
    ]
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

    let specs = failing_specs();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut checked = 0;
    let mut problems = vec![];
    for (kind, rule, message) in &served {
        if rule == TRANSITION_RULE {
            continue;
        }
        ensure!(!message.is_empty(), "rule {rule:?} has no message");
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
        if got.contains(message.as_str()) {
            checked += 1;
        } else {
            problems.push(format!(
                "{what}: 422 message {got:?} lacks the rule's message {message:?}"
            ));
        }
    }

    // The transition rule (log group class is immutable): an update of a real pipeline.
    if let Some((_, _, message)) = served.iter().find(|(_, r, _)| r == TRANSITION_RULE) {
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
        "{checked} of {} CEL rules rejected by the API server with their message",
        served.len()
    );
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
