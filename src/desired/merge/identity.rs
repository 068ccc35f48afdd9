//! The pipeline's AWS security: the KMS key of its log groups (`spec.encryption.kms`) and the
//! collector's identity (`spec.identity`).

use super::Merger;
use super::placement::Placement;
use crate::conventions::bounded_name;
use crate::crd::{IdentityMode, MLObservabilityPipelineSpec};
use crate::desired::effective::{EffIdentity, EffKms, EffRole};
use crate::desired::sources::{IdentitySources, Source, Sourced};

fn is_alias_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-')
}

fn is_role_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '=' | ',' | '.' | '@' | '_' | '-')
}

/// The key as a whole takes the strongest source among its settings.
pub(super) fn kms(m: &mut Merger<'_>, spec: &MLObservabilityPipelineSpec, at: &Placement) -> Sourced<EffKms> {
    let kms_spec = spec.encryption.as_ref().and_then(|e| e.kms.as_ref());
    let require_kms = (m.policy_spec().and_then(|p| p.logs.as_ref()))
        .and_then(|l| l.require_kms)
        .unwrap_or(false);
    match kms_spec {
        Some(k) if k.key_arn.is_some() => Sourced::new(
            EffKms::Existing {
                key_arn: k.key_arn.clone().unwrap_or_default(),
            },
            Source::Pipeline,
        ),
        Some(k) if k.disabled == Some(true) => {
            if require_kms {
                m.violate(
                    "spec.encryption.kms.disabled",
                    "logs.requireKms",
                    "the policy requires a customer-managed KMS key for log groups",
                );
            }
            Sourced::new(EffKms::Disabled, Source::Pipeline)
        }
        _ => {
            let create = kms_spec.and_then(|k| k.create.as_ref());
            let derived_alias = bounded_name(
                &format!("alias/mlobs/{}/{}/{}", at.cluster_name.value, at.namespace, at.name),
                256,
                is_alias_char,
            );
            let alias = Sourced::pipeline_or(create.and_then(|c| c.alias.clone()), derived_alias);
            let rotation = Sourced::pipeline_or(create.and_then(|c| c.rotation), true);
            let window = Sourced::pipeline_or(create.and_then(|c| c.deletion_window_in_days), 30);
            let source = alias.source.max(rotation.source).max(window.source);
            let key = EffKms::Create {
                alias: alias.value,
                rotation: rotation.value,
                deletion_window_days: window.value,
            };
            Sourced::new(key, source)
        }
    }
}

/// An existing role, else the pipeline's role name, else one derived from cluster and pipeline.
fn role(spec: &MLObservabilityPipelineSpec, at: &Placement) -> Sourced<EffRole> {
    let id = spec.identity.as_ref();
    if let Some(arn) = id.and_then(|i| i.existing_role_arn.clone()) {
        return Sourced::new(EffRole::Existing { arn }, Source::Pipeline);
    }
    if let Some(name) = id.and_then(|i| i.role_name.clone()) {
        return Sourced::new(EffRole::Create { name }, Source::Pipeline);
    }
    let derived = bounded_name(
        &format!("mlobs-{}-{}-{}", at.cluster_name.value, at.namespace, at.name),
        64,
        is_role_char,
    );
    Sourced::new(EffRole::Create { name: derived }, Source::Derived)
}

/// A created role carries the pipeline's boundary, else the policy's, which is also required.
fn permissions_boundary(
    m: &mut Merger<'_>,
    spec: &MLObservabilityPipelineSpec,
    role: &EffRole,
) -> Sourced<Option<String>> {
    if let EffRole::Existing { .. } = role {
        // Not ours to change: the boundary of an existing role is whatever it has.
        return Sourced::new(None, Source::Derived);
    }
    let own = spec.identity.as_ref().and_then(|i| i.permissions_boundary_arn.clone());
    let required = (m.policy_spec().and_then(|p| p.identity.as_ref())).and_then(|i| i.permissions_boundary_arn.clone());
    let chosen = Sourced::pick(own.map(Some), required.clone().map(Some), None);
    if let (Some(required), Some(chosen)) = (&required, &chosen.value)
        && required != chosen
    {
        m.violate(
            "spec.identity.permissionsBoundaryArn",
            "identity.permissionsBoundaryArn",
            format!("collector roles must carry the boundary {required}"),
        );
    }
    chosen
}

pub(super) fn identity(
    m: &mut Merger<'_>,
    spec: &MLObservabilityPipelineSpec,
    at: &Placement,
) -> (EffIdentity, IdentitySources) {
    let id = spec.identity.as_ref();
    let allowed_modes = (m.policy_spec().and_then(|p| p.identity.as_ref())).and_then(|i| i.allowed_modes.clone());
    let mode = Sourced::pick(
        id.and_then(|i| i.mode),
        allowed_modes.as_ref().and_then(|a| a.first().copied()),
        IdentityMode::Irsa,
    );
    if let Some(allowed) = &allowed_modes
        && !allowed.contains(&mode.value)
    {
        m.violate(
            "spec.identity.mode",
            "identity.allowedModes",
            format!("{} is not an allowed identity mode", mode.value.as_str()),
        );
    }
    let role = role(spec, at);
    let oidc_provider_arn = id.and_then(|i| i.oidc_provider_arn.clone());
    let creates_role = matches!(role.value, EffRole::Create { .. });
    if mode.value == IdentityMode::Irsa && oidc_provider_arn.is_none() && creates_role {
        m.error(
            "spec.identity.oidcProviderArn",
            "required",
            "IRSA needs the cluster's OIDC provider ARN to write the role's trust policy",
        );
    }
    let boundary = permissions_boundary(m, spec, &role.value);
    let sources = IdentitySources {
        mode: mode.source,
        role: role.source,
        permissions_boundary_arn: boundary.source,
    };
    let collector_elsewhere = at.collector_namespace.value != at.namespace;
    let effective = EffIdentity {
        mode: mode.value,
        oidc_provider_arn,
        role: role.value,
        permissions_boundary_arn: boundary.value,
        source_vpc: id.and_then(|i| i.source_vpc.clone()),
        service_account: crate::conventions::service_account_name(&at.namespace, &at.name, collector_elsewhere),
    };
    (effective, sources)
}
