//! AWS provisioning: one module per service, each with idempotent `ensure`, `observe` and `delete`.
//!
//! Order is KMS → log groups → archive bucket → hot path stream → AMP workspace → IAM (→ EKS pod
//! identity association) → alerts (SNS topic, CloudWatch alarms; last, so a failing alarm never
//! holds the collector back): log groups
//! and the bucket are created with their key, the role's policy names the bucket, and the
//! collector only starts once all of them exist. Every resource carries the
//! ownership tags `mlobs.io/cluster`, `mlobs.io/pipeline` and (from the controller) `mlobs.io/uid`;
//! nothing without our tags is changed or deleted unless adoption is opted in.

pub mod alarms;
pub mod amp;
pub mod apply;
pub mod budget;
pub mod calls;
pub mod dashboards;
pub mod destinations;
pub mod drift_events;
pub mod eks;
pub mod error;
pub mod hot_path;
pub mod iam;
pub mod kinesis;
pub mod kms;
pub mod log_metrics;
pub mod logs;
pub mod operator_policy;
pub mod s3;
pub mod s3_observe;
pub mod s3_settings;
pub mod sns;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::interceptors::Intercept;

pub use calls::CallCounter;
pub use error::AwsError;

/// Tag keys mlobs owns.
pub use crate::conventions::{TAG_CLUSTER, TAG_PIPELINE, TAG_UID};

/// One difference between the plan and what AWS has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    /// e.g. `logGroup:/aws/eks/prod/team-a/train/logs`.
    pub resource: String,
    /// e.g. `kmsKeyId`.
    pub field: String,
    pub desired: String,
    pub actual: String,
    /// Whether this ensure put it back (`Correct`) or only recorded it (`Report`).
    pub corrected: bool,
}

impl Drift {
    /// A difference as found, before any correction.
    pub fn found(resource: &str, field: &str, desired: String, actual: String) -> Drift {
        Drift {
            resource: resource.into(),
            field: field.into(),
            desired,
            actual,
            corrected: false,
        }
    }
}

/// Who owns a resource: the pipeline id (`<ns>/<name>`) its tags must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub cluster: String,
    /// `<namespace>/<name>`.
    pub pipeline: String,
}

impl Owner {
    /// Whether a resource's tags say it is ours: our pipeline tag, and no cluster tag naming
    /// another cluster (pipelines of the same `<ns>/<name>` in two clusters may share an account).
    /// A removed cluster tag alone is drift to restore, not a change of owner.
    pub fn owns<'a>(&self, tags: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        let (mut pipeline, mut other_cluster) = (false, false);
        for (k, v) in tags {
            pipeline |= k == TAG_PIPELINE && v == self.pipeline;
            other_cluster |= k == TAG_CLUSTER && v != self.cluster;
        }
        pipeline && !other_cluster
    }

    /// [`Owner::owns`] over a tag map.
    pub fn owns_tags(&self, tags: &std::collections::BTreeMap<String, String>) -> bool {
        self.owns(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// The key a resource is encrypted with: the key applied in this ensure (`key_arn`), else the
/// plan's existing key ARN; `None` without encryption. A created key not applied yet is a
/// terminal error of `operation` on `resource` (the step order makes it unreachable).
pub fn planned_key<'a>(
    kms: &'a Option<crate::desired::aws_plan::KmsRef>,
    key_arn: Option<&'a str>,
    operation: &str,
    resource: &str,
) -> Result<Option<&'a str>, AwsError> {
    use crate::desired::aws_plan::KmsRef;
    match kms {
        None => Ok(None),
        Some(KmsRef::Existing { arn }) => Ok(Some(key_arn.unwrap_or(arn))),
        Some(KmsRef::Created { .. }) => key_arn.map(Some).ok_or_else(|| AwsError::Terminal {
            operation: operation.into(),
            resource: resource.into(),
            code: "KmsKeyNotReady".into(),
            message: "the pipeline's KMS key is not known yet".into(),
        }),
    }
}

/// SDK clients sharing one configuration and one call counter.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub kms: aws_sdk_kms::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub iam: aws_sdk_iam::Client,
    pub eks: aws_sdk_eks::Client,
    pub sts: aws_sdk_sts::Client,
    pub amp: aws_sdk_amp::Client,
    pub xray: aws_sdk_xray::Client,
    pub s3: aws_sdk_s3::Client,
    /// Reads the drift events queue (`--drift-events-queue`).
    pub sqs: aws_sdk_sqs::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub sns: aws_sdk_sns::Client,
    pub calls: CallCounter,
    /// The account's KMS key tags as this process's tag scans read them (see [`kms::KeyTagIndex`]).
    pub kms_key_tags: kms::KeyTagIndex,
    /// Log group tags as this process last read them (see [`logs::GroupTagIndex`]).
    pub log_group_tags: logs::GroupTagIndex,
}

impl AwsClients {
    /// Clients from the default credential chain (env, web identity/IRSA, pod identity, profile).
    /// `endpoint_url` overrides every service's endpoint (VPC endpoints, or moto in tests);
    /// `AWS_ENDPOINT_URL` is honoured by the SDK itself.
    pub async fn from_env(region: Option<String>, endpoint_url: Option<String>) -> AwsClients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = region {
            loader = loader.region(Region::new(r));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        AwsClients::new(&loader.load().await)
    }

    /// Clients from an SDK config, each with the call-counting interceptor.
    pub fn new(conf: &SdkConfig) -> AwsClients {
        AwsClients::with_interceptor(conf, None::<CallCounter>)
    }

    /// Like [`AwsClients::new`], plus one more interceptor on every client (fault injection in tests).
    pub fn with_interceptor<I>(conf: &SdkConfig, extra: Option<I>) -> AwsClients
    where
        I: Intercept + Clone + 'static,
    {
        let calls = CallCounter::default();
        macro_rules! client {
            ($krate:ident) => {{
                let mut b = $krate::config::Builder::from(conf).interceptor(calls.clone());
                if let Some(i) = &extra {
                    b = b.interceptor(i.clone());
                }
                $krate::Client::from_conf(b.build())
            }};
        }
        // With an endpoint override (VPC endpoint, moto) buckets are addressed by path: a
        // virtual-hosted name would need DNS for `<bucket>.<endpoint host>`.
        let path_style = conf.endpoint_url().is_some();
        let s3 = {
            let mut b = aws_sdk_s3::config::Builder::from(conf)
                .interceptor(calls.clone())
                .force_path_style(path_style);
            if let Some(i) = &extra {
                b = b.interceptor(i.clone());
            }
            aws_sdk_s3::Client::from_conf(b.build())
        };
        AwsClients {
            s3,
            kms: client!(aws_sdk_kms),
            logs: client!(aws_sdk_cloudwatchlogs),
            iam: client!(aws_sdk_iam),
            eks: client!(aws_sdk_eks),
            sts: client!(aws_sdk_sts),
            amp: client!(aws_sdk_amp),
            xray: client!(aws_sdk_xray),
            sqs: client!(aws_sdk_sqs),
            kinesis: client!(aws_sdk_kinesis),
            cloudwatch: client!(aws_sdk_cloudwatch),
            sns: client!(aws_sdk_sns),
            calls,
            kms_key_tags: kms::KeyTagIndex::default(),
            log_group_tags: logs::GroupTagIndex::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_of_the_same_pipeline_in_another_cluster_is_not_ours() {
        let me = Owner {
            cluster: "a".into(),
            pipeline: "team/train".into(),
        };
        assert!(me.owns([(TAG_PIPELINE, "team/train"), (TAG_CLUSTER, "a")].into_iter()));
        assert!(
            me.owns([(TAG_PIPELINE, "team/train")].into_iter()),
            "a lost cluster tag is drift"
        );
        assert!(!me.owns([(TAG_PIPELINE, "team/train"), (TAG_CLUSTER, "b")].into_iter()));
        assert!(!me.owns([(TAG_PIPELINE, "team/other"), (TAG_CLUSTER, "a")].into_iter()));
        assert!(!me.owns(std::iter::empty()));
    }
}
