//! mlobs' conventions, each written once: bounded names with a hash, the label sets of children,
//! the ownership tags of AWS resources, annotations, and the GPU node defaults.
//!
//! A leaf: it uses nothing else of the crate, so every layer (crd, desired, aws, controller) can
//! use it without a module cycle.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use sha2::{Digest, Sha256};

// ---- Names ----

/// `head` cut so that `-<hash>` still fits in `max` characters, trailing `trim` characters
/// dropped, then `-<hash>`: the first `hex` hex digits of the SHA-256 of `hash_of`.
fn cut_with_hash(head: &str, max: usize, trim: &[char], hash_of: &str, hex: usize) -> String {
    let hash: String = Sha256::digest(hash_of.as_bytes())
        .iter()
        .take(hex.div_ceil(2))
        .map(|b| format!("{b:02x}"))
        .collect();
    // `max` counts bytes, as the API server and AWS do: a character is kept only whole.
    let keep = max.saturating_sub(hex + 1);
    let mut cut = String::with_capacity(keep);
    for c in head.chars() {
        if cut.len() + c.len_utf8() > keep {
            break;
        }
        cut.push(c);
    }
    format!("{}-{}", cut.trim_end_matches(trim), &hash[..hex])
}

/// A name made from user input that must fit a charset and a length: characters outside the
/// charset become `-`, and a name that had to change or be cut gets an 8-hex hash of the raw
/// input, so two different inputs never end up with the same name.
pub fn bounded_name(raw: &str, max: usize, allowed: impl Fn(char) -> bool) -> String {
    let clean = dashed(raw, allowed);
    if clean == raw && clean.len() <= max {
        return clean;
    }
    cut_with_hash(&clean, max, &['-'], raw, 8)
}

/// `raw` with each character outside `allowed` replaced by `-`.
fn dashed(raw: &str, allowed: impl Fn(char) -> bool) -> String {
    raw.chars().map(|c| if allowed(c) { c } else { '-' }).collect()
}

fn is_label_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn is_dns_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn is_dns_subdomain_char(c: char) -> bool {
    is_dns_label_char(c) || c == '.'
}

/// A label value (≤ 63 characters of `[A-Za-z0-9._-]`), hash-suffixed when it had to change.
pub fn label_value(raw: &str) -> String {
    bounded_name(raw, 63, is_label_value_char)
}

/// The `mlobs.io/pipeline` label value of a pipeline: `<namespace>.<name>` (no `/` allowed there).
pub fn pipeline_label(namespace: &str, name: &str) -> String {
    label_value(&format!("{namespace}.{name}"))
}

/// The `mlobs.io/policy` label value of a policy's exporter pods: label values stop at 63
/// characters, policy names do not. The exporter and the collector's scrape selector both use this.
pub fn policy_label(policy_name: &str) -> String {
    label_value(policy_name)
}

/// Prefix of a pipeline's namespaced children, e.g. `mlobs-train`; in a shared collector
/// namespace `mlobs-<namespace>-<name>` (a DNS label, cut and hash-suffixed at 63), so pipelines
/// of different namespaces never share a name.
pub fn child_name(namespace: &str, name: &str, shared_namespace: bool) -> String {
    if shared_namespace {
        bounded_name(&format!("mlobs-{namespace}-{name}"), 63, is_dns_label_char)
    } else {
        format!("mlobs-{name}")
    }
}

/// The collector's ServiceAccount: [`child_name`], bounded to what the API server accepts.
pub fn service_account_name(namespace: &str, name: &str, shared_namespace: bool) -> String {
    if shared_namespace {
        child_name(namespace, name, true)
    } else {
        bounded_name(&format!("mlobs-{name}"), 253, is_dns_subdomain_char)
    }
}

/// The collector's ClusterRole and ClusterRoleBinding: `mlobs-collector-<namespace>-<name>`,
/// unique per pipeline. Longer than 253 characters it is cut and suffixed with a hash of the full
/// name, so two long names still differ.
pub fn cluster_role_name(namespace: &str, name: &str) -> String {
    const MAX_NAME: usize = 253;
    let full = format!("mlobs-collector-{namespace}-{name}");
    if full.len() <= MAX_NAME {
        return full;
    }
    cut_with_hash(&full, MAX_NAME, &['-', '.'], &full, 16)
}

/// Name of a Managed exporter's objects. The Service's name must be a DNS label (≤ 63, no dots),
/// while policy names may be longer and dotted: dots become dashes, and long names end in a hash
/// of the policy name (as do names with characters no DNS label has, which the API server does
/// not admit in a policy's name anyway).
pub fn exporter_object_name(policy_name: &str) -> String {
    let full = format!("mlobs-dcgm-exporter-{}", policy_name.replace('.', "-"));
    if full.len() <= 63 && full.chars().all(is_dns_label_char) {
        return full;
    }
    cut_with_hash(&dashed(&full, is_dns_label_char), 63, &['-'], policy_name, 8)
}

/// Prefix of every derived archive bucket name; the operator's IAM policy is scoped to it.
pub const ARCHIVE_BUCKET_PREFIX: &str = "mlobs-";

/// The archive bucket of a pipeline when the spec names none: `mlobs-<cluster>-<namespace>-<name>`
/// lowercased to S3's charset (no dots), cut to fit 63 characters and always ending in a 12-hex
/// hash of account, region, cluster, namespace and name. Bucket names are global across every
/// AWS account, so the hash (not the readable part) is what keeps it unique.
pub fn archive_bucket_name(account: &str, region: &str, cluster: &str, namespace: &str, name: &str) -> String {
    let raw = format!("{ARCHIVE_BUCKET_PREFIX}{cluster}-{namespace}-{name}").to_ascii_lowercase();
    let clean: String = raw
        .chars()
        .map(|c| if is_dns_label_char(c) { c } else { '-' })
        .collect();
    let identity = format!("{account}/{region}/{cluster}/{namespace}/{name}");
    cut_with_hash(&clean, 63, &['-'], &identity, 12)
}

/// The key prefix of a pipeline's archived logs when the spec names none.
pub fn archive_prefix(namespace: &str, name: &str) -> String {
    format!("logs/{namespace}/{name}/")
}

// ---- Labels and annotations ----

/// Every child carries it; prune and watch select on it.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "mlobs");
/// [`MANAGED_BY_LABEL`] as a label selector.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=mlobs";
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `<namespace>.<name>` of the pipeline a child belongs to ([`pipeline_label`]).
pub const PIPELINE_LABEL: &str = "mlobs.io/pipeline";
/// The policy a Managed exporter belongs to ([`policy_label`]).
pub const POLICY_LABEL: &str = "mlobs.io/policy";
/// `app.kubernetes.io/name` of collector pods.
pub const COLLECTOR_APP: &str = "mlobs-collector";
/// `app.kubernetes.io/name` of mlobs-managed DCGM exporter pods.
pub const EXPORTER_APP: &str = "mlobs-dcgm-exporter";
/// Pod template annotation whose change rolls the pods (collector and exporter).
pub const CONFIG_HASH_ANNOTATION: &str = "mlobs.io/config-hash";
/// `"true"` on a pipeline: take over AWS resources that exist without our tags.
pub const ADOPT_ANNOTATION: &str = "mlobs.io/adopt";
/// Annotation on every child naming its owner (`<namespace>/<name>` of a pipeline, `<name>` of a
/// policy): how a child that cannot carry an owner reference (cluster-scoped, or in another
/// namespace) finds its owner.
pub const OWNER_ANNOTATION: &str = "mlobs.io/owner";
/// Annotation with the owner's uid on every child: pruning and cleanup delete only what it names.
pub const OWNER_UID_ANNOTATION: &str = "mlobs.io/owner-uid";

fn pairs<const N: usize>(kv: [(&str, String); N]) -> BTreeMap<String, String> {
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Labels of every child of a pipeline. Children are pruned by these, never by name.
pub fn collector_labels(namespace: &str, name: &str) -> BTreeMap<String, String> {
    pairs([
        (MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1.to_string()),
        (NAME_LABEL, COLLECTOR_APP.to_string()),
        (INSTANCE_LABEL, label_value(name)),
        (PIPELINE_LABEL, pipeline_label(namespace, name)),
    ])
}

/// The labels of a Managed exporter's pods that the collectors select on.
pub fn exporter_selector(policy_name: &str) -> BTreeMap<String, String> {
    pairs([
        (NAME_LABEL, EXPORTER_APP.to_string()),
        (POLICY_LABEL, policy_label(policy_name)),
    ])
}

/// A label selector string (`k=v,k2=v2`) from a label map.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(",")
}

/// Selects the children of one pipeline.
pub fn pipeline_selector(namespace: &str, name: &str) -> String {
    format!("{PIPELINE_LABEL}={}", pipeline_label(namespace, name))
}

/// Selects the objects of one policy's Managed exporter.
pub fn policy_selector(policy_name: &str) -> String {
    format!("{POLICY_LABEL}={}", policy_label(policy_name))
}

/// Labels of every object of a Managed exporter.
pub fn exporter_labels(policy_name: &str) -> BTreeMap<String, String> {
    let mut labels = exporter_selector(policy_name);
    labels.insert(MANAGED_BY_LABEL.0.into(), MANAGED_BY_LABEL.1.into());
    labels
}

// ---- AWS ownership tags ----

/// Tag keys mlobs owns (re-exported as `aws::TAG_*`).
pub const TAG_CLUSTER: &str = "mlobs.io/cluster";
pub const TAG_PIPELINE: &str = "mlobs.io/pipeline";
pub const TAG_UID: &str = "mlobs.io/uid";

/// `<namespace>/<name>`: the value of the [`TAG_PIPELINE`] tag.
pub fn pipeline_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The tags that mark an AWS resource as this pipeline's: cluster, pipeline and, for objects from
/// the API server, their uid.
pub fn ownership_tags(cluster: &str, namespace: &str, name: &str, uid: Option<&str>) -> BTreeMap<String, String> {
    let mut tags = pairs([
        (TAG_CLUSTER, cluster.to_string()),
        (TAG_PIPELINE, pipeline_id(namespace, name)),
    ]);
    if let Some(uid) = uid {
        tags.insert(TAG_UID.into(), uid.into());
    }
    tags
}

// ---- GPU node defaults ----

/// The node label of GPU nodes when neither the pipeline nor its policy selects any.
pub const GPU_NODE_LABEL: (&str, &str) = ("nvidia.com/gpu.present", "true");

/// [`GPU_NODE_LABEL`] as a node selector.
pub fn default_gpu_node_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(GPU_NODE_LABEL.0.to_string(), GPU_NODE_LABEL.1.to_string())])
}

/// Tolerate the `nvidia.com/gpu` taint, whatever its effect or value (no effect given).
pub fn default_gpu_tolerations() -> Vec<Toleration> {
    vec![Toleration {
        key: Some("nvidia.com/gpu".into()),
        operator: Some("Exists".into()),
        ..Default::default()
    }]
}

/// kubectl's client-side apply annotation (a second copy of an object's spec).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_by_selector_is_the_managed_by_label() {
        assert_eq!(
            MANAGED_BY_SELECTOR,
            format!("{}={}", MANAGED_BY_LABEL.0, MANAGED_BY_LABEL.1)
        );
    }

    #[test]
    fn long_names_are_cut_to_their_limit_and_stay_distinct() {
        let long = "n".repeat(300);
        let a = cluster_role_name("team-a", &long);
        let b = cluster_role_name("team-a", &format!("{long}x"));
        assert_eq!(a.len(), 253);
        assert_ne!(a, b);
        assert_eq!(a.rsplit('-').next().map(str::len), Some(16));
        let e = exporter_object_name(&format!("{long}.x"));
        assert_eq!(e.len(), 63);
        assert!(!e.contains('.'));
        assert_ne!(e, exporter_object_name(&format!("{long}.y")));
        assert_eq!(exporter_object_name("a.b"), "mlobs-dcgm-exporter-a-b");
        // Characters no DNS label has (the fuzz test found 22 × 'é': 42 characters, 64 bytes).
        for odd in ["é".repeat(22), "é".repeat(40), "Team_A".into()] {
            let e = exporter_object_name(&odd);
            assert!(e.len() <= 63, "{e}: {} bytes", e.len());
            assert!(e.chars().all(is_dns_label_char), "{e}");
        }
        assert_ne!(
            exporter_object_name(&"é".repeat(22)),
            exporter_object_name(&"è".repeat(22))
        );
        // Cut by bytes, a character kept whole.
        let cut = cluster_role_name("team-a", &"é".repeat(300));
        assert!(cut.len() <= 253, "{} bytes", cut.len());
        assert_eq!(child_name("ns", "x", false), "mlobs-x");
        assert_eq!(child_name(&long, "x", true).len(), 63);
    }

    #[test]
    fn archive_bucket_names_are_valid_bounded_and_unique_per_account_and_pipeline() {
        let a = archive_bucket_name("123456789012", "us-east-1", "Prod_GPU", "team-a", "train");
        assert!(a.starts_with("mlobs-prod-gpu-team-a-train-"), "{a}");
        assert_eq!(a.rsplit('-').next().map(str::len), Some(12));
        let long = "n".repeat(253);
        let b = archive_bucket_name("123456789012", "us-east-1", "prod", "team-a", &long);
        assert_eq!(b.len(), 63);
        for n in [&a, &b] {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{n}"
            );
            assert!(!n.ends_with('-') && !n.contains("--"), "{n}");
        }
        // The same pipeline in another account or region gets another global name.
        assert_ne!(
            a,
            archive_bucket_name("210987654321", "us-east-1", "Prod_GPU", "team-a", "train")
        );
        assert_ne!(
            a,
            archive_bucket_name("123456789012", "eu-west-1", "Prod_GPU", "team-a", "train")
        );
        assert_eq!(archive_prefix("team-a", "train"), "logs/team-a/train/");
    }
}
