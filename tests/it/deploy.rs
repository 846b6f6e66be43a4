//! What can be checked of the deployment files without a container engine: the paths the
//! Dockerfile copies exist, the config it serves is valid, the Kubernetes ConfigMap
//! holds a valid config whose ports match the probes, and the Grafana dashboard and
//! Prometheus alerts refer only to metrics the gateway exports. (`.ci/prometheus-check.sh`
//! has promtool parse and test them.)

use std::path::Path;

use crate::support::copy_tree;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_dockerfile_copies_files_that_exist_and_serves_a_valid_config() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut copied_config = None;
    // The image's /etc/portcullis, rebuilt from the COPY lines.
    let image = crate::support::Scratch::new();
    let image_etc = image.write("probe", "").with_file_name("etc");
    for line in dockerfile.lines() {
        let Some(rest) = line.strip_prefix("COPY ") else {
            continue;
        };
        if rest.starts_with("--from=") {
            continue;
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (destination, sources) = words.split_last().unwrap();
        for source in sources {
            assert!(
                root().join(source).exists(),
                "the Dockerfile copies {source}, which does not exist"
            );
        }
        if let Some(inside) = destination.strip_prefix("/etc/portcullis") {
            copy_tree(
                &root().join(sources[0]),
                &image_etc.join(inside.trim_start_matches('/')),
            );
        }
        if destination.ends_with("portcullis.yaml") {
            copied_config = Some(destination.to_string());
        }
    }
    let destination = copied_config.expect("the Dockerfile copies a config");
    assert!(
        dockerfile.contains(&format!("\"-c\", \"{destination}\"")),
        "CMD serves the copied config"
    );
    assert!(
        dockerfile.contains("target/release/portcullis"),
        "the binary is named after the package"
    );
    assert!(
        dockerfile.contains("USER nonroot"),
        "the image runs as a non-root user"
    );
    let rust_version = env!("CARGO_PKG_RUST_VERSION");
    assert!(
        dockerfile.contains(&format!("FROM rust:{rust_version}")),
        "the build image matches rust-version"
    );
    match portcullis::config::load(&image_etc.join("portcullis.yaml")) {
        Ok(config) => assert!(
            config.warnings.is_empty() && !config.policy.rules().is_empty(),
            "the image's config has no rules or warnings: {:?}",
            config.warnings
        ),
        Err(errors) => panic!("the image's config is invalid:\n{errors}"),
    }
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/portcullis.yaml")).unwrap();
    // The manifest is three YAML documents; the ConfigMap is the first. Its embedded file
    // is the block under `portcullis.yaml: |`, indented by four spaces.
    let config_map = text.split("\n---\n").next().unwrap();
    // Each `key: |` block of `data` is a file in the mounted directory.
    let volume = crate::support::Scratch::new();
    let data = config_map.split_once("\ndata:\n").unwrap().1;
    let mut file: Option<(String, String)> = None;
    for line in data.lines() {
        if let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) {
            if let Some((name, body)) = file.take() {
                volume.write(&name, &body);
            }
            file = Some((key.to_owned(), String::new()));
        } else if let Some((_, body)) = &mut file {
            body.push_str(line.strip_prefix("    ").unwrap_or(line));
            body.push('\n');
        }
    }
    let (name, body) = file.unwrap();
    let last = volume.write(&name, &body);
    let config = portcullis::config::load(&last.with_file_name("portcullis.yaml"))
        .unwrap_or_else(|errors| panic!("the ConfigMap's config is invalid:\n{errors}"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    assert_eq!(config.policy.rules().len(), 2);
    assert_eq!(
        config.admin.addr.port(),
        9090,
        "probes and scrape annotations use port 9090"
    );
    assert_eq!(
        config.listeners[0].addr.port(),
        8080,
        "the container port is 8080"
    );
    assert!(text.contains("terminationGracePeriodSeconds: 30"));
    assert!(
        config.shutdown_grace.as_secs() < 30,
        "the drain finishes before Kubernetes kills the pod"
    );
}

#[test]
fn dashboards_and_alerts_name_only_exported_metrics() {
    use portcullis::telemetry::names::ALL;
    for file in [
        "deploy/grafana/portcullis.json",
        "deploy/prometheus/alerts.yaml",
        "deploy/prometheus/alerts.test.yaml",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
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
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/portcullis.json")).unwrap(),
    )
    .unwrap();
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
