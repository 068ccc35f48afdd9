//! Golden files for `mlobs render` and `mlobs plan` of every sample, and the rendered objects'
//! round trip through their k8s-openapi types (a field Kubernetes does not know would be lost).
//!
//! Regenerate with `MLOBS_UPDATE_GOLDEN=1 cargo test --test golden` and review the diff like code.

use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (golden name, args after the subcommand)
fn cases() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("minimal-no-policy", vec!["-f", "config/samples/pipeline-minimal.yaml"]),
        (
            "minimal-default-policy",
            vec![
                "-f",
                "config/samples/pipeline-minimal.yaml",
                "--policy",
                "config/samples/policy-default.yaml",
            ],
        ),
        (
            "full-default-policy",
            vec![
                "-f",
                "config/samples/pipeline-full.yaml",
                "--policy",
                "config/samples/policy-default.yaml",
            ],
        ),
        ("destinations", vec!["-f", "config/samples/pipeline-destinations.yaml"]),
        ("archive", vec!["-f", "config/samples/pipeline-archive.yaml"]),
        ("hotpath", vec!["-f", "config/samples/pipeline-hotpath.yaml"]),
        ("alerts", vec!["-f", "config/samples/pipeline-alerts.yaml"]),
        (
            "minimal-gpu-operator-policy",
            vec![
                "-f",
                "tests/fixtures/pipeline-gpu-operator.yaml",
                "--policy",
                "config/samples/policy-gpu-operator.yaml",
            ],
        ),
    ]
}

#[path = "support/cli.rs"]
mod cli;
use cli::mlobs;

fn check_golden(name: &str, actual: &str) {
    let path = root().join("tests/golden").join(name);
    if std::env::var_os("MLOBS_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; regenerate with MLOBS_UPDATE_GOLDEN=1", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{} differs from the output (first difference at line {}):\n  golden: {:?}\n  actual: {:?}\nregenerate with MLOBS_UPDATE_GOLDEN=1 and review the diff",
            path.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn render_and_plan_match_golden_files() {
    for (name, args) in cases() {
        let mut render = vec!["render"];
        render.extend(&args);
        let (code, out, err) = mlobs(&render);
        assert_eq!(code, 0, "{name}: render failed: {err}");
        check_golden(&format!("{name}.render.yaml"), &out);

        for (fmt, ext) in [("text", "plan.txt"), ("json", "plan.json")] {
            let mut plan = vec!["plan", "--nodes", "20", "--instance-type", "p4d.24xlarge", "-o", fmt];
            plan.extend(&args);
            let (code, out, err) = mlobs(&plan);
            assert_eq!(code, 0, "{name}: plan failed: {err}");
            check_golden(&format!("{name}.{ext}"), &out);
        }
    }
}

#[test]
fn render_is_byte_identical_across_runs() {
    let args = [
        "render",
        "-f",
        "config/samples/pipeline-full.yaml",
        "--policy",
        "config/samples/policy-default.yaml",
    ];
    assert_eq!(mlobs(&args).1, mlobs(&args).1);
}

fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if &back == doc {
        Ok(())
    } else {
        Err(format!("fields lost or changed:\n  in:  {doc}\n  out: {back}"))
    }
}

#[test]
fn every_rendered_object_is_a_valid_kubernetes_object() {
    let mut kinds = std::collections::BTreeSet::new();
    for (name, args) in cases() {
        let mut render = vec!["render"];
        render.extend(&args);
        let (_, out, _) = mlobs(&render);
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out).expect("render output is YAML");
        assert!(docs.len() >= 5, "{name}: {} objects", docs.len());
        for doc in docs {
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            let res = match kind.as_str() {
                "DaemonSet" => round_trips::<DaemonSet>(&doc),
                "ConfigMap" => round_trips::<ConfigMap>(&doc),
                "Service" => round_trips::<Service>(&doc),
                "ServiceAccount" => round_trips::<ServiceAccount>(&doc),
                "ClusterRole" => round_trips::<ClusterRole>(&doc),
                "ClusterRoleBinding" => round_trips::<ClusterRoleBinding>(&doc),
                "PrometheusRule" => round_trips::<mlobs::desired::alerts::prometheus::PrometheusRule>(&doc),
                other => Err(format!("unexpected kind {other:?}")),
            };
            if let Err(e) = res {
                panic!("{name}: {kind}: {e}");
            }
            let labels = doc.pointer("/metadata/labels").and_then(Value::as_object);
            assert_eq!(
                labels
                    .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                    .and_then(Value::as_str),
                Some("mlobs"),
                "{name}: {kind} lacks the managed-by label"
            );
            kinds.insert(kind);
        }
    }
    assert!(
        kinds.contains("Service"),
        "a Managed exporter sample renders its Service: {kinds:?}"
    );
}

#[test]
fn plan_exits_1_on_a_policy_violation_and_names_it() {
    let dir = std::env::temp_dir().join(format!("mlobs-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pipeline = dir.join("p.yaml");
    let text = std::fs::read_to_string(root().join("config/samples/pipeline-full.yaml"))
        .expect("sample")
        .replace("retentionInDays: 90", "retentionInDays: 7");
    std::fs::write(&pipeline, text).expect("write");
    let p = pipeline.to_string_lossy().into_owned();
    let (code, out, _) = mlobs(&["plan", "-f", &p, "--policy", "config/samples/policy-default.yaml"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("spec.logs.logGroup.retentionInDays") && out.contains("logs.minRetentionInDays"),
        "{out}"
    );
    let (code, out, err) = mlobs(&["render", "-f", &p, "--policy", "config/samples/policy-default.yaml"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "render prints nothing when a guardrail is broken");
    assert!(err.contains("logs.minRetentionInDays"), "{err}");
    // A policyRef to a policy that was not given is invalid input, not a silent pass.
    let (code, _, err) = mlobs(&["plan", "-f", &p]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("spec.policyRef"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(Path::new(&root()).exists());
}
