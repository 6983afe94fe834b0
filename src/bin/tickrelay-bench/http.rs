//! Just enough HTTP/1.1 for the harness: socket write/read helpers on tokio's readiness API, the
//! head of a request or response, and a one-shot `GET` for the daemon's probes.
//!
//! tokio's `io-util` feature is not among the project's features, so everything here uses
//! `readable()`/`try_read` and `writable()`/`try_write`.

use std::io;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::net::TcpStream;

/// The largest request or response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The largest probe response body accepted (the status of 10,000 sessions is a few MB).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Writes all of `data`, waiting for the socket whenever its buffer is full.
pub async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads into `buf` once the socket is readable; `Ok(0)` when the peer closed.
async fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// A request or response head: its first line and headers.
#[derive(Debug)]
pub struct Head {
    pub first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(text: &str) -> Head {
        let mut lines = text.split("\r\n");
        let first_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Head {
            first_line,
            headers,
        }
    }

    /// A header's value (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The status code of a response head.
    pub fn status(&self) -> Option<u16> {
        self.first_line.split_whitespace().nth(1)?.parse().ok()
    }
}

/// Reads up to the blank line ending a head; returns it and whatever followed it.
pub async fn read_head(stream: &TcpStream) -> anyhow::Result<(Head, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = Head::parse(&String::from_utf8_lossy(&buf[..end]));
            return Ok((head, buf[end + 4..].to_vec()));
        }
        if buf.len() > MAX_HEAD {
            bail!("HTTP head larger than {MAX_HEAD} bytes");
        }
        if read_some(stream, &mut buf).await? == 0 {
            bail!("connection closed during the HTTP head");
        }
    }
}

/// The first position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `GET path` on `addr` (host:port) with `Connection: close`: the status and body.
pub async fn get(addr: &str, path: &str, timeout: Duration) -> anyhow::Result<(u16, String)> {
    request(addr, "GET", path, None, timeout).await
}

/// `POST path` with a JSON body: the status and body.
pub async fn post_json(
    addr: &str,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    request(addr, "POST", path, Some(body.to_string()), timeout).await
}

async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<String>,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(timeout, request_inner(addr, method, path, body))
        .await
        .with_context(|| format!("{method} http://{addr}{path} took longer than {timeout:?}"))?
        .with_context(|| format!("{method} http://{addr}{path}"))
}

async fn request_inner(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let stream = TcpStream::connect(addr).await?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    match &body {
        Some(b) => request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => request.push_str("\r\n"),
    }
    write_all(&stream, request.as_bytes()).await?;
    let (head, mut body) = read_head(&stream).await?;
    let status = head
        .status()
        .with_context(|| format!("not an HTTP response: {:?}", head.first_line))?;
    let length: Option<usize> = head.header("content-length").and_then(|v| v.parse().ok());
    while length.is_none_or(|len| body.len() < len) {
        if body.len() > MAX_BODY {
            bail!("response body larger than {MAX_BODY} bytes");
        }
        if read_some(&stream, &mut body).await? == 0 {
            break;
        }
    }
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).context("malformed chunked body")?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_case_insensitively() {
        let head = Head::parse(
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc\r\nupgrade: websocket",
        );
        assert_eq!(head.status(), Some(101));
        assert_eq!(head.header("sec-websocket-accept"), Some("abc"));
        assert_eq!(head.header("Upgrade"), Some("websocket"));
        assert_eq!(head.header("missing"), None);
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n6;x=y\r\npedia \r\n0\r\n\r\n").as_deref(),
            Some(&b"Wikipedia "[..])
        );
        assert_eq!(dechunk(b"zz\r\n"), None);
    }
}
