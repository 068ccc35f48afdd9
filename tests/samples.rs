//! Every sample parses and validates; the CLI rejects bad input with exit code 2 and a message
//! naming the file and the field.

use std::path::{Path, PathBuf};
use std::process::Command;

use mlobs::input::{Document, parse_documents};

fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config/samples exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_sample_is_valid() {
    let files = samples();
    assert!(files.len() >= 4, "expected at least 4 samples, found {files:?}");
    let (mut pipelines, mut policies) = (0, 0);
    for f in files {
        let docs = mlobs::input::load_file(&f).unwrap_or_else(|e| panic!("{e}"));
        for d in docs {
            match d {
                Document::Pipeline(_) => pipelines += 1,
                Document::Policy(_) => policies += 1,
            }
        }
    }
    assert!(
        pipelines >= 2 && policies >= 2,
        "{pipelines} pipelines, {policies} policies"
    );
}

#[test]
fn external_exporter_sample_points_at_gpu_operator() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/policy-gpu-operator.yaml");
    let docs = mlobs::input::load_file(&f).expect("valid");
    let Document::Policy(p) = &docs[0] else {
        panic!("expected a policy")
    };
    let exporter = p.spec.dcgm_exporter.as_ref().expect("dcgmExporter set");
    assert_eq!(exporter.mode, Some(mlobs::crd::ExporterMode::External));
    assert_eq!(exporter.namespace.as_deref(), Some("gpu-operator"));
}

const HEADER: &str =
    "apiVersion: mlobs.io/v1alpha1\nkind: MLObservabilityPipeline\nmetadata: {name: p, namespace: team-a}\n";

fn rejected(spec: &str) -> Vec<(String, String)> {
    let text = format!("{HEADER}spec:\n{spec}");
    match parse_documents("t.yaml", &text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e
            .field_errors()
            .iter()
            .map(|f| (f.path.clone(), f.rule.clone()))
            .collect(),
    }
}

#[test]
fn bad_values_are_rejected_with_their_field_path_and_rule() {
    assert_eq!(
        rejected("  logs: {logGroup: {nme: x}}\n"),
        vec![("spec.logs.logGroup.nme".into(), "unknownField".into())]
    );
    assert_eq!(
        rejected("  collector: {batch: {sendBatchSize: lots}}\n"),
        vec![("spec.collector.batch.sendBatchSize".into(), "type".into())]
    );
    assert_eq!(
        rejected("  logs: {logGroup: {name: 'has space'}}\n"),
        vec![("spec.logs.logGroup.name".into(), "pattern".into())]
    );
    assert_eq!(
        rejected("  logs: {logGroup: {retentionInDays: 42}}\n"),
        vec![("spec.logs.logGroup.retentionInDays".into(), "cel".into())]
    );
    assert_eq!(
        rejected("  encryption: {kms: {create: {deletionWindowInDays: 3}}}\n"),
        vec![(
            "spec.encryption.kms.create.deletionWindowInDays".into(),
            "minimum".into()
        )]
    );
    assert_eq!(
        rejected("  driftPolicy: Ignore\n"),
        vec![("spec.driftPolicy".into(), "enum".into())]
    );
    assert_eq!(
        rejected("  collector: {image: 'otel/opentelemetry-collector-contrib'}\n"),
        vec![("spec.collector.image".into(), "pinnedImage".into())]
    );
    assert_eq!(
        rejected("  logs: {redaction: [{pattern: '(unclosed', replacement: x}]}\n"),
        vec![("spec.logs.redaction[0].pattern".into(), "regex".into())]
    );
    assert_eq!(
        rejected("  resyncInterval: 5s\n"),
        vec![("spec.resyncInterval".into(), "minimum".into())]
    );
    assert_eq!(
        rejected("  dataFlow: {gracePeriod: 500ms}\n"),
        vec![("spec.dataFlow.gracePeriod".into(), "minimum".into())]
    );
    assert_eq!(
        rejected("  dataFlow: {gracePeriod: 5 minutes}\n"),
        vec![("spec.dataFlow.gracePeriod".into(), "pattern".into())]
    );
    assert_eq!(
        rejected("  metrics: {cloudwatch: {dimensions: [[gpu, gpu], [k8s.pod.name], [k8s.pod.name]]}}\n"),
        vec![
            ("spec.metrics.cloudwatch.dimensions[0][1]".into(), "uniqueItems".into()),
            ("spec.metrics.cloudwatch.dimensions[2]".into(), "uniqueItems".into()),
        ]
    );
    assert_eq!(
        rejected("  metrics: {cloudwatch: {dimensions: [[InstanceId]]}}\n"),
        vec![(
            "spec.metrics.cloudwatch.dimensions[0][0]".into(),
            "knownDimension".into()
        )]
    );
}

#[test]
fn a_job_id_dimension_on_gpu_metrics_is_refused_because_it_would_never_be_filled() {
    let text = format!("{HEADER}spec:\n  metrics: {{cloudwatch: {{dimensions: [[k8s.cluster.name, ml.job.id]]}}}}\n");
    let err = parse_documents("t.yaml", &text).expect_err("ml.job.id is not on GPU metrics");
    let f = &err.field_errors()[0];
    assert_eq!(
        (f.path.as_str(), f.rule.as_str()),
        ("spec.metrics.cloudwatch.dimensions[0][1]", "knownDimension")
    );
    assert!(f.message.contains("k8s.pod.name"), "{}", f.message);
    // A constant resource attribute of that name is the user's own, and allowed.
    let text = format!(
        "{HEADER}spec:\n  collector: {{resourceAttributes: {{ml.job.id: nightly}}}}\n  metrics: {{cloudwatch: {{dimensions: [[ml.job.id]]}}}}\n"
    );
    parse_documents("t.yaml", &text).expect("a resource attribute may be a dimension");
}

fn mlobs(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .args(args)
        .output()
        .expect("mlobs runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_of_bad_input_exits_2_naming_file_and_field() {
    let dir = std::env::temp_dir().join(format!("mlobs-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cases = [
        ("not-yaml.yaml", "spec: [unclosed\n", "not valid YAML"),
        (
            "unknown.yaml",
            &format!("{HEADER}spec: {{bogus: 1}}\n") as &str,
            "spec.bogus",
        ),
        (
            "wrong-type.yaml",
            &format!("{HEADER}spec: {{logs: {{enabled: maybe}}}}\n"),
            "spec.logs.enabled",
        ),
        (
            "rule.yaml",
            &format!("{HEADER}spec: {{identity: {{mode: IRSA}}}}\n"),
            "spec.identity",
        ),
        (
            "wrong-kind.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "apiVersion",
        ),
        ("empty.yaml", "", "no MLObservabilityPipeline"),
    ];
    for (name, text, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let p = path.to_string_lossy().into_owned();
        let (code, stderr) = mlobs(&["plan", "-f", &p]);
        assert_eq!(code, 2, "{name}: exit {code}, stderr: {stderr}");
        assert!(stderr.contains(&p) && stderr.contains(needle), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    let (code, stderr) = mlobs(&["plan", "-f", "/nonexistent/file.yaml"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn crd_command_prints_both_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .arg("crd")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("name: mlobservabilitypipelines.mlobs.io"));
    assert!(text.contains("name: gputelemetrypolicies.mlobs.io"));
}
