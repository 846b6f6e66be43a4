//! The binary as an operator runs it: start, validate, exit codes, and the graceful
//! drain on SIGTERM and SIGINT, and the reload on SIGHUP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;

use crate::support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_portcullis");

/// The gateway binary running as a child process, killed on drop.
struct Process {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    /// Every log line the process wrote, as it arrives.
    log: Arc<Mutex<Vec<String>>>,
    /// Every line the process wrote to stdout, as it arrives.
    out: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `portcullis run` and waits (bounded) for its listener to be bound.
    fn start(config: &Path) -> Process {
        let mut command = Command::new(BINARY);
        command
            .args(["--log-format", "json", "run", "-c"])
            .arg(config);
        Process::spawn(command)
    }

    /// Starts the gateway as `command` says and waits (bounded) for its listeners to be
    /// bound, reading their addresses from its log, JSON or text.
    fn spawn(mut command: Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let out_lines = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                out_lines.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line.clone());
                if let Some(bound) = bound_address(&line) {
                    let _ = sender.send(bound);
                }
            }
        });
        let mut addr = None;
        let mut admin = None;
        while addr.is_none() || admin.is_none() {
            let (is_admin, bound) = receiver
                .recv_timeout(Duration::from_secs(30))
                .expect("the gateway logs its bound addresses");
            if is_admin {
                admin = Some(bound);
            } else {
                addr = Some(bound);
            }
        }
        Process {
            child,
            addr: addr.unwrap(),
            admin: admin.unwrap(),
            log,
            out,
        }
    }

    /// The decision-log lines on stderr so far, once there are at least `count` (bounded
    /// wait).
    fn decisions(&self, count: usize) -> Vec<serde_json::Value> {
        Process::decisions_in(&self.log, count)
    }

    /// The decision-log lines among `lines` so far, once there are at least `count`
    /// (bounded wait).
    fn decisions_in(lines: &Mutex<Vec<String>>, count: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let found: Vec<serde_json::Value> = lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .filter(|line| line.get("decision.reason").is_some())
                .collect();
            if found.len() >= count {
                return found;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("fewer than {count} decision-log lines");
    }

    /// Sends a signal with the shell's built-in `kill`, which every POSIX system has
    /// (a `kill` executable is not always installed).
    fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .args([
                "-c",
                "kill -s \"$0\" \"$1\"",
                name,
                &self.child.id().to_string(),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit and returns its exit code.
    fn wait(&mut self) -> Option<i32> {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the gateway did not exit within 15s");
    }
}

/// A listener's address from a "listening" or "admin listening" log line: whether it is
/// the admin listener, and the address.
fn bound_address(line: &str) -> Option<(bool, SocketAddr)> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        let message = event["message"].as_str()?;
        let is_admin = match message {
            "listening" => false,
            "admin listening" => true,
            _ => return None,
        };
        return Some((is_admin, event["addr"].as_str()?.parse().ok()?));
    }
    // Text: `2026-12-04T15:30:06.438836Z  INFO portcullis::app: listening addr=127.0.0.1:37407`
    let (_, message) = line.split_once("portcullis::app: ")?;
    let is_admin = if message.starts_with("admin listening ") {
        true
    } else if message.starts_with("listening ") {
        false
    } else {
        return None;
    };
    let addr = message.split_once("addr=")?.1.split_whitespace().next()?;
    Some((is_admin, addr.parse().ok()?))
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn process_config(upstream: &str, extra: &str) -> String {
    format!(
        "listen: [{{ addr: 127.0.0.1:0 }}]\nadmin: {{ addr: 127.0.0.1:0 }}\n\
         upstreams: {{ app: {{ targets: [\"{upstream}\"] }} }}\n\
         routes: [{{ id: main, upstream: app }}]\n\
         policy: {{ files: [allow-all.yaml] }}\n{extra}"
    )
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let up = TestUpstream::start("slow").await;
    let scratch = Scratch::with_allow_all();
    let config = scratch.write(
        "gw.yaml",
        &process_config(&up.url(), "shutdown: { grace_period: 20s }\n"),
    );
    let mut process = Process::start(&config);
    let url = format!("http://{}/slow/1500", process.addr);
    let in_flight = tokio::spawn(async move { client().request(get(&url)).await });

    // Signal only once the request has reached the upstream.
    for _ in 0..200 {
        if !up.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(up.seen().len(), 1, "the slow request reached the upstream");
    process.signal("TERM");

    // While draining, the admin listener still answers: not ready, but alive.
    let admin = process.admin;
    let mut readiness = String::new();
    for _ in 0..100 {
        let response = client()
            .request(get(&format!("http://{admin}/readyz")))
            .await
            .unwrap();
        readiness = body_text(response).await;
        if readiness.contains("shutting down") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(readiness, "not ready: shutting down\n");
    let health = client()
        .request(get(&format!("http://{admin}/healthz")))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "slept 1500ms");
    let code = tokio::task::spawn_blocking(move || {
        let code = process.wait();
        (code, process.addr)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0));
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(code.1).await.is_err());
}

#[tokio::test]
async fn sigint_exits_0() {
    let up = TestUpstream::start("a").await;
    let scratch = Scratch::with_allow_all();
    let config = scratch.write("gw.yaml", &process_config(&up.url(), ""));
    let mut process = Process::start(&config);
    let response = client()
        .request(get(&format!("http://{}/", process.addr)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    process.signal("INT");
    let code = tokio::task::spawn_blocking(move || process.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

/// `cargo run --release`, the README's first command, runs the binary with no arguments
/// from the repository: it serves config/portcullis.yaml. Here the same files sit in a
/// scratch directory, on free ports, and the binary starts there with no arguments.
#[tokio::test]
async fn with_no_arguments_it_serves_config_portcullis_yaml() {
    let scratch = Scratch::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_tree(&repo.join("config"), &scratch.path().join("config"));
    let config = scratch.path().join("config/portcullis.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    for port in ["127.0.0.1:8080", "127.0.0.1:9090"] {
        assert!(
            text.contains(&format!("addr: {port}")),
            "the demo uses {port}"
        );
    }
    std::fs::write(&config, text.replace(":8080", ":0").replace(":9090", ":0")).unwrap();
    let mut command = Command::new(BINARY);
    command.current_dir(scratch.path()).env_remove("NO_COLOR");
    let process = Process::spawn(command);

    let allowed = client()
        .request(get(&format!("http://{}/public/hello", process.addr)))
        .await
        .unwrap();
    assert_eq!(allowed.status(), StatusCode::OK);
    let denied = client()
        .request(get(&format!("http://{}/admin/users", process.addr)))
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    assert_eq!(denied.headers()["x-portcullis-reason"], "ip_not_allowed");

    // Its stderr is a pipe, not a terminal: the text log has no colour codes.
    let log = process.log.lock().unwrap().join("\n");
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log: {log:?}"
    );
}

#[test]
fn an_invalid_config_exits_2_and_starts_nothing() {
    let scratch = Scratch::new();
    let config = scratch.write(
        "bad.yaml",
        "listen: [{ addr: 127.0.0.1:0 }]\nupstreams: { app: { targets: [\"builtin:echo\"] } }\nroutes:\n  - { id: main, upstream: ap }\n",
    );
    for command in ["run", "validate"] {
        let output = Command::new(BINARY)
            .args([command, "-c"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            stderr,
            format!(
                "{path}:4:27: routes[0].upstream: unknown upstream \"ap\"\n  help: did you mean \"app\"?\n{path}: 1 error; nothing was started\n",
                path = config.display()
            ),
            "{command}"
        );
    }
}

#[test]
fn validate_prints_ok_and_a_summary() {
    let output = Command::new(BINARY)
        .args(["validate", "-c", "config/portcullis.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        "ok: config/portcullis.yaml listening on 127.0.0.1:8080; 1 route; 1 upstream with 1 target; 7 rules in 1 policy file; 1 list of 2 networks; admin on 127.0.0.1:9090\n"
    );
}

#[test]
fn a_missing_config_file_exits_2_naming_it() {
    let output = Command::new(BINARY)
        .args(["validate", "-c", "/nonexistent/gw.yaml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("/nonexistent/gw.yaml: cannot read the file: "),
        "{stderr}"
    );
}

#[test]
fn an_address_in_use_exits_1_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let scratch = Scratch::with_allow_all();
    let config = listening_on(&scratch, addr, "");
    let output = Command::new(BINARY)
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    names_the_taken_address(&String::from_utf8(output.stderr).unwrap(), addr);
}

/// A config of the built-in echo upstream served on `addr`, with `extra` appended.
fn listening_on(scratch: &Scratch, addr: SocketAddr, extra: &str) -> std::path::PathBuf {
    scratch.write(
        "gw.yaml",
        &process_config("builtin:echo", extra).replace(
            "listen: [{ addr: 127.0.0.1:0 }]",
            &format!("listen: [{{ addr: {addr} }}]"),
        ),
    )
}

/// Asserts that a gateway's stderr says it could not bind `addr`.
fn names_the_taken_address(stderr: &str, addr: SocketAddr) {
    assert!(
        stderr.contains(&format!("error: binding listener {addr}: ")),
        "{stderr}"
    );
}

/// Workers share a port through SO_REUSEPORT, but a second gateway must not: it would
/// take half of the first one's connections.
#[tokio::test]
async fn a_second_gateway_on_the_same_port_exits_1() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let scratch = Scratch::with_allow_all();
    let config = listening_on(&scratch, addr, "workers: 2\n");
    let first = Process::start(&config);
    assert_eq!(first.addr, addr);
    let mut second = Command::new(BINARY)
        .args(["run", "-c"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..200 {
        status = second.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = second.kill();
        let _ = second.wait();
        panic!("the second gateway started on the first one's port");
    };
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    names_the_taken_address(&stderr, addr);
    let response = client()
        .request(get(&format!("http://{addr}/still")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Peak resident memory of a process, from /proc.
fn peak_resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test]
async fn large_bodies_stream_both_ways_with_flat_memory() {
    use http_body_util::BodyExt;
    const SIZE: u64 = 256 * 1024 * 1024;
    let up = TestUpstream::start("a").await;
    let scratch = Scratch::with_allow_all();
    let config = scratch.write("gw.yaml", &process_config(&up.url(), ""));
    let process = Process::start(&config);

    let upload = http::Request::post(format!("http://{}/upload", process.addr))
        .body(Generated::new(SIZE).boxed())
        .unwrap();
    let response = client().request(upload).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, SIZE.to_string());

    let response = client()
        .request(get(&format!("http://{}/download/{SIZE}", process.addr)))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, SIZE);

    // A proxy that buffered either body would have peaked above 256 MiB.
    let peak = peak_resident_bytes(process.child.id());
    assert!(
        peak < 64 * 1024 * 1024,
        "the gateway peaked at {peak} bytes resident"
    );
}

#[tokio::test]
async fn every_request_gets_one_decision_log_line_without_secrets() {
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::new();
    scratch.write(
        "rules.yaml",
        "rules:\n  - { id: read, effect: allow, match: { paths: [\"/public/**\"] } }\n  - { id: staged, effect: deny, mode: audit, match: { paths: [\"/public/new\"] } }\n",
    );
    let config = scratch.write(
        "gw.yaml",
        &process_config(&up.url(), "").replace("allow-all.yaml", "rules.yaml"),
    );
    let process = Process::start(&config);
    let secret = "Bearer eyJ.secret-token.sig";
    for path in ["/public/new", "/admin/users", "/a%2fb"] {
        let request = http::Request::get(format!("http://{}{path}", process.addr))
            .header("authorization", secret)
            .header("x-api-key", "key-secret-123")
            .body(ClientBody::default())
            .unwrap();
        client().request(request).await.unwrap();
    }
    let decisions = tokio::task::spawn_blocking(move || {
        let decisions = process.decisions(3);
        let text = process.log.lock().unwrap().join("\n");
        (decisions, text)
    })
    .await
    .unwrap();
    let (decisions, text) = decisions;
    assert_eq!(decisions.len(), 3, "{decisions:#?}");
    decisions.iter().for_each(assert_decision_log_fields);
    // Each thread writes its own batches: lines of different threads may come in any order.
    let find = |decision: &str| {
        decisions
            .iter()
            .find(|line| line["decision"] == decision)
            .unwrap_or_else(|| panic!("no {decision} line: {decisions:#?}"))
    };
    let allowed = find("allow");
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["decision.reason"], "allowed");
    assert_eq!(allowed["rule.id"], "read");
    assert_eq!(allowed["route.id"], "main");
    assert_eq!(allowed["http.method"], "GET");
    assert_eq!(allowed["url.path"], "/public/new");
    assert_eq!(allowed["client.ip"], "127.0.0.1");
    assert_eq!(allowed["audit"], serde_json::json!(["staged:would_deny"]));
    assert!(allowed["decision.micros"].is_u64());
    assert_eq!(allowed["request.id"].as_str().unwrap().len(), 26);
    let denied = find("deny");
    assert_eq!(denied["decision.reason"], "no_matching_allow");
    assert_eq!(denied["url.path"], "/admin/users");
    let refused = find("error");
    assert_eq!(refused["decision.reason"], "bad_request");
    assert!(
        !text.contains("secret-token") && !text.contains("key-secret"),
        "{text}"
    );
}

#[tokio::test]
async fn decision_lines_on_stdout_have_the_same_fields() {
    let up = TestUpstream::start("app").await;
    let scratch = Scratch::with_allow_all();
    let config = scratch.write(
        "gw.yaml",
        &process_config(&up.url(), "log: { decisions: stdout }\n"),
    );
    let process = Process::start(&config);
    client()
        .request(get(&format!("http://{}/a", process.addr)))
        .await
        .unwrap();
    raw_exchange(
        process.addr,
        b"GET /a%2fb HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let (decisions, on_stderr) = tokio::task::spawn_blocking(move || {
        let decisions = Process::decisions_in(&process.out, 2);
        let on_stderr = (process.log.lock().unwrap().iter())
            .filter(|line| line.contains("decision.reason"))
            .count();
        (decisions, on_stderr)
    })
    .await
    .unwrap();
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    decisions.iter().for_each(assert_decision_log_fields);
    assert_eq!(on_stderr, 0, "decision lines go to stdout only");
}

#[tokio::test]
async fn sighup_reloads_the_policy() {
    let up = TestUpstream::start("a").await;
    let scratch = Scratch::new();
    scratch.write(
        "policy.yaml",
        "rules: [{ id: allow-a, effect: allow, match: { paths: [\"/a\"] } }]\n",
    );
    // Not watching: only the signal can make it read the file again.
    let config = scratch.write(
        "gw.yaml",
        &process_config(&up.url(), "").replace(
            "policy: { files: [allow-all.yaml] }",
            "policy: { files: [policy.yaml], watch: false }",
        ),
    );
    let process = Process::start(&config);
    let status = |path: &str| {
        let url = format!("http://{}{path}", process.addr);
        async move { client().request(get(&url)).await.unwrap().status() }
    };
    assert_eq!(status("/b").await, StatusCode::FORBIDDEN);
    scratch.write(
        "policy.yaml",
        "rules: [{ id: allow-b, effect: allow, match: { paths: [\"/b\"] } }]\n",
    );
    assert_eq!(status("/b").await, StatusCode::FORBIDDEN);
    process.signal("HUP");
    let mut answered = StatusCode::FORBIDDEN;
    for _ in 0..100 {
        answered = status("/b").await;
        if answered == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered, StatusCode::OK, "the signal reloaded the policy");
    // The log is read by another thread: give it a moment.
    let logged = || {
        process
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("SIGHUP received"))
    };
    for _ in 0..100 {
        if logged() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged(), "the reload is logged");
}

/// `portcullis healthcheck` against `admin`: exit code, stdout, stderr. Run as a child
/// process the runtime waits for, so an in-process gateway keeps answering meanwhile.
async fn healthcheck(admin: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(BINARY)
        .args(["healthcheck", "--admin", admin])
        .args(extra)
        .output()
        .await
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[tokio::test]
async fn healthcheck_exits_0_for_a_ready_gateway() {
    let gw = TestGateway::start(&config(&["builtin:echo".to_owned()], "")).await;
    let (code, stdout, stderr) = healthcheck(&gw.admin.to_string(), &[]).await;
    assert_eq!((code, stdout.as_str()), (Some(0), "ready\n"), "{stderr}");
    // A config that listens on every interface names 0.0.0.0; that is asked on loopback.
    let unspecified = format!("0.0.0.0:{}", gw.admin.port());
    assert_eq!(healthcheck(&unspecified, &[]).await.0, Some(0));
    // A name is tried at each of its addresses: localhost may name ::1 first.
    let named = format!("localhost:{}", gw.admin.port());
    assert_eq!(healthcheck(&named, &[]).await.0, Some(0));
    let (code, _, stderr) = healthcheck(&named, &["--timeout", "0s"]).await;
    assert_eq!(
        (code, stderr.as_str()),
        (Some(2), "--timeout: must be longer than 0s\n")
    );
}

#[tokio::test]
async fn healthcheck_exits_1_for_a_gateway_that_is_not_ready() {
    // An issuer whose keys cannot be fetched holds readiness back.
    let (closed, _socket) = closed_port();
    let identity = format!(
        "identity:\n  jwt:\n    - id: corp\n      issuer: https://idp.example/\n      audiences: [api]\n      jwks_url: http://{closed}/jwks.json\n      algorithms: [RS256]\n"
    );
    let gw = TestGateway::start(&config(&["builtin:echo".to_owned()], &identity)).await;
    let (code, stdout, stderr) = healthcheck(&gw.admin.to_string(), &[]).await;
    assert_eq!((code, stdout.as_str()), (Some(1), ""));
    assert!(
        stderr.starts_with(&format!(
            "http://{}/readyz answered 503: not ready: issuer corp: no keys loaded",
            gw.admin
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn healthcheck_exits_1_for_a_stopped_or_silent_gateway() {
    let (closed, _socket) = closed_port();
    let (code, _, stderr) = healthcheck(&closed.to_string(), &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with(&format!(
            "cannot connect to the admin listener at {closed}: "
        )),
        "{stderr}"
    );

    // A listener that accepts and never answers: the check gives up at its timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let (code, _, stderr) = healthcheck(&addr.to_string(), &["--timeout", "300ms"]).await;
    held.abort();
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        format!("http://{addr}/readyz did not answer within 300ms\n")
    );
}
