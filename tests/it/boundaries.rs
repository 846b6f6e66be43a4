//! The module boundaries the code keeps, read from the sources: the policy crate uses std
//! and ipnet only, and the modules of `src/` import one another exactly as the picture in
//! ARCHITECTURE.md draws it, so neither the code nor the picture can drift alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The text of every `.rs` file under `dir`, by path relative to it.
fn sources(dir: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.insert(relative, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    found
}

/// The code of a file without its comments and its unit tests, which may use anything.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `prefix::name` path in `code`: the names after `prefix::`.
fn paths_after<'c>(code: &'c str, prefix: &str) -> BTreeSet<&'c str> {
    code.match_indices(prefix)
        .filter(|(at, _)| {
            // A whole word: `crate::`, not `portcullis_crate::`.
            code[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
        .map(|(at, _)| {
            let rest = &code[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

#[test]
fn the_policy_crate_depends_on_std_and_ipnet_only() {
    let manifest = std::fs::read_to_string(root().join("crates/policy/Cargo.toml")).unwrap();
    let dependencies: Vec<&str> = manifest
        .split("\n[")
        .filter(|section| section.starts_with("dependencies]"))
        .flat_map(|section| section.lines().skip(1))
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| line.split('=').next().unwrap().trim())
        .collect();
    assert_eq!(dependencies, ["ipnet"], "crates/policy/Cargo.toml");

    // Nor does it reach I/O, the clock or the gateway through std or a path.
    let forbidden = [
        "std::fs",
        "std::io",
        "std::net::Tcp",
        "std::net::Udp",
        "std::process",
        "std::thread",
        "std::env",
        "SystemTime::now",
        "Instant::now",
    ];
    for (file, text) in sources(&root().join("crates/policy/src")) {
        let code = code(&text);
        for name in [
            "hyper",
            "tokio",
            "http",
            "serde",
            "serde_saphyr",
            "portcullis",
        ] {
            assert!(
                paths_after(&code, &format!("{name}::")).is_empty()
                    && !code.contains(&format!("extern crate {name}")),
                "crates/policy/src/{file} names {name}"
            );
        }
        for path in forbidden {
            assert!(!code.contains(path), "crates/policy/src/{file} uses {path}");
        }
    }
}

/// `module → its imports` for every module of `src/`, from the sources: a module is a
/// file or directory directly under `src/`; `main` reaches the library as `portcullis::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in sources(&root().join("src")) {
        let module = file
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_owned();
        // Test helpers and test files are not part of the shipped graph.
        if module == "lib" || module == "testing" || file.ends_with("/tests.rs") {
            continue;
        }
        let code = code(&text);
        let prefix = if module == "main" {
            "portcullis::"
        } else {
            "crate::"
        };
        let entry = graph.entry(module.clone()).or_default();
        for name in paths_after(&code, prefix) {
            if name != module {
                entry.insert(name.to_owned());
            }
        }
    }
    graph
}

/// The picture in ARCHITECTURE.md: the fenced block after "Which module may use which",
/// one line per module, `module → a, b, c` (a module with no arrow imports nothing).
fn picture() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let after = text
        .split_once("Which module may use which")
        .expect("ARCHITECTURE.md draws which module may use which")
        .1;
    let block = after.split("```").nth(1).unwrap();
    let mut graph = BTreeMap::new();
    for line in block.lines().skip(1).filter(|line| !line.trim().is_empty()) {
        let line = line.split('(').next().unwrap();
        let (module, uses) = line.split_once('→').unwrap_or((line, ""));
        let uses: BTreeSet<String> = uses
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        graph.insert(module.trim().to_owned(), uses);
    }
    graph
}

#[test]
fn modules_import_one_another_as_architecture_md_draws_it() {
    let actual = imports();
    let drawn = picture();
    let mut wrong = Vec::new();
    for module in actual.keys().chain(drawn.keys()).collect::<BTreeSet<_>>() {
        let (is, says) = (actual.get(module), drawn.get(module));
        if is != says {
            wrong.push(format!(
                "{module}: the code imports {:?}, ARCHITECTURE.md draws {:?}",
                is.map(|set| set.iter().collect::<Vec<_>>()),
                says.map(|set| set.iter().collect::<Vec<_>>()),
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // No cycles: every module can be placed after everything it imports.
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while placed.len() < actual.len() {
        let next = actual.iter().find(|(module, uses)| {
            !placed.contains(module.as_str())
                && uses
                    .iter()
                    .all(|used| placed.contains(used.as_str()) || !actual.contains_key(used))
        });
        let Some((module, _)) = next else {
            let left: Vec<&String> = actual
                .keys()
                .filter(|module| !placed.contains(module.as_str()))
                .collect();
            panic!("modules import one another in a cycle among {left:?}");
        };
        placed.insert(module);
    }
}
