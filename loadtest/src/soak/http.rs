//! A minimal HTTP/1.0 client (loopback /metrics and admin API; no TLS).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{is_watched, parse_metrics};

/// `ws://host:port/...` → `http://host:port`.
pub fn http_base(ws_url: &str) -> Option<String> {
    let rest = ws_url.strip_prefix("ws://")?;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| format!("http://{host}"))
}

pub(super) async fn http(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let io = async {
        let mut s = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| format!("connect {host}: {e}"))?;
        let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
        if let Some(b) = bearer {
            req.push_str(&format!("Authorization: Bearer {b}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| format!("{method} {url}: timeout"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {url}: no header end"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {url}: bad status line"))?;
    Ok((status, body.to_owned()))
}

pub(super) type ScrapeTask = tokio::task::JoinHandle<Result<BTreeMap<String, f64>, String>>;

/// The watched samples of the server's /metrics.
pub(super) async fn scrape(url: Option<String>) -> Result<BTreeMap<String, f64>, String> {
    let url = url.ok_or_else(|| "no metrics URL".to_string())?;
    match http("GET", &url, None, None).await? {
        (200, body) => Ok(parse_metrics(&body)
            .into_iter()
            .filter(|(k, _)| is_watched(k))
            .collect()),
        (s, _) => Err(format!("HTTP {s}")),
    }
}
