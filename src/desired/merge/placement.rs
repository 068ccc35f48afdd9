//! Who the pipeline is and where its collector runs: names, cluster, region, collector namespace,
//! source namespaces, node selector and tolerations (`spec.sources`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

use super::Merger;
use crate::conventions;
use crate::crd::MLObservabilityPipeline;
use crate::desired::effective::Context;
use crate::desired::sources::{PlacementSources, Source, Sourced};

/// The pipeline's identity and placement; every other section derives names from it.
pub(super) struct Placement {
    pub namespace: String,
    pub name: String,
    pub collector_namespace: Sourced<String>,
    pub cluster_name: Sourced<String>,
    pub region: Sourced<String>,
    pub source_namespaces: Sourced<Vec<String>>,
    pub node_selector: Sourced<BTreeMap<String, String>>,
    pub tolerations: Sourced<Vec<Toleration>>,
    /// Ownership tags of every AWS resource; `mlobs.io/` keys are reserved for them.
    pub ownership: BTreeMap<String, String>,
}

impl Placement {
    pub fn sources(&self) -> PlacementSources {
        PlacementSources {
            namespaces: self.source_namespaces.source,
            node_selector: self.node_selector.source,
            tolerations: self.tolerations.source,
        }
    }
}

/// The pipeline's value, else the operator's flag; an error naming `path` when neither is set.
fn pipeline_or_operator(
    m: &mut Merger<'_>,
    path: &str,
    flag: &str,
    pipeline: &Option<String>,
    operator: &Option<String>,
) -> Sourced<String> {
    match (pipeline, operator) {
        (Some(v), _) => Sourced::new(v.clone(), Source::Pipeline),
        (None, Some(v)) => Sourced::new(v.clone(), Source::Operator),
        (None, None) => {
            m.error(path, "required", format!("is required when the operator has no {flag}"));
            Sourced::new(String::new(), Source::BuiltIn)
        }
    }
}

pub(super) fn placement(m: &mut Merger<'_>, p: &MLObservabilityPipeline, ctx: &Context) -> Placement {
    let spec = &p.spec;
    let pol = m.policy_spec();
    let namespace = p.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = p.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        m.error("metadata.name", "required", "is required");
    }
    // Where the collector runs: the policy may move every governed collector to one namespace.
    let collector_namespace = match pol.and_then(|p| p.collector_namespace.clone()) {
        Some(ns) => Sourced::new(ns, Source::PolicyGuardrail),
        None => Sourced::new(namespace.clone(), Source::Derived),
    };
    let cluster_name = pipeline_or_operator(
        m,
        "spec.clusterName",
        "--cluster-name",
        &spec.cluster_name,
        &ctx.cluster_name,
    );
    let region = pipeline_or_operator(m, "spec.region", "--region", &spec.region, &ctx.region);

    let src = spec.sources.as_ref();
    let source_namespaces = Sourced::pipeline_or(src.and_then(|s| s.namespaces.clone()), vec![namespace.clone()]);
    if let Some(pol) = pol {
        let allowed_from = pol
            .sources
            .as_ref()
            .and_then(|s| s.cross_namespace_from.clone())
            .unwrap_or_default();
        for (i, ns) in source_namespaces.value.iter().enumerate() {
            if *ns != namespace && !allowed_from.contains(&namespace) {
                m.violate(
                    format!("spec.sources.namespaces[{i}]"),
                    "sources.crossNamespaceFrom",
                    format!("pipelines in {namespace:?} may only collect their own namespace, not {ns:?}"),
                );
            }
        }
    }
    let node_selector = Sourced::pick(
        src.and_then(|s| s.node_selector.clone()),
        pol.and_then(|p| p.node_selector.clone()),
        conventions::default_gpu_node_selector(),
    );
    let tolerations = Sourced::pick(
        src.and_then(|s| s.tolerations.clone()),
        pol.and_then(|p| p.tolerations.clone()),
        conventions::default_gpu_tolerations(),
    );
    let ownership = conventions::ownership_tags(&cluster_name.value, &namespace, &name, p.metadata.uid.as_deref());
    Placement {
        namespace,
        name,
        collector_namespace,
        cluster_name,
        region,
        source_namespaces,
        node_selector,
        tolerations,
        ownership,
    }
}
