//! The simulator's HTTP/1.1-over-TLS layer, written by hand so every wire
//! detail pveproxy shows is reproducible: keep-alive closed after 5 s idle and
//! after every error answer, a 401 without Content-Length whose connection ends
//! without TLS close_notify, plain-text HTTP-layer errors, connection resets.

use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A request as read from the wire.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Header (lower-cased name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RawRequest {
    /// A header value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What to send back.
#[derive(Debug, Clone)]
pub enum Response {
    /// A JSON envelope with status and reason phrase.
    Json {
        /// HTTP status.
        status: u16,
        /// Reason phrase (first line of the message).
        reason: String,
        /// Body.
        body: Value,
    },
    /// 401: no body, no Content-Length, connection dropped without close_notify.
    Unauthorized,
    /// An auth-layer answer with only a reason phrase (e.g. upload 403).
    Bare {
        /// HTTP status.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// An HTTP-layer error with a plain-text body.
    Plain {
        /// HTTP status.
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// TCP reset without an answer.
    Reset,
}

/// The request handler the connection loop calls.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, req: RawRequest) -> impl std::future::Future<Output = Response> + Send;
    /// Delay before a 401/auth-layer 403 is sent.
    fn auth_delay(&self) -> Duration;
    /// Idle keep-alive timeout.
    fn idle_timeout(&self) -> Duration;
}

/// Accepts connections forever.
pub async fn serve<H: Handler>(listener: TcpListener, acceptor: TlsAcceptor, handler: Arc<H>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            // A client that refuses our certificate aborts here: no request is read.
            if let Ok(tls) = acceptor.accept(tcp).await {
                connection(BufReader::new(tls), handler).await;
            }
        });
    }
}

async fn connection<H: Handler>(mut stream: BufReader<TlsStream<TcpStream>>, handler: Arc<H>) {
    loop {
        let req =
            match tokio::time::timeout(handler.idle_timeout(), read_request(&mut stream)).await {
                Ok(Ok(Some(r))) => r,
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Err(_) => {
                    // Idle: pveproxy closes the keep-alive connection.
                    let _ = stream.get_mut().shutdown().await;
                    return;
                }
            };
        let resp = if req
            .header("transfer-encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            Response::Plain {
                status: 501,
                reason: "upload without content length header not supported".into(),
            }
        } else {
            handler.handle(req).await
        };
        match resp {
            Response::Reset => {
                let (tcp, _) = stream.into_inner().into_inner();
                let _ = tcp.set_zero_linger();
                drop(tcp);
                return;
            }
            Response::Unauthorized => {
                tokio::time::sleep(handler.auth_delay()).await;
                let head = "HTTP/1.1 401 Authentication failed!\r\nCache-Control: max-age=0\r\n\
                            Connection: close\r\nPragma: no-cache\r\nServer: pve-api-daemon/3.0\r\n\r\n";
                let _ = stream.get_mut().write_all(head.as_bytes()).await;
                let _ = stream.get_mut().flush().await;
                // Drop the TCP socket under TLS: no close_notify.
                let (tcp, _) = stream.into_inner().into_inner();
                drop(tcp);
                return;
            }
            Response::Bare { status, reason } => {
                tokio::time::sleep(handler.auth_delay()).await;
                let head = format!(
                    "HTTP/1.1 {status} {reason}\r\nCache-Control: max-age=0\r\nConnection: close\r\n\
                     Content-Length: 0\r\nServer: pve-api-daemon/3.0\r\n\r\n"
                );
                let _ = stream.get_mut().write_all(head.as_bytes()).await;
                let _ = stream.get_mut().shutdown().await;
                return;
            }
            Response::Plain { status, reason } => {
                let body = format!("{reason}\n");
                let head = format!(
                    "HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: {}\r\n\
                     Server: pve-api-daemon/3.0\r\n\r\n",
                    body.len()
                );
                let _ = stream.get_mut().write_all(head.as_bytes()).await;
                let _ = stream.get_mut().write_all(body.as_bytes()).await;
                let _ = stream.get_mut().shutdown().await;
                return;
            }
            Response::Json {
                status,
                reason,
                body,
            } => {
                let body = body.to_string();
                let close = status != 200;
                let head = format!(
                    "HTTP/1.1 {status} {reason}\r\nCache-Control: max-age=0\r\nConnection: {}\r\n\
                     Content-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\n\
                     Pragma: no-cache\r\nServer: pve-api-daemon/3.0\r\n\r\n",
                    if close { "close" } else { "Keep-Alive" },
                    body.len()
                );
                let w = stream.get_mut();
                let mut out = head.into_bytes();
                out.extend_from_slice(body.as_bytes());
                if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
                    return;
                }
                if close {
                    let _ = w.shutdown().await;
                    return;
                }
            }
        }
    }
}

async fn read_request(
    stream: &mut BufReader<TlsStream<TcpStream>>,
) -> std::io::Result<Option<RawRequest>> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    let mut total = 0;
    loop {
        let mut h = String::new();
        let n = stream.read_line(&mut h).await?;
        total += n;
        if n == 0 || total > 64 * 1024 {
            return Ok(None);
        }
        let h = h.trim_end_matches(['\r', '\n']);
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    Ok(Some(RawRequest {
        method,
        target,
        headers,
        body,
    }))
}
