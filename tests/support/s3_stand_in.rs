//! An S3 stand-in on 127.0.0.1 for the archive's data-flow tests: records every request the
//! collector's `awss3` exporter sends, and either answers 200 itself or forwards to moto.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// One recorded request: the request line and the headers, names lowercased.
pub type Recorded = (String, Vec<(String, String)>);

/// One request read off `reader`: its line, headers (names lowercased) and body.
/// A request: its line, its headers (names lowercased) and its body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = vec![];
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim().split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((line.trim().to_string(), headers, body))
}

/// An S3 stand-in on 127.0.0.1 that records every request. Without `upstream` it answers 200;
/// with one (moto) it forwards the request there, one connection per request, and relays the
/// answer. Forwarding applies S3's documented rule for a PUT into a bucket with a default
/// retention, "Content-MD5 OR x-amz-checksum- HTTP header is required", which moto narrows to
/// `Content-MD5` or `x-amz-sdk-checksum-algorithm`: a request carrying `x-amz-checksum-crc32`
/// gets `x-amz-sdk-checksum-algorithm: CRC32` added, and nothing else changes.
pub fn s3_stand_in(upstream: Option<String>) -> (u16, Arc<Mutex<Vec<Recorded>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().map(|a| a.port()).expect("port");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let Some((line, headers, body)) = read_request(&mut reader) else {
                continue;
            };
            if let Ok(mut all) = out.lock() {
                all.push((line.clone(), headers.clone()));
            }
            let mut client = reader.into_inner();
            let answer = match &upstream {
                None => b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
                Some(addr) => forward(addr, &line, &headers, &body).unwrap_or_else(|e| {
                    format!(
                        "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{e}",
                        e.len()
                    )
                    .into_bytes()
                }),
            };
            let _ = client.write_all(&answer);
        }
    });
    (port, seen)
}

/// The request to `addr` with S3's checksum rule applied (see [`s3_stand_in`]); the raw answer.
fn forward(addr: &str, line: &str, headers: &[(String, String)], body: &[u8]) -> Result<Vec<u8>, String> {
    let has = |k: &str| headers.iter().any(|(n, _)| n == k);
    let mut head = format!("{line}\r\n");
    for (k, v) in headers.iter().filter(|(k, _)| k != "connection") {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if has("x-amz-checksum-crc32") && !has("x-amz-sdk-checksum-algorithm") {
        head.push_str("x-amz-sdk-checksum-algorithm: CRC32\r\n");
    }
    head.push_str("connection: close\r\n\r\n");
    let mut up = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    up.write_all(head.as_bytes())
        .and_then(|()| up.write_all(body))
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = vec![];
    up.read_to_end(&mut answer).map_err(|e| format!("read: {e}"))?;
    Ok(answer)
}
