//! The harness: a gateway started in-process from YAML, upstream servers on loopback,
//! and clients. Everything binds 127.0.0.1:0 and stops when the test's runtime ends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::app::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A policy that allows every request, for tests about the proxy rather than the policy.
pub const ALLOW_ALL: &str = "rules:\n  - { id: allow-all, effect: allow }\n";

/// A scratch directory removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A scratch directory holding `allow-all.yaml`.
    pub fn with_allow_all() -> Scratch {
        let scratch = Scratch::new();
        scratch.write("allow-all.yaml", ALLOW_ALL);
        scratch
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a file, or a directory and everything in it.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// A gateway running in this process.
pub struct TestGateway {
    /// Kept so the gateway lives as long as the test.
    _gateway: Gateway,
    /// The config and policy files.
    _scratch: Scratch,
    /// The first client listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
}

impl TestGateway {
    /// Starts a gateway from config text, with a policy that allows everything.
    /// Listeners should use port 0.
    pub async fn start(yaml: &str) -> TestGateway {
        TestGateway::with_policy(yaml, ALLOW_ALL).await
    }

    /// Starts a gateway from config text and one policy file, not watching its files
    /// (the reload tests watch).
    pub async fn with_policy(yaml: &str, policy: &str) -> TestGateway {
        TestGateway::with_policy_watching(yaml, policy, false).await
    }

    /// Starts a gateway from config text and one policy file, watching its directory
    /// for changes or not.
    pub async fn with_policy_watching(yaml: &str, policy: &str, watch: bool) -> TestGateway {
        let scratch = Scratch::new();
        scratch.write("policy.yaml", policy);
        let path = scratch.write(
            "gw.yaml",
            &format!("{yaml}\npolicy: {{ files: [policy.yaml], watch: {watch} }}\n"),
        );
        TestGateway::from_file(&path, scratch).await
    }

    /// Starts a gateway from the config file at `path`, keeping `scratch` while it runs.
    pub async fn from_file(path: &std::path::Path, scratch: Scratch) -> TestGateway {
        let config = portcullis::config::load(path)
            .unwrap_or_else(|errors| panic!("test config is invalid:\n{errors}"));
        let gateway = Gateway::start(&config).await.expect("gateway starts");
        TestGateway {
            addr: gateway.listen_addrs()[0],
            admin: gateway.admin_addr(),
            _gateway: gateway,
            _scratch: scratch,
        }
    }

    /// Drains the gateway as SIGTERM does, keeping its files.
    pub async fn shutdown(self) -> (portcullis::app::Drained, Scratch) {
        (self._gateway.shutdown().await, self._scratch)
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The path of a file beside its config.
    pub fn file(&self, name: &str) -> PathBuf {
        self._scratch.path().join(name)
    }

    /// Writes a file beside its config (`gw.yaml`) and policy (`policy.yaml`).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        self._scratch.write(name, text)
    }

    /// A request to the admin listener: its status and body.
    pub async fn admin(&self, method: http::Method, path: &str) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin))
            .body(ClientBody::default())
            .unwrap();
        let response = client().request(request).await.expect("admin answers");
        let status = response.status();
        (status, body_text(response).await)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = client()
            .request(get(&format!("http://{}/metrics", self.admin)))
            .await
            .expect("metrics answer");
        body_text(response).await
    }
}

/// A config with one upstream `app` of `targets`, one catch-all route, and `extra` YAML
/// appended (limits, network, …).
///
/// The decision log is off unless `extra` has a `log` section: its lines would go to the
/// test binary's stderr.
pub fn config(targets: &[String], extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let log = if extra.contains("log:") {
        ""
    } else {
        "log: { decisions: off }\n"
    };
    format!(
        "listen: [{{ addr: 127.0.0.1:0 }}]\n\
         admin: {{ addr: 127.0.0.1:0 }}\n\
         upstreams:\n  app:\n    targets: [{}]\n    timeout: 5s\n\
         routes:\n  - {{ id: main, path_prefix: /, upstream: app }}\n\
         {log}{extra}",
        targets.join(", ")
    )
}

/// The lines of the gateway's `decisions.log` (beside its config) once there are `count`;
/// a writer thread writes them, so this waits, at most 5 s.
pub async fn decision_lines(gw: &TestGateway, count: usize) -> Vec<serde_json::Value> {
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(gw.file("decisions.log"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    };
    for _ in 0..100 {
        if read().len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    read()
}

/// Asserts that a decision-log line satisfies `portcullis schema decision-log`.
pub fn assert_decision_log_fields(line: &serde_json::Value) {
    let schema = portcullis::decision_log::schema();
    let mut problems = Vec::new();
    check_schema(&schema, &schema, line, "line", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}\n{line:#}");
}

/// The keywords of JSON Schema 2020-12 that the decision-log schema uses, but `pattern`
/// and `format` (the CI's Python validator checks those too): each problem found is pushed.
fn check_schema(
    root: &serde_json::Value,
    schema: &serde_json::Value,
    value: &serde_json::Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    use serde_json::Value;
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/$defs/");
        return check_schema(root, &root["$defs"][name], value, at, problems);
    }
    let type_of = |value: &Value| match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_u64() || number.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let found = type_of(value);
    let fits = types.is_empty()
        || types.contains(&found)
        || (found == "integer" && types.contains(&"number"));
    if !fits {
        problems.push(format!("{at}: {found}, not {types:?}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(options) = schema["anyOf"].as_array() {
        let fits = options.iter().any(|option| {
            let mut inner = Vec::new();
            check_schema(root, option, value, at, &mut inner);
            inner.is_empty()
        });
        if !fits {
            problems.push(format!("{at}: {value} fits none of anyOf"));
        }
    }
    if let (Some(minimum), Some(number)) = (schema["minimum"].as_f64(), value.as_f64())
        && number < minimum
    {
        problems.push(format!("{at}: {number} is below {minimum}"));
    }
    if let Some(items) = value.as_array()
        && schema.get("items").is_some()
    {
        for (index, item) in items.iter().enumerate() {
            check_schema(
                root,
                &schema["items"],
                item,
                &format!("{at}[{index}]"),
                problems,
            );
        }
    }
    if let Some(fields) = value.as_object() {
        if let Some(max) = schema["maxProperties"].as_u64()
            && fields.len() as u64 > max
        {
            problems.push(format!("{at}: more than {max} fields"));
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            if !fields.contains_key(name) {
                problems.push(format!("{at}: lacks {name}"));
            }
        }
        for (name, field) in fields {
            let inner = format!("{at}.{name}");
            match (&schema["properties"][name], &schema["additionalProperties"]) {
                (Value::Null, Value::Bool(false)) => {
                    problems.push(format!("{at}: {name} is not a field of the schema"));
                }
                (Value::Null, Value::Object(_)) => check_schema(
                    root,
                    &schema["additionalProperties"],
                    field,
                    &inner,
                    problems,
                ),
                (Value::Null, _) => {}
                (property, _) => check_schema(root, property, field, &inner, problems),
            }
        }
    }
    if schema.get("if").is_some() {
        let mut condition = Vec::new();
        check_schema(root, &schema["if"], value, at, &mut condition);
        if condition.is_empty() {
            check_schema(root, &schema["then"], value, at, problems);
        }
    }
}

/// `yaml` from [`config`] with WebSocket upgrades allowed on its route.
pub fn with_websocket(yaml: &str) -> String {
    yaml.replace("upstream: app", "upstream: app, upgrades: [websocket]")
}

/// A request the test upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query, as received.
    pub target: String,
    /// HTTP version.
    pub version: http::Version,
    /// Headers, in order, names lower-case.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of a header.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of a header, or `None`.
    pub fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} appears {} times", all.len());
        all.first().copied()
    }
}

/// The `Date` every `TestUpstream` answer carries.
pub const UPSTREAM_DATE: &str = "Thu, 01 Jan 1970 00:00:00 GMT";

/// A test upstream server on loopback.
///
/// Paths: `/slow/MS` answers after MS milliseconds; `/download/N` streams N bytes
/// (chunked); `/upload` reads the body and answers with its length; `/upload-slowly` does
/// the same pausing 20ms after each MiB; anything else answers `hello from NAME`. Every response carries `x-upstream: NAME`,
/// a hop-by-hop `x-upstream-private`, `x-request-id: upstream-chosen`, two `set-cookie`
/// fields and `date: UPSTREAM_DATE`.
pub struct TestUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every request it received.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections it accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestUpstream {
    /// Starts an upstream that names itself `name` in its answers.
    pub async fn start(name: &'static str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let recorded = recorded.clone();
                        async move {
                            Ok::<_, Infallible>(upstream_answer(name, &recorded, request).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        TestUpstream {
            addr,
            seen,
            connections,
            task,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn upstream_answer(
    name: &'static str,
    recorded: &Mutex<Vec<Seen>>,
    request: Request<Incoming>,
) -> Response<BoxBody<Bytes, Infallible>> {
    recorded.lock().unwrap().push(Seen {
        target: request.uri().to_string(),
        version: request.version(),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });
    let path = request.uri().path().to_owned();
    let body: BoxBody<Bytes, Infallible> = if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        text_body(format!("slept {ms}ms"))
    } else if let Some(size) = path.strip_prefix("/download/") {
        Generated::new(size.parse().unwrap()).boxed()
    } else if path == "/upload" || path == "/upload-slowly" {
        let pause = path == "/upload-slowly";
        let mut body = request.into_body();
        let mut total = 0u64;
        // A body the gateway abandons ends the read; the answer then goes nowhere.
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                let before = total;
                total += data.len() as u64;
                if pause && before >> 20 != total >> 20 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        text_body(total.to_string())
    } else {
        text_body(format!("hello from {name}"))
    };
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    response
        .headers_mut()
        .insert("connection", "x-upstream-private".parse().unwrap());
    response
        .headers_mut()
        .insert("x-upstream-private", "1".parse().unwrap());
    // The gateway's request id replaces the upstream's; repeated fields keep their order.
    response
        .headers_mut()
        .insert("x-request-id", "upstream-chosen".parse().unwrap());
    response
        .headers_mut()
        .insert("date", UPSTREAM_DATE.parse().unwrap());
    for cookie in ["a=1", "b=2"] {
        response
            .headers_mut()
            .append("set-cookie", cookie.parse().unwrap());
    }
    response
}

fn text_body(text: String) -> BoxBody<Bytes, Infallible> {
    Full::new(Bytes::from(text)).boxed()
}

/// A body of `remaining` bytes produced 64 KiB at a time, never held in memory whole.
pub struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    /// A body of `size` bytes.
    pub fn new(size: u64) -> Generated {
        Generated {
            remaining: size,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let len = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= len as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len)))))
    }
}

/// An address that refuses connections: a socket bound but not listening. Keep the
/// socket for the whole test so no other test can take the port.
pub fn closed_port() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap(), socket)
}

/// The body type the test clients send.
pub type ClientBody = BoxBody<Bytes, Infallible>;

/// An HTTP/1.1 client with its own connection pool.
pub fn client() -> Client<HttpConnector, ClientBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A GET request for `url`.
pub fn get(url: &str) -> Request<ClientBody> {
    Request::get(url).body(Empty::new().boxed()).unwrap()
}

/// Sends `method url` with `headers` and no body, on a new connection.
pub async fn send_request(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    client()
        .request(request.body(ClientBody::default()).unwrap())
        .await
        .unwrap()
}

/// Reads a whole response body as text.
pub async fn body_text(response: Response<Incoming>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Checks a problem+json answer and returns its body.
pub async fn expect_problem(
    response: Response<Incoming>,
    status: StatusCode,
    reason: &str,
) -> serde_json::Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(response.headers()["x-portcullis-reason"], reason);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["reason"], reason);
    assert_eq!(body["type"], format!("urn:portcullis:reason:{reason}"));
    assert_eq!(body["request_id"], request_id.as_str());
    assert!(
        body["detail"].as_str().is_some_and(|d| d.ends_with('.')),
        "detail is a sentence: {body}"
    );
    body
}

/// The value of `series` once it is `expected`, or after 2 s its last value. The gateway
/// serves on threads of its own: a count that a closed connection changes may change just
/// after the client sees the close.
pub async fn settled_metric(gw: &TestGateway, series: &str, expected: f64) -> f64 {
    let mut value = f64::NAN;
    for _ in 0..40 {
        value = metric(&gw.metrics().await, series);
        if value == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    value
}

/// Sends raw bytes on a new connection and reads until the server closes it or `limit`
/// passes; returns what was read. For a kept-alive connection, `limit` ends the read.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Like [`raw_exchange`], but the server must close the connection within `limit`.
pub async fn raw_until_closed(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything; that is an answer too.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut answer)).await {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        Err(_) => panic!("the server kept the connection open for {limit:?} after {request:?}"),
    }
}

/// The value of one series in Prometheus text, or 0 when it is absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A key set server: serves its document at `/jwks.json` (after a delay, when slowed
/// down), counts fetches, and stops (refusing connections) when dropped.
pub struct KeyServer {
    addr: SocketAddr,
    https: bool,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    pub async fn start(document: String, tls: Option<Arc<rustls::ServerConfig>>) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let https = tls.is_some();
        let delay_ms = Arc::new(AtomicUsize::new(0));
        let served = (document.clone(), fetches.clone(), delay_ms.clone());
        let task = tokio::spawn(async move {
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (document, fetches, delay_ms) = served.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let found = request.uri().path() == "/jwks.json";
                        if found {
                            fetches.fetch_add(1, Ordering::SeqCst);
                        }
                        let body = document.lock().unwrap().clone();
                        let delay = Duration::from_millis(delay_ms.load(Ordering::SeqCst) as u64);
                        async move {
                            tokio::time::sleep(delay).await;
                            let mut response = Response::new(Full::new(Bytes::from(body)));
                            if !found {
                                *response.status_mut() = StatusCode::NOT_FOUND;
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        KeyServer {
            addr,
            https,
            document,
            fetches,
            delay_ms,
            task,
        }
    }

    /// Answers each fetch only after `ms` milliseconds.
    pub fn slow_down(&self, ms: usize) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/jwks.json", self.addr)
    }

    pub fn publish(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
