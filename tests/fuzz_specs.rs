//! Bad input: the samples in config/samples, mutated (fields dropped, duplicated, replaced by
//! random JSON of random types, long and unicode strings, huge and negative numbers, empty
//! arrays, and plausible-but-extreme values for the fields that become AWS names), pushed
//! through everything a user's YAML reaches: `input::parse_documents` (schema, CEL, mlobs'
//! checks), `validate_pipeline`/`validate_policy`, `merge`, `desired::build` (collector
//! config, DaemonSet, AWS plan), the cost estimate and the Managed exporter's objects.
//! Goal: no panic, every rejection names the field (spec.… or metadata.…), and the AWS limits
//! hold for everything accepted, with names never silently cut into another resource's name.

mod support;

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
use serde_json::{Value, json};
use support::fuzzgen::{SAMPLES, TextEdit, case, case_context, case_policy, edit_text, mutated, sample_pipeline};

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
    let ctx = case_context(ctx_has_cluster);
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
        let policy = case_policy(which_policy);
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
    let result = runner.run(&case(samples), |(i, mutations, edit, ctx, which_policy)| {
        exercise(&mutated(i, &mutations), &edit, ctx, which_policy)
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
    assert_eq!(err.reason().as_str(), "NameTooLong");

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
