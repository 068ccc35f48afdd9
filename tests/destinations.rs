//! Destinations beyond CloudWatch through the CLI's path: the merge's guardrails
//! (`traces.allowXRay`, `destinations.allowSaaS`) and errors (a workspace in another region or
//! account, a destination with nothing to send), each naming the field and the rule; the sample
//! renders every destination; `mlobs plan` lists each with its IAM statement and cost.

use mlobs::crd::MLObservabilityPipeline;
use mlobs::desired::destinations::{EffTraces, parse_arn};
use mlobs::desired::effective::{Context, Source};
use mlobs::desired::merge::{Merged, merge};
use serde_json::{Value, json};

const WS: &str = "arn:aws:aps:us-east-1:123456789012:workspace/ws-abc";

#[path = "support/specs.rs"]
mod specs;
use specs::{merged, pipeline, policy};

fn violations(m: &Merged) -> Vec<(String, String, String)> {
    (m.violations.iter())
        .map(|v| (v.path.clone(), v.rule.clone(), v.policy.clone()))
        .collect()
}

/// (path, rule) of every merge error.
fn errors(p: &MLObservabilityPipeline, ctx: &Context) -> Vec<(String, String)> {
    match merge(p, None, ctx) {
        Ok(_) => vec![],
        Err(e) => e.0.into_iter().map(|f| (f.path, f.rule)).collect(),
    }
}

fn one(path: &str, rule: &str) -> Vec<(String, String)> {
    vec![(path.to_string(), rule.to_string())]
}

fn xray() -> Value {
    json!({"traces": {"otlp": {"enabled": true}, "destination": {"xray": {}}}})
}

fn datadog() -> Value {
    json!({"datadog": {"apiKeySecretRef": {"name": "dd", "key": "api-key"}}})
}

#[test]
fn xray_is_allowed_by_default_and_a_violation_where_the_policy_forbids_it() {
    let p = pipeline(xray());
    for pol in [
        None,
        Some(policy(json!({}))),
        Some(policy(json!({"traces": {"allowXRay": true}}))),
    ] {
        let m = merged(&p, pol.as_ref());
        assert!(m.violations.is_empty(), "{:?}", m.violations);
        assert_eq!(m.effective.destinations.traces, Some(EffTraces::XRay));
        assert_eq!(m.effective.sources.destinations.traces, Source::Pipeline);
    }
    let m = merged(&p, Some(&policy(json!({"traces": {"allowXRay": false}}))));
    assert_eq!(
        violations(&m),
        [(
            "spec.traces.destination.xray".into(),
            "traces.allowXRay".into(),
            "guard".into()
        )]
    );
    // An OTLP backend needs no X-Ray permission: the same policy lets it through.
    let tempo =
        pipeline(json!({"traces": {"otlp": {"enabled": true}, "destination": {"otlp": {"endpoint": "tempo:4318"}}}}));
    assert!(
        merged(&tempo, Some(&policy(json!({"traces": {"allowXRay": false}}))))
            .violations
            .is_empty()
    );
}

#[test]
fn saas_is_refused_unless_a_policy_allows_it_even_with_no_policy() {
    let p = pipeline(datadog());
    let m = merged(&p, None);
    assert_eq!(
        violations(&m),
        [(
            "spec.datadog".into(),
            "destinations.allowSaaS".into(),
            "(none: built-in default)".into()
        )]
    );
    assert!(
        m.violations[0].message.contains("destinations.allowSaaS: true"),
        "{}",
        m.violations[0]
    );
    for pol in [json!({}), json!({"destinations": {"allowSaaS": false}})] {
        let m = merged(&p, Some(&policy(pol)));
        assert_eq!(
            violations(&m),
            [("spec.datadog".into(), "destinations.allowSaaS".into(), "guard".into())]
        );
    }
    let m = merged(&p, Some(&policy(json!({"destinations": {"allowSaaS": true}}))));
    assert!(m.violations.is_empty());
    let dd = m.effective.destinations.datadog.expect("datadog");
    assert_eq!((dd.site.as_str(), dd.api_key.name.as_str()), ("datadoghq.com", "dd"));
}

#[test]
fn a_workspace_outside_the_pipelines_region_or_the_operators_account_is_an_error_naming_the_field() {
    let amp = |arn: &str| pipeline(json!({"metrics": {"prometheus": {"workspaceArn": arn}}}));
    let ctx = Context::default();
    assert_eq!(errors(&amp(WS), &ctx), vec![]);
    let path = "spec.metrics.prometheus.workspaceArn";
    assert_eq!(
        errors(&amp("arn:aws:aps:eu-west-1:123456789012:workspace/ws-abc"), &ctx),
        one(path, "workspaceRegion")
    );
    assert_eq!(
        errors(&amp("arn:aws:aps:us-east-1:210987654321:workspace/ws-abc"), &ctx),
        one(path, "workspaceAccount")
    );
    assert_eq!(
        errors(&amp("arn:aws-cn:aps:us-east-1:123456789012:workspace/ws-abc"), &ctx),
        one(path, "workspaceAccount")
    );
    assert_eq!(
        errors(&amp("arn:aws:s3:us-east-1:123456789012:workspace/ws-abc"), &ctx),
        one(path, "arnService")
    );
    // The operator's region when the pipeline names none.
    let mut p = amp(WS);
    p.spec.region = None;
    let eu = Context {
        region: Some("eu-west-1".into()),
        ..Context::default()
    };
    assert_eq!(errors(&p, &eu), one(path, "workspaceRegion"));
    let other_account = Context {
        account_id: "210987654321".into(),
        ..Context::default()
    };
    assert_eq!(errors(&amp(WS), &other_account), one(path, "workspaceAccount"));
    let parts = parse_arn(WS).expect("ARN");
    assert_eq!((parts.service, parts.resource), ("aps", "workspace/ws-abc"));
}

#[test]
fn a_destination_with_nothing_to_send_is_an_error_naming_it() {
    let ctx = Context::default();
    let no_dcgm = json!({"enabled": false});
    let mut spec = datadog();
    spec["metrics"] = json!({"dcgm": no_dcgm, "prometheus": {"workspaceArn": WS}});
    assert_eq!(
        errors(&pipeline(spec), &ctx),
        [
            ("spec.metrics.prometheus".to_string(), "metricsRequired".to_string()),
            ("spec.datadog".to_string(), "metricsRequired".to_string())
        ]
    );
    let spans_without_otlp = json!({"traces": {"destination": {"xray": {}}}});
    assert_eq!(
        errors(&pipeline(spans_without_otlp), &ctx),
        one("spec.traces.destination", "otlpRequired")
    );
}

#[path = "support/cli.rs"]
mod cli;
use cli::mlobs;

#[test]
fn plan_lists_every_destination_with_its_iam_statement_and_cost_assumptions() {
    let sample = "config/samples/pipeline-destinations.yaml";
    let (code, out, err) = mlobs(&["plan", "-f", sample, "--nodes", "20", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let reports: Vec<Value> = serde_json::from_str(&out).expect("plan JSON");
    let lines = reports[0]["destinations"].as_array().cloned().unwrap_or_default();
    let exporters: Vec<&str> = lines.iter().filter_map(|l| l["exporter"].as_str()).collect();
    assert_eq!(exporters, ["otlphttp/xray", "prometheusremotewrite/aps", "datadog"]);
    assert_eq!(lines[0]["iamStatements"][0]["Action"], json!(["xray:PutTraceSegments"]));
    assert_eq!(lines[1]["iamStatements"][0]["Action"], json!(["aps:RemoteWrite"]));
    assert!(
        lines
            .iter()
            .all(|l| !l["assumptions"].as_array().is_none_or(Vec::is_empty))
    );
    assert_eq!(reports[1]["destinations"][0]["exporter"], "otlphttp/traces");
    // Rates and traffic are flags, and every one shows up in the text.
    let (code, text, err) = mlobs(&[
        "plan",
        "-f",
        sample,
        "--nodes",
        "2",
        "--spans-per-second",
        "10",
        "--xray-usd-per-million-spans",
        "1",
        "--amp-usd-per-10m-samples",
        "2",
        "--datadog-usd-per-host-month",
        "20",
    ]);
    assert_eq!(code, 0, "{err}");
    // 10 spans/s × 2,628,000 s = 26.28 million × $1; 4 fields × 16 GPUs × 87,600 = 5.6064 million
    // samples × $0.20/M = $1.12; 2 hosts × $20.
    for want in [
        "$26.28/month",
        "$1.12/month",
        "$40.00/month",
        "IAM: {\"Action\":[\"xray:PutTraceSegments\"]",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    let (code, _, err) = mlobs(&["plan", "-f", sample, "--spans-per-second=-1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--spans-per-second"), "{err}");
}

/// (path, rule) of what the CLI's input path (schema, CEL, mlobs' checks) refuses in `spec`.
fn refused(spec: &str) -> Vec<(String, String)> {
    let text = format!(
        "apiVersion: mlobs.io/v1alpha1\nkind: MLObservabilityPipeline\nmetadata: {{name: p, namespace: team-a}}\nspec:\n{spec}"
    );
    match mlobs::input::parse_documents("t.yaml", &text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => (e.field_errors().iter())
            .map(|f| (f.path.clone(), f.rule.clone()))
            .collect(),
    }
}

#[test]
fn bad_destination_values_are_refused_at_input_naming_the_field_and_the_rule() {
    let otlp = |endpoint: &str| {
        format!("  traces: {{otlp: {{enabled: true}}, destination: {{otlp: {{endpoint: '{endpoint}'}}}}}}\n")
    };
    let endpoint = "spec.traces.destination.otlp.endpoint";
    for bad in [
        "https://tempo:4318",
        "tempo",
        "tempo:65536",
        "tempo:0",
        "-tempo:4318",
        "fd00::1:4318",
    ] {
        assert_eq!(refused(&otlp(bad)), one(endpoint, "pattern"), "{bad}");
    }
    let arn = |a: &str| format!("  metrics: {{prometheus: {{workspaceArn: '{a}'}}}}\n");
    let path = "spec.metrics.prometheus.workspaceArn";
    for bad in [
        "arn:aws:s3:::bucket",
        "arn:aws:aps:us-east-1:123456789012:rulegroupsnamespace/ws-a/x",
        "arn:aws:aps:us-east-1:12345:workspace/ws-a",
        "ws-abc",
    ] {
        assert_eq!(refused(&arn(bad)), one(path, "pattern"), "{bad}");
    }
    // Region against the pipeline's own spec.region: CEL at admission.
    let wrong_region = format!("  region: eu-west-1\n{}", arn(WS));
    assert_eq!(refused(&wrong_region), one(path, "cel"));
    // An inline key is no field at all; a secret reference needs both parts.
    let inline = "  datadog: {apiKey: abc123, apiKeySecretRef: {name: dd, key: k}}\n";
    assert_eq!(refused(inline), one("spec.datadog.apiKey", "unknownField"));
    assert_eq!(
        refused("  datadog: {apiKeySecretRef: {name: dd}}\n"),
        one("spec.datadog.apiKeySecretRef.key", "required")
    );
    assert_eq!(
        refused("  datadog: {site: example.com, apiKeySecretRef: {name: dd, key: k}}\n"),
        one("spec.datadog.site", "pattern")
    );
    let both = "  traces: {otlp: {enabled: true}, destination: {}}\n";
    assert_eq!(refused(both), one("spec.traces.destination", "cel"));
    let no_otlp = "  traces: {destination: {xray: {}}}\n";
    assert_eq!(refused(no_otlp), one("spec.traces.destination", "cel"));
}
