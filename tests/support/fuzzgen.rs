//! The spec generator of the fuzz tests: the samples in config/samples, mutated (fields dropped,
//! duplicated, replaced by random JSON of random types, long and unicode strings, huge and
//! negative numbers, empty arrays, plausible-but-extreme values for the fields that become AWS
//! names), plus edits of the YAML text. Used by tests/fuzz_specs.rs (no panic, rejections name
//! their field) and tests/otelcol_validate.rs (every accepted spec's collector config starts).

#![allow(dead_code)]

use std::ops::Range;
use std::sync::OnceLock;

use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use mlobs::desired::Context;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

pub const SAMPLES: [&str; 4] = [
    "pipeline-minimal.yaml",
    "pipeline-full.yaml",
    "policy-default.yaml",
    "policy-gpu-operator.yaml",
];

pub fn sample_values() -> &'static Vec<Value> {
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

pub fn sample_policy(i: usize) -> GpuTelemetryPolicy {
    serde_json::from_value(sample_values()[2 + i % 2].clone()).expect("sample policy")
}

pub fn sample_pipeline(i: usize) -> MLObservabilityPipeline {
    serde_json::from_value(sample_values()[i % 2].clone()).expect("sample pipeline")
}

/// Strings that have broken parsers, templaters and name builders before.
pub const NASTY: &[&str] = &[
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
pub const KEYS: &[&str] = &[
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
    "destination",
    "xray",
    "otlp",
    "endpoint",
    "prometheus",
    "workspaceArn",
    "workspaceAlias",
    "datadog",
    "apiKeySecretRef",
    "allowSaaS",
    "allowXRay",
    "archive",
    "retentionYears",
    "transitionAfterDays",
    "storageClass",
    "bucket",
    "minRetentionYears",
    "required",
    "hotPath",
    "stream",
    "shards",
    "retentionHours",
    "patterns",
    "memBufLimitMB",
    "x-unknown",
    "",
    "🚀",
];

pub fn long_string() -> impl Strategy<Value = String> {
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

pub fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(NASTY).prop_map(String::from),
        2 => "\\PC{0,24}",
        2 => "[a-z0-9-]{1,16}",
        1 => long_string(),
    ]
}

pub fn leaf() -> impl Strategy<Value = Value> {
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

pub fn any_json() -> impl Strategy<Value = Value> {
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
pub fn from_set(set: &'static str, lens: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    let chars: Vec<char> = set.chars().collect();
    (prop::collection::vec(prop::sample::select(chars), 1..8), lens)
        .prop_map(|(pattern, n)| (0..n).map(|i| pattern[i % pattern.len()]).collect())
}

/// Plausible-but-extreme values for the fields that become AWS names, limits and config:
/// they get past the schema often enough to reach merge and build.
pub fn plausible() -> impl Strategy<Value = (&'static str, Value)> {
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
        any::<bool>().prop_map(|b| ("/spec/destinations/allowSaaS", json!(b))),
        proptest::sample::select(&[-1.0, 0.0, 1e308, 2500.0][..]).prop_map(|u| ("/spec/budget/monthlyUSD", json!(u))),
        from_set(GROUP, 1..=300).prop_map(|s| ("/spec/logs/logGroupPrefix", json!(s))),
        (0i64..70_000).prop_map(|p| ("/spec/dcgmExporter/port", json!(p))),
        from_set(DNS, 1..=70).prop_map(|s| ("/spec/dcgmExporter/namespace", json!(s))),
    ]
}

/// The destinations beyond CloudWatch, plausible enough to pass validation often: traces to
/// X-Ray or an OTLP backend (with and without TLS settings), an AMP workspace in one of a few
/// regions and accounts, Datadog with a site and a Secret reference, the S3 archive (bucket,
/// retention, transition and prefix, some of them out of range), the hot path (stream, shards,
/// retention, patterns and buffer, some invalid).
pub fn destination() -> impl Strategy<Value = (&'static str, Value)> {
    const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "x"];
    const ENDPOINTS: [&str; 5] = [
        "tempo:4318",
        "[fd00::1]:4318",
        "jaeger.obs.svc:65535",
        "a:0",
        "http://x:1",
    ];
    let tls = prop_oneof![
        Just(json!(null)),
        Just(json!({"insecure": true})),
        Just(json!({"insecure": false, "caConfigMap": {"name": "ca", "key": "ca.crt"}})),
        Just(json!({"insecure": true, "caConfigMap": {"name": "ca", "key": "ca.crt"}})),
    ];
    let otlp = (proptest::sample::select(&ENDPOINTS[..]), tls)
        .prop_map(|(e, tls)| json!({"otlp": {"endpoint": e, "tls": tls}}));
    let traces = (
        prop::bool::weighted(0.8),
        prop_oneof![3 => Just(json!({"xray": {}})), 3 => otlp, 1 => Just(json!({}))],
    )
        .prop_map(|(on, d)| ("/spec/traces", json!({"otlp": {"enabled": on}, "destination": d})));
    let amp = (
        proptest::sample::select(&REGIONS[..]),
        prop_oneof![Just("123456789012"), Just("210987654321")],
        prop::bool::weighted(0.3),
    )
        .prop_map(|(r, a, by_alias)| {
            let ws = if by_alias {
                json!({"workspaceAlias": "gpu-metrics"})
            } else {
                json!({"workspaceArn": format!("arn:aws:aps:{r}:{a}:workspace/ws-a1")})
            };
            ("/spec/metrics/prometheus", ws)
        });
    let datadog = proptest::sample::select(&["datadoghq.com", "datadoghq.eu", "us5.datadoghq.com", "example.com"][..])
        .prop_map(|site| {
            (
                "/spec/datadog",
                json!({"site": site, "apiKeySecretRef": {"name": "dd", "key": "api-key"}}),
            )
        });
    let archive = (
        proptest::sample::select(vec![
            json!(null),
            json!("acme-gpu-logs"),
            json!("Bad_Bucket"),
            json!("x--ol-s3"),
        ]),
        proptest::sample::select(vec![json!(null), json!(1), json!(7), json!(100), json!(0)]),
        proptest::sample::select(vec![json!(null), json!(7), json!(30), json!(365), json!(5000)]),
        proptest::sample::select(&["GLACIER_IR", "DEEP_ARCHIVE", "STANDARD_IA", "GLACIER", "STANDARD"][..]),
        proptest::sample::select(vec![
            json!(null),
            json!("audit/"),
            json!("a/b/"),
            json!("no-slash"),
            json!("*/"),
        ]),
    )
        .prop_map(|(bucket, years, days, class, prefix)| {
            let mut a = json!({"storageClass": class});
            for (k, v) in [
                ("bucket", bucket),
                ("retentionYears", years),
                ("transitionAfterDays", days),
                ("prefix", prefix),
            ] {
                if !v.is_null() {
                    a[k] = v;
                }
            }
            ("/spec/archive", a)
        });
    let hot_path = (
        proptest::sample::select(vec![json!(null), json!("team-a.hot_1"), json!("bad name"), json!("")]),
        proptest::sample::select(vec![json!(null), json!(1), json!(500), json!(0), json!(501)]),
        proptest::sample::select(vec![json!(null), json!(24), json!(8760), json!(23), json!(8761)]),
        proptest::sample::select(vec![
            json!(null),
            json!(["ERROR"]),
            json!(["(?i)oom", "NCCL (WARN"]),
            json!([" padded"]),
            json!(["a\nb"]),
            json!([]),
        ]),
        proptest::sample::select(vec![json!(null), json!(1), json!(1024), json!(0)]),
    )
        .prop_map(|(stream, shards, hours, patterns, buf)| {
            let mut h = json!({});
            for (k, v) in [
                ("stream", stream),
                ("shards", shards),
                ("retentionHours", hours),
                ("patterns", patterns),
                ("memBufLimitMB", buf),
            ] {
                if !v.is_null() {
                    h[k] = v;
                }
            }
            ("/spec/hotPath", h)
        });
    prop_oneof![traces, amp, datadog, archive, hot_path]
}

/// A path into the document, resolved by index modulo the number of children at each level;
/// most start at `spec` (a walk from the root mostly breaks apiVersion, kind or metadata).
#[derive(Debug, Clone)]
pub struct Walk {
    pub from_spec: bool,
    pub steps: Vec<usize>,
}

pub fn walk() -> impl Strategy<Value = Walk> {
    (prop::bool::weighted(0.85), prop::collection::vec(any::<usize>(), 0..6))
        .prop_map(|(from_spec, steps)| Walk { from_spec, steps })
}

#[derive(Debug, Clone)]
pub enum Mutation {
    Drop(Walk),
    Replace(Walk, Value),
    Insert(Walk, String, Value),
    /// An array: its element repeated; an object: one of its fields copied under another key.
    Duplicate(Walk),
    EmptyArray(Walk),
    Plausible(&'static str, Value),
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => walk().prop_map(Mutation::Drop),
        3 => (walk(), any_json()).prop_map(|(w, v)| Mutation::Replace(w, v)),
        1 => (walk(), prop::sample::select(KEYS), any_json())
            .prop_map(|(w, k, v)| Mutation::Insert(w, k.to_string(), v)),
        1 => walk().prop_map(Mutation::Duplicate),
        1 => walk().prop_map(Mutation::EmptyArray),
        5 => plausible().prop_map(|(p, v)| Mutation::Plausible(p, v)),
        2 => destination().prop_map(|(p, v)| Mutation::Plausible(p, v)),
    ]
}

/// One step of a resolved walk.
pub enum Step {
    Key(String),
    Index(usize),
}

/// Where a walk starts: `spec` when asked for and present, else the root.
pub fn start(doc: &mut Value, from_spec: bool) -> &mut Value {
    if from_spec && doc.get("spec").is_some() {
        &mut doc["spec"]
    } else {
        doc
    }
}

/// The value at the end of a walk (stops early at a leaf or an empty container).
pub fn walk_mut<'a>(v: &'a mut Value, walk: &[usize]) -> &'a mut Value {
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

pub fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
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

pub fn apply(doc: &mut Value, m: &Mutation) {
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
pub enum TextEdit {
    None,
    DuplicateLine(usize),
    Truncate(usize),
    InsertTab(usize),
    AppendDocument,
}

pub fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        12 => Just(TextEdit::None),
        1 => any::<usize>().prop_map(TextEdit::DuplicateLine),
        1 => any::<usize>().prop_map(TextEdit::Truncate),
        1 => any::<usize>().prop_map(TextEdit::InsertTab),
        1 => Just(TextEdit::AppendDocument),
    ]
}

pub fn edit_text(text: &str, e: &TextEdit) -> String {
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
// Cases

/// One generated case: the sample's index in [`SAMPLES`], the mutations applied to it, an edit of
/// its YAML text, whether the context names a cluster and region, and which policy governs a
/// pipeline ([`case_policy`]).
pub type Case = (usize, Vec<Mutation>, TextEdit, bool, usize);

/// Cases over the samples `samples` (indexes into [`SAMPLES`]).
pub fn case(samples: Range<usize>) -> impl Strategy<Value = Case> {
    (
        samples,
        prop::collection::vec(mutation(), 1..6),
        text_edit(),
        any::<bool>(),
        0usize..3,
    )
}

/// Sample `i` with `mutations` applied in order.
pub fn mutated(i: usize, mutations: &[Mutation]) -> Value {
    let mut doc = sample_values()[i].clone();
    for m in mutations {
        apply(&mut doc, m);
    }
    doc
}

/// The operator's context of a case: with or without `--cluster-name`/`--region`.
pub fn case_context(has_cluster: bool) -> Context {
    Context {
        cluster_name: has_cluster.then(|| "prod-gpu".to_string()),
        region: has_cluster.then(|| "us-east-1".to_string()),
        ..Context::default()
    }
}

/// The policy of a pipeline case: none, the default sample policy, or the gpu-operator one.
pub fn case_policy(which: usize) -> Option<GpuTelemetryPolicy> {
    [None, Some(sample_policy(0)), Some(sample_policy(1))][which % 3].clone()
}
