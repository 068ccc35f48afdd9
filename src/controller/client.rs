//! The operator's Kubernetes client: the inferred configuration (in-cluster or KUBECONFIG) with
//! a layer that counts every request, so "a no-op reconcile writes nothing" and what it reads are
//! measurable on a real cluster (`mlobs_kube_writes_total`, `mlobs_kube_reads_total`).
//!
//! The service stack is kube's own (`ClientBuilder::try_from`: base URI, retry of server errors,
//! authentication, extra and impersonation headers, connect/read/write timeouts, rustls with the
//! kubeconfig's CA, client identity and `tls-server-name`) except for three things:
//!
//! - **HTTP/2.** TLS offers `h2` before `http/1.1` (ALPN), as client-go does: every watch and
//!   request shares one connection to the API server. Over HTTP/1.1 each watch held a
//!   connection of its own and each concurrent request another; a replica creating 1,000
//!   pipelines kept up to 46 TLS connections open, each with its read and write buffers, TLS state and
//!   request queue. The connection is pinged every [`H2_KEEP_ALIVE`] and dropped when a ping is
//!   not answered within [`H2_KEEP_ALIVE_TIMEOUT`] (client-go's `ReadIdleTimeout` and
//!   `PingTimeout`: 30 s and 15 s), so that a half-open connection fails every watch at once
//!   instead of leaving them silent until the read timeout. A server that does not offer `h2`
//!   gets HTTP/1.1 as before, and so does every server when [`DISABLE_HTTP2`] is set.
//! - hyper's read buffer per HTTP/1.1 connection is capped at [`READ_BUFFER_CAP`].
//! - kube's request tracing layer (debug spans, an error line per failed request) is not there
//!   (the operator logs what fails with the object it was for).
//!
//! Through a proxy (`proxy_url` in the kubeconfig) the client is kube's stack unchanged.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Uri};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::retry::RetryPolicy;
use kube::client::{Body, ClientBuilder, ConfigExt};
use tower::retry::RetryLayer;
use tower::{BoxError, Layer, Service, ServiceBuilder};

use super::Metrics;

/// The most a connection's read buffer grows to. hyper grows it while reads fill it (to 400 KiB
/// by default) and keeps it for the connection's life: each watch whose first LIST page was big
/// held 400 KiB until its connection closed (heaptrack at 300 pipelines: 3.5 MiB of the 21 MiB in
/// use at the peak). 64 KiB still reads a 500-object page in few reads.
pub const READ_BUFFER_CAP: usize = 64 * 1024;

/// How often the HTTP/2 connection to the API server is pinged (client-go's `ReadIdleTimeout`).
pub const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// How long a ping may go unanswered before the connection is dropped and every request and
/// watch on it fails (and is retried on a new one); client-go's `PingTimeout`.
pub const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Builds the client; every write it sends is counted in `metrics`.
pub async fn counting_client(metrics: Metrics) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
    client_for(config, &CountWritesLayer(metrics))
}

/// A client for `config` with `layer` outermost, HTTP/2 offered and hyper's HTTP/1.1 read
/// buffers capped at [`READ_BUFFER_CAP`] (see the module docs).
pub fn client_for(config: kube::Config, layer: &CountWritesLayer) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return Ok(ClientBuilder::try_from(config)?.with_layer(layer).build());
    }
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one in between: then that one is used.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut connector = TimeoutConnector::new(https_connector(&config, http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http1_max_buf_size(READ_BUFFER_CAP)
            .http2_keep_alive_interval(H2_KEEP_ALIVE)
            .http2_keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(hyper);
    Ok(ClientBuilder::new(service, config.default_namespace.clone())
        .with_layer(layer)
        .build())
}

/// kube's rustls connector (`ConfigExt::rustls_https_connector_with_connector`: the
/// kubeconfig's CA, client identity and `tls-server-name`, plain `http://` servers too) with
/// `h2` offered before `http/1.1`, where kube offers `http/1.1` only.
fn https_connector(
    config: &kube::Config,
    http: HttpConnector,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, kube::Error> {
    let mut tls = config.rustls_client_config()?;
    // The builder sets ALPN itself (and asserts that it starts empty).
    tls.alpn_protocols.clear();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => {
            let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| kube::Error::Service(format!("the kubeconfig's tls-server-name {name:?}: {e}").into()))?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(server_name))
        }
        None => builder,
    };
    if http2_disabled(std::env::var_os(DISABLE_HTTP2).as_deref()) {
        return Ok(builder.enable_http1().wrap_connector(http));
    }
    Ok(builder.enable_http1().enable_http2().wrap_connector(http))
}

/// The environment variable that turns HTTP/2 off (any non-empty value), the one client-go
/// reads: for a proxy or load balancer in front of the API server that mishandles HTTP/2.
pub const DISABLE_HTTP2: &str = "DISABLE_HTTP2";

/// Whether `DISABLE_HTTP2` holds a value (client-go: set and not empty).
fn http2_disabled(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}

/// Tower layer of [`CountWrites`].
#[derive(Clone)]
pub struct CountWritesLayer(pub Metrics);

impl<S> Layer<S> for CountWritesLayer {
    type Service = CountWrites<S>;
    fn layer(&self, inner: S) -> CountWrites<S> {
        CountWrites {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// Counts write requests (by resource and verb) before passing them on.
#[derive(Clone)]
pub struct CountWrites<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B> Service<Request<B>> for CountWrites<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some((resource, verb)) = write_of(req.method(), req.uri()) {
            self.metrics.kube_write(&resource, verb);
        } else if let Some((resource, verb)) = read_of(req.method(), req.uri()) {
            self.metrics.kube_read(&resource, verb);
        }
        self.inner.call(req)
    }
}

/// The resource (`plural` or `plural/subresource`) and verb of a read request (`get`, `list`,
/// `watch`, or `dry-run` for a dry-run write); `None` for writes.
pub fn read_of(method: &Method, uri: &Uri) -> Option<(String, &'static str)> {
    let query = |key: &str| uri.query().is_some_and(|q| q.split('&').any(|kv| kv == key));
    let (resource, named) = resource_of(uri);
    let verb = match *method {
        Method::GET if query("watch=true") || query("watch=1") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        _ if query("dryRun=All") => "dry-run",
        _ => return None,
    };
    Some((resource, verb))
}

/// The resource (`plural` or `plural/subresource`) and verb of a write request; `None` for reads
/// and dry runs.
pub fn write_of(method: &Method, uri: &Uri) -> Option<(String, &'static str)> {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return None,
    };
    if uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "dryRun=All")) {
        return None;
    }
    Some((resource_of(uri).0, verb))
}

/// The resource (`plural` or `plural/subresource`) a request path names, and whether it names one
/// object.
fn resource_of(uri: &Uri) -> (String, bool) {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let mut rest = match segs.as_slice() {
        ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => rest,
        _ => return ("unknown".into(), false),
    };
    // namespaces/<ns>/<plural>/... is namespaced; namespaces/<ns> alone is the Namespace itself.
    if let ["namespaces", _ns, _plural, ..] = rest {
        rest = &rest[2..];
    }
    match rest {
        [plural, _name, sub, ..] => (format!("{plural}/{sub}"), true),
        [plural, _name] => ((*plural).to_string(), true),
        [plural] => ((*plural).to_string(), false),
        [] => ("unknown".to_string(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_http2_is_any_non_empty_value_as_in_client_go() {
        use std::ffi::OsStr;
        assert!(!http2_disabled(None));
        assert!(!http2_disabled(Some(OsStr::new(""))));
        assert!(http2_disabled(Some(OsStr::new("true"))));
        assert!(http2_disabled(Some(OsStr::new("0"))));
    }

    fn w(method: Method, uri: &str) -> Option<(String, &'static str)> {
        write_of(&method, &uri.parse().expect("uri"))
    }

    #[test]
    fn writes_are_named_by_resource_and_verb() {
        assert_eq!(
            w(
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/daemonsets/x?fieldManager=mlobs&force=true"
            ),
            Some(("daemonsets".into(), "patch"))
        );
        assert_eq!(
            w(
                Method::PATCH,
                "/apis/mlobs.io/v1alpha1/namespaces/a/mlobservabilitypipelines/p/status"
            ),
            Some(("mlobservabilitypipelines/status".into(), "patch"))
        );
        assert_eq!(
            w(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events"),
            Some(("events".into(), "create"))
        );
        assert_eq!(
            w(Method::DELETE, "/apis/rbac.authorization.k8s.io/v1/clusterroles/r"),
            Some(("clusterroles".into(), "delete"))
        );
        assert_eq!(
            w(Method::PUT, "/api/v1/namespaces/a"),
            Some(("namespaces".into(), "update"))
        );
    }

    #[test]
    fn reads_are_named_by_resource_and_verb() {
        let r = |method: Method, uri: &str| read_of(&method, &uri.parse().expect("uri"));
        assert_eq!(
            r(Method::GET, "/api/v1/namespaces/a/configmaps/x"),
            Some(("configmaps".into(), "get"))
        );
        assert_eq!(
            r(Method::GET, "/apis/apps/v1/daemonsets?labelSelector=a%3Db"),
            Some(("daemonsets".into(), "list"))
        );
        assert_eq!(
            r(Method::GET, "/api/v1/nodes?watch=true&resourceVersion=5"),
            Some(("nodes".into(), "watch"))
        );
        assert_eq!(
            r(Method::GET, "/api/v1/namespaces/a"),
            Some(("namespaces".into(), "get"))
        );
        assert_eq!(
            r(Method::PATCH, "/api/v1/namespaces/a/configmaps/x?dryRun=All"),
            Some(("configmaps".into(), "dry-run"))
        );
        assert_eq!(r(Method::PATCH, "/api/v1/namespaces/a/configmaps/x"), None, "a write");
    }

    #[test]
    fn reads_and_dry_runs_are_not_writes() {
        assert_eq!(w(Method::GET, "/api/v1/namespaces/a/configmaps/x"), None);
        assert_eq!(
            w(
                Method::PATCH,
                "/api/v1/namespaces/a/configmaps/x?dryRun=All&fieldManager=mlobs"
            ),
            None
        );
    }
}
