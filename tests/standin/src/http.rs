//! A minimal HTTP/1.1 server for the stand-ins and a minimal client for the health commands
//! (`curl`, `immich-healthcheck`) that the rendered units run inside the containers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::roles::{Route, answer};

/// A parsed request line: method, path, query (without `?`).
#[derive(Debug, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// `GET`, `HEAD`, …
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Query string without `?`, empty if none.
    pub query: &'a str,
}

/// Parses `GET /api?mode=version HTTP/1.1`.
pub fn parse_request_line(line: &str) -> Option<RequestLine<'_>> {
    let mut parts = line.split_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Some(RequestLine {
        method,
        path,
        query,
    })
}

/// Formats a complete response with `Connection: close`.
pub fn response(status: u16, content_type: &str, body: &str, head_only: bool) -> String {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if head_only { "" } else { body }
    )
}

/// Listens on `[::]:port` (dual stack: `localhost` may resolve to `::1` first), or on
/// `0.0.0.0:port` where IPv6 is off.
pub fn listen(port: u16) -> Result<TcpListener> {
    let listener = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .with_context(|| format!("listen on port {port}"))?;
    eprintln!("mms-standin: listening on {:?}", listener.local_addr()?);
    Ok(listener)
}

/// Serves `routes` on `port` forever, one thread per connection.
pub fn serve(port: u16, routes: &'static [Route]) -> Result<()> {
    let listener = listen(port)?;
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        std::thread::spawn(move || {
            if let Err(e) = handle(stream, routes) {
                eprintln!("mms-standin: connection: {e:#}");
            }
        });
    }
    Ok(())
}

fn handle(stream: TcpStream, routes: &'static [Route]) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Drain the headers; requests carry no body we care about.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let reply = match parse_request_line(line.trim_end()) {
        None => response(400, "text/plain", "bad request", false),
        Some(req) if req.method != "GET" && req.method != "HEAD" => {
            response(405, "text/plain", "method not allowed", false)
        }
        Some(req) => match answer(routes, req.path, req.query) {
            Some(r) => response(r.status, r.content_type, r.body, req.method == "HEAD"),
            None => response(404, "text/plain", "not found", req.method == "HEAD"),
        },
    };
    let mut stream = stream;
    stream.write_all(reply.as_bytes())?;
    Ok(())
}

/// An `http://host[:port]/path` URL split into parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    /// Host name or address.
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// Path with query, at least `/`.
    pub target: String,
}

/// Parses a plain-HTTP URL (the health commands never use TLS inside the container).
pub fn parse_url(url: &str) -> Result<Url> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("URL {url:?}: only http:// is supported by the stand-in"))?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .with_context(|| format!("URL {url:?}: port {p:?} is not a number"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        bail!("URL {url:?}: empty host");
    }
    Ok(Url {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        target,
    })
}

/// `GET url` → (status, body).
pub fn get(url: &str, timeout: Duration) -> Result<(u16, String)> {
    let u = parse_url(url)?;
    let mut last = anyhow!("{} has no address", u.host);
    let mut connected = None;
    for addr in (u.host.as_str(), u.port)
        .to_socket_addrs()
        .with_context(|| format!("resolve {}", u.host))?
    {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                connected = Some(s);
                break;
            }
            Err(e) => last = anyhow!("connect to {addr}: {e}"),
        }
    }
    let mut stream = connected.ok_or(last)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        u.target, u.host
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response from {url}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("no status in HTTP response from {url}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            parse_request_line("GET /api?mode=version HTTP/1.1"),
            Some(RequestLine {
                method: "GET",
                path: "/api",
                query: "mode=version"
            })
        );
        assert_eq!(parse_request_line("GET /ping HTTP/1.0").unwrap().query, "");
        assert!(parse_request_line("GET /ping").is_none());
        assert!(parse_request_line("GET /ping SPDY/3").is_none());
        assert!(parse_request_line("").is_none());
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://localhost:7878/ping").unwrap(),
            Url {
                host: "localhost".into(),
                port: 7878,
                target: "/ping".into()
            }
        );
        assert_eq!(parse_url("http://127.0.0.1").unwrap().target, "/");
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://x:port/").is_err());
    }

    #[test]
    fn serves_real_answers_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes = match crate::roles::find("sabnzbd").unwrap().kind {
            crate::roles::Kind::Http { routes, .. } => routes,
            crate::roles::Kind::Resp { .. } => panic!(),
        };
        std::thread::spawn(move || {
            for s in listener.incoming().take(2) {
                handle(s.unwrap(), routes).unwrap();
            }
        });
        let t = Duration::from_secs(5);
        let (status, body) = get(&format!("http://127.0.0.1:{port}/api?mode=version"), t).unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("version"));
        let (status, _) = get(&format!("http://127.0.0.1:{port}/api?mode=queue"), t).unwrap();
        assert_eq!(status, 404);
    }
}
