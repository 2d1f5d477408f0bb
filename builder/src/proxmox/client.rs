//! The HTTP client: token auth, envelope, error mapping, retries, task waits.

use super::error::ProxmoxError;
use super::form::{Form, percent_encode};
use super::tasks::{PollPolicy, TaskOutcome, outcome};
use super::tls::{self, Presented, Trust};
use super::upid::Upid;
use reqwest::Method;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bounded retries with exponential backoff for transient failures only.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts (1 = no retry).
    pub attempts: u32,
    /// First backoff delay; doubles each retry.
    pub base: Duration,
    /// Largest backoff delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(500),
            max: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// Everything needed to talk to one Proxmox endpoint.
#[derive(Clone)]
pub struct ClientSettings {
    /// `https://host:8006` (no trailing slash, no `/api2/json`).
    pub endpoint: String,
    /// `user@realm!tokenname`.
    pub token_id: String,
    /// The token's secret (UUID). Never printed.
    pub token_secret: String,
    /// Certificate trust.
    pub trust: Trust,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Task polling policy.
    pub poll: PollPolicy,
    /// Timeout for one HTTP request (uploads get longer).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("endpoint", &self.endpoint)
            .field("token_id", &self.token_id)
            .field("token_secret", &"(secret)")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl ClientSettings {
    /// Settings with default retry, polling and timeouts.
    pub fn new(endpoint: &str, token_id: &str, token_secret: &str, trust: Trust) -> Self {
        ClientSettings {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token_id: token_id.to_owned(),
            token_secret: token_secret.to_owned(),
            trust,
            retry: RetryPolicy::default(),
            poll: PollPolicy::default(),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// A Proxmox VE API client. Cheap to share by reference; counts its requests.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    base: String,
    auth: reqwest::header::HeaderValue,
    token_id: String,
    retry: RetryPolicy,
    poll: PollPolicy,
    presented: Presented,
    requests: AtomicU64,
}

enum Body {
    None,
    Form(String),
    Multipart {
        boundary: String,
        data: Arc<Vec<u8>>,
    },
}

impl Client {
    /// Builds the client; fails on a bad CA file or endpoint.
    pub fn new(settings: &ClientSettings) -> Result<Self, ProxmoxError> {
        let presented: Presented = Arc::default();
        let tls_err = |detail: String| ProxmoxError::Tls {
            endpoint: settings.endpoint.clone(),
            detail,
        };
        if !settings.endpoint.starts_with("https://") {
            return Err(tls_err(format!(
                "proxmox.endpoint {:?} must start with https://",
                settings.endpoint
            )));
        }
        if settings.trust == Trust::Insecure {
            tracing::warn!(
                "--insecure: the Proxmox certificate is NOT verified; anyone on the path can read the API token"
            );
        }
        let config = tls::client_config(&settings.trust, presented.clone()).map_err(tls_err)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(Duration::from_secs(15))
            .timeout(settings.request_timeout)
            // pveproxy closes idle keep-alive connections after 5 s.
            .pool_idle_timeout(Duration::from_secs(3))
            .http1_only()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| tls_err(format!("HTTP client setup: {e}")))?;
        let mut auth = reqwest::header::HeaderValue::from_str(&format!(
            "PVEAPIToken={}={}",
            settings.token_id, settings.token_secret
        ))
        .map_err(|_| ProxmoxError::Auth {
            endpoint: settings.endpoint.clone(),
            token_id: settings.token_id.clone(),
        })?;
        auth.set_sensitive(true);
        Ok(Client {
            http,
            base: format!("{}/api2/json", settings.endpoint),
            endpoint: settings.endpoint.clone(),
            auth,
            token_id: settings.token_id.clone(),
            retry: settings.retry,
            poll: settings.poll,
            presented,
            requests: AtomicU64::new(0),
        })
    }

    /// How many HTTP requests were sent (attempts included).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The polling policy, for callers that poll guest state themselves.
    pub fn poll_policy(&self) -> PollPolicy {
        self.poll
    }

    /// GET `path` with `query`; returns `data`.
    pub async fn get(&self, path: &str, query: Form) -> Result<Value, ProxmoxError> {
        self.call(Method::GET, path, Some(&query), Body::None).await
    }

    /// POST a form to `path`; returns `data`.
    pub async fn post(&self, path: &str, form: Form) -> Result<Value, ProxmoxError> {
        self.call(Method::POST, path, None, Body::Form(form.encode()))
            .await
    }

    /// PUT a form to `path`; returns `data`.
    pub async fn put(&self, path: &str, form: Form) -> Result<Value, ProxmoxError> {
        self.call(Method::PUT, path, None, Body::Form(form.encode()))
            .await
    }

    /// DELETE `path` with `query`; returns `data`.
    pub async fn delete(&self, path: &str, query: Form) -> Result<Value, ProxmoxError> {
        self.call(Method::DELETE, path, Some(&query), Body::None)
            .await
    }

    /// POST a multipart upload: `content` first, then the file part named
    /// `filename`, with a Content-Length (pveproxy refuses chunked uploads).
    pub async fn upload(
        &self,
        node: &str,
        storage: &str,
        content: &str,
        filename: &str,
        data: &[u8],
    ) -> Result<Upid, ProxmoxError> {
        let boundary = format!("----mms{:016x}", data.len() as u64 ^ 0x6d6d_735f_7570_6c64);
        let mut body = Vec::with_capacity(data.len() + 512);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\n{content}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{filename}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let path = format!("/nodes/{node}/storage/{storage}/upload");
        let v = self
            .call(
                Method::POST,
                &path,
                None,
                Body::Multipart {
                    boundary,
                    data: Arc::new(body),
                },
            )
            .await?;
        upid_of("POST", &path, &v)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: Option<&Form>,
        body: Body,
    ) -> Result<Value, ProxmoxError> {
        let mut attempt = 1;
        loop {
            match self.once(&method, path, query, &body).await {
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    let delay = self.retry.delay(attempt);
                    tracing::debug!(%method, path, attempt, error = %e, "transient error, retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        query: Option<&Form>,
        body: &Body,
    ) -> Result<Value, ProxmoxError> {
        let mut url = format!("{}{}", self.base, path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(&q.encode());
        }
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header(reqwest::header::AUTHORIZATION, self.auth.clone());
        match body {
            Body::None => {}
            Body::Form(s) => {
                req = req
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(s.clone());
            }
            Body::Multipart { boundary, data } => {
                req = req
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .header(reqwest::header::CONTENT_LENGTH, data.len())
                    .timeout(Duration::from_secs(1800))
                    .body(data.as_ref().clone());
            }
        }
        tracing::debug!(%method, path, "proxmox request");
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Err(self.transport_error(&e)),
        };
        let status = resp.status();
        if status.as_u16() == 401 {
            // No Content-Length and no close_notify: never read this body.
            return Err(ProxmoxError::Auth {
                endpoint: self.endpoint.clone(),
                token_id: self.token_id.clone(),
            });
        }
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_owned))
            .unwrap_or_default();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if status.is_success() => return Err(self.transport_error(&e)),
            Err(_) => Default::default(),
        };
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            let Some(Value::Object(mut obj)) = json else {
                return Err(ProxmoxError::Protocol {
                    method: method.to_string(),
                    path: path.to_owned(),
                    detail: "body is not a JSON object with \"data\"".into(),
                });
            };
            return Ok(obj.remove("data").unwrap_or(Value::Null));
        }
        let mut message = String::new();
        let mut errors = BTreeMap::new();
        if let Some(Value::Object(obj)) = &json {
            if let Some(Value::String(m)) = obj.get("message") {
                message = m.clone();
            }
            if let Some(Value::Object(errs)) = obj.get("errors") {
                for (k, v) in errs {
                    let text = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    errors.insert(k.clone(), text);
                }
            }
        } else if !bytes.is_empty() {
            message = String::from_utf8_lossy(&bytes).trim().to_owned();
        }
        // Older servers put the message only in the reason phrase; 403s from the
        // auth layer have no body at all.
        if message.trim().is_empty()
            || (!message.contains("Permission check failed (")
                && reason.contains("Permission check failed ("))
        {
            message = reason;
        }
        Err(ProxmoxError::from_status(
            method.as_str(),
            path,
            status.as_u16(),
            message,
            errors,
        ))
    }

    fn transport_error(&self, e: &reqwest::Error) -> ProxmoxError {
        if let Some(fp) = self.presented.lock().ok().and_then(|mut p| p.take()) {
            return ProxmoxError::TlsPin {
                endpoint: self.endpoint.clone(),
                presented: tls::format_fingerprint(&fp),
            };
        }
        let mut detail = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            detail.push_str(": ");
            detail.push_str(&s.to_string());
            src = s.source();
        }
        if detail.contains("invalid peer certificate") || detail.contains("UnknownIssuer") {
            return ProxmoxError::Tls {
                endpoint: self.endpoint.clone(),
                detail,
            };
        }
        ProxmoxError::Connection {
            endpoint: self.endpoint.clone(),
            detail,
        }
    }

    /// Waits for a task on the node named in its UPID; `OK` and `WARNINGS: N`
    /// succeed, anything else is [`ProxmoxError::TaskFailed`] with the log's last lines.
    pub async fn wait_task(
        &self,
        upid: &Upid,
        timeout: Duration,
    ) -> Result<TaskOutcome, ProxmoxError> {
        let path = format!(
            "/nodes/{}/tasks/{}/status",
            upid.node,
            percent_encode(&upid.raw)
        );
        let start = Instant::now();
        loop {
            match self.get(&path, Form::new()).await {
                Ok(v) => {
                    if v.get("status").and_then(Value::as_str) == Some("stopped") {
                        let exit = v
                            .get("exitstatus")
                            .and_then(Value::as_str)
                            .unwrap_or("unexpected status")
                            .to_owned();
                        return match outcome(&exit) {
                            TaskOutcome::Failed(msg) => Err(ProxmoxError::TaskFailed {
                                upid: upid.raw.clone(),
                                exitstatus: msg,
                                log_tail: self.task_log_tail(upid, 8).await,
                            }),
                            ok => {
                                if let TaskOutcome::Warnings(n) = ok {
                                    tracing::warn!(upid = %upid, "task finished with {n} warning(s)");
                                }
                                Ok(ok)
                            }
                        };
                    }
                }
                // A task just started elsewhere may not be visible yet.
                Err(e @ ProxmoxError::Parameter { .. }) => {
                    if start.elapsed() > Duration::from_secs(5) {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            if start.elapsed() > timeout {
                return Err(ProxmoxError::Timeout {
                    what: format!("task {upid}"),
                    seconds: timeout.as_secs(),
                });
            }
            tokio::time::sleep(self.poll.next_delay(start.elapsed())).await;
        }
    }

    /// The last `n` lines of a task's log (empty when the log cannot be read).
    pub async fn task_log_tail(&self, upid: &Upid, n: usize) -> Vec<String> {
        let path = format!(
            "/nodes/{}/tasks/{}/log",
            upid.node,
            percent_encode(&upid.raw)
        );
        let Ok(Value::Array(lines)) = self.get(&path, Form::new().int("limit", 0)).await else {
            return Vec::new();
        };
        let lines: Vec<String> = lines
            .iter()
            .filter_map(|l| l.get("t").and_then(Value::as_str).map(str::to_owned))
            .collect();
        lines[lines.len().saturating_sub(n)..].to_vec()
    }
}

/// Extracts a UPID from a `data` value.
pub(crate) fn upid_of(method: &str, path: &str, v: &Value) -> Result<Upid, ProxmoxError> {
    v.as_str()
        .ok_or_else(|| format!("expected a UPID string, got {v}"))
        .and_then(|s| s.parse::<Upid>())
        .map_err(|detail| ProxmoxError::Protocol {
            method: method.to_owned(),
            path: path.to_owned(),
            detail,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let r = RetryPolicy::default();
        assert_eq!(r.delay(1), Duration::from_millis(500));
        assert_eq!(r.delay(2), Duration::from_secs(1));
        assert_eq!(r.delay(10), Duration::from_secs(8));
        assert_eq!(r.delay(100), Duration::from_secs(8));
    }

    #[test]
    fn settings_debug_hides_secret() {
        let s = ClientSettings::new(
            "https://pve:8006",
            "a@pve!b",
            "s3cr3t-uuid",
            Trust::Insecure,
        );
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }
}
