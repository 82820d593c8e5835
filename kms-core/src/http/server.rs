//! The KMS HTTP(S) server: the Tencent Cloud API 3.0 wire protocol in front of any
//! [`Kms`].
//!
//! ```text
//!  TCP/TLS ─▶ hyper (tokio, 2 I/O threads) ─▶ body ≤ limit ─▶ blocking pool:
//!     X-TC-Version ─▶ TC3 verify ─▶ signed action? ─▶ rate limit ─▶ parse params
//!     ─▶ rights (action, keys) ─▶ Kms::call ─▶ {"Response":{…,"RequestId"}}  (always HTTP 200)
//! ```
//!
//! This module is the only place in kms-core that knows HTTP status codes and headers.
//! One `tracing` line per request: action, principal SecretId, outcome code, latency.
//! Bodies, parameters and secrets are never logged.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Map, Value};

use super::acs;
use super::principals::{Principal, Principals};
use super::tc3::{self, IncomingRequest};
use super::API_VERSION;
use crate::{CallContext, ErrorCode, Kms, KmsError, KmsResult};

/// Default request body limit: Encrypt's 4 KiB plaintext in base64 and BYOK material
/// fit many times over.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a clean shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Certificate chain and private key files, PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How to run the server.
#[derive(Debug)]
pub struct ServerConfig {
    /// Where to listen (port 0 picks a free port; see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate; plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
    /// Who may call.
    pub principals: Principals,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Most KMS calls run at once (the blocking thread pool's size).
    pub max_concurrent_calls: usize,
    /// Most connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

impl ServerConfig {
    /// Plain HTTP on `listen` with defaults.
    pub fn new(listen: SocketAddr, principals: Principals) -> ServerConfig {
        ServerConfig {
            listen,
            tls: None,
            principals,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent_calls: 32,
            max_connections: 1024,
        }
    }
}

struct State {
    kms: Arc<dyn Kms>,
    principals: Principals,
    max_body_bytes: usize,
    /// Alibaba requests' nonces (ALIYUN-KMS-API.md §4), per AccessKeyId.
    nonces: acs::NonceCache,
}

/// A bound server, not yet running.
pub struct Server {
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: Arc<State>,
    max_concurrent_calls: usize,
    max_connections: usize,
}

/// A server error at startup.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(String);

fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ServeError(format!(
                "cannot read certificates from {}: {e}",
                files.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(ServeError(format!(
            "{} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        ServeError(format!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServeError(format!("the certificate and key do not go together: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl Server {
    /// Binds the listening socket and loads the TLS files.
    ///
    /// # Errors
    /// The address cannot be bound, or the TLS files are unusable.
    pub fn bind(kms: Arc<dyn Kms>, config: ServerConfig) -> Result<Server, ServeError> {
        let tls = config.tls.as_ref().map(load_tls).transpose()?;
        let listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| ServeError(format!("cannot listen on {}: {e}", config.listen)))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ServeError(format!("listener: {e}")))?;
        Ok(Server {
            listener,
            tls,
            state: Arc::new(State {
                kms,
                principals: config.principals,
                max_body_bytes: config.max_body_bytes,
                nonces: acs::NonceCache::default(),
            }),
            max_concurrent_calls: config.max_concurrent_calls.max(1),
            max_connections: config.max_connections.max(1),
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The URL clients use: `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr())
    }

    /// Serves until `shutdown` completes, then stops accepting and waits up to
    /// [`SHUTDOWN_GRACE`] for requests in flight. Blocks the calling thread.
    ///
    /// # Errors
    /// The runtime cannot start.
    pub fn run<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(self.max_concurrent_calls)
            .thread_name("kms-http")
            .enable_all()
            .build()?;
        rt.block_on(self.serve(shutdown))
    }

    /// Serves until SIGTERM or SIGINT (see [`Server::run`]).
    ///
    /// # Errors
    /// The runtime or the signal handlers cannot start.
    pub fn run_until_signal(self) -> std::io::Result<()> {
        self.run(async {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                    }
                }
                _ => {
                    tracing::error!("cannot install signal handlers; serving until killed");
                    std::future::pending::<()>().await;
                }
            }
        })
    }

    /// Runs the server on a thread of its own; dropping the handle stops it.
    pub fn spawn(self) -> RunningServer {
        let addr = self.local_addr();
        let url = self.url();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kms-http-server".into())
            .spawn(move || {
                if let Err(e) = self.run(async {
                    let _ = rx.await;
                }) {
                    tracing::error!("kms http server: {e}");
                }
            })
            .ok();
        RunningServer {
            addr,
            url,
            stop: Some(tx),
            thread,
        }
    }

    async fn serve<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let acceptor = self.tls.map(tokio_rustls::TlsAcceptor::from);
        let graceful = GracefulShutdown::new();
        let state = self.state;
        let connections = Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                p = connections.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let watcher = graceful.watcher();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req| handle(state.clone(), peer, req));
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30));
                let result = match acceptor {
                    None => {
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(stream), svc))
                            .await
                    }
                    Some(acceptor) => {
                        let tls = match tokio::time::timeout(
                            Duration::from_secs(30),
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, "TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        watcher
                            .watch(builder.serve_connection(TokioIo::new(tls), svc))
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, "connection: {e}");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "requests still in flight after {} s; stopping anyway",
                SHUTDOWN_GRACE.as_secs()
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// A server running on its own thread (tests, embedding). Dropping it stops the server
/// and waits for its thread.
pub struct RunningServer {
    addr: SocketAddr,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops the server and waits for it.
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    // Exactly this value: with "; charset=utf-8" the Python SDK misses errors.
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// What one request came to, for the response and the log line.
struct Outcome {
    action: String,
    principal: String,
    request_id: String,
    result: KmsResult<Value>,
    /// An Alibaba request's response: its HTTP status, body and the code logged.
    aliyun: Option<(u16, Vec<u8>, String)>,
}

impl Outcome {
    fn body(&self) -> Vec<u8> {
        let mut response = match &self.result {
            Ok(Value::Object(fields)) => fields.clone(),
            Ok(_) => {
                let mut m = Map::new();
                m.insert(
                    "Error".into(),
                    json!({"Code": "InternalError", "Message": "the KMS returned a non-object response"}),
                );
                m
            }
            Err(e) => {
                let mut m = Map::new();
                m.insert(
                    "Error".into(),
                    json!({"Code": e.code.as_str(), "Message": e.message}),
                );
                m
            }
        };
        response.insert("RequestId".into(), Value::String(self.request_id.clone()));
        serde_json::to_vec(&json!({ "Response": response })).unwrap_or_else(|_| {
            br#"{"Response":{"Error":{"Code":"InternalError","Message":"response encoding"}}}"#
                .to_vec()
        })
    }

    fn code(&self) -> &str {
        if let Some((_, _, code)) = &self.aliyun {
            return code;
        }
        match &self.result {
            Ok(Value::Object(_)) => "OK",
            Ok(_) => "InternalError",
            Err(e) => e.code.as_str(),
        }
    }
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    if req.uri().path() == "/healthz" && req.method() == Method::GET {
        return Ok(json_response(
            StatusCode::OK,
            br#"{"Status":"ok"}"#.to_vec(),
        ));
    }
    let (parts, body) = req.into_parts();
    let request_id = uuid::Uuid::new_v4().to_string();
    let action = action_of(&parts.headers);
    let body = match Limited::new(body, state.max_body_bytes).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                KmsError::new(
                    ErrorCode::InvalidParameter,
                    format!(
                        "the request body is larger than {} bytes",
                        state.max_body_bytes
                    ),
                )
            } else {
                KmsError::new(
                    ErrorCode::InvalidParameter,
                    "the request body could not be read",
                )
            },
        ),
    };
    let outcome = match body {
        Err(e) => Outcome {
            action,
            principal: String::new(),
            request_id,
            result: Err(e),
            aliyun: None,
        },
        Ok(body) => {
            let st = state.clone();
            let rid = request_id.clone();
            let act = action.clone();
            let req = HttpRequest {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or("").to_owned(),
                headers: parts.headers,
                body,
            };
            match tokio::task::spawn_blocking(move || process(&st, &req, rid)).await {
                Ok(o) => o,
                Err(_) => Outcome {
                    action: act,
                    principal: String::new(),
                    request_id,
                    result: Err(KmsError::new(
                        ErrorCode::InternalError,
                        "the KMS call failed unexpectedly",
                    )),
                    aliyun: None,
                },
            }
        }
    };
    let latency = started.elapsed();
    tracing::info!(
        target: "kms_http",
        action = %outcome.action,
        principal = %outcome.principal,
        outcome = %outcome.code(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        request_id = %outcome.request_id,
        peer = %peer,
        "request"
    );
    if let Some((status, body, _)) = outcome.aliyun {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(json_response(status, body));
    }
    Ok(json_response(StatusCode::OK, outcome.body()))
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A request as the blocking pool sees it.
struct HttpRequest {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl HttpRequest {
    /// The request as the decoder sees it.
    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// The `X-TC-Action` value when it looks like an action name (ASCII letters and digits,
/// at most 64), else empty: an unauthenticated header never reaches the log verbatim.
fn action_of(headers: &HeaderMap) -> String {
    header(headers, "x-tc-action")
        .filter(|a| a.len() <= 64 && a.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_default()
}

fn process(state: &State, req: &HttpRequest, request_id: String) -> Outcome {
    let mut outcome = Outcome {
        action: action_of(&req.headers),
        principal: String::new(),
        request_id,
        result: Ok(Value::Null),
        aliyun: None,
    };
    // Alibaba Cloud requests (ACS3 or RPC v1 signatures) before the Tencent path.
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let inc = acs::IncomingRequest {
        method: req.method.as_str(),
        path: &req.path,
        query: &req.query,
        headers: &headers,
        body: &req.body,
    };
    if acs::claimed_scheme(&inc).is_some() {
        aliyun_call(state, &inc, &mut outcome);
        return outcome;
    }
    outcome.result = authorize_and_call(state, req, &mut outcome);
    outcome
}

/// An Alibaba Cloud request: signature, principal rights, the call, and the
/// response in Alibaba's shape (flat JSON, 4xx/5xx errors).
fn aliyun_call(state: &State, inc: &acs::IncomingRequest<'_>, outcome: &mut Outcome) {
    use crate::service::aliyun as ali;
    let host = inc
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let rid = outcome.request_id.clone();
    // The claimed action names the log line of a refused signature too, when it looks
    // like an action name (a header that is not one never reaches the log verbatim).
    let claimed = inc
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("x-acs-action"))
        .map(|(_, v)| v.clone())
        .or_else(|| {
            acs::form_pairs(inc.query)
                .ok()?
                .into_iter()
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v)
        })
        .unwrap_or_default();
    if claimed.len() <= 64 && claimed.bytes().all(|b| b.is_ascii_alphanumeric()) {
        outcome.action = claimed;
    }
    let lookup = |id: &str| state.principals.get(id).map(|p| p.secret_key().clone());
    let verified = match acs::verify(inc, lookup, &state.nonces, tc3::unix_now()) {
        Ok(v) => v,
        Err(e) => {
            let (status, body) = ali::auth_error_response(&rid, &host, &e);
            outcome.aliyun = Some((status, body, e.code.to_owned()));
            return;
        }
    };
    outcome.action.clear();
    if verified.action.len() <= 64 && verified.action.bytes().all(|b| b.is_ascii_alphanumeric()) {
        outcome.action = verified.action.clone();
    }
    outcome.principal = verified.access_key_id.clone();
    let result = aliyun_authorized(state, &verified, &rid);
    outcome.aliyun = Some(match result {
        Ok(v) => (200, ali::success_body(&rid, v), "OK".to_owned()),
        Err(e) => {
            let (status, body) = ali::kms_error_response(&rid, &host, &e);
            (status, body, ali::wire_error(&e).code.to_owned())
        }
    });
}

fn aliyun_authorized(state: &State, v: &acs::Verified, request_id: &str) -> KmsResult<Value> {
    let principal = state
        .principals
        .get(&v.access_key_id)
        .ok_or_else(|| KmsError::new(ErrorCode::AuthSecretIdNotFound, "the principal is gone"))?;
    let ctx = CallContext {
        principal: v.access_key_id.clone(),
        request_id: request_id.to_owned(),
    };
    let refuse = |e: KmsError, key: &str| {
        state.kms.audit_refusal(&ctx, &v.action, key, &e);
        e
    };
    principal.admit(Instant::now()).map_err(|e| refuse(e, ""))?;
    if !principal.may_call(&v.action) {
        return Err(refuse(unauthorized(principal, &v.action, None), ""));
    }
    let named: Vec<&str> = v
        .params
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "KeyId" | "DestinationKeyId" | "AliasName"))
        .map(|(_, val)| val.as_str())
        .collect();
    for key in &named {
        if !principal.may_use_key(key) {
            return Err(refuse(unauthorized(principal, &v.action, Some(key)), key));
        }
    }
    let response = state.kms.call_aliyun(&ctx, &v.action, &v.params)?;
    // Decrypt and ReEncrypt name their source key only inside the blob.
    if let Some(key) = response.get("KeyId").and_then(Value::as_str) {
        if !principal.may_use_key(key) {
            return Err(refuse(unauthorized(principal, &v.action, Some(key)), key));
        }
    }
    Ok(response)
}

fn authorize_and_call(state: &State, req: &HttpRequest, outcome: &mut Outcome) -> KmsResult<Value> {
    let lookup = |id: &str| state.principals.get(id).map(|p| p.secret_key().clone());
    let parts = req.parts();
    let (action, verified) = decode(&parts, &lookup, tc3::unix_now())?;
    let RequestParts {
        method,
        query,
        headers,
        body,
        ..
    } = parts;
    outcome.principal = verified.secret_id.clone();
    let principal = state
        .principals
        .get(&verified.secret_id)
        .ok_or_else(|| KmsError::new(ErrorCode::AuthSecretIdNotFound, "the principal is gone"))?;
    // Temporary credentials: the session token must come with the SecretId it belongs to.
    principal.check_token(header(headers, "x-tc-token").as_deref())?;
    // A correctly signed request inside its time window is served, as the real service
    // does, even when an identical signature served another action before (tccli and the
    // SDK sign only content-type;host, so DisableKey then EnableKey in one second carry
    // one signature). Where that must not be possible, the principal signs the action.
    if principal.require_signed_action && !verified.action_signed {
        return Err(KmsError::new(
            ErrorCode::AuthSignatureFailure,
            "this principal must sign the x-tc-action header (SignedHeaders must include \
             x-tc-action), so that its requests cannot be replayed as another action",
        ));
    }
    let ctx = CallContext {
        principal: verified.secret_id.clone(),
        request_id: outcome.request_id.clone(),
    };
    // Refusals of an authenticated principal go to the KMS's audit log too.
    let refuse = |e: KmsError, key: &str| {
        state.kms.audit_refusal(&ctx, &action, key, &e);
        e
    };
    principal.admit(Instant::now()).map_err(|e| refuse(e, ""))?;
    let params = decode_params(method, query, body)?;
    check_rights(principal, &action, &params).map_err(|(e, key)| refuse(e, &key))?;
    let response = state.kms.call(&ctx, &action, &params)?;
    // Decrypt and ReEncrypt name their key only inside the blob: check it now, and drop
    // the response if the principal may not use that key (the service has audited the
    // call; the refusal line follows it).
    // (ReEncrypt's answer names the source key as SourceKeyId.)
    let named = request_names_key(&params);
    for (field, checked_before) in [("KeyId", named), ("SourceKeyId", false)] {
        if let Some(key) = response.get(field).and_then(Value::as_str) {
            if !checked_before && !principal.may_use_key(key) {
                return Err(refuse(unauthorized(principal, &action, Some(key)), key));
            }
        }
    }
    Ok(response)
}

/// A request as the decoder sees it: no connection, no server state.
#[derive(Clone, Copy, Debug)]
pub struct RequestParts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI path.
    pub path: &'a str,
    /// The raw query string (empty when there is none).
    pub query: &'a str,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

/// The stateless first half of serving a request: the `X-TC-Action` name, the API
/// version, the method and the TC3 signature. `lookup` gives a SecretId's SecretKey;
/// `now` is the server clock (Unix seconds). Returns the action and who signed.
/// The server then checks replays and rates, and decodes the parameters with
/// [`decode_params`].
///
/// # Errors
/// `MissingParameter` / `InvalidAction` (no or bad `X-TC-Action`), `NoSuchVersion`,
/// `UnsupportedOperation` (neither POST nor GET), and the `AuthFailure.*` codes of
/// [`tc3::verify`].
pub fn decode(
    req: &RequestParts<'_>,
    lookup: &dyn Fn(&str) -> Option<tc3::SecretKey>,
    now: i64,
) -> KmsResult<(String, tc3::Verified)> {
    let RequestParts {
        method,
        path,
        query,
        headers,
        body,
    } = *req;
    let action = action_of(headers);
    if action.is_empty() {
        return Err(match header(headers, "x-tc-action") {
            None => KmsError::new(
                ErrorCode::MissingParameter,
                "the X-TC-Action header is missing",
            ),
            Some(_) => KmsError::new(
                ErrorCode::InvalidAction,
                "X-TC-Action is not an action name (letters and digits)",
            ),
        });
    }
    let version = header(headers, "x-tc-version").unwrap_or_default();
    if version != API_VERSION {
        return Err(KmsError::new(
            ErrorCode::NoSuchVersion,
            format!("X-TC-Version must be {API_VERSION}, not {version:?}"),
        ));
    }
    if *method != Method::POST && *method != Method::GET {
        return Err(KmsError::new(
            ErrorCode::UnsupportedOperation,
            "only POST and GET requests are served",
        ));
    }
    let header_fn = |n: &str| header(headers, n);
    let get = *method == Method::GET;
    let verified = tc3::verify(
        &IncomingRequest {
            method: method.as_str(),
            uri: path,
            query: if get { query } else { "" },
            body: if get { b"" } else { body },
            header: &header_fn,
        },
        lookup,
        now,
    )?;
    Ok((action, verified))
}

/// A request's parameters: the query string of a GET, the JSON body of a POST.
///
/// # Errors
/// `InvalidParameter` when they do not decode.
pub fn decode_params(method: &Method, query: &str, body: &[u8]) -> KmsResult<Value> {
    if *method == Method::GET {
        super::params_from_query(query)
    } else {
        super::params_from_json(body)
    }
}

fn unauthorized(principal: &Principal, action: &str, key: Option<&str>) -> KmsError {
    let what = match key {
        Some(k) => format!("{action} on key {k}"),
        None => action.to_owned(),
    };
    KmsError::new(
        ErrorCode::UnauthorizedOperation,
        format!("the principal {} may not call {what}", principal.secret_id),
    )
}

/// The keys a request names: `KeyId`, `DestinationKeyId`, `KeyIds[]`, and `Alias`
/// (CreateKey, UpdateAlias) as `alias/NAME`.
fn request_key_ids(params: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    for field in ["KeyId", "DestinationKeyId"] {
        if let Some(k) = params.get(field).and_then(Value::as_str) {
            keys.push(k.to_owned());
        }
    }
    if let Some(list) = params.get("KeyIds").and_then(Value::as_array) {
        keys.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if let Some(alias) = params.get("Alias").and_then(Value::as_str) {
        keys.push(format!("alias/{alias}"));
    }
    keys
}

fn request_names_key(params: &Value) -> bool {
    !request_key_ids(params).is_empty()
}

/// Whether `principal` may call `action` on the keys `params` name; a refusal comes
/// with the key it concerns (empty when the action itself is refused).
fn check_rights(
    principal: &Principal,
    action: &str,
    params: &Value,
) -> Result<(), (KmsError, String)> {
    if !principal.may_call(action) {
        return Err((unauthorized(principal, action, None), String::new()));
    }
    for key in request_key_ids(params) {
        if !principal.may_use_key(&key) {
            return Err((unauthorized(principal, action, Some(&key)), key));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::http::tc3::{OutgoingRequest, SecretKey};

    const NOW: i64 = 1_795_439_559;

    fn lookup(id: &str) -> Option<SecretKey> {
        (id == "AKIDtest").then(|| SecretKey::new("test-key"))
    }

    /// A POST signed the way the SDKs sign it, with one header changed by `edit`.
    fn signed(body: &[u8], edit: impl FnOnce(&mut HeaderMap)) -> HeaderMap {
        let auth = tc3::sign_post(
            "AKIDtest",
            &SecretKey::new("test-key"),
            &OutgoingRequest {
                host: "kms.example",
                content_type: "application/json",
                action: "DescribeKey",
                body,
                timestamp: NOW,
            },
        );
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "kms.example".to_owned()),
            ("content-type", "application/json".to_owned()),
            ("x-tc-action", "DescribeKey".to_owned()),
            ("x-tc-version", API_VERSION.to_owned()),
            ("x-tc-timestamp", NOW.to_string()),
            ("authorization", auth),
        ] {
            h.insert(n, HeaderValue::from_str(&v).unwrap());
        }
        edit(&mut h);
        h
    }

    /// A request to `/` with no query, as the clients send them.
    fn at_root<'a>(method: &'a Method, headers: &'a HeaderMap, body: &'a [u8]) -> RequestParts<'a> {
        RequestParts {
            method,
            path: "/",
            query: "",
            headers,
            body,
        }
    }

    fn code(method: &Method, headers: &HeaderMap, body: &[u8]) -> Option<ErrorCode> {
        decode(&at_root(method, headers, body), &lookup, NOW)
            .err()
            .map(|e| e.code)
    }

    #[test]
    fn decode_verifies_a_signed_request_and_names_each_refusal() {
        let body = br#"{"KeyId":"k"}"#;
        let ok = signed(body, |_| {});
        let (action, v) = decode(&at_root(&Method::POST, &ok, body), &lookup, NOW).unwrap();
        assert_eq!(
            (action.as_str(), v.secret_id.as_str()),
            ("DescribeKey", "AKIDtest")
        );
        assert!(v.action_signed);
        assert_eq!(
            decode_params(&Method::POST, "", body).unwrap()["KeyId"],
            "k"
        );
        assert_eq!(
            decode_params(&Method::GET, "KeyId=a%20b", b"ignored").unwrap()["KeyId"],
            "a b"
        );
        // Each check, in the server's order.
        let no_action = signed(body, |h| {
            h.remove("x-tc-action");
        });
        assert_eq!(
            code(&Method::POST, &no_action, body),
            Some(ErrorCode::MissingParameter)
        );
        let bad_action = signed(body, |h| {
            h.insert("x-tc-action", HeaderValue::from_static("Describe-Key"));
        });
        assert_eq!(
            code(&Method::POST, &bad_action, body),
            Some(ErrorCode::InvalidAction)
        );
        let old = signed(body, |h| {
            h.insert("x-tc-version", HeaderValue::from_static("2017-03-12"));
        });
        assert_eq!(
            code(&Method::POST, &old, body),
            Some(ErrorCode::NoSuchVersion)
        );
        assert_eq!(
            code(&Method::PUT, &ok, body),
            Some(ErrorCode::UnsupportedOperation)
        );
        assert_eq!(
            code(&Method::POST, &ok, br#"{"KeyId":"other"}"#),
            Some(ErrorCode::AuthSignatureFailure)
        );
        let unsigned = signed(body, |h| {
            h.remove("authorization");
        });
        assert_eq!(
            code(&Method::POST, &unsigned, body),
            Some(ErrorCode::AuthInvalidAuthorization)
        );
    }
}
