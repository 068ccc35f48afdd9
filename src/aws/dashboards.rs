//! The CloudWatch dashboard: PutDashboard when absent or (under `Correct`) when its body was
//! changed outside mlobs; GetDashboard observes it; DeleteDashboards under `deletionPolicy:
//! Delete`. Dashboards carry no tags: the name (`mlobs-<cluster>-<namespace>-<pipeline>`, which
//! only mlobs derives) is the ownership, and the operator's IAM policy covers `dashboard/mlobs-*`.

use serde_json::Value;

use super::error::{classify, code};
use super::{AwsClients, AwsError, Drift};
use crate::crd::{DeletionPolicy, DriftPolicy};
use crate::desired::aws_plan::DashboardPlan;

fn resource(name: &str) -> String {
    format!("dashboard:{name}")
}

fn absent<E: aws_sdk_cloudwatch::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_cloudwatch::error::SdkError<E, R>,
) -> bool {
    matches!(
        code(e),
        Some("ResourceNotFound" | "ResourceNotFoundException" | "DashboardNotFoundError")
    )
}

/// The dashboard's body as CloudWatch has it, or None when it does not exist.
pub async fn observe(c: &AwsClients, name: &str) -> Result<Option<Value>, AwsError> {
    match c.cloudwatch.get_dashboard().dashboard_name(name).send().await {
        Ok(o) => Ok(Some(
            o.dashboard_body
                .and_then(|b| serde_json::from_str(&b).ok())
                .unwrap_or(Value::Null),
        )),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(classify("GetDashboard", &resource(name), e)),
    }
}

async fn put(c: &AwsClients, plan: &DashboardPlan) -> Result<(), AwsError> {
    let sent = (c.cloudwatch.put_dashboard().dashboard_name(&plan.name))
        .dashboard_body(plan.body.to_string())
        .send()
        .await;
    sent.map(drop)
        .map_err(|e| classify("PutDashboard", &resource(&plan.name), e))
}

/// Ensures the dashboard; returns the drift found.
pub async fn ensure(c: &AwsClients, plan: &DashboardPlan, drift: DriftPolicy) -> Result<Vec<Drift>, AwsError> {
    let Some(actual) = observe(c, &plan.name).await? else {
        put(c, plan).await?;
        return Ok(vec![]);
    };
    if crate::desired::canonical_json(actual.clone()) == plan.body {
        return Ok(vec![]);
    }
    let correct = drift == DriftPolicy::Correct;
    if correct {
        put(c, plan).await?;
    }
    let d = Drift::found(
        &resource(&plan.name),
        "dashboardBody",
        "as rendered".into(),
        "changed outside mlobs".into(),
    );
    Ok(vec![Drift {
        corrected: correct,
        ..d
    }])
}

/// Deletes the dashboard under `Delete`; NotFound is success.
pub async fn delete(c: &AwsClients, plan: &DashboardPlan, policy: DeletionPolicy) -> Result<(), AwsError> {
    if policy == DeletionPolicy::Retain {
        return Ok(());
    }
    delete_named(c, &plan.name).await
}

/// Deletes the dashboard of this name, one mlobs created (its name is recorded in status);
/// NotFound is success.
pub async fn delete_named(c: &AwsClients, name: &str) -> Result<(), AwsError> {
    if observe(c, name).await?.is_none() {
        return Ok(());
    }
    let sent = c.cloudwatch.delete_dashboards().dashboard_names(name).send().await;
    match sent {
        Ok(_) => Ok(()),
        Err(e) if absent(&e) => Ok(()),
        Err(e) => Err(classify("DeleteDashboards", &resource(name), e)),
    }
}
