//! The operator as installed: the chart's objects on the server, and the replicas running with
//! the chart's ServiceAccount (least privilege), not the admin kubeconfig.

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Config, ResourceExt};
use mlobs::crd::MLObservabilityPipeline;

use crate::support::*;

const SA_USER: &str = "system:serviceaccount:mlobs-system:mlobs-operator";

#[tokio::test]
async fn operator_runs_as_its_service_account() -> Result<()> {
    let path = env("MLOBS_E2E_OPERATOR_KUBECONFIG")?;
    // The replicas were started with exactly this kubeconfig.
    for r in replicas()? {
        let kc = r.env.iter().find(|(k, _)| k == "KUBECONFIG").map(|(_, v)| v.as_str());
        ensure!(
            kc == Some(path.as_str()),
            "replica {} runs with KUBECONFIG {kc:?}",
            r.identity
        );
    }
    let c = client_from(&path).await?;
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}
    }))?;
    let review = Api::<SelfSubjectReview>::all(c.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("SelfSubjectReview with the operator's kubeconfig")?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    println!("the operator's kubeconfig authenticates as {user}");
    ensure!(user == SA_USER, "the operator authenticates as {user:?}, not {SA_USER}");

    // What it may do, and what it may not.
    Api::<MLObservabilityPipeline>::all(c.clone())
        .list(&ListParams::default().limit(1))
        .await
        .context("the operator may list pipelines")?;
    for ns in [OPERATOR_NAMESPACE, "default"] {
        match Api::<Secret>::namespaced(c.clone(), ns)
            .list(&ListParams::default().limit(1))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Ok(_) => bail!("the operator's ServiceAccount may list Secrets in {ns}"),
            Err(e) => bail!("listing Secrets in {ns}: expected 403, got {e}"),
        }
    }
    match Api::<ClusterRoleBinding>::all(c.clone())
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "e2e-escalate"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": "mlobs-operator", "namespace": OPERATOR_NAMESPACE}]
            }))?,
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        Ok(_) => bail!("the operator's ServiceAccount may bind cluster-admin"),
        Err(e) => bail!("binding cluster-admin: expected 403, got {e}"),
    }
    Ok(())
}

/// The replicas speak HTTP/2 to the API server (ALPN `h2`, as client-go does): every watch and
/// request of a replica shares one TCP connection. Over HTTP/1.1 the leader held one connection
/// per open watch (more than ten) plus one per concurrent request.
#[tokio::test]
async fn replicas_share_one_connection_to_the_api_server() -> Result<()> {
    let path = env("MLOBS_E2E_OPERATOR_KUBECONFIG")?;
    let kc = Kubeconfig::read_from(&path).with_context(|| format!("reading kubeconfig {path}"))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let port = config.cluster_url.port_u16().unwrap_or(443);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut seen = Vec::new();
        for r in replicas()?.into_iter().filter(Replica::alive) {
            let connections = tcp_connections_to(r.pid, port)?;
            let metrics = r.metrics().await.unwrap_or_default();
            let watches = metric_sum(&metrics, "mlobs_kube_reads_total", &[("verb", "watch")], &[]).unwrap_or(0.0);
            seen.push((r.identity, connections, watches));
        }
        ensure!(!seen.is_empty(), "no operator replica runs");
        // A watch request is counted when it starts: the leader has started its watches.
        let leader_watching = seen.iter().any(|(_, _, w)| *w >= 5.0);
        // Two: a connection replaced after a failed ping, for a moment, beside the old one.
        if leader_watching && seen.iter().all(|(_, n, _)| (1..=2).contains(n)) {
            println!("connections to the API server (port {port}) per replica, with the watches it started: {seen:?}");
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "connections to the API server (port {port}) per replica, with the watches it started: {seen:?}; HTTP/2 keeps one per replica"
            );
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn chart_objects_exist_on_the_server() -> Result<()> {
    let c = client().await?;
    let ns = OPERATOR_NAMESPACE;
    let name = "mlobs-operator";
    ensure!(
        exists(&Api::<ServiceAccount>::namespaced(c.clone(), ns), name).await?,
        "ServiceAccount {ns}/{name}"
    );
    ensure!(
        exists(&Api::<ClusterRole>::all(c.clone()), name).await?,
        "ClusterRole {name}"
    );
    ensure!(
        exists(&Api::<ClusterRoleBinding>::all(c.clone()), name).await?,
        "ClusterRoleBinding {name}"
    );
    let role = format!("{name}-leader-election");
    ensure!(
        exists(&Api::<Role>::namespaced(c.clone(), ns), &role).await?,
        "Role {ns}/{role}"
    );
    let rbs = Api::<RoleBinding>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await?;
    ensure!(
        rbs.items
            .iter()
            .any(|rb| rb.role_ref.kind == "Role" && rb.role_ref.name == role),
        "no RoleBinding in {ns} binds Role {role}"
    );
    let crbs = Api::<ClusterRoleBinding>::all(c.clone()).get(name).await?;
    let subjects = crbs.subjects.unwrap_or_default();
    ensure!(
        subjects
            .iter()
            .any(|s| s.kind == "ServiceAccount" && s.name == name && s.namespace.as_deref() == Some(ns)),
        "ClusterRoleBinding {name} does not bind the ServiceAccount: {subjects:?}"
    );

    let deploy = Api::<Deployment>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .context("Deployment")?;
    let replicas = deploy.spec.as_ref().and_then(|s| s.replicas);
    ensure!(
        replicas == Some(2),
        "Deployment {ns}/{name} has replicas {replicas:?}, expected 2"
    );
    // kwok reports the Deployment's Pods Running (nothing runs them: the operator under test is the
    // local processes).
    let pods = Api::<Pod>::namespaced(c.clone(), ns);
    let pods = &pods;
    wait_for("2 Running pods of the chart's Deployment", READY_TIMEOUT, async || {
        let list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=mlobs-operator"))
            .await?;
        let running: Vec<String> = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .map(|p| p.name_any())
            .collect();
        ensure!(running.len() == 2, "Running: {running:?}");
        Ok(())
    })
    .await?;
    Ok(())
}
