//! TLS listeners through the real gateway, with certificates made here (rcgen) and real
//! rustls clients: TLS 1.3 and 1.2, HTTP/2 by ALPN, certificates picked by SNI, plain
//! HTTP and garbage on a TLS port, handshake deadlines, and certificates renewed by reload.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    ALLOW_ALL, Scratch, TestGateway, TestUpstream, assert_decision_log_fields, config,
    decision_lines, metric, raw_until_closed, settled_metric,
};

/// A CA that signs server (and client) certificates for a test.
pub struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, as PEM, and the certificate's DER to compare with what a
/// client sees.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Pki { ca }
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A certificate for `names` (DNS names, or IP addresses), valid now.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names, |_| {})
    }

    /// A certificate for `names`, its parameters changed by `edit` first.
    pub fn issue_with(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        edit(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A client trusting `pki`'s CA, speaking `versions`, offering `alpn`.
pub fn connector(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `gw` naming `server_name`.
pub async fn connect(
    gw: &TestGateway,
    connector: &tokio_rustls::TlsConnector,
    server_name: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .expect("the handshake finishes")
        .expect("the handshake succeeds")
}

/// An HTTP/1.1 GET over `stream` with `Connection: close`: the whole answer as text.
pub async fn get_over(
    mut stream: tokio_rustls::client::TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the answer ends")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The certificate the server showed on `stream`.
fn shown(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// A gateway in front of `upstream` whose listener serves `tls` (the YAML of
/// `listen[0].tls`), with `files` written beside its config first.
pub async fn tls_gateway(upstream: &str, tls: &str, files: &[(&str, &str)]) -> TestGateway {
    tls_gateway_with(upstream, tls, files, "").await
}

/// [`tls_gateway`] with `extra` YAML appended.
pub async fn tls_gateway_with(
    upstream: &str,
    tls: &str,
    files: &[(&str, &str)],
    extra: &str,
) -> TestGateway {
    let scratch = Scratch::new();
    for (name, text) in files {
        scratch.write(name, text);
    }
    scratch.write("policy.yaml", ALLOW_ALL);
    let yaml = config(&[upstream.to_owned()], extra).replace(
        "listen: [{ addr: 127.0.0.1:0 }]",
        &format!("listen: [{{ addr: 127.0.0.1:0, tls: {tls} }}]"),
    );
    let path = scratch.write(
        "gw.yaml",
        &format!("{yaml}policy: {{ files: [policy.yaml], watch: false }}\n"),
    );
    TestGateway::from_file(&path, scratch).await
}

const SINGLE: &str = "{ cert: server.pem, key: server.key }";

/// The series counting the listener's failed handshakes for `reason`.
fn handshake_errors(reason: &str) -> String {
    format!("portcullis_tls_handshake_errors_total{{listener=\"127.0.0.1:0\",reason=\"{reason}\"}}")
}

fn server_files(issued: &Issued) -> [(&'static str, &str); 2] {
    [
        ("server.pem", issued.cert_pem.as_str()),
        ("server.key", issued.key_pem.as_str()),
    ]
}

/// The usual TLS setup: a test CA, its certificate for `gw.test`, an upstream `app`, and
/// a gateway serving that certificate, with `extra` YAML appended.
struct GwTest {
    pki: Pki,
    server: Issued,
    up: TestUpstream,
    gw: TestGateway,
}

async fn gw_test(extra: &str) -> GwTest {
    let pki = Pki::new("test CA");
    let server = pki.issue(&["gw.test"]);
    let up = TestUpstream::start("app").await;
    let gw = tls_gateway_with(&up.url(), SINGLE, &server_files(&server), extra).await;
    GwTest {
        pki,
        server,
        up,
        gw,
    }
}

/// Reads one answer with a length from `stream`: its head and body as text.
async fn read_answer(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..100 {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("the answer arrives")
            .unwrap();
        assert!(read > 0, "the gateway closed the connection");
        answer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n")
            && let Some(length) = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().unwrap())
            })
            && body.len() >= length
        {
            return text;
        }
    }
    panic!("no whole answer in 100 reads");
}

#[tokio::test]
async fn a_kept_alive_tls_connection_that_went_idle_serves_its_next_request() {
    // Watchdog ticks every 100ms: a connection quiet for one goes idle and lets go of
    // its buffers, then must wake on the next TLS record.
    let GwTest { pki, up, gw, .. } =
        gw_test("limits: { header_read_timeout: 400ms, idle_timeout: 30s }\n").await;
    let mut stream = connect(&gw, &connector_http1(&pki), "gw.test").await;
    for round in 0..3 {
        let request = format!("GET /round/{round} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_answer(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(up.seen().len(), 3);
}

#[tokio::test]
async fn https_is_served_over_tls_1_3_and_1_2_and_the_upstream_hears_https() {
    let GwTest {
        pki,
        server,
        up,
        gw,
    } = gw_test("").await;

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let stream = connect(&gw, &connector(&pki, &[version], &[b"http/1.1"]), "gw.test").await;
        let protocol = stream.get_ref().1.protocol_version();
        assert_eq!(protocol, Some(version.version));
        assert_eq!(shown(&stream), server.der);
        let answer = get_over(stream, "gw.test", "/hello").await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("hello from app"), "{answer}");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.one("x-forwarded-proto"), Some("https"));
        assert_eq!(request.one("host"), Some("gw.test"));
    }
    let metrics = gw.metrics().await;
    let expiry = metric(
        &metrics,
        "portcullis_tls_certificate_expiry_timestamp_seconds{host=\"gw.test\",listener=\"127.0.0.1:0\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(expiry > now, "{expiry} is after {now}");
}

#[tokio::test]
async fn http2_is_chosen_by_alpn() {
    let GwTest { pki, up, gw, .. } = gw_test("").await;

    let connector = connector(&pki, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let stream = connect(&gw, &connector, "gw.test").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .uri("https://gw.test/over-h2")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello from app");
    let seen = up.seen();
    assert_eq!(seen[0].target, "/over-h2");
    assert_eq!(seen[0].one("x-forwarded-proto"), Some("https"));

    // A client that offers only HTTP/1.1 gets HTTP/1.1.
    let http1 = connector_http1(&pki);
    let stream = connect(&gw, &http1, "gw.test").await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

fn connector_http1(pki: &Pki) -> tokio_rustls::TlsConnector {
    connector(pki, &[&rustls::version::TLS13], &[b"http/1.1"])
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_and_the_default_for_others() {
    let pki = Pki::new("test CA");
    let default = pki.issue(&["default.test"]);
    let api = pki.issue(&["api.test"]);
    let wildcard = pki.issue(&["*.apps.test"]);
    let exact = pki.issue(&["one.apps.test"]);
    let up = TestUpstream::start("app").await;
    let tls = "{ cert: default.pem, key: default.key, certificates: [\
        { cert: api.pem, key: api.key }, \
        { cert: wild.pem, key: wild.key }, \
        { cert: exact.pem, key: exact.key, hosts: [one.apps.test] }] }";
    let files = [
        ("default.pem", default.cert_pem.as_str()),
        ("default.key", default.key_pem.as_str()),
        ("api.pem", api.cert_pem.as_str()),
        ("api.key", api.key_pem.as_str()),
        ("wild.pem", wildcard.cert_pem.as_str()),
        ("wild.key", wildcard.key_pem.as_str()),
        ("exact.pem", exact.cert_pem.as_str()),
        ("exact.key", exact.key_pem.as_str()),
    ];
    let gw = tls_gateway(&up.url(), tls, &files).await;
    let client = connector_http1(&pki);
    for (name, expected) in [
        ("api.test", &api),
        ("two.apps.test", &wildcard),
        // An exact name wins over a wildcard, whatever the order.
        ("one.apps.test", &exact),
        ("default.test", &default),
    ] {
        let stream = connect(&gw, &client, name).await;
        assert!(shown(&stream) == expected.der, "{name}");
        let answer = get_over(stream, name, "/").await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{name}: {answer}"
        );
    }
    // A name no certificate has gets the default one (which the client then refuses).
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let refused = client
        .connect(ServerName::try_from("other.test").unwrap(), tcp)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("certificate"), "{refused}");
    let metrics = gw.metrics().await;
    for host in ["default.test", "api.test", "*.apps.test", "one.apps.test"] {
        let series = format!(
            "portcullis_tls_certificate_expiry_timestamp_seconds{{host=\"{host}\",listener=\"127.0.0.1:0\"}}"
        );
        assert!(metric(&metrics, &series) > 0.0, "{series}");
    }
    assert_eq!(
        settled_metric(&gw, &handshake_errors("client_rejected_certificate"), 1.0).await,
        1.0
    );
}

#[tokio::test]
async fn plain_http_on_a_tls_port_gets_a_400_that_says_to_use_https() {
    let GwTest { up, gw, .. } = gw_test("").await;
    let answer = raw_until_closed(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("\r\nx-portcullis-reason: tls_required\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let problem: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(problem["status"], 400);
    assert_eq!(problem["reason"], "tls_required");
    assert!(
        problem["detail"].as_str().unwrap().contains("https://"),
        "{problem}"
    );
    assert!(up.seen().is_empty());
    assert_eq!(
        settled_metric(&gw, &handshake_errors("plain_http"), 1.0).await,
        1.0
    );
}

/// A ClientHello that offers TLS 1.1 and nothing newer: record header, handshake header,
/// version 3.2, a random, no session, one cipher suite (TLS_RSA_WITH_AES_128_CBC_SHA), no
/// compression, no extensions.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend([7u8; 32]);
    hello.extend([0x00, 0x00, 0x02, 0x00, 0x2f, 0x01, 0x00]);
    let mut handshake = vec![0x01, 0x00, 0x00, u8::try_from(hello.len()).unwrap()];
    handshake.extend(hello);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        0x00,
        u8::try_from(handshake.len()).unwrap(),
    ];
    record.extend(handshake);
    record
}

#[tokio::test]
async fn old_tls_garbage_and_stalled_handshakes_are_refused_and_counted() {
    let GwTest {
        pki, up: _up, gw, ..
    } = gw_test("limits: { header_read_timeout: 300ms }\n").await;
    let series = handshake_errors;

    // TLS 1.1: a fatal alert, then the close.
    let answer = raw_bytes_until_closed(gw.addr, &tls11_client_hello()).await;
    assert_eq!(
        answer[..6],
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02],
        "a fatal alert"
    );
    assert_eq!(
        settled_metric(&gw, &series("protocol_version"), 1.0).await,
        1.0
    );

    // Bytes that are neither TLS nor HTTP: closed without an answer.
    let answer = raw_bytes_until_closed(gw.addr, b"\x01\x02\x03 not a handshake").await;
    assert!(answer.is_empty());
    assert_eq!(settled_metric(&gw, &series("not_tls"), 1.0).await, 1.0);

    // Half a ClientHello, then nothing: closed at header_read_timeout.
    let started = std::time::Instant::now();
    let answer = raw_bytes_until_closed(gw.addr, &tls11_client_hello()[..20]).await;
    assert!(answer.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(settled_metric(&gw, &series("timeout"), 1.0).await, 1.0);

    // Everyone else is still served.
    let stream = connect(&gw, &connector_http1(&pki), "gw.test").await;
    assert!(
        get_over(stream, "gw.test", "/")
            .await
            .starts_with("HTTP/1.1 200 OK\r\n")
    );
}

/// Sends `bytes`, then reads until the gateway closes (at most 5 s).
async fn raw_bytes_until_closed(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection");
    answer
}

#[tokio::test]
async fn a_reload_serves_renewed_certificates_and_a_broken_pair_keeps_the_old_one() {
    let pki = Pki::new("test CA");
    let first = pki.issue(&["gw.test"]);
    let up = TestUpstream::start("app").await;
    let gw = tls_gateway(&up.url(), SINGLE, &server_files(&first)).await;
    let client = connector_http1(&pki);
    assert!(shown(&connect(&gw, &client, "gw.test").await) == first.der);

    let renewed = pki.issue(&["gw.test"]);
    gw.write("server.pem", &renewed.cert_pem);
    gw.write("server.key", &renewed.key_pem);
    let (code, body) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let stream = connect(&gw, &client, "gw.test").await;
    assert!(
        shown(&stream) == renewed.der,
        "the renewed certificate is served"
    );
    assert!(
        get_over(stream, "gw.test", "/")
            .await
            .starts_with("HTTP/1.1 200 OK\r\n")
    );

    // A new certificate with the old key: not a pair. The renewed one keeps serving.
    let third = pki.issue(&["gw.test"]);
    gw.write("server.pem", &third.cert_pem);
    let (code, body) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body.contains("listen[0].tls.key") && body.contains("does not belong to the certificate"),
        "{body}"
    );
    let stream = connect(&gw, &client, "gw.test").await;
    assert!(
        shown(&stream) == renewed.der,
        "the renewed certificate still serves"
    );
    let (_, policy) = gw.admin(Method::GET, "/policy").await;
    assert!(
        policy.contains("does not belong to the certificate"),
        "{policy}"
    );
}

#[test]
fn tls_settings_that_cannot_serve_are_config_errors_with_their_place_and_fix() {
    let pki = Pki::new("test CA");
    let good = pki.issue(&["gw.test"]);
    let other = pki.issue(&["gw.test"]);
    let expired = pki.issue_with(&["gw.test"], |params| {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let future = pki.issue_with(&["gw.test"], |params| {
        params.not_before = rcgen::date_time_ymd(2099, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    });
    let scratch = Scratch::new();
    for (name, text) in [
        ("good.pem", good.cert_pem.as_str()),
        ("good.key", good.key_pem.as_str()),
        ("other.key", other.key_pem.as_str()),
        ("expired.pem", expired.cert_pem.as_str()),
        ("expired.key", expired.key_pem.as_str()),
        ("future.pem", future.cert_pem.as_str()),
        ("future.key", future.key_pem.as_str()),
        ("empty-ca.pem", "no certificates here\n"),
        ("policy.yaml", ALLOW_ALL),
    ] {
        scratch.write(name, text);
    }
    let yaml = "\
listen:
  - { addr: 127.0.0.1:0, tls: { cert: missing.pem, key: good.key } }
  - { addr: 127.0.0.1:0, tls: { cert: good.pem, key: other.key } }
  - { addr: 127.0.0.1:0, tls: { cert: expired.pem, key: expired.key } }
  - { addr: 127.0.0.1:0, tls: { cert: future.pem, key: future.key } }
  - { addr: 127.0.0.1:0, tls: { cert: good.pem, key: good.key, client_ca: empty-ca.pem } }
  - { addr: 127.0.0.1:0, tls: { cert: good.pem, key: good.key, client_cert: required } }
  - { addr: 127.0.0.1:0, tls: { cert: good.pem, key: good.key, client_ca: good.pem, client_cert: none } }
  - { addr: 127.0.0.1:0, tls: { key: good.key } }
  - { addr: 127.0.0.1:0, tls: {} }
upstreams: { app: { targets: [\"builtin:echo\"] } }
routes: [{ id: main, upstream: app }]
policy: { files: [policy.yaml] }
";
    let path = scratch.write("gw.yaml", yaml);
    let errors = match portcullis::config::load(&path) {
        Ok(_) => panic!("the config loaded"),
        Err(errors) => errors.to_string(),
    };
    let dir = scratch.path().display().to_string();
    let errors = errors.replace(&dir, "DIR");
    assert_eq!(
        errors,
        "\
DIR/gw.yaml:2:39: listen[0].tls.cert: cannot read \"DIR/missing.pem\": I/O error: No such file or directory (os error 2)
DIR/gw.yaml:3:54: listen[1].tls.key: \"DIR/other.key\" and \"DIR/good.pem\": the private key does not belong to the certificate: check that the two files are a pair
DIR/gw.yaml:4:39: listen[2].tls.cert: \"DIR/expired.pem\" expired on 2020-01-01 00:00 UTC: renew it, or point cert at the renewed file
DIR/gw.yaml:5:39: listen[3].tls.cert: \"DIR/future.pem\" is not valid before 2099-01-01 00:00 UTC: check this machine's clock, or the certificate's dates
DIR/gw.yaml:6:75: listen[4].tls.client_ca: \"DIR/empty-ca.pem\" holds no PEM certificate
DIR/gw.yaml:7:77: listen[5].tls.client_cert: asking clients for certificates needs client_ca, the CAs that issue them
DIR/gw.yaml:8:75: listen[6].tls.client_ca: client_ca is unused with client_cert: none; remove it, or ask clients for certificates with client_cert: optional or required
DIR/gw.yaml:9:38: listen[7].tls.key: a private key needs its certificate: add cert
DIR/gw.yaml:10:31: listen[8].tls: TLS needs a certificate: cert and key, or certificates: [{ cert, key, hosts }]"
    );
}

#[tokio::test]
async fn a_cert_manager_secret_swap_renews_the_certificate_without_a_reload_call() {
    // The layout kubelet gives a mounted Secret (cert-manager's tls.crt and tls.key):
    // symlinks through `..data`, itself a symlink to a timestamped directory, swapped by
    // a rename.
    let pki = Pki::new("test CA");
    let first = pki.issue(&["gw.test"]);
    let renewed = pki.issue(&["gw.test"]);
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::new();
    let secret = scratch.path().join("tls");
    std::fs::create_dir(&secret).unwrap();
    let version = |name: &str, issued: &Issued| {
        let versioned = secret.join(name);
        std::fs::create_dir(&versioned).unwrap();
        std::fs::write(versioned.join("tls.crt"), &issued.cert_pem).unwrap();
        std::fs::write(versioned.join("tls.key"), &issued.key_pem).unwrap();
    };
    version("..2026_12_07_01", &first);
    std::os::unix::fs::symlink("..2026_12_07_01", secret.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), secret.join(file)).unwrap();
    }
    scratch.write("policy.yaml", ALLOW_ALL);
    let yaml = config(&[up.url()], "").replace(
        "listen: [{ addr: 127.0.0.1:0 }]",
        "listen: [{ addr: 127.0.0.1:0, tls: { cert: tls/tls.crt, key: tls/tls.key } }]",
    );
    let path = scratch.write(
        "gw.yaml",
        &format!("{yaml}policy: {{ files: [policy.yaml] }}\n"),
    );
    let gw = TestGateway::from_file(&path, scratch).await;
    let client = connector_http1(&pki);
    assert!(shown(&connect(&gw, &client, "gw.test").await) == first.der);

    version("..2026_12_07_02", &renewed);
    std::os::unix::fs::symlink("..2026_12_07_02", secret.join("..data_tmp")).unwrap();
    std::fs::rename(secret.join("..data_tmp"), secret.join("..data")).unwrap();
    let mut served = first.der.clone();
    for _ in 0..100 {
        served = shown(&connect(&gw, &client, "gw.test").await);
        if served == renewed.der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served == renewed.der, "the renewed certificate is served");
}

#[tokio::test]
async fn turning_tls_off_waits_for_a_restart_and_keeps_serving_tls() {
    let GwTest { pki, up, gw, .. } = gw_test("").await;
    gw.write(
        "gw.yaml",
        &format!(
            "{}policy: {{ files: [policy.yaml], watch: false }}\n",
            config(&[up.url()], "")
        ),
    );
    let (code, body) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (_, policy) = gw.admin(Method::GET, "/policy").await;
    let policy: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(
        policy["restart_needed"],
        serde_json::json!(["listen[0].tls: turned off (serving TLS)"])
    );
    // The port still speaks TLS only: plain HTTP is refused, TLS is served.
    let answer = raw_until_closed(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    let stream = connect(&gw, &connector_http1(&pki), "gw.test").await;
    assert!(
        get_over(stream, "gw.test", "/")
            .await
            .starts_with("HTTP/1.1 200 OK\r\n")
    );
}

/// A client trusting `pki`'s CA that shows `client` (PEM certificate and key).
fn connector_with_cert(pki: &Pki, client: &Issued) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client.der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Whether a client of `connector` gets an answer from `gw`: TLS 1.3 lets the server
/// refuse a client certificate after the client thinks the handshake is done, so the
/// refusal shows on the first read.
async fn served(gw: &TestGateway, connector: &tokio_rustls::TlsConnector) -> bool {
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let name = ServerName::try_from("gw.test").unwrap();
    let Ok(stream) = connector.connect(name, tcp).await else {
        return false;
    };
    get_over(stream, "gw.test", "/")
        .await
        .starts_with("HTTP/1.1 200 OK\r\n")
}

#[tokio::test]
async fn client_certificates_are_asked_for_and_verified_against_client_ca() {
    let pki = Pki::new("test CA");
    let clients = Pki::new("clients CA");
    let strangers = Pki::new("another CA");
    let server = pki.issue(&["gw.test"]);
    let client = clients.issue(&["client.test"]);
    let stranger = strangers.issue(&["client.test"]);
    let up = TestUpstream::start("app").await;
    let files = [
        ("server.pem", server.cert_pem.as_str()),
        ("server.key", server.key_pem.as_str()),
        ("clients.pem", &clients.ca.pem()),
    ];
    let series = handshake_errors;

    let required =
        "{ cert: server.pem, key: server.key, client_ca: clients.pem, client_cert: required }";
    let gw = tls_gateway(&up.url(), required, &files).await;
    assert!(served(&gw, &connector_with_cert(&pki, &client)).await);
    assert!(!served(&gw, &connector_http1(&pki)).await, "no certificate");
    assert_eq!(
        settled_metric(&gw, &series("no_client_certificate"), 1.0).await,
        1.0
    );
    assert!(
        !served(&gw, &connector_with_cert(&pki, &stranger)).await,
        "another CA's"
    );
    assert_eq!(
        settled_metric(&gw, &series("bad_client_certificate"), 1.0).await,
        1.0
    );

    // Optional: the default with client_ca. Clients without one are served; a
    // certificate that is shown must still verify.
    let optional = "{ cert: server.pem, key: server.key, client_ca: clients.pem }";
    let gw = tls_gateway(&up.url(), optional, &files).await;
    assert!(served(&gw, &connector_http1(&pki)).await);
    assert!(served(&gw, &connector_with_cert(&pki, &client)).await);
    assert!(!served(&gw, &connector_with_cert(&pki, &stranger)).await);
    assert_eq!(
        settled_metric(&gw, &series("bad_client_certificate"), 1.0).await,
        1.0
    );

    // A client offering only protocols the gateway does not speak is refused.
    let h3_only = connector(&pki, &[&rustls::version::TLS13], &[b"h3"]);
    assert!(!served(&gw, &h3_only).await);
    assert_eq!(
        settled_metric(&gw, &series("no_application_protocol"), 1.0).await,
        1.0
    );
}

/// A client certificate from `pki` with a SPIFFE ID, a DNS name and a common name.
fn workload(pki: &Pki, spiffe_id: &str, common_name: &str) -> Issued {
    pki.issue_with(&[], |params| {
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(spiffe_id).unwrap(),
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
    })
}

/// An HTTP/1.1 GET over a fresh TLS connection from `connector`, with `headers`.
async fn get_with(
    gw: &TestGateway,
    connector: &tokio_rustls::TlsConnector,
    path: &str,
    headers: &str,
) -> String {
    let mut stream = connect(gw, connector, "gw.test").await;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("the answer ends")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn mtls_rules_and_certificate_callers_decide_and_the_upstream_hears_the_certificate() {
    let pki = Pki::new("test CA");
    let clients = Pki::new("workloads CA");
    let server = pki.issue(&["gw.test"]);
    let billing = workload(
        &clients,
        "spiffe://example.org/ns/billing/sa/api",
        "billing",
    );
    let web = workload(&clients, "spiffe://example.org/ns/web/sa/frontend", "web");
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::new();
    for (name, text) in [
        ("server.pem", server.cert_pem.as_str()),
        ("server.key", server.key_pem.as_str()),
        ("clients.pem", clients.ca.pem().as_str()),
    ] {
        scratch.write(name, text);
    }
    scratch.write(
        "policy.yaml",
        "rules:
  - id: billing-api
    effect: allow
    match: { paths: [\"/billing/**\"] }
    when: { mtls: { spiffe_ids: [\"spiffe://example.org/ns/billing/*\"] } }
  - id: services
    effect: allow
    match: { paths: [\"/internal/**\"] }
    when: { roles: { any: [service] } }
",
    );
    let yaml = config(&[up.url()], "log: { decisions: decisions.log }\n").replace(
        "listen: [{ addr: 127.0.0.1:0 }]",
        "listen: [{ addr: 127.0.0.1:0, tls: { cert: server.pem, key: server.key, client_ca: clients.pem } }]",
    );
    let identity = "identity:
  client_certs:
    - match: { subjects: [billing] }
      subject: billing-service
      roles: [service]
";
    let path = scratch.write(
        "gw.yaml",
        &format!("{yaml}{identity}policy: {{ files: [policy.yaml], watch: false }}\n"),
    );
    let gw = TestGateway::from_file(&path, scratch).await;
    let as_billing = connector_with_cert(&pki, &billing);
    let as_web = connector_with_cert(&pki, &web);

    let forged = "X-Forwarded-Client-Cert: Hash=00;URI=spiffe://example.org/ns/billing/sa/api\r\nX-Auth-Subject: root\r\n";
    let answer = get_with(&gw, &as_billing, "/billing/invoices", forged).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let seen = up.seen();
    let forwarded = seen[0].one("x-forwarded-client-cert").unwrap();
    let fingerprint = {
        use sha2::Digest as _;
        sha2::Sha256::digest(billing.der.as_ref())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    assert_eq!(
        forwarded,
        format!(
            "Hash={fingerprint};Subject=\"CN=billing\";URI=spiffe://example.org/ns/billing/sa/api"
        )
    );
    assert_eq!(seen[0].one("x-auth-subject"), Some("billing-service"));
    assert_eq!(seen[0].one("x-auth-roles"), Some("service"));

    // Another workload's certificate, and none at all: 403 mtls_required.
    for (connector, what) in [
        (&as_web, "another workload"),
        (&connector_http1(&pki), "no certificate"),
    ] {
        let answer = get_with(&gw, connector, "/billing/invoices", "").await;
        assert!(
            answer.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{what}: {answer}"
        );
        assert!(
            answer.contains("\r\nx-portcullis-reason: mtls_required\r\n"),
            "{what}: {answer}"
        );
        assert!(answer.contains("client certificate"), "{what}: {answer}");
    }
    // A certificate caller's roles work as a token's do; the web workload has none.
    assert!(
        get_with(&gw, &as_billing, "/internal/x", "")
            .await
            .starts_with("HTTP/1.1 200 OK\r\n")
    );
    let answer = get_with(&gw, &as_web, "/internal/x", "").await;
    assert!(
        answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"),
        "{answer}"
    );
    assert_eq!(up.seen().len(), 2, "no denied request reached the upstream");
    let metrics = gw.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "portcullis_requests_total{decision=\"deny\",reason=\"mtls_required\",route=\"main\"}"
        ),
        2.0
    );

    // The decision log records the verified certificate, as the schema says.
    let lines = decision_lines(&gw, 5).await;
    assert_eq!(lines.len(), 5, "{lines:#?}");
    lines.iter().for_each(assert_decision_log_fields);
    // Lines of requests on different workers may be written in either order.
    let first = (lines.iter())
        .find(|line| line["url.path"] == "/billing/invoices" && line["decision"] == "allow")
        .expect("the billing service's request is logged");
    assert_eq!(first["principal.id"], "billing-service");
    assert_eq!(first["principal.issuer"], "client_cert");
    let certificate = &first["client.certificate"];
    assert_eq!(certificate["subject"], "billing");
    assert_eq!(
        certificate["uris"],
        serde_json::json!(["spiffe://example.org/ns/billing/sa/api"])
    );
    assert_eq!(certificate["fingerprint"], fingerprint);
    let anonymous = (lines.iter())
        .filter(|line| line["client.certificate"].is_null())
        .count();
    assert_eq!(anonymous, 1, "only the request without a certificate");

    // Replayed, a certificate's caller is identified again by the candidate's
    // identity.client_certs: the same config decides every line as before.
    let replayed = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("replay")
            .arg("-c")
            .arg(&path)
            .args(["--format", "json", "--fail-on", "any"])
            .arg(gw.file("decisions.log"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&replayed.stdout).unwrap();
    assert!(replayed.status.success(), "{report:#}");
    assert_eq!(report["replayed"], 5, "{report:#}");
    assert_eq!(report["unchanged"], 5, "{report:#}");
}

/// An HTTPS upstream on loopback, closing after every answer so that every request makes
/// a new connection; it counts full and resumed handshakes, and answers `hello over tls`.
struct TlsUpstream {
    addr: std::net::SocketAddr,
    handshakes: Arc<std::sync::Mutex<Vec<Option<rustls::HandshakeKind>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsUpstream {
    async fn start(server: &Issued, client_ca: Option<&Pki>) -> TlsUpstream {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(pki) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pki.ca_der()).unwrap();
                builder.with_client_cert_verifier(
                    rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()
                    .unwrap(),
                )
            }
            None => builder.with_no_client_auth(),
        };
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
        let config = builder
            .with_single_cert(vec![server.der.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = Arc::clone(&handshakes);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    seen.lock()
                        .unwrap()
                        .push(stream.get_ref().1.handshake_kind());
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"hello over tls")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            handshakes,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// A plain gateway in front of `upstream` (an https URL), `tls` the YAML of
/// `upstreams.app.tls` (empty for none), with `files` beside its config.
async fn gateway_to(upstream: &str, tls: &str, files: &[(&str, &str)]) -> TestGateway {
    let scratch = Scratch::new();
    for (name, text) in files {
        scratch.write(name, text);
    }
    scratch.write("policy.yaml", ALLOW_ALL);
    let mut yaml = config(&[upstream.to_owned()], "");
    if !tls.is_empty() {
        yaml = yaml.replace(
            "    timeout: 5s\n",
            &format!("    timeout: 5s\n    tls: {tls}\n"),
        );
    }
    let path = scratch.write(
        "gw.yaml",
        &format!("{yaml}policy: {{ files: [policy.yaml], watch: false }}\n"),
    );
    TestGateway::from_file(&path, scratch).await
}

/// A GET to the plain gateway: status, `X-Portcullis-Reason` and body.
async fn plain_get(gw: &TestGateway) -> (StatusCode, String, String) {
    let response = crate::support::client()
        .request(crate::support::get(&gw.url("/x")))
        .await
        .unwrap();
    let status = response.status();
    let reason = response
        .headers()
        .get("x-portcullis-reason")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, reason, crate::support::body_text(response).await)
}

#[tokio::test]
async fn https_upstreams_are_verified_against_their_ca_and_sessions_resume() {
    let pki = Pki::new("upstream CA");
    let server = pki.issue(&["127.0.0.1"]);
    let up = TlsUpstream::start(&server, None).await;
    let ca = pki.ca.pem();
    let gw = gateway_to(
        &up.url(),
        "{ ca: upstream-ca.pem }",
        &[("upstream-ca.pem", &ca)],
    )
    .await;
    for _ in 0..3 {
        let (status, reason, body) = plain_get(&gw).await;
        assert_eq!((status, reason.as_str()), (StatusCode::OK, ""), "{body}");
        assert_eq!(body, "hello over tls");
    }
    let handshakes = up.handshakes.lock().unwrap().clone();
    assert_eq!(handshakes.len(), 3, "a connection per request");
    assert_eq!(handshakes[0], Some(rustls::HandshakeKind::Full));
    assert!(
        handshakes[1..]
            .iter()
            .all(|kind| *kind == Some(rustls::HandshakeKind::Resumed)),
        "{handshakes:?}"
    );
}

#[tokio::test]
async fn upstream_certificates_that_do_not_verify_are_502_upstream_tls_error_with_the_cause() {
    let pki = Pki::new("upstream CA");
    let ca = pki.ca.pem();
    let files = [("upstream-ca.pem", ca.as_str())];
    let with_ca = "{ ca: upstream-ca.pem }";

    // The system's CAs do not know a private CA.
    let up = TlsUpstream::start(&pki.issue(&["127.0.0.1"]), None).await;
    let gw = gateway_to(&up.url(), "", &[]).await;
    let (status, reason, body) = plain_get(&gw).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_tls_error")
    );
    assert!(body.contains("unknown CA"), "{body}");
    let series = "portcullis_upstream_errors_total{kind=\"tls\",upstream=\"app\"}";
    assert_eq!(settled_metric(&gw, series, 1.0).await, 1.0);

    // A certificate for another name; then the name it has, asked for by server_name.
    let up = TlsUpstream::start(&pki.issue(&["api.internal"]), None).await;
    let gw = gateway_to(&up.url(), with_ca, &files).await;
    let (status, reason, body) = plain_get(&gw).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_tls_error")
    );
    assert!(body.contains("name mismatch"), "{body}");
    let gw = gateway_to(
        &up.url(),
        "{ ca: upstream-ca.pem, server_name: api.internal }",
        &files,
    )
    .await;
    assert_eq!(plain_get(&gw).await.0, StatusCode::OK);

    // An expired certificate.
    let expired = pki.issue_with(&["127.0.0.1"], |params| {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let up = TlsUpstream::start(&expired, None).await;
    let gw = gateway_to(&up.url(), with_ca, &files).await;
    let (status, reason, body) = plain_get(&gw).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_tls_error")
    );
    assert!(body.contains("certificate expired"), "{body}");

    // Verification off: served, and validate says why that is dangerous.
    let gw = gateway_to(&up.url(), "{ insecure_skip_verify: true }", &[]).await;
    assert_eq!(plain_get(&gw).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_upstream_that_wants_a_client_certificate_gets_the_configured_one() {
    let pki = Pki::new("upstream CA");
    let clients = Pki::new("gateway clients CA");
    let server = pki.issue(&["127.0.0.1"]);
    let gateway_cert = clients.issue(&["gateway.internal"]);
    let up = TlsUpstream::start(&server, Some(&clients)).await;
    let ca = pki.ca.pem();
    let files = [
        ("upstream-ca.pem", ca.as_str()),
        ("gateway.pem", gateway_cert.cert_pem.as_str()),
        ("gateway.key", gateway_cert.key_pem.as_str()),
    ];
    let gw = gateway_to(
        &up.url(),
        "{ ca: upstream-ca.pem, cert: gateway.pem, key: gateway.key }",
        &files,
    )
    .await;
    let (status, _, body) = plain_get(&gw).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Without one, the upstream refuses the session.
    let gw = gateway_to(&up.url(), "{ ca: upstream-ca.pem }", &files).await;
    let (status, reason, body) = plain_get(&gw).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::BAD_GATEWAY, "upstream_tls_error"),
        "{body}"
    );
}

#[test]
fn upstream_tls_settings_that_cannot_work_are_config_errors() {
    let scratch = Scratch::new();
    scratch.write("policy.yaml", ALLOW_ALL);
    let yaml = "\
upstreams:
  plain: { targets: [\"http://127.0.0.1:1\"], tls: { ca: ca.pem } }
  secure: { targets: [\"https://127.0.0.1:1\"], tls: { ca: missing.pem, cert: gateway.pem, insecure_skip_verify: true } }
routes: [{ id: main, upstream: plain }, { id: other, path_prefix: /other, upstream: secure }]
policy: { files: [policy.yaml] }
";
    let path = scratch.write("gw.yaml", yaml);
    let errors = match portcullis::config::load(&path) {
        Ok(_) => panic!("the config loaded"),
        Err(errors) => errors.to_string(),
    };
    let errors = errors.replace(&scratch.path().display().to_string(), "DIR");
    assert_eq!(
        errors,
        "\
DIR/gw.yaml:2:50: upstreams.plain.tls: tls is for https targets, and this upstream has none; remove it, or use https:// targets
DIR/gw.yaml:3:58: upstreams.secure.tls.ca: cannot read \"DIR/missing.pem\": I/O error: No such file or directory (os error 2)
DIR/gw.yaml:3:77: upstreams.secure.tls.cert: a certificate needs its private key: add key
DIR/gw.yaml:3:112: upstreams.secure.tls.insecure_skip_verify: ca names the CAs to verify against, and insecure_skip_verify turns verification off; keep one"
    );
}

#[tokio::test]
async fn a_revoked_client_certificate_fails_the_handshake() {
    let pki = Pki::new("test CA");
    let clients = Pki::new("clients CA");
    let server = pki.issue(&["gw.test"]);
    let with_serial = |serial: u64| {
        clients.issue_with(&["client.test"], |params| {
            params.serial_number = Some(rcgen::SerialNumber::from(serial));
        })
    };
    let revoked = with_serial(42);
    let good = with_serial(43);
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2026, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from(42u64),
            revocation_time: rcgen::date_time_ymd(2026, 1, 1),
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        }],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&clients.ca)
    .unwrap()
    .pem()
    .unwrap();
    let up = TestUpstream::start("app").await;
    let files = [
        ("server.pem", server.cert_pem.as_str()),
        ("server.key", server.key_pem.as_str()),
        ("clients.pem", &clients.ca.pem()),
        ("clients.crl", crl.as_str()),
    ];
    let tls = "{ cert: server.pem, key: server.key, client_ca: clients.pem, client_cert: required, crls: [clients.crl] }";
    let gw = tls_gateway(&up.url(), tls, &files).await;
    assert!(served(&gw, &connector_with_cert(&pki, &good)).await);
    assert!(!served(&gw, &connector_with_cert(&pki, &revoked)).await);
    assert_eq!(
        settled_metric(&gw, &handshake_errors("bad_client_certificate"), 1.0).await,
        1.0
    );
}

#[tokio::test]
async fn sessions_resume_within_a_load_and_never_across_a_reload() {
    // A resumed session keeps its first handshake's client certificate unchecked: a
    // reload (which may have revoked it) must not let it resume.
    let pki = Pki::new("test CA");
    let server = pki.issue(&["gw.test"]);
    let up = TestUpstream::start("app").await;
    let gw = tls_gateway(&up.url(), SINGLE, &server_files(&server)).await;
    let client = connector_http1(&pki);
    let kind =
        |stream: &tokio_rustls::client::TlsStream<TcpStream>| stream.get_ref().1.handshake_kind();
    let session = |gw: &TestGateway| {
        let client = client.clone();
        let addr = gw.addr;
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut stream = client
                .connect(ServerName::try_from("gw.test").unwrap(), tcp)
                .await
                .unwrap();
            // A request and its answer, so that the session tickets arrive.
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            stream
        }
    };
    assert_eq!(kind(&session(&gw).await), Some(rustls::HandshakeKind::Full));
    assert_eq!(
        kind(&session(&gw).await),
        Some(rustls::HandshakeKind::Resumed)
    );
    let (code, body) = gw.admin(Method::POST, "/reload").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(
        kind(&session(&gw).await),
        Some(rustls::HandshakeKind::Full),
        "a session of the load before is not resumed"
    );
}

#[test]
fn https_targets_need_a_name_and_mtls_lists_an_entry() {
    let scratch = Scratch::new();
    scratch.write(
        "policy.yaml",
        "rules:\n  - { id: any-cert, effect: allow, when: { mtls: { spiffe_ids: [] } } }\n",
    );
    let yaml = "\
upstreams:
  secure: { targets: [\"https://127.1:8443\"], tls: { insecure_skip_verify: true } }
routes: [{ id: main, upstream: secure }]
policy: { files: [policy.yaml] }
";
    let path = scratch.write("gw.yaml", yaml);
    let errors = match portcullis::config::load(&path) {
        Ok(_) => panic!("the config loaded"),
        Err(errors) => errors.to_string(),
    };
    let errors = errors.replace(&scratch.path().display().to_string(), "DIR");
    assert!(
        errors.contains("upstreams.secure.targets[0]: \"127.1\" cannot be named in a TLS handshake; set tls.server_name"),
        "{errors}"
    );
    assert!(
        errors.contains("rules[0].when.mtls.spiffe_ids: holds no entries"),
        "{errors}"
    );
}
