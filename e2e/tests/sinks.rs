//! Backends the collector sends to, served on 127.0.0.1 and read back by the data-flow tests: an
//! HTTP sink that records every request (an OTLP/HTTP traces backend, a Prometheus remote-write
//! endpoint), and the decoders of what arrives (gzip OTLP protobuf, snappy remote write).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    /// The body, gunzipped when `Content-Encoding: gzip`.
    pub fn decoded(&self) -> Result<Vec<u8>> {
        if self.headers.get("content-encoding").map(String::as_str) != Some("gzip") {
            return Ok(self.body.clone());
        }
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(self.body.as_slice())
            .read_to_end(&mut out)
            .context("gunzip")?;
        Ok(out)
    }
}

/// Records every request and answers `200 OK` with an empty body (a valid, empty OTLP export
/// response; remote write wants any 2xx).
pub struct Sink {
    pub addr: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the sink")?;
        let addr = listener.local_addr()?.to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    if let Ok(r) = one_request(s).await {
                        store.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                    }
                });
            }
        });
        Ok(Sink { addr, received, task })
    }

    /// The requests to `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Received> {
        let all = self.received.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter(|r| r.path == path).cloned().collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (Content-Length or chunked body), answers 200 and closes.
async fn one_request(mut s: TcpStream) -> Result<Received> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).await?;
        ensure!(n > 0, "connection closed before the headers ended");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .context("request line")?
        .to_string();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = got[head_end..].to_vec();
    loop {
        let complete = if chunked {
            body.windows(5).any(|w| w == b"0\r\n\r\n")
        } else {
            body.len() >= length
        };
        if complete {
            break;
        }
        let n = s.read(&mut buf).await?;
        ensure!(n > 0, "connection closed before the body ended");
        body.extend_from_slice(&buf[..n]);
    }
    if chunked {
        body = dechunk(&body)?;
    }
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await?;
    let _ = s.shutdown().await;
    Ok(Received { path, headers, body })
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = body.windows(2).position(|w| w == b"\r\n").context("chunk size line")?;
        let size = String::from_utf8_lossy(&body[..i]).to_string();
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("chunk size {size:?}"))?;
        if n == 0 {
            return Ok(out);
        }
        let rest = &body[i + 2..];
        ensure!(rest.len() >= n + 2, "truncated chunk");
        out.extend_from_slice(&rest[..n]);
        body = &rest[n + 2..];
    }
}

/// POSTs a JSON body; returns the status code.
pub async fn post_json(addr: &str, path: &str, body: &serde_json::Value) -> Result<u16> {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status in {text:?}"))
}

// Prometheus remote write 1.0 (prompb), only the fields the test reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// A remote-write body: snappy (block format) over a protobuf WriteRequest.
pub fn remote_write(body: &[u8]) -> Result<WriteRequest> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .context("snappy-decoding a remote write body")?;
    <WriteRequest as prost::Message>::decode(raw.as_slice()).context("decoding a WriteRequest")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_write_body_round_trips() {
        let w = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "DCGM_FI_DEV_GPU_UTIL".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 2,
                }],
            }],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&prost::Message::encode_to_vec(&w))
            .expect("snappy");
        assert_eq!(remote_write(&body).ok(), Some(w));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").ok(),
            Some(b"abcde".to_vec())
        );
    }
}
