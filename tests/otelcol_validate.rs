//! Config accepted: every collector configuration mlobs renders in the tests passes
//! `otelcol validate` of a real collector (../shared/otelcol, contrib v0.124.1 + the v0.125
//! awscloudwatchlogs placeholders): the golden files, every sample pipeline under every sample
//! policy (and none), targeted variants of the builder's switches and user strings, and at least
//! [`FUZZ_CONFIGS`] distinct configurations of specs the fuzz generator mutated and mlobs accepted.
//!
//! A rejected configuration is a bug in the builder (or a value validation should refuse with its
//! field): never a case to leave out.
//!
//! The test collector has no `datadog` exporter: a config with one is validated with only that
//! exporter removed (the rest of it, Datadog's pipeline included, goes through the real
//! collector), and the removed block is checked against the exporter's documented keys
//! (support/otelcol.rs, `datadog`). The SigV4 extensions get dummy static credentials.

mod support;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use mlobs::desired::{Context, build, collector_config};
use mlobs::input::{Document, load_file, parse_documents};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use support::fuzzgen::{SAMPLES, case, case_context, case_policy, edit_text, mutated, sample_pipeline, sample_values};
use support::otelcol::{self, Failure, Job};

/// Distinct configurations from fuzzed specs that must pass.
const FUZZ_CONFIGS: usize = 200;
/// Fuzz cases generated at most to find them (a generator that stops producing accepted specs
/// fails the test instead of looping).
const FUZZ_MAX_CASES: usize = 100_000;
/// The fuzz generator's seed: the same cases on every run.
const FUZZ_SEED: [u8; 32] = *b"mlobs issue 14: config accepted!";
/// Collector processes at a time: the build machines have 2 cores shared with other builds.
const THREADS: usize = 3;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let dir = root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn relative(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

// ---------------------------------------------------------------------------------------------
// Sources

/// 1. The ConfigMaps (key `config.yaml`) of the golden `mlobs render` outputs.
fn golden_jobs() -> Vec<Job> {
    let files: Vec<PathBuf> = yaml_files("tests/golden")
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".render.yaml"))
        .collect();
    assert!(files.len() >= 4, "golden render files: {files:?}");
    let mut jobs = vec![];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let configs: Vec<&str> = docs
            .iter()
            .filter(|d| d["kind"] == "ConfigMap")
            .filter_map(|d| d.pointer("/data/config.yaml").and_then(Value::as_str))
            .collect();
        assert!(!configs.is_empty(), "{}: no ConfigMap with config.yaml", f.display());
        for (i, config) in configs.into_iter().enumerate() {
            jobs.push(Job {
                source: "golden",
                name: format!("{} ConfigMap #{i}", relative(&f)),
                detail: String::new(),
                config: config.to_string(),
            });
        }
    }
    jobs
}

/// Documents with the file they came from.
type Labelled<T> = Vec<(String, T)>;

/// The pipelines and policies of the sample and fixture files.
fn sample_documents() -> (Labelled<MLObservabilityPipeline>, Labelled<GpuTelemetryPolicy>) {
    let (mut pipelines, mut policies) = (vec![], vec![]);
    for f in yaml_files("config/samples")
        .into_iter()
        .chain(yaml_files("tests/fixtures"))
    {
        for d in load_file(&f).unwrap_or_else(|e| panic!("{e}")) {
            match d {
                Document::Pipeline(p) => pipelines.push((relative(&f), *p)),
                Document::Policy(p) => policies.push((relative(&f), *p)),
            }
        }
    }
    assert!(pipelines.len() >= 3 && policies.len() >= 2, "samples and fixtures");
    (pipelines, policies)
}

/// 2. Every sample (and fixture) pipeline under every sample policy and under none.
fn sample_jobs() -> Vec<Job> {
    let (pipelines, policies) = sample_documents();
    let mut jobs = vec![];
    for (pf, p) in &pipelines {
        let governed =
            std::iter::once(("no policy".to_string(), None)).chain(policies.iter().map(|(f, x)| (f.clone(), Some(x))));
        for (policy_name, policy) in governed {
            let name = format!("{pf} × {policy_name}");
            let d = build(p, policy, &Context::default()).unwrap_or_else(|e| panic!("{name}: build: {e}"));
            jobs.push(Job {
                source: "sample",
                name,
                detail: String::new(),
                config: d.config_yaml,
            });
        }
    }
    jobs
}

fn minimal_pipeline() -> Value {
    let text = std::fs::read_to_string(root().join("config/samples/pipeline-minimal.yaml")).expect("minimal sample");
    serde_saphyr::from_str(&text).expect("minimal sample is YAML")
}

/// Sets `patch`'s fields into `base` (objects merged, anything else replaced).
fn merge_json(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge_json(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// A document through the CLI's path (schema, CEL, mlobs' checks); a variant validation refuses
/// is a broken test case, reported with the field.
fn accepted<T>(name: &str, doc: &Value, pick: impl Fn(Document) -> Option<T>) -> T {
    let text = serde_saphyr::to_string(doc).expect("serializes");
    let docs = parse_documents(name, &text).unwrap_or_else(|e| panic!("variant {name} is refused: {e}\n{text}"));
    docs.into_iter().find_map(pick).expect("the document kind")
}

/// The sample policies a variant may patch.
const DEFAULT_POLICY: usize = 0;
const GPU_OPERATOR_POLICY: usize = 1;

/// A sample policy (`DEFAULT_POLICY` or `GPU_OPERATOR_POLICY`) and a patch of its spec.
type PolicyPatch = (usize, Value);

/// (name, patch of the minimal sample pipeline's spec, the policy)
fn variant_specs() -> Vec<(&'static str, Value, Option<PolicyPatch>)> {
    let unicode = "日本語-é-🚀";
    vec![
        ("logs off", json!({"logs": {"enabled": false}}), None),
        ("dcgm off", json!({"metrics": {"dcgm": {"enabled": false}}}), None),
        (
            "logs off, OTLP on",
            json!({"logs": {"enabled": false}, "traces": {"otlp": {"enabled": true}}}),
            None,
        ),
        ("OTLP on", json!({"traces": {"otlp": {"enabled": true}}}), None),
        (
            "OTLP on, logs only",
            json!({"traces": {"otlp": {"enabled": true}}, "metrics": {"dcgm": {"enabled": false}}}),
            None,
        ),
        ("no redactions", json!({"logs": {"redaction": []}}), None),
        (
            "spans to X-Ray, metrics to AMP and Datadog",
            json!({"traces": {"otlp": {"enabled": true}, "destination": {"xray": {}}},
                   "identity": {"mode": "PodIdentity", "sourceVpc": "vpc-0a1b2c3d4e5f60718"},
                   "metrics": {"prometheus": {"workspaceArn": "arn:aws:aps:us-east-1:123456789012:workspace/ws-0a1b2c3d"}},
                   "datadog": {"site": "us5.datadoghq.com", "apiKeySecretRef": {"name": "dd", "key": "api-key"}}}),
            Some((DEFAULT_POLICY, json!({"destinations": {"allowSaaS": true}}))),
        ),
        (
            "spans to an OTLP backend, plaintext, logs and DCGM off",
            json!({"traces": {"otlp": {"enabled": true}, "destination": {"otlp": {"endpoint": "[fd00::1]:4318", "tls": {"insecure": true}}}},
                   "logs": {"enabled": false}}),
            None,
        ),
        (
            "spans to an OTLP backend with a CA bundle, AMP in another region",
            json!({"region": "eu-west-1",
                   "traces": {"otlp": {"enabled": true}, "destination": {"otlp": {"endpoint": "tempo.observability.svc:4318",
                              "tls": {"caConfigMap": {"name": "tempo-ca", "key": "ca.crt"}}}}},
                   "metrics": {"prometheus": {"workspaceArn": "arn:aws:aps:eu-west-1:123456789012:workspace/ws-a"}}}),
            None,
        ),
        (
            "logs archived to S3 with Object Lock, the policy requiring it",
            json!({"archive": {"retentionYears": 10, "transitionAfterDays": 30, "storageClass": "STANDARD_IA",
                               "bucket": "acme-gpu-logs-archive", "prefix": "audit/gpu/"}}),
            Some((
                DEFAULT_POLICY,
                json!({"archive": {"required": true, "minRetentionYears": 7}}),
            )),
        ),
        (
            "archive required by the policy, OTLP logs, no DCGM, another region",
            json!({"region": "eu-central-1", "traces": {"otlp": {"enabled": true}}, "metrics": {"dcgm": {"enabled": false}},
                   "encryption": {"kms": {"disabled": true}}}),
            Some((DEFAULT_POLICY, json!({"archive": {"required": true}}))),
        ),
        (
            "Datadog only, with DCGM metrics only",
            json!({"logs": {"enabled": false},
                   "datadog": {"apiKeySecretRef": {"name": "dd", "key": "k"}}}),
            None,
        ),
        (
            "PodIdentity, existing role",
            json!({"identity": {"mode": "PodIdentity", "existingRoleArn": "arn:aws:iam::123456789012:role/x"}}),
            None,
        ),
        (
            "Managed exporter (default policy sample)",
            json!({}),
            Some((DEFAULT_POLICY, json!({}))),
        ),
        (
            "External exporter, collectorNamespace elsewhere",
            json!({"identity": {"mode": "PodIdentity"}}),
            Some((GPU_OPERATOR_POLICY, json!({"collectorNamespace": "observability"}))),
        ),
        (
            "External exporter, $ and unicode in the pod selector",
            json!({"identity": {"mode": "PodIdentity"}}),
            Some((
                GPU_OPERATOR_POLICY,
                json!({"dcgmExporter": {"podSelector": {
                "app": "dcgm$exporter", "money": "$$", "env": "${env:HOME}", "app.kubernetes.io/name": unicode,
                "x": "a.b*c+(d)[e]{f}|^g\\h?", "empty": ""}}}),
            )),
        ),
        (
            "$ and unicode in user strings",
            json!({
                "logs": {
                    "include": ["/var/log/pods/team-a_a$b*/*/*.log", "/var/log/pods/team-a_${env:HOME}*/*/*.log",
                                format!("/var/log/pods/team-a_*/{unicode}/*.log")],
                    "exclude": ["/var/log/pods/$$_*/*/*.log", format!("/var/log/pods/*/{unicode}/*.log"), "/var/log/pods/*/x/{a,b}.log"],
                    "jobIdLabel": "example.com/Job-ID_1.x",
                    "redaction": [
                        {"name": "dollar", "pattern": r"price=\$[0-9]+", "replacement": "price=$$<redacted>"},
                        {"name": "env", "pattern": r"\$\{env:[A-Z_]+\}", "replacement": "${env:HOME}"},
                        {"name": "groups", "pattern": "user=([a-z]+) id=([0-9]+)", "replacement": "user=$1 id=${2}x"},
                        {"name": "named", "pattern": "(?P<user>[a-z]+)@example\\.com", "replacement": "${user}@…"},
                        {"name": "quotes", "pattern": "\"token\": ?\"[^\"]*\"", "replacement": "\"token\": \"***\""},
                        {"name": "backslashes", "pattern": r"\\d\t\n\x41\x{e9}\%\_", "replacement": "\\\\"},
                        {"name": "unicode", "pattern": "日本語|é|🚀|\\p{Greek}+|\\pL", "replacement": unicode},
                        {"name": "flags", "pattern": "(?i)secret(?s:.)*?(?m)^end$", "replacement": ""},
                    ],
                },
                "collector": {"resourceAttributes": {
                    "team$": "$", "cost.center": "${env:USER}", unicode: unicode,
                    "yes": "true", "n": "0123", "colon": "a: b # c", "empty": "",
                }},
                "metrics": {"cloudwatch": {"dimensions": [["k8s.cluster.name", "team$"], [unicode]]}},
            }),
            None,
        ),
        (
            "control characters in user strings",
            json!({
                "logs": {"redaction": [
                    {"name": "ctl", "pattern": "a\u{0}b\u{7}\u{1b}\r\u{feff}\u{202e}", "replacement": "\u{0}\u{7}\t\r\n\u{2028}"},
                ]},
                "collector": {"resourceAttributes": {"ctl\t": "\u{0}\u{7}\t\r\n", " ": " "}},
            }),
            None,
        ),
        (
            "glob syntax in include and exclude",
            json!({"logs": {
                "include": ["/var/log/pods/team-a_[abc]*/*/*.log", "/var/log/pods/team-a_{x,y}*/**/*.log",
                            "/var/log/pods/team-a_\\[x\\]*/*/*.log", "/var/log/pods/team-a_[!a]*/*.log"],
                "exclude": ["/var/log/pods/*/x/\\*.log", "!", "**", "[^a]", "[[]", "{]}", "[}]", "\\{", "{}", "[\\]]"],
            }}),
            None,
        ),
        (
            "32 redactions, long strings",
            json!({"logs": {
                "redaction": (0..32).map(|i| json!({"name": format!("r{i}"), "pattern": format!("({}){{1000}}|x{i}", "a".repeat(i)), "replacement": "$".repeat(i)})).collect::<Vec<_>>(),
                "include": [format!("/var/log/pods/team-a_{}", "x".repeat(1000))],
            }}),
            None,
        ),
        (
            "extreme durations and sizes",
            json!({
                "metrics": {"dcgm": {"scrapeInterval": "1s"}},
                "collector": {"batch": {"sendBatchSize": 10000, "timeout": "2562047h47m16s854ms"}, "retryMaxElapsed": "30s",
                              "queueHostPath": "/var/lib/mlobs/a.b_c-d"},
                "resyncInterval": "2562047h47m16s854ms",
            }),
            None,
        ),
        (
            "longest durations",
            json!({
                "metrics": {"dcgm": {"scrapeInterval": "2562047h"}},
                "collector": {"batch": {"sendBatchSize": 1, "timeout": "1ms"}, "retryMaxElapsed": "2562047h47m16s854ms"},
            }),
            None,
        ),
    ]
}

/// 3. Targeted variants of the builder's switches and of the user strings that reach the config.
fn variant_jobs() -> Vec<Job> {
    let mut jobs = vec![];
    for (name, spec, policy_patch) in variant_specs() {
        let mut doc = minimal_pipeline();
        merge_json(&mut doc["spec"], &spec);
        let pipeline = accepted(name, &doc, |d| match d {
            Document::Pipeline(p) => Some(*p),
            Document::Policy(_) => None,
        });
        let mut policy_doc = None;
        let policy = policy_patch.map(|(which, patch)| {
            let mut doc = sample_values()[2 + which].clone();
            merge_json(&mut doc["spec"], &patch);
            policy_doc = Some(doc.clone());
            accepted(name, &doc, |d| match d {
                Document::Policy(p) => Some(*p),
                Document::Pipeline(_) => None,
            })
        });
        let d = build(&pipeline, policy.as_ref(), &Context::default()).unwrap_or_else(|e| panic!("{name}: build: {e}"));
        let mut detail = serde_saphyr::to_string(&doc).unwrap_or_default();
        if let Some(p) = policy_doc {
            detail = format!("{detail}---\n{}", serde_saphyr::to_string(&p).unwrap_or_default());
        }
        jobs.push(Job {
            source: "variant",
            name: name.to_string(),
            detail,
            config: d.config_yaml,
        });
    }
    jobs
}

/// What the fuzz sweep went through to find its configurations.
#[derive(Debug, Default)]
struct FuzzStats {
    cases: usize,
    accepted_specs: usize,
    built: usize,
}

/// 4. Configurations of fuzzed specs that parse, validate and build: distinct ones (by content)
///    until there are [`FUZZ_CONFIGS`], from a fixed seed.
fn fuzz_jobs() -> (Vec<Job>, FuzzStats) {
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &FUZZ_SEED));
    let strategy = case(0..SAMPLES.len());
    let mut seen = BTreeSet::new();
    let (mut jobs, mut stats) = (vec![], FuzzStats::default());
    while jobs.len() < FUZZ_CONFIGS {
        assert!(
            stats.cases < FUZZ_MAX_CASES,
            "only {} distinct configs from {} fuzz cases: {stats:?}",
            jobs.len(),
            stats.cases
        );
        let n = stats.cases;
        stats.cases += 1;
        let (i, mutations, edit, has_cluster, which_policy) =
            strategy.new_tree(&mut runner).expect("a fuzz case").current();
        let text = edit_text(
            &serde_saphyr::to_string(&mutated(i, &mutations)).unwrap_or_default(),
            &edit,
        );
        let Ok(docs) = parse_documents("fuzz.yaml", &text) else {
            continue;
        };
        stats.accepted_specs += 1;
        let ctx = case_context(has_cluster);
        let mut built = vec![];
        for d in docs {
            match d {
                Document::Pipeline(p) => {
                    let policy = case_policy(which_policy);
                    let label = format!("policy {which_policy} (0 none, 1 default, 2 gpu-operator)");
                    built.push((label, build(&p, policy.as_ref(), &ctx)));
                }
                Document::Policy(policy) => {
                    for (s, file) in SAMPLES.iter().enumerate().take(2) {
                        let label = format!("governing the sample pipeline {file}");
                        built.push((label, build(&sample_pipeline(s), Some(&policy), &ctx)));
                    }
                }
            }
        }
        for (label, d) in built {
            let Ok(d) = d else { continue };
            stats.built += 1;
            if !seen.insert(collector_config::config_hash(&d.config_yaml)) {
                continue;
            }
            jobs.push(Job {
                source: "fuzz",
                name: format!(
                    "fuzz case {n} (seed {:?}): mutated {}, {label}, context with cluster and region: {has_cluster}",
                    String::from_utf8_lossy(&FUZZ_SEED),
                    SAMPLES[i]
                ),
                detail: text.clone(),
                config: d.config_yaml,
            });
        }
    }
    (jobs, stats)
}

fn report(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| {
            let spec = if f.job.detail.is_empty() {
                String::new()
            } else {
                format!("spec:\n{}\n", f.job.detail)
            };
            format!(
                "== {} {}: rejected by the collector\n{spec}config:\n{}\n{}\n",
                f.job.source, f.job.name, f.job.config, f.error
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn every_collector_config_mlobs_renders_passes_otelcol_validate() {
    let collector = otelcol::binary();
    let started = Instant::now();
    let mut jobs = golden_jobs();
    jobs.extend(sample_jobs());
    jobs.extend(variant_jobs());
    let (fuzz, stats) = fuzz_jobs();
    // The generator reaches every destination shape (support/fuzzgen.rs `destination`).
    for exporter in [
        "otlphttp/xray:",
        "otlphttp/traces:",
        "prometheusremotewrite/aps:",
        "\n  datadog:",
        "awss3/archive:",
    ] {
        let n = fuzz.iter().filter(|j| j.config.contains(exporter)).count();
        assert!(n > 0, "no fuzz configuration renders {exporter:?}");
    }
    jobs.extend(fuzz);
    let generated = started.elapsed();

    let failures = otelcol::validate_all(&collector, &jobs, THREADS);

    let mut per_source: BTreeMap<&str, usize> = BTreeMap::new();
    for j in &jobs {
        *per_source.entry(j.source).or_default() += 1;
    }
    let counts: Vec<String> = ["golden", "sample", "variant", "fuzz"]
        .iter()
        .map(|s| format!("{} {s}", per_source.get(s).copied().unwrap_or(0)))
        .collect();
    println!(
        "otelcol validate: {} configs ({}; the fuzz ones distinct of {} built from {} accepted specs of {} cases) \
         in {:.1} s ({:.1} s generating), {THREADS} at a time; {} rejected",
        jobs.len(),
        counts.join(", "),
        stats.built,
        stats.accepted_specs,
        stats.cases,
        started.elapsed().as_secs_f64(),
        generated.as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} configs rejected by {}:\n{}",
        failures.len(),
        jobs.len(),
        collector.display(),
        report(&failures)
    );
}

/// Values the sweep found the collector refusing, which validation now refuses by field.
fn refused_specs() -> Vec<(&'static str, Value)> {
    let redaction = |p: &str| json!({"logs": {"redaction": [{"pattern": p, "replacement": "x"}]}});
    vec![
        ("spec.logs.redaction[0].pattern", redaction(r"caf\u{e9}")),
        ("spec.logs.redaction[0].pattern", redaction(r"\p{Emoji}+")),
        ("spec.logs.redaction[0].pattern", redaction(r"\p{sc=Greek}")),
        ("spec.logs.redaction[0].pattern", redaction("x{1001}")),
        ("spec.logs.redaction[0].pattern", redaction("(x{100}){11}")),
        ("spec.logs.redaction[0].pattern", redaction("(?x) token = \\S+")),
        ("spec.logs.redaction[0].pattern", redaction("a**")),
        ("spec.logs.redaction[0].pattern", redaction("(?P<user.name>\\w+)")),
        (
            "spec.logs.include[0]",
            json!({"logs": {"include": ["/var/log/pods/team-a_[/*/*.log"]}}),
        ),
        (
            "spec.logs.exclude[0]",
            json!({"logs": {"exclude": ["/var/log/pods/*/{a,b/*.log"]}}),
        ),
        (
            "spec.logs.exclude[0]",
            json!({"logs": {"exclude": ["/var/log/pods/*/x/*.log\\"]}}),
        ),
        (
            "spec.collector.retryMaxElapsed",
            json!({"collector": {"retryMaxElapsed": "29s"}}),
        ),
        (
            "spec.collector.retryMaxElapsed",
            json!({"collector": {"retryMaxElapsed": "2562048h"}}),
        ),
        (
            "spec.collector.batch.timeout",
            json!({"collector": {"batch": {"timeout": "2562048h"}}}),
        ),
        (
            "spec.metrics.dcgm.scrapeInterval",
            json!({"metrics": {"dcgm": {"scrapeInterval": "2562048h"}}}),
        ),
        (
            "spec.collector.resourceAttributes",
            json!({"collector": {"resourceAttributes": {"": "x"}}}),
        ),
    ]
}

#[test]
fn every_value_validation_refuses_for_the_collector_is_one_the_collector_refuses() {
    let collector = otelcol::binary();
    let mut jobs = vec![];
    for (field, spec) in refused_specs() {
        let mut doc = minimal_pipeline();
        merge_json(&mut doc["spec"], &spec);
        let text = serde_saphyr::to_string(&doc).expect("serializes");
        let err = parse_documents("refused.yaml", &text).expect_err(&format!("{field} accepted:\n{text}"));
        let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, [field], "{err}");
        // Past validation (as an object admitted by an older CRD would be), the builder still
        // renders it: the collector must refuse that config, or validation is stricter than needed.
        let p: MLObservabilityPipeline = serde_json::from_value(doc).expect("typed");
        let d = build(&p, None, &Context::default()).unwrap_or_else(|e| panic!("{field}: build: {e}"));
        jobs.push(Job {
            source: "refused",
            name: format!("{field} {spec}"),
            detail: text,
            config: d.config_yaml,
        });
    }
    let failures = otelcol::validate_all(&collector, &jobs, THREADS);
    let refused: BTreeSet<&str> = failures.iter().map(|f| f.job.name.as_str()).collect();
    let accepted: Vec<&str> = (jobs.iter().map(|j| j.name.as_str()))
        .filter(|n| !refused.contains(n))
        .collect();
    assert!(
        accepted.is_empty(),
        "validation refuses values the collector accepts: {accepted:#?}"
    );
}

#[test]
fn the_validate_helper_rejects_a_config_with_an_unknown_key() {
    let collector = otelcol::binary();
    let d = build(&sample_pipeline(0), None, &Context::default()).expect("the minimal sample builds");
    let mut broken: Value = serde_saphyr::from_str(&d.config_yaml).expect("config is YAML");
    broken["exporters"]["awscloudwatchlogs"]["no_such_key"] = json!(1);
    let broken = serde_saphyr::to_string(&broken).expect("serializes");
    let jobs = [("good", d.config_yaml), ("broken", broken)].map(|(name, config)| Job {
        source: "unit",
        name: name.into(),
        detail: String::new(),
        config,
    });
    let failures = otelcol::validate_all(&collector, &jobs, 2);
    let rejected: Vec<&str> = failures.iter().map(|f| f.job.name.as_str()).collect();
    assert_eq!(rejected, ["broken"], "{}", report(&failures));
    assert!(
        failures[0].error.contains("no_such_key"),
        "the collector's stderr is reported: {}",
        failures[0].error
    );
}

#[test]
fn a_datadog_exporter_is_validated_without_itself_and_checked_against_its_documented_keys() {
    let collector = otelcol::binary();
    let p = accepted(
        "datadog",
        &{
            let mut doc = minimal_pipeline();
            merge_json(
                &mut doc["spec"],
                &json!({"datadog": {"apiKeySecretRef": {"name": "dd", "key": "k"}}}),
            );
            doc
        },
        |d| match d {
            Document::Pipeline(p) => Some(*p),
            Document::Policy(_) => None,
        },
    );
    let d = build(&p, None, &Context::default()).expect("builds (the SaaS violation does not stop the build)");
    let (rest, block) = otelcol::datadog::split(&d.config_yaml).expect("splits");
    let block = block.expect("a datadog exporter was rendered");
    assert!(!rest.contains("datadog"), "{rest}");
    assert_eq!(otelcol::validate_as_is(&collector, &rest), Ok(()));
    assert_eq!(otelcol::datadog::check(&block), Ok(()));
    // As is, the test collector refuses it: the split is what makes it checkable at all.
    let as_is = otelcol::validate_as_is(&collector, &d.config_yaml).expect_err("no datadog component");
    assert!(as_is.contains("datadog"), "{as_is}");
    // The key check fails on an undocumented key, a literal API key and a foreign site.
    for (key, value) in [
        ("apikey", json!("x")),
        ("api", json!({"key": "abc123", "site": "datadoghq.com"})),
    ] {
        let mut bad = block.clone();
        bad[key] = value;
        assert!(otelcol::datadog::check(&bad).is_err(), "{bad}");
    }
    let mut bad = block.clone();
    bad["api"]["site"] = json!("evil.example.com");
    assert!(otelcol::datadog::check(&bad).is_err());
    assert!(otelcol::validate(&collector, &d.config_yaml).is_ok());
}

#[test]
fn a_missing_collector_is_an_error_naming_where_it_was_looked_for() {
    let nowhere = std::env::temp_dir().join(format!("mlobs-no-otelcol-{}", std::process::id()));
    let err = otelcol::locate(Some(nowhere.clone().into_os_string()), &root()).expect_err("no such file");
    assert!(
        err.contains(&nowhere.display().to_string()) && err.contains(otelcol::ENV),
        "{err}"
    );
    let err = otelcol::locate(None, &nowhere.join("repo")).expect_err("no ../shared");
    assert!(err.contains("repo/../shared/otelcol/otelcol"), "{err}");
    // And the default place is where the collector of this checkout is (CI has ../shared).
    if std::env::var_os(otelcol::ENV).is_none() {
        assert_eq!(
            otelcol::locate(None, &root()),
            Ok(root().join("../shared/otelcol/otelcol"))
        );
    }
}
