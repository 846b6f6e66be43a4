//! The deployment kits against the code, read as their tools read them: the Dockerfile,
//! the Kubernetes base, the Compose file and the systemd unit must name the binary, the
//! ports, the probe paths and the config paths the code uses, and each config they ship,
//! laid out as its container or host sees it, must load. Grafana and Prometheus files
//! must name only exported metrics. (`.ci/image-check.sh` and `.ci/deploy-check.sh` put
//! the same files through docker, kubectl, kubernetes-validate, compose, promtool and
//! systemd-analyze.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis::admin::{LIVE_PATH, METRICS_PATH, READY_PATH};
use portcullis::config::{Config, DEFAULT_ADMIN_ADDR};
use serde_json::Value;

use crate::support::{Scratch, copy_tree};

/// The binary, as Cargo.toml names the package.
const BINARY: &str = env!("CARGO_PKG_NAME");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(file: &str) -> String {
    std::fs::read_to_string(root().join(file)).unwrap_or_else(|err| panic!("{file}: {err}"))
}

/// Every document of a YAML file, as JSON values.
fn yaml_documents(file: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(file))
        .unwrap_or_else(|err| panic!("{file}: {err}"))
        .into_iter()
        .filter(|document| !document.is_null())
        .collect()
}

fn yaml(file: &str) -> Value {
    let mut documents = yaml_documents(file);
    assert_eq!(documents.len(), 1, "{file} holds one document");
    documents.remove(0)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{value} is not a list"))
        .iter()
        .map(|item| item.as_str().unwrap().to_owned())
        .collect()
}

/// The word after `-c` in a command line.
fn config_argument(command: &[String]) -> String {
    let at = command
        .iter()
        .position(|word| word == "-c")
        .unwrap_or_else(|| panic!("{command:?} names no config with -c"));
    command[at + 1].clone()
}

/// `root` joined with an absolute path inside it.
fn inside(root: &Path, absolute: &str) -> PathBuf {
    root.join(absolute.trim_start_matches('/'))
}

fn load(path: &Path) -> Config {
    let config = portcullis::config::load(path)
        .unwrap_or_else(|errors| panic!("{} is invalid:\n{errors}", path.display()));
    assert!(
        config.warnings.is_empty(),
        "{}: {:?}",
        path.display(),
        config.warnings
    );
    assert!(
        !config.policy.rules().is_empty(),
        "{} has rules",
        path.display()
    );
    config
}

fn port(config: &Config) -> u16 {
    config.listeners[0].addr.port()
}

/// The Dockerfile's instructions that the image is made of.
struct Dockerfile {
    froms: Vec<String>,
    /// `ENV` settings, in order.
    env: Vec<(String, String)>,
    /// `(--from stage, sources, destination)` of each COPY.
    copies: Vec<(Option<String>, Vec<String>, String)>,
    user: String,
    expose: Vec<u16>,
    healthcheck: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

impl Dockerfile {
    fn read() -> Dockerfile {
        let text = read("Dockerfile").replace("\\\n", " ");
        let mut file = Dockerfile {
            froms: Vec::new(),
            env: Vec::new(),
            copies: Vec::new(),
            user: String::new(),
            expose: Vec::new(),
            healthcheck: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
        };
        let exec = |words: &str| -> Vec<String> {
            serde_json::from_str(words).unwrap_or_else(|err| panic!("{words}: {err}"))
        };
        for line in text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
        {
            let Some((keyword, rest)) = line.trim().split_once(' ') else {
                continue;
            };
            match keyword {
                "FROM" => file.froms.push(rest.to_owned()),
                "ENV" => {
                    let (name, value) = rest.split_once('=').unwrap();
                    file.env.push((name.to_owned(), value.to_owned()));
                }
                "COPY" => {
                    let mut words: Vec<String> =
                        rest.split_whitespace().map(str::to_owned).collect();
                    let from = words
                        .first()
                        .and_then(|word| word.strip_prefix("--from="))
                        .map(str::to_owned);
                    if from.is_some() {
                        words.remove(0);
                    }
                    let destination = words.pop().unwrap();
                    file.copies.push((from, words, destination));
                }
                "USER" => file.user = rest.to_owned(),
                "EXPOSE" => {
                    file.expose = rest
                        .split_whitespace()
                        .map(|p| p.parse().unwrap())
                        .collect()
                }
                "HEALTHCHECK" => file.healthcheck = exec(rest.split_once("CMD ").unwrap().1),
                "ENTRYPOINT" => file.entrypoint = exec(rest),
                "CMD" => file.cmd = exec(rest),
                _ => {}
            }
        }
        file
    }

    /// The image's root filesystem as far as the repository makes it: the files the
    /// runtime stage copies from the build context.
    fn lay_out(&self, root: &Path) {
        for (from, sources, destination) in &self.copies {
            if from.is_some() || !destination.starts_with('/') {
                continue;
            }
            for source in sources {
                assert!(
                    self::root().join(source).exists(),
                    "the Dockerfile copies {source}, which does not exist"
                );
                copy_tree(&self::root().join(source), &inside(root, destination));
            }
        }
    }

    /// The path of the binary in the image.
    fn binary(&self) -> &str {
        &self.entrypoint[0]
    }

    /// The config the image serves.
    fn config(&self) -> String {
        config_argument(&self.cmd)
    }

    /// The config `command` serves in the files under `root`; `command` must be the
    /// image's own but for the config it names.
    fn serve(&self, command: &[String], root: &Path) -> Config {
        assert_eq!(
            command[..command.len() - 1],
            self.cmd[..self.cmd.len() - 1],
            "{command:?} is the image's command with a config of its own"
        );
        load(&inside(root, &config_argument(command)))
    }
}

#[test]
fn the_image_runs_the_binary_with_its_config_and_passes_the_demo_cases() {
    let dockerfile = Dockerfile::read();
    // The build uses the toolchain rust-toolchain.toml pins, of the rust-version.
    let toolchain = read("rust-toolchain.toml");
    let channel = toolchain
        .lines()
        .find_map(|line| line.strip_prefix("channel = "))
        .unwrap()
        .trim_matches('"');
    assert!(channel.starts_with(env!("CARGO_PKG_RUST_VERSION")));
    assert!(
        dockerfile.froms[0].starts_with(&format!("rust:{channel}-")),
        "the build image is the pinned toolchain's: {}",
        dockerfile.froms[0]
    );
    assert!(
        dockerfile
            .env
            .contains(&("RUSTUP_TOOLCHAIN".to_owned(), channel.to_owned())),
        "rustup picks the pinned toolchain"
    );
    assert!(
        dockerfile.froms.last().unwrap().ends_with(":nonroot")
            && dockerfile.user.starts_with("nonroot"),
        "the image runs as the base image's non-root user"
    );
    let built = dockerfile
        .copies
        .iter()
        .find(|(from, _, _)| from.is_some())
        .expect("the runtime stage copies the binary from the build stage");
    assert!(built.1[0].ends_with(&format!("target/release/{BINARY}")));
    assert_eq!(built.2, dockerfile.binary());
    assert!(dockerfile.binary().ends_with(&format!("/{BINARY}")));

    let image = Scratch::new();
    dockerfile.lay_out(image.path());
    let config = load(&inside(image.path(), &dockerfile.config()));
    assert_eq!(
        dockerfile.expose,
        [port(&config), config.admin.addr.port()],
        "EXPOSE names the listener and the admin listener"
    );
    assert_eq!(
        dockerfile.healthcheck,
        [
            dockerfile.binary().to_owned(),
            "healthcheck".to_owned(),
            "--admin".to_owned(),
            format!("127.0.0.1:{}", config.admin.addr.port())
        ],
        "HEALTHCHECK asks the admin listener the image's config sets"
    );

    // The image serves the demo: the demo's cases hold against it.
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(root().join("config/tests")).unwrap() {
        cases.extend(portcullis::config::cases::load(&entry.unwrap().path()).unwrap());
    }
    let (report, failed) = portcullis::cli::run_cases(&config, &cases);
    assert_eq!(failed, 0, "{report}");
}

/// A kustomization's generators: the name of each ConfigMap or Secret, and its files.
fn generated(kustomization: &Value) -> Vec<(String, Vec<String>)> {
    ["configMapGenerator", "secretGenerator"]
        .iter()
        .flat_map(|key| kustomization[key].as_array().cloned().unwrap_or_default())
        .map(|generator| {
            (
                generator["name"].as_str().unwrap().to_owned(),
                strings(&generator["files"]),
            )
        })
        .collect()
}

/// The first document of `documents` of this kind and name.
fn resource<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn named_port(ports: &Value, name: &str, key: &str) -> u64 {
    ports
        .as_array()
        .unwrap()
        .iter()
        .find(|port| port["name"] == name)
        .unwrap_or_else(|| panic!("no port named {name} in {ports}"))[key]
        .as_u64()
        .unwrap()
}

#[test]
fn the_kubernetes_base_serves_its_config_as_the_pod_mounts_it() {
    let base = "deploy/kubernetes/base";
    let kustomization = yaml(&format!("{base}/kustomization.yaml"));
    let mut documents = Vec::new();
    for file in strings(&kustomization["resources"]) {
        documents.extend(yaml_documents(&format!("{base}/{file}")));
    }
    let generators = generated(&kustomization);
    let deployment = resource(&documents, "Deployment", BINARY);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], BINARY);

    // The pod's files: the image's, with each volume mounted over them.
    let dockerfile = Dockerfile::read();
    let scratch = Scratch::new();
    dockerfile.lay_out(scratch.path());
    for mount in container["volumeMounts"].as_array().unwrap() {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .unwrap();
        assert!(
            mount.get("subPath").is_none(),
            "subPath mounts never update"
        );
        let source = volume["configMap"]["name"]
            .as_str()
            .or(volume["secret"]["secretName"].as_str())
            .unwrap();
        let (_, files) = generators
            .iter()
            .find(|(name, _)| name == source)
            .unwrap_or_else(|| panic!("the kustomization generates no {source}"));
        let directory = inside(scratch.path(), mount["mountPath"].as_str().unwrap());
        for file in files {
            let from = root().join(base).join(file);
            copy_tree(&from, &directory.join(from.file_name().unwrap()));
        }
    }
    let config = dockerfile.serve(&strings(&container["args"]), scratch.path());

    let ports = &container["ports"];
    assert_eq!(
        named_port(ports, "http", "containerPort"),
        u64::from(port(&config))
    );
    assert_eq!(
        named_port(ports, "admin", "containerPort"),
        u64::from(config.admin.addr.port())
    );
    for (probe, path) in [("readinessProbe", READY_PATH), ("livenessProbe", LIVE_PATH)] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    assert!(
        Duration::from_secs(grace) > Duration::from_secs(pre_stop) + config.shutdown_grace,
        "the preStop wait and the drain finish before Kubernetes kills the pod"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    // Two gateways at least, one down at a time; the autoscaler alone sets the count.
    assert!(deployment["spec"].get("replicas").is_none());
    let autoscaler = resource(&documents, "HorizontalPodAutoscaler", BINARY);
    assert!(autoscaler["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    let budget = resource(&documents, "PodDisruptionBudget", BINARY);
    assert_eq!(budget["spec"]["maxUnavailable"], 1);

    // Services and the network policy name the container's ports.
    let proxy = resource(&documents, "Service", BINARY);
    assert_eq!(proxy["spec"]["ports"][0]["targetPort"], "http");
    let admin = resource(&documents, "Service", &format!("{BINARY}-admin"));
    assert_eq!(
        named_port(&admin["spec"]["ports"], "admin", "port"),
        u64::from(config.admin.addr.port())
    );
    assert_eq!(admin["spec"]["ports"][0]["targetPort"], "admin");
    let policy = resource(&documents, "NetworkPolicy", BINARY);
    for rule in policy["spec"]["ingress"].as_array().unwrap() {
        for port in rule["ports"].as_array().unwrap() {
            let name = port["port"].as_str().unwrap();
            named_port(ports, name, "containerPort");
        }
    }

    // The overlay's ServiceMonitor scrapes the admin Service's port at the metrics path.
    let monitor = yaml("deploy/kubernetes/overlays/prometheus-operator/servicemonitor.yaml");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "admin");
    assert_eq!(endpoint["path"], METRICS_PATH);
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&admin["metadata"]["labels"][label], value, "{label}");
    }
}

#[test]
fn the_compose_kit_serves_its_config_as_the_container_mounts_it() {
    let compose = yaml("deploy/compose/compose.yaml");
    let services = &compose["services"];
    let gateway = &services[BINARY];
    let dockerfile = Dockerfile::read();
    let scratch = Scratch::new();
    dockerfile.lay_out(scratch.path());
    for volume in strings(&gateway["volumes"]) {
        let mut parts = volume.split(':');
        let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
        copy_tree(
            &root().join("deploy/compose").join(source),
            &inside(scratch.path(), target),
        );
    }
    let config = dockerfile.serve(&strings(&gateway["command"]), scratch.path());

    let published: Vec<u16> = strings(&gateway["ports"])
        .iter()
        .map(|mapping| mapping.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(published, [port(&config), config.admin.addr.port()]);
    let stop =
        portcullis::config::parse_duration(gateway["stop_grace_period"].as_str().unwrap()).unwrap();
    assert!(stop > config.shutdown_grace, "compose waits out the drain");
    for upstream in &config.upstreams {
        for target in &upstream.targets {
            let host = target.to_string();
            let host = host
                .trim_start_matches("http://")
                .split(':')
                .next()
                .unwrap();
            assert!(
                services.get(host).is_some(),
                "the upstream {host} is a service of the compose file"
            );
        }
    }

    // Prometheus scrapes the gateway's admin listener and loads the mounted alert rules.
    let prometheus = yaml("deploy/compose/prometheus.yaml");
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["metrics_path"], METRICS_PATH);
    assert_eq!(
        job["static_configs"][0]["targets"][0],
        format!("{BINARY}:{}", config.admin.addr.port())
    );
    // The admin listener answers a scrape by that name only when it is allowed.
    assert!(
        (config.admin.allowed_hosts.iter()).any(|pattern| pattern.matches(BINARY)),
        "admin.allowed_hosts lets Prometheus scrape by the name {BINARY}"
    );
    let mounts = strings(&services["prometheus"]["volumes"]);
    for rules in strings(&prometheus["rule_files"]) {
        assert!(
            mounts
                .iter()
                .any(|mount| mount.contains(&format!("/etc/prometheus/{rules}"))),
            "{rules} is mounted beside the Prometheus config"
        );
    }
}

#[test]
fn the_systemd_unit_runs_the_binary_as_the_image_does() {
    let unit = read("deploy/systemd/portcullis.service");
    let setting = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    let dockerfile = Dockerfile::read();
    let start: Vec<String> = setting("ExecStart")[0]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        start[0],
        dockerfile.binary(),
        "installed where the image has it"
    );
    assert_eq!(
        start[1..],
        dockerfile.cmd[..],
        "the unit runs the image's command"
    );
    let check = format!("{} validate -c {}", start[0], dockerfile.config());
    assert_eq!(setting("ExecStartPre"), [check.as_str()]);
    assert_eq!(setting("ExecReload"), ["/bin/kill -HUP $MAINPID"]);

    // The drain of a config that sets no grace period ends before systemd kills.
    let defaults = portcullis::config::from_str(
        Path::new("gw.yaml"),
        "listen: [{ addr: 127.0.0.1:0 }]\nupstreams: { app: { targets: [builtin:echo] } }\nroutes: [{ id: r, upstream: app }]\n",
    )
    .unwrap();
    let stop = portcullis::config::parse_duration(setting("TimeoutStopSec")[0]).unwrap();
    assert!(stop > defaults.shutdown_grace);

    // No capability, as the ports the code and the demo use need none.
    let demo = portcullis::config::load(&root().join(portcullis::cli::DEFAULT_CONFIG)).unwrap();
    let admin: std::net::SocketAddr = DEFAULT_ADMIN_ADDR.parse().unwrap();
    assert!(port(&demo) >= 1024 && admin.port() >= 1024);
    assert_eq!(setting("CapabilityBoundingSet"), [""]);
    assert_eq!(setting("AmbientCapabilities"), [""]);
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|line| line == hardening), "{hardening}");
    }
}

#[test]
fn the_scrape_config_asks_the_default_admin_address() {
    let prometheus = yaml("deploy/prometheus/prometheus.yaml");
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["metrics_path"], METRICS_PATH);
    assert_eq!(job["static_configs"][0]["targets"][0], DEFAULT_ADMIN_ADDR);
}

#[test]
fn dashboards_and_alerts_name_only_exported_metrics() {
    use portcullis::telemetry::names::ALL;
    for file in [
        "deploy/grafana/portcullis.json",
        "deploy/prometheus/alerts.yaml",
        "deploy/prometheus/alerts.test.yaml",
    ] {
        let text = read(file);
        let mut named = 0;
        for (at, _) in text.match_indices("portcullis_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                ALL.contains(&base) || ALL.contains(&name.as_str()),
                "{file} refers to {name}, which the gateway does not export"
            );
            named += 1;
        }
        assert!(named > 0, "{file} names no metric");
    }
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/portcullis.json")).unwrap();
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|panel| panel["title"].as_str())
        .collect();
    for wanted in [
        "Requests by decision",
        "Top denial reasons",
        "Top deciding deny rules",
        "Audit rules: what they would do",
        "Whole request",
        "Upstream errors",
        "Reloads",
    ] {
        assert!(
            titles.contains(&wanted),
            "the dashboard lacks {wanted}: {titles:?}"
        );
    }
}
