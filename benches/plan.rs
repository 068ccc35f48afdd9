//! `make bench`: plan/render of the full sample with a policy (goal < 5 ms per run), and the merge.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use mlobs::crd::{GpuTelemetryPolicy, MLObservabilityPipeline};
use mlobs::desired::cost::{Fleet, Prices, estimate};
use mlobs::desired::{Context, build, merge::merge};
use mlobs::input::{Document, parse_documents};
use mlobs::report::PlanReport;

fn load() -> (String, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    (
        read("config/samples/pipeline-full.yaml"),
        read("config/samples/policy-default.yaml"),
    )
}

fn typed(pipeline: &str, policy: &str) -> (MLObservabilityPipeline, GpuTelemetryPolicy) {
    let p = match parse_documents("p", pipeline).map(|mut d| d.remove(0)) {
        Ok(Document::Pipeline(p)) => *p,
        _ => panic!("pipeline sample"),
    };
    let g = match parse_documents("g", policy).map(|mut d| d.remove(0)) {
        Ok(Document::Policy(g)) => *g,
        _ => panic!("policy sample"),
    };
    (p, g)
}

fn benches(c: &mut Criterion) {
    let (pipeline_yaml, policy_yaml) = load();
    let (p, g) = typed(&pipeline_yaml, &policy_yaml);
    let ctx = Context::default();
    let fleet = Fleet {
        nodes: 20,
        instance_type: "p4d.24xlarge".into(),
        gpus_per_node: None,
    };
    let prices = Prices::default();

    c.bench_function("merge full sample with policy", |b| {
        b.iter(|| merge(black_box(&p), Some(&g), &ctx))
    });

    // What `mlobs plan` does after reading the files: parse+validate, build, estimate, report.
    c.bench_function("plan full sample with policy (parse+validate+build+cost+report)", |b| {
        b.iter(|| {
            let (p, g) = typed(black_box(&pipeline_yaml), black_box(&policy_yaml));
            let d = build(&p, Some(&g), &ctx).expect("builds");
            let est = estimate(&d.effective, &fleet, &prices, Some(50.0)).expect("estimates");
            black_box(PlanReport::new(&d, est).to_text())
        })
    });

    c.bench_function("parse+validate full sample and policy", |b| {
        b.iter(|| typed(black_box(&pipeline_yaml), black_box(&policy_yaml)))
    });

    c.bench_function("render full sample with policy (build+yaml)", |b| {
        b.iter(|| {
            let d = build(black_box(&p), Some(&g), &ctx).expect("builds");
            black_box(mlobs::offline::render_yaml(
                std::slice::from_ref(&g),
                std::slice::from_ref(&d),
                "mlobs-system",
            ))
        })
    });
}

criterion_group!(plan, benches);
criterion_main!(plan);
