//! Bad input: the samples in config/samples, mutated (fields dropped, duplicated, replaced by
//! random JSON of random types, long and unicode strings, huge and negative numbers, empty
//! arrays, and plausible-but-extreme values for the fields that become AWS names), pushed
//! through everything a user's YAML reaches: `input::parse_documents` (schema, CEL, mlobs'
//! checks), `validate_pipeline`/`validate_policy`, `merge`, `desired::build` (collector
//! config, DaemonSet, AWS plan), the cost estimate and the Managed exporter's objects.
//! Goal: no panic, every rejection names the field (spec.… or metadata.…), and the AWS limits
//! hold for everything accepted, with names never silently cut into another resource's name.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mlobs::crd::validate::{FieldError, validate_pipeline, validate_policy};
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use mlobs::desired::aws_plan::{
    self, INLINE_POLICY_MAX_CHARS, LOG_GROUP_NAME_MAX, PlanError, ROLE_NAME_MAX, RolePlan, TAGS_MAX,
};
use mlobs::desired::cost::{Fleet, Prices, estimate};
use mlobs::desired::effective::{EffRole, Effective};
use mlobs::desired::merge::merge;
use mlobs::desired::{BuildError, Context, Desired, build, dcgm_exporter};
use mlobs::input::{InputError, parse_documents};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Inputs

const SAMPLES: [&str; 4] = [
    "pipeline-minimal.yaml",
    "pipeline-full.yaml",
    "policy-default.yaml",
    "policy-gpu-operator.yaml",
];

fn sample_values() -> &'static Vec<Value> {
    static S: OnceLock<Vec<Value>> = OnceLock::new();
    S.get_or_init(|| {
        SAMPLES
            .iter()
            .map(|f| {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("config/samples")
                    .join(f);
                let text = std::fs::read_to_string(&path).expect("sample");
                serde_saphyr::from_str::<Value>(&text).expect("sample is YAML")
            })
            .collect()
    })
}

fn sample_policy(i: usize) -> GpuTelemetryPolicy {
    serde_json::from_value(sample_values()[2 + i % 2].clone()).expect("sample policy")
}

fn sample_pipeline(i: usize) -> MLObservabilityPipeline {
    serde_json::from_value(sample_values()[i % 2].clone()).expect("sample pipeline")
}

/// Strings that have broken parsers, templaters and name builders before.
const NASTY: &[&str] = &[
    "",
    " ",
    "~",
    "null",
    "true",
    "0x1F",
    "1e999",
    "-.inf",
    ".nan",
    "*ref",
    "&anchor",
    "!!binary AAAA",
    "---",
    "\n---\napiVersion: v1\n",
    "a: b",
    "[1, 2",
    "{{ .Values.x }}",
    "${env:AWS_SECRET_ACCESS_KEY}",
    "$$",
    "$",
    "\u{0}",
    "\u{7}\u{1b}[31m",
    "\t",
    "\r\n",
    "é",
    "日本語",
    "🚀🔥",
    "\u{202e}gnp.exe",
    "\u{feff}",
    "../../etc/passwd",
    "/var/log/pods/../../etc/shadow",
    "alias/aws/logs",
    "alias/",
    "arn:aws:iam::123456789012:role/x",
    "arn:aws:kms:us-east-1:123456789012:key/../x",
    "vpc-",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_DEV_GPU_UTIL",
    "IRSA",
    "PodIdentity",
    "Managed",
    "External",
    "Retain",
    "Delete",
    "INFREQUENT_ACCESS",
    "0s",
    "1ms",
    "999999999h",
    "10s10s",
    "-5s",
    "(unclosed",
    "a{1000000}{1000000}",
    "(?P<x>",
    "\\",
    "64Mi",
    "0",
    "-1Gi",
    "1e30",
    "99999999999999999999999Ti",
    "1Ei",
    "k8s.cluster.name",
    "aws:RequestTag/x",
    "mlobs.io/pipeline",
];

/// Keys a random object may get: known field names (so mutations land on real fields) and junk.
const KEYS: &[&str] = &[
    "name",
    "namespace",
    "spec",
    "metadata",
    "logs",
    "logGroup",
    "tags",
    "retentionInDays",
    "class",
    "redaction",
    "pattern",
    "replacement",
    "metrics",
    "dcgm",
    "cloudwatch",
    "dimensions",
    "identity",
    "mode",
    "roleName",
    "collector",
    "resources",
    "limits",
    "memory",
    "image",
    "batch",
    "enabled",
    "policyRef",
    "default",
    "allowed",
    "defaults",
    "dcgmExporter",
    "port",
    "budget",
    "monthlyUSD",
    "x-unknown",
    "",
    "🚀",
];

fn long_string() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just("a"),
            Just("é"),
            Just("🚀"),
            Just("-"),
            Just("/"),
            Just("$"),
            Just("x.")
        ],
        0usize..12_000,
    )
        .prop_map(|(unit, n)| unit.repeat(n))
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(NASTY).prop_map(String::from),
        2 => "\\PC{0,24}",
        2 => "[a-z0-9-]{1,16}",
        1 => long_string(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(json!(i64::MAX)),
            Just(json!(i64::MIN)),
            Just(json!(u64::MAX)),
            Just(json!(-1)),
            Just(json!(0)),
            Just(json!(1e308)),
            Just(json!(-1e308)),
            Just(json!(0.5)),
            Just(json!(4_294_967_297_u64)),
            Just(json!(65_536)),
        ],
        any::<f64>()
            .prop_filter("JSON has no NaN/inf", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any_string().prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>())
            }),
        ]
    })
}

/// A string of `n` characters from `set`.
fn from_set(set: &'static str, lens: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    let chars: Vec<char> = set.chars().collect();
    (prop::collection::vec(prop::sample::select(chars), 1..8), lens)
        .prop_map(|(pattern, n)| (0..n).map(|i| pattern[i % pattern.len()]).collect())
}

/// Plausible-but-extreme values for the fields that become AWS names, limits and config:
/// they get past the schema often enough to reach merge and build.
fn plausible() -> impl Strategy<Value = (&'static str, Value)> {
    const DNS: &str = "abcdefghijklmnopqrstuvwxyz0123456789-";
    const GROUP: &str = "ABCXYZabcxyz0189_-/.#";
    const ROLE: &str = "ABCabc0189+=,.@_-";
    prop_oneof![
        from_set(DNS, 1..=260).prop_map(|s| ("/metadata/name", json!(s))),
        from_set(DNS, 1..=70).prop_map(|s| ("/metadata/namespace", json!(s))),
        from_set("abcxyz0189-_", 1..=110).prop_map(|s| ("/spec/clusterName", json!(s))),
        from_set(GROUP, 1..=530).prop_map(|s| ("/spec/logs/logGroup/name", json!(s))),
        from_set(GROUP, 1..=530).prop_map(|s| ("/spec/metrics/cloudwatch/logGroup/name", json!(s))),
        from_set(ROLE, 1..=70).prop_map(|s| ("/spec/identity/roleName", json!(s))),
        from_set("abcxyz0189/_-", 1..=260)
            .prop_map(|s| ("/spec/encryption/kms/create/alias", json!(format!("alias/{s}")))),
        (0usize..=52).prop_map(|n| (
            "/spec/logs/logGroup/tags",
            Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect())
        )),
        (0usize..=52).prop_map(|n| (
            "/spec/metrics/cloudwatch/logGroup/tags",
            Value::Object(
                (0..n)
                    .map(|i| (format!("team-{i}"), json!("x".repeat(i * 5))))
                    .collect()
            )
        )),
        prop::collection::vec((any_string(), any_string()), 0..4).prop_map(|rs| (
            "/spec/logs/redaction",
            Value::Array(
                rs.into_iter()
                    .map(|(p, r)| json!({"pattern": p, "replacement": r}))
                    .collect()
            )
        )),
        prop_oneof![
            Just(-5i64),
            Just(0),
            Just(1),
            Just(10_000),
            Just(10_001),
            Just(i64::MAX)
        ]
        .prop_map(|n| ("/spec/collector/batch/sendBatchSize", json!(n))),
        prop::collection::vec(
            prop_oneof![
                Just("DCGM_FI_PROF_SM_ACTIVE".to_string()),
                Just("DCGM_FI_DEV_GPU_UTIL".to_string()),
                "DCGM_FI_[A-Z0-9_]{1,70}"
            ],
            0..6
        )
        .prop_map(|m| ("/spec/metrics/dcgm/metrics", json!(m))),
        proptest::sample::select(NASTY).prop_map(|q| ("/spec/collector/resources/limits/memory", json!(q))),
        proptest::sample::select(&["30s", "1s", "0s", "999999999h", "1ms", "x"][..])
            .prop_map(|d| ("/spec/resyncInterval", json!(d))),
        proptest::sample::select(&["5m", "1s", "0s", "999999999h", "1ms", "x"][..])
            .prop_map(|d| ("/spec/dataFlow/gracePeriod", json!(d))),
        from_set("0123456789abcdef", 1..=40).prop_map(|v| ("/spec/identity/sourceVpc", json!(format!("vpc-{v}")))),
        proptest::sample::select(&["us-east-1", "cn-north-1", "us-gov-west-1", "x", ""][..])
            .prop_map(|r| ("/spec/region", json!(r))),
        // policy fields
        (0i64..300).prop_map(|n| ("/spec/metrics/maxMetricsPerGpu", json!(n))),
        proptest::sample::select(&[-1.0, 0.0, 1e308, 2500.0][..]).prop_map(|u| ("/spec/budget/monthlyUSD", json!(u))),
        from_set(GROUP, 1..=300).prop_map(|s| ("/spec/logs/logGroupPrefix", json!(s))),
        (0i64..70_000).prop_map(|p| ("/spec/dcgmExporter/port", json!(p))),
        from_set(DNS, 1..=70).prop_map(|s| ("/spec/dcgmExporter/namespace", json!(s))),
    ]
}

/// A path into the document, resolved by index modulo the number of children at each level;
/// most start at `spec` (a walk from the root mostly breaks apiVersion, kind or metadata).
#[derive(Debug, Clone)]
struct Walk {
    from_spec: bool,
    steps: Vec<usize>,
}

fn walk() -> impl Strategy<Value = Walk> {
    (prop::bool::weighted(0.85), prop::collection::vec(any::<usize>(), 0..6))
        .prop_map(|(from_spec, steps)| Walk { from_spec, steps })
}

#[derive(Debug, Clone)]
enum Mutation {
    Drop(Walk),
    Replace(Walk, Value),
    Insert(Walk, String, Value),
    /// An array: its element repeated; an object: one of its fields copied under another key.
    Duplicate(Walk),
    EmptyArray(Walk),
    Plausible(&'static str, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => walk().prop_map(Mutation::Drop),
        3 => (walk(), any_json()).prop_map(|(w, v)| Mutation::Replace(w, v)),
        1 => (walk(), prop::sample::select(KEYS), any_json())
            .prop_map(|(w, k, v)| Mutation::Insert(w, k.to_string(), v)),
        1 => walk().prop_map(Mutation::Duplicate),
        1 => walk().prop_map(Mutation::EmptyArray),
        5 => plausible().prop_map(|(p, v)| Mutation::Plausible(p, v)),
    ]
}

/// One step of a resolved walk.
enum Step {
    Key(String),
    Index(usize),
}

/// Where a walk starts: `spec` when asked for and present, else the root.
fn start(doc: &mut Value, from_spec: bool) -> &mut Value {
    if from_spec && doc.get("spec").is_some() {
        &mut doc["spec"]
    } else {
        doc
    }
}

/// The value at the end of a walk (stops early at a leaf or an empty container).
fn walk_mut<'a>(v: &'a mut Value, walk: &[usize]) -> &'a mut Value {
    // Resolved read-only first, then followed mutably.
    let mut steps = Vec::new();
    let mut cur: &Value = v;
    for &i in walk {
        match cur {
            Value::Object(m) if !m.is_empty() => {
                let key = m.keys().nth(i % m.len()).cloned().unwrap_or_default();
                cur = &m[&key];
                steps.push(Step::Key(key));
            }
            Value::Array(a) if !a.is_empty() => {
                let n = i % a.len();
                cur = &a[n];
                steps.push(Step::Index(n));
            }
            _ => break,
        }
    }
    let mut v = v;
    for s in steps {
        v = match s {
            Step::Key(k) => v.get_mut(k.as_str()),
            Step::Index(n) => v.get_mut(n),
        }
        .expect("resolved above");
    }
    v
}

fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut v = root;
    for part in pointer.trim_start_matches('/').split('/') {
        if !v.is_object() {
            *v = json!({});
        }
        v = v
            .as_object_mut()
            .expect("object")
            .entry(part.to_string())
            .or_insert(Value::Null);
    }
    *v = value;
}

fn apply(doc: &mut Value, m: &Mutation) {
    match m {
        Mutation::Drop(Walk { from_spec, steps: w }) => {
            if w.is_empty() {
                return;
            }
            let target = walk_mut(start(doc, *from_spec), &w[..w.len() - 1]);
            let i = w[w.len() - 1];
            match target {
                Value::Object(o) if !o.is_empty() => {
                    let key = o.keys().nth(i % o.len()).cloned().unwrap_or_default();
                    o.remove(&key);
                }
                Value::Array(a) if !a.is_empty() => {
                    let n = a.len();
                    a.remove(i % n);
                }
                _ => {}
            }
        }
        Mutation::Replace(w, v) => *walk_mut(start(doc, w.from_spec), &w.steps) = v.clone(),
        Mutation::Insert(w, k, v) => {
            if let Value::Object(o) = walk_mut(start(doc, w.from_spec), &w.steps) {
                o.insert(k.clone(), v.clone());
            }
        }
        Mutation::Duplicate(w) => match walk_mut(start(doc, w.from_spec), &w.steps) {
            Value::Array(a) if !a.is_empty() => {
                let first = a[0].clone();
                a.push(first);
            }
            Value::Object(o) if !o.is_empty() => {
                let (k, v) = o.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap_or_default();
                o.insert(format!("{k}2"), v);
            }
            _ => {}
        },
        Mutation::EmptyArray(w) => *walk_mut(start(doc, w.from_spec), &w.steps) = json!([]),
        Mutation::Plausible(p, v) => set_pointer(doc, p, v.clone()),
    }
}

/// Edits of the YAML text itself: what a Value cannot express (duplicate keys, broken syntax).
#[derive(Debug, Clone)]
enum TextEdit {
    None,
    DuplicateLine(usize),
    Truncate(usize),
    InsertTab(usize),
    AppendDocument,
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        12 => Just(TextEdit::None),
        1 => any::<usize>().prop_map(TextEdit::DuplicateLine),
        1 => any::<usize>().prop_map(TextEdit::Truncate),
        1 => any::<usize>().prop_map(TextEdit::InsertTab),
        1 => Just(TextEdit::AppendDocument),
    ]
}

fn edit_text(text: &str, e: &TextEdit) -> String {
    let lines: Vec<&str> = text.lines().collect();
    match e {
        TextEdit::None => text.to_string(),
        TextEdit::DuplicateLine(i) if !lines.is_empty() => {
            let i = i % lines.len();
            let mut out: Vec<&str> = lines.clone();
            out.insert(i, lines[i]);
            out.join("\n")
        }
        TextEdit::Truncate(i) => {
            let cut = text.floor_char_boundary(i % (text.len() + 1));
            text[..cut].to_string()
        }
        TextEdit::InsertTab(i) if !lines.is_empty() => {
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let i = i % out.len();
            out[i].insert(0, '\t');
            out.join("\n")
        }
        TextEdit::AppendDocument => format!("{text}\n---\n{text}"),
        _ => text.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

#[derive(Default)]
struct Stats {
    cases: AtomicU64,
    yaml_errors: AtomicU64,
    document_errors: AtomicU64,
    field_errors: AtomicU64,
    accepted: AtomicU64,
    typed: AtomicU64,
    built: AtomicU64,
    build_rejected: AtomicU64,
    violations: AtomicU64,
}

impl Stats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// `spec`, `spec.x`, `spec[0]`, `metadata.name`, ...
fn names_field(path: &str) -> bool {
    ["spec", "metadata"]
        .iter()
        .any(|root| path == *root || path.starts_with(&format!("{root}.")) || path.starts_with(&format!("{root}[")))
}

/// The document's own top-level keys: an unknown one (`status`, a typo of `spec`) is named by itself.
fn top_level(doc: &Value) -> Vec<String> {
    doc.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

fn check_field_errors(what: &str, errors: &[FieldError], top: &[String]) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty(), "{what}: a rejection without field errors");
    for e in errors {
        prop_assert!(
            names_field(&e.path) || top.contains(&e.path),
            "{what}: rejection does not name a spec/metadata field: {e}"
        );
        prop_assert!(!e.message.is_empty(), "{what}: empty message for {}", e.path);
    }
    Ok(())
}

fn check_input_error(e: &InputError, top: &[String]) -> Result<(), TestCaseError> {
    match e {
        InputError::Invalid { errors, .. } => check_field_errors("parse_documents", &errors.0, top),
        InputError::Document { message, .. } => {
            // The document's own header: apiVersion, kind, metadata.name, or not a mapping at all.
            let named = ["apiVersion:", "kind:", "metadata.name:", "expected a mapping"]
                .iter()
                .any(|p| message.starts_with(p))
                || message.contains("no MLObservabilityPipeline or GpuTelemetryPolicy");
            prop_assert!(named, "document error without its field: {message}");
            Ok(())
        }
        InputError::Yaml { message, .. } => {
            prop_assert!(
                message.contains("line") || message.contains(':'),
                "YAML error without a position: {message}"
            );
            Ok(())
        }
        InputError::Read { .. } => Err(TestCaseError::fail("no file is read")),
    }
}

fn check_plan_error(e: &PlanError) -> Result<(), TestCaseError> {
    let field = match e {
        PlanError::TooLong { field, .. }
        | PlanError::BadCharacter { field, .. }
        | PlanError::TooManyTags { field, .. }
        | PlanError::Invalid { field, .. } => field,
    };
    prop_assert!(names_field(field), "plan error does not name a spec field: {e}");
    Ok(())
}

fn check_build_error(e: &BuildError) -> Result<(), TestCaseError> {
    match e {
        BuildError::Invalid(inv) => check_field_errors("build", &inv.0, &[]),
        BuildError::Plan(p) => check_plan_error(p),
    }
}

/// What AWS would refuse, checked on every plan that was accepted.
fn check_limits(p: &MLObservabilityPipeline, d: &Desired) -> Result<(), TestCaseError> {
    let e = &d.effective;
    for g in &d.aws.log_groups {
        prop_assert!(
            g.name.chars().count() <= LOG_GROUP_NAME_MAX,
            "log group name {}",
            g.name.len()
        );
        prop_assert!(g.tags.len() <= TAGS_MAX, "{} tags on {}", g.tags.len(), g.name);
    }
    // A name the user chose is used as given, never cut.
    let spec_logs = p
        .spec
        .logs
        .as_ref()
        .and_then(|l| l.log_group.as_ref())
        .and_then(|g| g.name.clone());
    if let Some(name) = spec_logs
        && e.logs.enabled
    {
        prop_assert_eq!(&e.logs.group.name, &name);
    }
    let spec_metrics = p
        .spec
        .metrics
        .as_ref()
        .and_then(|m| m.cloudwatch.as_ref())
        .and_then(|c| c.log_group.as_ref())
        .and_then(|g| g.name.clone());
    if let Some(name) = spec_metrics {
        prop_assert_eq!(&e.metrics.group.name, &name);
    }
    match &d.aws.role {
        RolePlan::Create {
            name,
            inline_policy,
            tags,
            trust_policy,
            ..
        } => {
            prop_assert!(name.chars().count() <= ROLE_NAME_MAX, "role name {name}");
            prop_assert!(tags.len() <= TAGS_MAX);
            prop_assert!(inline_policy.to_string().chars().count() <= INLINE_POLICY_MAX_CHARS);
            prop_assert_eq!(trust_policy["Statement"].as_array().map(Vec::len), Some(1));
            if let Some(given) = p.spec.identity.as_ref().and_then(|i| i.role_name.clone()) {
                prop_assert_eq!(name, &given, "a roleName the user chose is used as given");
            }
        }
        RolePlan::Existing { .. } => {}
    }
    if let Some(aws_plan::KmsKeyPlan::Create { alias, tags, .. }) = &d.aws.kms {
        prop_assert!(alias.chars().count() <= 256 && alias.starts_with("alias/") && !alias.starts_with("alias/aws/"));
        prop_assert!(tags.len() <= TAGS_MAX);
    }
    // Everything the builders print parses back (no broken YAML from hostile strings).
    let reparsed: Result<Value, _> = serde_saphyr::from_str(&d.config_yaml);
    prop_assert!(
        reparsed.is_ok(),
        "collector config does not parse: {:?}",
        reparsed.err()
    );
    Ok(())
}

fn stats() -> &'static Stats {
    static S: OnceLock<Stats> = OnceLock::new();
    S.get_or_init(Stats::default)
}

/// Everything one mutated document goes through.
fn exercise(doc: &Value, edit: &TextEdit, ctx_has_cluster: bool, which_policy: usize) -> Result<(), TestCaseError> {
    let s = stats();
    Stats::add(&s.cases, 1);

    // 1. The CLI's path: YAML text → schema → typed → CEL and mlobs' checks.
    let text = serde_saphyr::to_string(doc).unwrap_or_else(|_| doc.to_string());
    let text = edit_text(&text, edit);
    // Whether parse_documents accepted this very document (then validation would repeat it).
    let validated = match parse_documents("fuzz.yaml", &text) {
        Ok(docs) => {
            Stats::add(&s.accepted, 1);
            prop_assert!(!docs.is_empty());
            matches!(edit, TextEdit::None)
        }
        Err(e) => {
            match &e {
                InputError::Yaml { .. } => Stats::add(&s.yaml_errors, 1),
                InputError::Document { .. } => Stats::add(&s.document_errors, 1),
                _ => Stats::add(&s.field_errors, 1),
            }
            check_input_error(&e, &top_level(doc))?;
            false
        }
    };

    // 2. The operator's path: a typed object (the API server may hold one that an older CRD
    //    admitted), validated, then merged and built whether or not validation passed.
    let ctx = Context {
        cluster_name: ctx_has_cluster.then(|| "prod-gpu".to_string()),
        region: ctx_has_cluster.then(|| "us-east-1".to_string()),
        ..Context::default()
    };
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind == "MLObservabilityPipeline"
        && let Ok(mut p) = serde_json::from_value::<MLObservabilityPipeline>(doc.clone())
    {
        Stats::add(&s.typed, 1);
        // parse_documents accepted the same document unless its text was edited.
        if !validated && let Err(inv) = validate_pipeline(&p) {
            check_field_errors("validate_pipeline", &inv.0, &top_level(doc))?;
        }
        // The operator's objects carry a uid (one more ownership tag).
        p.metadata.uid = Some("0b7c6f7e-2c1d-4d7a-9c55-6d9b1c2d3e4f".into());
        let policy = [None, Some(sample_policy(0)), Some(sample_policy(1))][which_policy % 3].clone();
        {
            match build(&p, policy.as_ref(), &ctx) {
                Ok(d) => {
                    Stats::add(&s.built, 1);
                    Stats::add(&s.violations, d.violations.len() as u64);
                    for v in &d.violations {
                        prop_assert!(names_field(&v.path), "violation without a field: {v:?}");
                    }
                    check_limits(&p, &d)?;
                    let fleet = Fleet {
                        nodes: 20,
                        instance_type: "p4d.24xlarge".into(),
                        gpus_per_node: None,
                    };
                    let _ = estimate(&d.effective, &fleet, &Prices::default(), Some(50.0));
                }
                Err(e) => {
                    Stats::add(&s.build_rejected, 1);
                    check_build_error(&e)?;
                }
            }
        }
    }
    if kind == "GpuTelemetryPolicy"
        && let Ok(policy) = serde_json::from_value::<GpuTelemetryPolicy>(doc.clone())
    {
        Stats::add(&s.typed, 1);
        if !validated && let Err(inv) = validate_policy(&policy) {
            check_field_errors("validate_policy", &inv.0, &top_level(doc))?;
        }
        for i in 0..2 {
            match merge(&sample_pipeline(i), Some(&policy), &ctx) {
                Ok(m) => {
                    for v in &m.violations {
                        prop_assert!(names_field(&v.path), "violation without a field: {v:?}");
                    }
                    if let Err(e) = aws_plan::build(&m.effective) {
                        check_plan_error(&e)?;
                    }
                }
                Err(inv) => check_field_errors("merge", &inv.0, &[])?,
            }
        }
        if let Some(x) = dcgm_exporter::from_policy(&policy, "mlobs-system") {
            let (ds, cm, _svc) = dcgm_exporter::build(&x, None);
            prop_assert!(ds.metadata.name.as_ref().is_some_and(|n| n.len() <= 63));
            let csv = cm.data.and_then(|d| d.into_values().next()).unwrap_or_default();
            for line in csv.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
                prop_assert_eq!(line.matches(',').count(), 2, "CSV line {}", line);
            }
        }
    }
    Ok(())
}

fn fuzz(label: &str, samples: std::ops::Range<usize>, cases: u32) {
    let started = Instant::now();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        samples,
        prop::collection::vec(mutation(), 1..6),
        text_edit(),
        any::<bool>(),
        0usize..3,
    );
    let result = runner.run(&strategy, |(i, mutations, edit, ctx, which_policy)| {
        let mut doc = sample_values()[i].clone();
        for m in &mutations {
            apply(&mut doc, m);
        }
        exercise(&doc, &edit, ctx, which_policy)
    });
    let s = stats();
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!(
        "{label}: {cases} cases in {:.1} s (all fuzz tests so far: {} documents; rejected by YAML {}, by header {}, \
         by field {}; accepted {}; typed {}; built {} times, build refused {} times with a field; {} guardrail violations)",
        started.elapsed().as_secs_f64(),
        n(&s.cases),
        n(&s.yaml_errors),
        n(&s.document_errors),
        n(&s.field_errors),
        n(&s.accepted),
        n(&s.typed),
        n(&s.built),
        n(&s.build_rejected),
        n(&s.violations),
    );
    if let Err(e) = result {
        panic!("{label}: {e}");
    }
}

#[test]
fn ten_thousand_mutated_specs_never_panic_and_every_rejection_names_its_field() {
    fuzz("pipelines and policies", 0..SAMPLES.len(), 10_000);
}

// ---------------------------------------------------------------------------------------------
// The AWS limits, one by one

fn pipeline(name: &str, spec: Value) -> MLObservabilityPipeline {
    let mut base = json!({"clusterName": "prod-gpu", "region": "us-east-1",
        "identity": {"mode": "IRSA", "oidcProviderArn": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/X"}});
    for (k, v) in spec.as_object().cloned().unwrap_or_default() {
        base[k] = v;
    }
    serde_json::from_value(
        json!({"apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
        "metadata": {"name": name, "namespace": "team-a", "uid": "u-1"}, "spec": base}),
    )
    .expect("pipeline")
}

/// Field paths of the rejection through the CLI's path (YAML text).
fn rejected_paths(p: &MLObservabilityPipeline) -> Vec<(String, String)> {
    let text = serde_saphyr::to_string(p).expect("yaml");
    match parse_documents("limits.yaml", &text) {
        Ok(_) => vec![],
        Err(e) => e
            .field_errors()
            .iter()
            .map(|f| (f.path.clone(), f.rule.clone()))
            .collect(),
    }
}

fn effective(p: &MLObservabilityPipeline) -> Effective {
    merge(p, None, &Context::default()).expect("merge").effective
}

#[test]
fn log_group_names_over_512_characters_are_refused_with_the_field_never_cut() {
    let ok = format!("/{}", "a".repeat(511));
    let p = pipeline("train", json!({"logs": {"logGroup": {"name": ok}}}));
    assert!(rejected_paths(&p).is_empty());
    let d = build(&p, None, &Context::default()).expect("512 characters is allowed");
    assert_eq!(d.aws.log_groups[0].name, ok, "used as given");

    let long = format!("/{}", "a".repeat(512));
    let p = pipeline("train", json!({"logs": {"logGroup": {"name": long}}}));
    assert_eq!(
        rejected_paths(&p),
        [("spec.logs.logGroup.name".to_string(), "maxLength".to_string())]
    );
    // Past admission (an older CRD): the plan refuses it too, naming the same field.
    let err = build(&p, None, &Context::default()).expect_err("513 characters");
    assert_eq!(
        err,
        BuildError::Plan(PlanError::TooLong {
            field: "spec.logs.logGroup.name".into(),
            len: 513,
            max: 512
        })
    );
    assert_eq!(err.reason(), "NameTooLong");

    // The longest derived name (cluster 100, namespace 63, name 253 characters) still fits whole.
    let name = "n".repeat(253);
    let cluster = "c".repeat(100);
    let mut p = pipeline(&name, json!({"clusterName": cluster}));
    p.metadata.namespace = Some("s".repeat(63));
    let d = build(&p, None, &Context::default()).expect("derived names fit");
    let derived = format!("/aws/eks/{cluster}/{}/{name}/logs", "s".repeat(63));
    assert_eq!(d.aws.log_groups[0].name, derived);
    assert!(derived.len() <= LOG_GROUP_NAME_MAX);
}

#[test]
fn role_names_over_64_are_refused_and_derived_ones_are_hash_suffixed_and_unique() {
    let p = pipeline(
        "train",
        json!({"identity": {"mode": "PodIdentity", "roleName": "r".repeat(65)}}),
    );
    assert_eq!(
        rejected_paths(&p),
        [("spec.identity.roleName".to_string(), "maxLength".to_string())]
    );
    assert_eq!(
        build(&p, None, &Context::default()).expect_err("65 characters"),
        BuildError::Plan(PlanError::TooLong {
            field: "spec.identity.roleName".into(),
            len: 65,
            max: 64
        })
    );

    // Derived from cluster, namespace and name, which together may pass 64: cut, with a hash of
    // the whole input, so two pipelines differing only at the end never share a role.
    let stem = "llm-pretraining-run-with-a-very-long-descriptive-name";
    let roles: Vec<String> = ["a", "b", "aa"]
        .iter()
        .map(|suffix| {
            match &effective(&pipeline(&format!("{stem}-{suffix}"), json!({})))
                .identity
                .role
            {
                EffRole::Create { name } => name.clone(),
                EffRole::Existing { .. } => panic!("creates its role"),
            }
        })
        .collect();
    for r in &roles {
        assert!(r.len() <= ROLE_NAME_MAX, "{r}");
        assert!(
            r.rsplit('-')
                .next()
                .is_some_and(|h| h.len() == 8 && h.chars().all(|c| c.is_ascii_hexdigit())),
            "{r} ends in a hash"
        );
    }
    assert_ne!(roles[0], roles[1]);
    assert_ne!(roles[0], roles[2]);
    assert_ne!(roles[1], roles[2]);
    // The same holds for the other derived names that are cut: the key alias and the ServiceAccount.
    let long = "x".repeat(253);
    let (a, b) = (
        effective(&pipeline(&format!("{long}1"), json!({}))),
        effective(&pipeline(&format!("{long}2"), json!({}))),
    );
    assert_ne!(a.identity.service_account, b.identity.service_account);
    let alias = |e: &Effective| match &e.kms {
        mlobs::desired::effective::EffKms::Create { alias, .. } => alias.clone(),
        other => panic!("{other:?}"),
    };
    let c = "c".repeat(100);
    let (a, b) = (
        effective(&pipeline(&format!("{}1", "y".repeat(200)), json!({"clusterName": c}))),
        effective(&pipeline(&format!("{}2", "y".repeat(200)), json!({"clusterName": c}))),
    );
    assert!(alias(&a).len() <= 256 && alias(&b).len() <= 256);
    assert_ne!(alias(&a), alias(&b));
}

#[test]
fn more_than_50_tags_on_a_resource_are_refused_naming_the_field() {
    let tags = |n: usize| Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect());
    // 47 of the user's + 3 ownership tags (cluster, pipeline, uid) = 50: the most AWS takes.
    let p = pipeline("train", json!({"logs": {"logGroup": {"tags": tags(47)}}}));
    assert!(rejected_paths(&p).is_empty());
    let d = build(&p, None, &Context::default()).expect("50 tags");
    assert_eq!(d.aws.log_groups[0].tags.len(), 50);

    let p = pipeline(
        "train",
        json!({"metrics": {"cloudwatch": {"logGroup": {"tags": tags(48)}}}}),
    );
    assert_eq!(
        rejected_paths(&p),
        [(
            "spec.metrics.cloudwatch.logGroup.tags".to_string(),
            "maxProperties".to_string()
        )]
    );
    assert_eq!(
        build(&p, None, &Context::default()).expect_err("51 tags"),
        BuildError::Plan(PlanError::TooManyTags {
            field: "spec.metrics.cloudwatch.logGroup.tags".into(),
            count: 51,
            max: 50
        })
    );
}

#[test]
fn an_inline_policy_over_10240_characters_is_refused_naming_the_field() {
    // The schema bounds every input of the inline policy (group names ≤ 512, sourceVpc's pattern),
    // so only a spec past admission can reach the limit: the plan still refuses it by name.
    let mut e = effective(&pipeline("train", json!({})));
    e.identity.source_vpc = Some(format!("vpc-{}", "0".repeat(INLINE_POLICY_MAX_CHARS)));
    let err = aws_plan::build(&e).expect_err("too long");
    let PlanError::TooLong { field, len, max } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*max, INLINE_POLICY_MAX_CHARS);
    assert!(*len > INLINE_POLICY_MAX_CHARS);
    assert!(names_field(field), "{err}");
    println!("{err}");
    // The largest admissible inline policy: two 512-character groups and the longest sourceVpc.
    let big = pipeline(
        "train",
        json!({"logs": {"logGroup": {"name": format!("/{}", "a".repeat(511))}},
               "metrics": {"cloudwatch": {"logGroup": {"name": format!("/{}", "b".repeat(511))}}},
               "identity": {"mode": "PodIdentity", "sourceVpc": format!("vpc-{}", "f".repeat(17))}}),
    );
    assert!(rejected_paths(&big).is_empty());
    let d = build(&big, None, &Context::default()).expect("fits");
    let RolePlan::Create { inline_policy, .. } = &d.aws.role else {
        panic!()
    };
    let len = inline_policy.to_string().chars().count();
    assert!(len < INLINE_POLICY_MAX_CHARS, "{len}");
    println!("largest admissible inline policy: {len} of {INLINE_POLICY_MAX_CHARS} characters");
}

#[test]
fn the_reported_limits_are_the_aws_limits() {
    assert_eq!(
        (LOG_GROUP_NAME_MAX, ROLE_NAME_MAX, TAGS_MAX, INLINE_POLICY_MAX_CHARS),
        (512, 64, 50, 10_240)
    );
}
