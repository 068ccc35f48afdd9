//! Destinations beyond CloudWatch (pipeline spec) and their guardrails (policy spec): spans to AWS
//! X-Ray or an OTLP backend, GPU metrics to Amazon Managed Service for Prometheus (AMP) and to
//! Datadog. Each is a typed section; the collector renders one exporter per destination.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of an AMP workspace ARN: `arn:<partition>:aps:<region>:<account>:workspace/<id>`.
pub const WORKSPACE_ARN_PATTERN: &str =
    r"^arn:aws[a-z-]*:aps:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:workspace/ws-[A-Za-z0-9-]{1,64}$";

/// CEL (at `spec`, reported at `spec.metrics.prometheus.workspaceArn`): the workspace is in the
/// pipeline's region when the pipeline names one. The operator's own region and account are
/// compared by the merge, which knows them.
pub const WORKSPACE_REGION_RULE: &str = "!has(self.region) || !has(self.metrics) || !has(self.metrics.prometheus) || !has(self.metrics.prometheus.workspaceArn) || self.metrics.prometheus.workspaceArn.contains(':aps:' + self.region + ':')";
/// The message of [`WORKSPACE_REGION_RULE`].
pub const WORKSPACE_REGION_MESSAGE: &str =
    "the AMP workspace must be in spec.region: the collector signs remote writes for that region";

/// CEL (at `spec`, reported at `spec.traces.destination`): spans reach a destination only through
/// the OTLP receiver.
pub const TRACES_NEED_OTLP_RULE: &str = "!has(self.traces) || !has(self.traces.destination) || (has(self.traces.otlp) && has(self.traces.otlp.enabled) && self.traces.otlp.enabled)";
/// The message of [`TRACES_NEED_OTLP_RULE`].
pub const TRACES_NEED_OTLP_MESSAGE: &str =
    "traces.destination needs traces.otlp.enabled: true (spans arrive through the OTLP receiver)";

/// OTLP intake, and where the spans it receives go.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracesSpec {
    /// OTLP receiver on the collector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpSpec>,

    /// Where spans received over OTLP are exported: `xray` or `otlp` (Tempo, Jaeger). Absent: the
    /// collector runs no traces pipeline and spans are refused. Needs `otlp.enabled: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<TracesDestinationSpec>,
}

/// OTLP receiver settings.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpSpec {
    /// Open the OTLP gRPC (4317) and HTTP (4318) ports on each collector pod (default false).
    /// OTLP logs and metrics join the logs and metrics pipelines (metrics pass the DCGM filter);
    /// spans go to `traces.destination`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// One traces backend: exactly one of `xray` and `otlp`.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.xray) != has(self.otlp)").message("traces.destination needs exactly one of xray or otlp").reason(Reason::FieldValueInvalid))]
pub struct TracesDestinationSpec {
    /// AWS X-Ray through its OTLP endpoint `https://xray.<region>.amazonaws.com/v1/traces`
    /// (SigV4-signed, gzip). Needs Transaction Search enabled in the account. X-Ray has no
    /// resource-level permissions: the collector role gets `xray:PutTraceSegments` on
    /// `"Resource": "*"`, limited to the region (and `identity.sourceVpc`). A policy may forbid
    /// it (`traces.allowXRay: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xray: Option<XRaySpec>,

    /// Any OTLP/HTTP backend (Grafana Tempo, Jaeger: port 4318), by endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpExportSpec>,
}

/// AWS X-Ray: everything follows from `spec.region` and the collector's role.
// No deny_unknown_fields: on a struct without fields schemars would emit
// `additionalProperties: false`, which a structural CRD schema must not carry.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
pub struct XRaySpec {}

/// An OTLP/HTTP backend. Spans are posted to `<endpoint>/v1/traces`, gzip-compressed.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpExportSpec {
    /// `host:port` of the backend's OTLP/HTTP receiver, no scheme, e.g.
    /// `tempo-distributor.observability.svc:4318`; IPv6 in brackets. Port 1–65535.
    #[schemars(
        length(min = 3, max = 300),
        regex(
            pattern = r"^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
        )
    )]
    pub endpoint: String,

    /// TLS to the backend. Default: TLS verified against the collector image's system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<OtlpTlsSpec>,
}

/// TLS settings of an OTLP backend.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.insecure) && self.insecure && has(self.caConfigMap))").message("tls.insecure (plaintext) cannot be combined with tls.caConfigMap").reason(Reason::FieldValueForbidden))]
pub struct OtlpTlsSpec {
    /// Send plaintext HTTP (no TLS). Only for a backend inside a trusted network (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,

    /// ConfigMap key with the PEM CA bundle that signs the backend's certificate, in the
    /// collector's namespace (the pipeline's, unless the policy sets `collectorNamespace`). It is
    /// mounted read-only into the collector pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map: Option<KeyRef>,
}

/// A key of a ConfigMap or Secret in the collector's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRef {
    /// Object name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// Key in its data.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// CEL (at `spec.metrics.prometheus`): one workspace, named one way.
pub const ONE_WORKSPACE_RULE: &str = "has(self.workspaceArn) != has(self.workspaceAlias)";
/// The message of [`ONE_WORKSPACE_RULE`].
pub const ONE_WORKSPACE_MESSAGE: &str =
    "set exactly one of workspaceArn (an existing workspace) and workspaceAlias (a workspace mlobs creates)";

/// Amazon Managed Service for Prometheus: the selected DCGM fields, remote-written. Name the
/// workspace by ARN (one that exists) or by alias (one mlobs creates).
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(ONE_WORKSPACE_RULE).message(ONE_WORKSPACE_MESSAGE).reason(Reason::FieldValueInvalid))]
pub struct PrometheusSpec {
    /// ARN of an existing AMP workspace, `arn:aws:aps:<region>:<account>:workspace/ws-<id>`, in
    /// the pipeline's region and the operator's account. The collector remote-writes the same
    /// selected DCGM fields as CloudWatch (never the unfiltered set), signed with SigV4 (service
    /// `aps`); its role gets `aps:RemoteWrite` on this workspace only. mlobs never changes or
    /// deletes this workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = WORKSPACE_ARN_PATTERN))]
    pub workspace_arn: Option<String>,

    /// Alias of a workspace mlobs manages, in the pipeline's region: created when none of this
    /// alias carries the pipeline's ownership tags, encrypted with the pipeline's KMS key
    /// (`spec.encryption`; AWS-owned key when KMS is disabled), tagged like every resource of the
    /// pipeline. A workspace of this alias that mlobs does not own is a NameConflict unless the
    /// pipeline opts into adoption. Its ARN is recorded in `status.aws.ampWorkspaceArn`; the
    /// collector starts once it exists. Deleted with the pipeline under `deletionPolicy: Delete`
    /// (its samples with it), kept under `Retain`. 1–100 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100), regex(pattern = r"^[A-Za-z0-9][-._/A-Za-z0-9]*$"))]
    pub workspace_alias: Option<String>,
}

/// Datadog (SaaS): the selected DCGM fields, one Datadog host per GPU node.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatadogSpec {
    /// Datadog site: `datadoghq.com` (default), `us3.datadoghq.com`, `us5.datadoghq.com`,
    /// `datadoghq.eu`, `ap1.datadoghq.com`, `ddog-gov.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^([a-z0-9]+\.)?(datadoghq\.com|datadoghq\.eu|ddog-gov\.com)$")
    )]
    pub site: Option<String>,

    /// Secret key holding the Datadog API key, in the collector's namespace. The key is never
    /// written into the spec or the collector's ConfigMap: the collector reads it from an
    /// environment variable filled from this Secret. Refused unless the policy sets
    /// `destinations.allowSaaS: true`.
    pub api_key_secret_ref: KeyRef,
}

/// Policy: traces guardrails.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTracesSpec {
    /// Let pipelines export spans to AWS X-Ray (default true). X-Ray takes no resource-level
    /// permission, so each such pipeline's role gets `xray:PutTraceSegments` on `"Resource": "*"`
    /// (region-conditioned); set false to forbid that.
    #[serde(default, rename = "allowXRay", skip_serializing_if = "Option::is_none")]
    pub allow_xray: Option<bool>,
}

/// Policy: where telemetry may leave AWS.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDestinationsSpec {
    /// Let pipelines export to SaaS backends outside AWS (Datadog). Default false, also without
    /// any policy: telemetry stays in the account unless the platform team allows otherwise.
    #[serde(default, rename = "allowSaaS", skip_serializing_if = "Option::is_none")]
    pub allow_saas: Option<bool>,
}
