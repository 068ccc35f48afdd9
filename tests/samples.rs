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

/// `n` pipelines in one multi-document stream: enough output to overflow a pipe buffer (64 KiB).
fn many_pipelines(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: mlobs.io/v1alpha1\nkind: MLObservabilityPipeline\nmetadata: {{name: p{i}, namespace: team-a}}\nspec: {{clusterName: c, region: us-east-1, identity: {{mode: PodIdentity}}}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Runs mlobs with `input` on stdin; returns (exit code, stdout, stderr).
fn mlobs_stdin(args: &[&str], input: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mlobs"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mlobs runs");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("mlobs exits");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plan_render_and_crd_stop_quietly_when_the_reader_closes_the_pipe() {
    use std::io::{Read, Write};
    let input = many_pipelines(40);
    for args in [
        &["plan", "-o", "json", "-f", "-"][..],
        &["plan", "-f", "-"][..],
        &["render", "-f", "-"][..],
        &["crd"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mlobs"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mlobs runs");
        let mut stdin = child.stdin.take().expect("stdin");
        if args[0] != "crd" {
            stdin.write_all(input.as_bytes()).expect("write stdin");
        }
        drop(stdin);
        // Like `| head -c 100`: read a little, then close the read end while mlobs still writes
        // (every output here is larger than a pipe buffer, so mlobs is still writing).
        let mut stdout = child.stdout.take().expect("stdout");
        let mut first = [0u8; 100];
        stdout.read_exact(&mut first).expect("some output");
        drop(stdout);
        let out = child.wait_with_output().expect("mlobs exits");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    // The outputs really are larger than a pipe buffer, so the test above closed a pipe mlobs
    // was still writing to.
    let (code, stdout, stderr) = mlobs_stdin(&["render", "-f", "-"], &input);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.len() > 256 * 1024, "render printed only {} bytes", stdout.len());
    let (_, plan_text, _) = mlobs_stdin(&["plan", "-f", "-"], &input);
    assert!(
        plan_text.len() > 256 * 1024,
        "plan printed only {} bytes",
        plan_text.len()
    );
}

#[test]
fn dash_f_dash_reads_the_documents_from_stdin_and_names_them_stdin() {
    let pipeline =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/pipeline-full.yaml"))
            .expect("sample");
    let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/policy-default.yaml");
    let policy = policy.to_string_lossy();
    let (code, stdout, stderr) = mlobs_stdin(&["plan", "-f", "-", "--policy", &policy], &pipeline);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("llm-pretrain"), "{stdout}");
    let (code, stdout, stderr) = mlobs_stdin(&["render", "-f", "-", "--policy", &policy], &pipeline);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("kind: DaemonSet"), "{stdout}");

    // The policy from stdin, the pipeline from a file.
    let policy_text = std::fs::read_to_string(&*policy).expect("policy");
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/pipeline-full.yaml");
    let (code, _, stderr) = mlobs_stdin(&["plan", "-f", &full.to_string_lossy(), "--policy", "-"], &policy_text);
    assert_eq!(code, Some(0), "{stderr}");

    // Messages name the input `<stdin>`.
    let bad = format!("{HEADER}spec:\n  resyncInterval: 15s\n");
    let (code, _, stderr) = mlobs_stdin(&["plan", "-f", "-"], &bad);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("<stdin>: document 1") && stderr.contains("spec.resyncInterval"),
        "{stderr}"
    );
    let (code, _, stderr) = mlobs_stdin(&["render", "-f", "-"], "");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("<stdin>"), "{stderr}");

    // stdin can be read once: both from stdin is refused before anything is read.
    let (code, _, stderr) = mlobs_stdin(&["plan", "-f", "-", "--policy", "-"], &pipeline);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("both read standard input"), "{stderr}");
}

#[test]
fn a_misspelled_dcgm_field_is_refused_with_the_closest_known_names() {
    let text = format!(
        "{HEADER}spec:\n  metrics: {{dcgm: {{metrics: [DCGM_FI_DEV_GPU_UTIL, DCGM_FI_NOPE, DCGM_FI_DEV_FB_USD]}}}}\n"
    );
    let (code, _, stderr) = mlobs_stdin(&["plan", "-f", "-"], &text);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("spec.metrics.dcgm.metrics[1]: \"DCGM_FI_NOPE\" is not a DCGM field name"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.metrics.dcgm.metrics[2]") && stderr.contains("closest known: DCGM_FI_DEV_FB_USED"),
        "{stderr}"
    );
}

#[test]
fn hot_path_bad_input_is_refused_field_by_field_with_the_pattern_and_its_position() {
    assert_eq!(
        rejected("  hotPath: {shards: 0, retentionHours: 8761}\n"),
        vec![
            ("spec.hotPath.shards".into(), "minimum".into()),
            ("spec.hotPath.retentionHours".into(), "maximum".into()),
        ]
    );
    let text = format!("{HEADER}spec:\n  hotPath: {{patterns: ['ok', 'NCCL (WARN', 'x{{2,1}}']}}\n");
    let Err(e) = parse_documents("t.yaml", &text) else {
        panic!("accepted:\n{text}")
    };
    let errors: Vec<(String, String, String)> = (e.field_errors().iter())
        .map(|f| (f.path.clone(), f.rule.clone(), f.message.clone()))
        .collect();
    let paths: Vec<&str> = errors.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(paths, ["spec.hotPath.patterns[1]", "spec.hotPath.patterns[2]"]);
    assert!(errors.iter().all(|(_, rule, _)| rule == "regex"), "{errors:?}");
    let message = &errors[0].2;
    assert!(
        message.contains("\"NCCL (WARN\"") && message.contains("position 5"),
        "{message}"
    );
    assert!(errors[1].2.contains("position"), "{errors:?}");
}
