//! The operator's Kubernetes client keeps at most `READ_BUFFER_CAP` of read buffer per connection
//! after big responses (hyper's default grows each connection's buffer to 400 KiB and keeps it).
//!
//! A local HTTP/1.1 server answers six concurrent LISTs, first with small bodies (six pooled
//! connections), then with 2 MiB bodies on the same connections. The heap this test binary holds
//! (a counting global allocator) after the big round, with every response dropped, is what the
//! idle pooled connections keep.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use mlobs::controller::Metrics;
use mlobs::controller::client::{CountWritesLayer, READ_BUFFER_CAP, client_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

const CONNECTIONS: usize = 6;
const BIG: usize = 2 << 20;

/// The size of the `data.x` value the server sends next.
static VALUE_SIZE: AtomicUsize = AtomicUsize::new(16);

fn list_body() -> Vec<u8> {
    let value = "a".repeat(VALUE_SIZE.load(Ordering::Relaxed));
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMapList", "metadata": {"resourceVersion": "1"},
        "items": [{"metadata": {"name": "big", "namespace": "a"}, "data": {"x": value}}]
    }))
    .expect("json")
}

/// Answers every request on `listener`'s connections with a ConfigMapList after 300 ms (so that
/// concurrent requests need concurrent connections), keeping each connection open.
async fn serve(listener: TcpListener) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut have = Vec::new();
            loop {
                let Ok(n) = conn.read(&mut buf).await else { return };
                if n == 0 {
                    return;
                }
                have.extend_from_slice(&buf[..n]);
                let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                have.drain(..end + 4);
                tokio::time::sleep(Duration::from_millis(300)).await;
                let body = list_body();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if conn.write_all(head.as_bytes()).await.is_err() || conn.write_all(&body).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn round(api: &Api<ConfigMap>) {
    let params = kube::api::ListParams::default();
    let lists = (0..CONNECTIONS).map(|_| api.list(&params));
    for r in futures::future::join_all(lists).await {
        let list = r.expect("list");
        assert_eq!(list.items.len(), 1);
    }
}

#[tokio::test]
async fn idle_connections_keep_at_most_the_capped_read_buffer_after_big_lists() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(serve(listener));
    let config = kube::Config::new(url.parse().expect("url"));
    let client = client_for(config, &CountWritesLayer(Metrics::new(None))).expect("client");
    let api: Api<ConfigMap> = Api::all(client);

    round(&api).await;
    let before = counting_alloc::in_use();
    VALUE_SIZE.store(BIG, Ordering::Relaxed);
    round(&api).await;
    let kept = counting_alloc::in_use() - before;

    // hyper's default would keep about 400 KiB per connection (2.4 MiB); the cap keeps 64 KiB
    // each, and the rest (pool and body bookkeeping) is a few KiB.
    let most = (CONNECTIONS * READ_BUFFER_CAP * 3 / 2) as isize;
    assert!(
        kept <= most,
        "the {CONNECTIONS} idle connections keep {kept} bytes after the 2 MiB lists, more than {most}"
    );
}
