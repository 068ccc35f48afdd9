//! Pipelines as the pipeline cache keeps them: metadata and spec as they are, the status packed.
//!
//! A pipeline's status is most of a cached pipeline: a dozen conditions, each a 128-byte struct
//! and four strings (type, status and reason repeat the same few words in every pipeline), the
//! AWS resources' ARNs, the collector and telemetry figures. The bench's rolling-out pipeline
//! took 4.5 KB in the cache (`tests/cache_memory.rs`), 3 KB of it status in some fifty
//! allocations. [`CachedPipeline`] keeps the status as one buffer of deflated JSON (about 840
//! bytes for that status: the repeated keys and words are what deflate removes) and unpacks it
//! where it is read: once at the start of each reconcile (tens of microseconds), and for the
//! pipelines a drift event may name. What picks the pipelines to reconcile (policy, node and
//! child changes, the policies' counts) reads only the metadata, the spec and
//! [`CachedPipeline::non_compliant`], kept as they are.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use kube::api::ObjectMeta;
use serde::{Deserialize, Deserializer};

use super::counted::{CountedFields, non_compliant};
use super::lean::{LeanKind, WirePipeline};
use crate::crd::pipeline::{MLObservabilityPipeline, MLObservabilityPipelineSpec, MLObservabilityPipelineStatus};

/// A pipeline in the pipeline cache: [`CachedPipeline::unpack`] gives it back whole.
#[derive(Clone, Debug)]
pub struct CachedPipeline {
    pub metadata: ObjectMeta,
    pub spec: MLObservabilityPipelineSpec,
    status: Option<Packed>,
    /// Whether `PolicyCompliant` is False (what the policies' counts read of the status).
    non_compliant: bool,
}

/// A status as the cache keeps it.
#[derive(Clone)]
enum Packed {
    /// Deflated JSON.
    Deflated(Box<[u8]>),
    /// Kept whole: packing failed (it does not for a status the API server sent; kept rather
    /// than lost).
    Whole(Box<MLObservabilityPipelineStatus>),
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Packed::Deflated(b) => write!(f, "Deflated({} bytes)", b.len()),
            Packed::Whole(s) => f.debug_tuple("Whole").field(s).finish(),
        }
    }
}

/// The status as deflated JSON, at deflate's fastest level: every watch event of a pipeline
/// packs its status, and the levels differ by a few percent on a status (837 bytes against 801
/// at the default level for the bench's).
fn deflate(status: &MLObservabilityPipelineStatus) -> std::io::Result<Box<[u8]>> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::fast());
    serde_json::to_writer(&mut enc, status)?;
    enc.flush()?;
    Ok(enc.finish()?.into_boxed_slice())
}

fn inflate(packed: &[u8]) -> std::io::Result<MLObservabilityPipelineStatus> {
    let mut json = Vec::new();
    DeflateDecoder::new(packed).read_to_end(&mut json)?;
    Ok(serde_json::from_slice(&json)?)
}

impl CachedPipeline {
    /// `p` as the cache keeps it.
    pub fn pack(p: MLObservabilityPipeline) -> CachedPipeline {
        let non_compliant = non_compliant(&p);
        let status = p.status.map(|s| match deflate(&s) {
            Ok(b) => Packed::Deflated(b),
            Err(e) => {
                tracing::warn!(error = %e, "pipeline cache: a status could not be packed; kept whole");
                Packed::Whole(Box::new(s))
            }
        });
        CachedPipeline {
            metadata: p.metadata,
            spec: p.spec,
            status,
            non_compliant,
        }
    }

    /// The status, unpacked. `None` for a pipeline without one, and (with an error logged) for
    /// one whose packed form does not read back, which would be a bug: its next status write
    /// then starts from nothing rather than from a wrong status.
    pub fn status(&self) -> Option<MLObservabilityPipelineStatus> {
        match self.status.as_ref()? {
            Packed::Deflated(b) => inflate(b)
                .inspect_err(|e| tracing::error!(error = %e, pipeline = %self.metadata.name.as_deref().unwrap_or_default(), "pipeline cache: a packed status does not read back"))
                .ok(),
            Packed::Whole(s) => Some(s.as_ref().clone()),
        }
    }

    /// The pipeline whole, as the API server sent it (without what the watch drops).
    pub fn unpack(&self) -> MLObservabilityPipeline {
        MLObservabilityPipeline {
            metadata: self.metadata.clone(),
            spec: self.spec.clone(),
            status: self.status(),
        }
    }

    /// Whether the pipeline reports `PolicyCompliant` False.
    pub fn non_compliant(&self) -> bool {
        self.non_compliant
    }

    /// Bytes the packed status takes (0 without one).
    pub fn packed_len(&self) -> usize {
        match &self.status {
            Some(Packed::Deflated(b)) => b.len(),
            Some(Packed::Whole(_)) => std::mem::size_of::<MLObservabilityPipelineStatus>(),
            None => 0,
        }
    }
}

impl From<MLObservabilityPipeline> for CachedPipeline {
    fn from(p: MLObservabilityPipeline) -> CachedPipeline {
        CachedPipeline::pack(p)
    }
}

impl<'de> Deserialize<'de> for CachedPipeline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MLObservabilityPipeline::deserialize(d).map(CachedPipeline::pack)
    }
}

super::counted::pipeline_resource!(CachedPipeline);

impl LeanKind for CachedPipeline {
    type Wire = WirePipeline;
    fn from_wire(w: WirePipeline) -> Self {
        CachedPipeline::pack(MLObservabilityPipeline::from_wire(w))
    }
}

impl CountedFields for CachedPipeline {
    fn counted(&self) -> (Option<&str>, bool) {
        (self.spec.policy_ref.as_deref(), self.non_compliant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pipeline(status: serde_json::Value) -> MLObservabilityPipeline {
        serde_json::from_value(json!({
            "apiVersion": "mlobs.io/v1alpha1", "kind": "MLObservabilityPipeline",
            "metadata": {"name": "train", "namespace": "team", "uid": "u-1", "generation": 2},
            "spec": {"policyRef": "gpu", "resyncInterval": "10m"},
            "status": status,
        }))
        .expect("pipeline")
    }

    fn rolling_out() -> serde_json::Value {
        let cond = |t: &str, s: &str, r: &str, m: &str| {
            json!({"type": t, "status": s, "reason": r, "message": m,
                "lastTransitionTime": "2026-12-06T22:29:32Z", "observedGeneration": 2})
        };
        json!({"observedGeneration": 2,
            "aws": {"kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/580be4ad-2a48-4ccc-b7d5-000000000001",
                "logGroupArns": ["arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/e2e/team/train/logs"],
                "roleArn": "arn:aws:iam::123456789012:role/mlobs-e2e-team-train"},
            "collector": {"desiredNodes": 2, "readyNodes": 1},
            "conditions": [
                cond("Ready", "False", "RollingOut", "CollectorReady: 1/2 GPU nodes run a ready collector"),
                cond("PolicyCompliant", "False", "PolicyViolation", "spec.retentionDays: 3653 is above the policy's 365"),
                cond("Drifted", "False", "NoDrift", "AWS and Kubernetes match the spec")]})
    }

    #[test]
    fn a_packed_pipeline_unpacks_to_the_same_pipeline() {
        let whole = pipeline(rolling_out());
        let cached = CachedPipeline::pack(whole.clone());
        assert!(matches!(cached.status, Some(Packed::Deflated(_))));
        assert_eq!(cached.unpack(), whole);
        assert_eq!(cached.status(), whole.status);
    }

    #[test]
    fn the_packed_status_is_smaller_than_its_json() {
        let whole = pipeline(rolling_out());
        let json = serde_json::to_vec(&whole.status).expect("json").len();
        let cached = CachedPipeline::pack(whole);
        // Three conditions; a dozen (the bench's, `tests/cache_memory.rs`) pack tighter.
        assert!(
            cached.packed_len() * 3 < json * 2,
            "packed {} bytes, JSON {json}",
            cached.packed_len()
        );
    }

    #[test]
    fn no_status_stays_none_and_counts_read_the_packed_pipeline() {
        let mut whole = pipeline(rolling_out());
        let cached = CachedPipeline::pack(whole.clone());
        assert_eq!(cached.counted(), (Some("gpu"), true));
        whole.status = None;
        let cached = CachedPipeline::pack(whole.clone());
        assert_eq!((cached.packed_len(), cached.status()), (0, None));
        assert_eq!(cached.counted(), (Some("gpu"), false));
        assert_eq!(cached.unpack(), whole);
    }

    #[test]
    fn a_status_that_does_not_read_back_is_none_not_a_panic() {
        let mut cached = CachedPipeline::pack(pipeline(rolling_out()));
        cached.status = Some(Packed::Deflated(Box::from(&b"not deflate"[..])));
        assert_eq!(cached.status(), None);
        assert_eq!(cached.unpack().spec.policy_ref.as_deref(), Some("gpu"));
    }

    #[test]
    fn a_lean_watch_reads_the_pipeline_into_the_packed_form() {
        let mut body = serde_json::to_value(pipeline(rolling_out())).expect("json");
        body["metadata"]["managedFields"] = json!([{"manager": "mlobs", "operation": "Apply"}]);
        let lean: super::super::lean::Lean<CachedPipeline> = serde_json::from_value(body).expect("lean");
        assert_eq!(lean.0.unpack(), pipeline(rolling_out()));
    }
}
