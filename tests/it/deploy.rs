//! What can be checked of the deployment files without a container engine: the paths the
//! Dockerfile copies exist, the config it serves is valid, and the Kubernetes ConfigMap
//! holds a valid config whose ports match the probes.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_dockerfile_copies_files_that_exist_and_serves_a_valid_config() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut copied_config = None;
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
        if destination.ends_with("portcullis.yaml") {
            copied_config = Some((sources[0].to_owned(), destination.to_string()));
        }
    }
    let (source, destination) = copied_config.expect("the Dockerfile copies a config");
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
    if let Err(errors) = portcullis::config::load(&root().join(&source)) {
        panic!("{source} is invalid:\n{errors}");
    }
}

#[test]
fn the_kubernetes_configmap_holds_a_valid_config() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/portcullis.yaml")).unwrap();
    // The manifest is three YAML documents; the ConfigMap is the first. Its embedded file
    // is the block under `portcullis.yaml: |`, indented by four spaces.
    let config_map = text.split("\n---\n").next().unwrap();
    let embedded: String = config_map
        .split_once("portcullis.yaml: |\n")
        .unwrap()
        .1
        .lines()
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .map(|line| format!("{line}\n"))
        .collect();
    let config = portcullis::config::from_str(Path::new("configmap/portcullis.yaml"), &embedded)
        .unwrap_or_else(|errors| panic!("the ConfigMap's config is invalid:\n{errors}"));
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
