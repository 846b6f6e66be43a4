//! Asking a running gateway's admin listener: whether it is ready (`portcullis
//! healthcheck`, which container images without curl run as their health check; ours has
//! no shell either), and for one decision (`portcullis why`).
//!
//! Plain blocking std I/O: one short exchange, bounded by a deadline, needs no runtime.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

use crate::admin::{DECISIONS_PATH, READY_PATH};

/// The most of an answer read: anything longer is cut. `/readyz` answers a line, a
/// decision a line of a few KiB.
const MAX_ANSWER: u64 = 1024 * 1024;

/// Asks `GET /readyz` of the admin listener at `admin` (`host:port`), giving up after
/// `timeout`. Ok with the answer's text when it is `200`; otherwise an error that says
/// what was asked and what came back (or did not).
pub fn ready(admin: &str, timeout: Duration) -> Result<String, String> {
    let (url, status, body) = get(admin, READY_PATH, timeout)?;
    if status == 200 {
        Ok(body)
    } else {
        Err(format!("{url} answered {status}: {body}"))
    }
}

/// Asks `GET /decisions/{request_id}`: Ok with the decision-log line (JSON), or an error
/// that says why there is none.
pub fn decision(admin: &str, request_id: &str, timeout: Duration) -> Result<String, String> {
    let escaped: String = request_id
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(byte).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect();
    let (url, status, body) = get(admin, &format!("{DECISIONS_PATH}/{escaped}"), timeout)?;
    match status {
        200 => Ok(body),
        _ => {
            // The admin listener says why in JSON; anything else is shown as it came.
            let error = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|answer| answer["error"].as_str().map(str::to_owned))
                .unwrap_or(body);
            Err(format!("{url} answered {status}: {error}"))
        }
    }
}

/// `GET path` of the admin listener at `admin`: the URL asked, the status and the body.
fn get(admin: &str, path: &str, timeout: Duration) -> Result<(String, u16, String), String> {
    let deadline = Instant::now() + timeout;
    let (addr, mut stream) = connect(admin, path, deadline, timeout)?;
    let url = format!("http://{addr}{path}");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: portcullis\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(remaining(deadline, &url, timeout)?))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(|err| format!("cannot ask {url}: {err}"))?;

    // Read until the server closes (it was asked to), the answer is too long, or the
    // deadline passes: a listener that accepts and never answers cannot hang the check.
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while (answer.len() as u64) < MAX_ANSWER {
        stream
            .set_read_timeout(Some(remaining(deadline, &url, timeout)?))
            .map_err(|err| format!("cannot read the answer of {url}: {err}"))?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(no_answer(&url, timeout));
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("cannot read the answer of {url}: {err}")),
        }
    }
    let (status, body) = parse(&answer).ok_or_else(|| {
        format!(
            "{url} did not answer with HTTP: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        )
    })?;
    Ok((url, status, body))
}

/// Connects to the first address `admin` names that accepts (`localhost` may name `::1`
/// before `127.0.0.1`, and the admin listener may listen on only one of them).
fn connect(
    admin: &str,
    path: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(SocketAddr, TcpStream), String> {
    let addrs = resolve(admin)?;
    let mut failures = Vec::new();
    for addr in addrs {
        let left = remaining(deadline, &format!("http://{addr}{path}"), timeout)?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok((addr, stream)),
            Err(err) => failures.push(format!("{addr}: {err}")),
        }
    }
    Err(format!(
        "cannot connect to the admin listener at {}",
        failures.join("; ")
    ))
}

/// The addresses to ask, in resolver order. An unspecified address (`0.0.0.0:9090`, as a
/// config that listens on every interface names it) is asked on loopback, where it also
/// listens.
fn resolve(admin: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = admin
        .to_socket_addrs()
        .map_err(|err| format!("\"{admin}\" is not a host:port address: {err}"))?
        .map(|mut addr| {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            addr
        })
        .collect();
    if addrs.is_empty() {
        return Err(format!("\"{admin}\" names no address"));
    }
    Ok(addrs)
}

/// The time left before `deadline`, or the error that says it passed.
fn remaining(deadline: Instant, url: &str, timeout: Duration) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|left| !left.is_zero())
        .ok_or_else(|| no_answer(url, timeout))
}

fn no_answer(url: &str, timeout: Duration) -> String {
    format!(
        "{url} did not answer within {}",
        crate::config::format_duration(timeout)
    )
}

/// The status code and the body's text (trimmed) of an HTTP/1.1 answer.
fn parse(answer: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next()?;
    let mut words = status_line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = words.next()?.parse().ok()?;
    Some((status, body.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_asked_on_loopback() {
        let one = |text: &str| resolve(text).unwrap()[0];
        assert_eq!(one("0.0.0.0:9090"), "127.0.0.1:9090".parse().unwrap());
        assert_eq!(one("[::]:9090"), "[::1]:9090".parse().unwrap());
        assert_eq!(one("192.0.2.1:9090"), "192.0.2.1:9090".parse().unwrap());
        assert!(resolve("9090").unwrap_err().contains("not a host:port"));
    }

    #[test]
    fn answers_are_read_as_a_status_and_a_body() {
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n"),
            Some((200, "ready".to_owned()))
        );
        assert_eq!(
            parse(b"HTTP/1.1 503 Service Unavailable\r\n\r\nnot ready: shutting down\n"),
            Some((503, "not ready: shutting down".to_owned()))
        );
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.2\r\n"), None);
        assert_eq!(parse(b""), None);
    }
}
