//! File text and YAML paths: which line and column a path such as `routes[2].upstream`
//! starts at, and which path a parser-reported position falls in.
//!
//! The index is built from the YAML event stream, so it sees exactly the nodes the
//! deserializer saw. It is only built when an error has to be reported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_saphyr::granit_parser::{Event, Parser};

/// A file's text, indexed by YAML path.
pub struct Source {
    path: PathBuf,
    /// The position of each value node, keyed by its YAML path.
    values: HashMap<String, (usize, usize)>,
    /// Every key and value node in document order, for position → path look-ups.
    nodes: Vec<((usize, usize), String)>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

impl Source {
    /// Indexes `text`. A part that does not parse is simply absent from the index.
    pub fn new(path: &Path, text: &str) -> Source {
        let mut source = Source {
            path: path.to_owned(),
            values: HashMap::new(),
            nodes: Vec::new(),
        };
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            // Lines are 1-based and columns 0-based in the parser; we print both 1-based.
            let position = (span.start.line(), span.start.col() + 1);
            let starts_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::SequenceStart(..)
                    | Event::MappingStart(..)
                    | Event::Alias(..)
            );
            if starts_node {
                let node_path = match stack.last_mut() {
                    None => String::new(),
                    Some(Frame::Seq { path, next }) => {
                        let node_path = format!("{path}[{next}]");
                        *next += 1;
                        node_path
                    }
                    Some(Frame::Map { path, key }) => match key.take() {
                        Some(key) => join(path, &key),
                        None => {
                            // This node is a key: remember it and index its own position.
                            let key_text = match &event {
                                Event::Scalar(text, ..) => text.to_string(),
                                _ => "?".to_owned(),
                            };
                            let key_path = join(path, &key_text);
                            source.nodes.push((position, key_path));
                            *key = Some(key_text);
                            if let Event::MappingStart(..) | Event::SequenceStart(..) = event {
                                // A complex key: index nothing inside it.
                                stack.push(Frame::Seq {
                                    path: "?".to_owned(),
                                    next: 0,
                                });
                            }
                            continue;
                        }
                    },
                };
                source.nodes.push((position, node_path.clone()));
                source.values.entry(node_path.clone()).or_insert(position);
                match event {
                    Event::MappingStart(..) => stack.push(Frame::Map {
                        path: node_path,
                        key: None,
                    }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq {
                        path: node_path,
                        next: 0,
                    }),
                    _ => {}
                }
            } else if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
            }
        }
        source
    }

    /// The file this text came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Line and column (both 1-based) of the value at `yaml_path`, when the file has one.
    pub fn locate(&self, yaml_path: &str) -> Option<(usize, usize)> {
        self.values.get(yaml_path).copied()
    }

    /// The YAML path of the last node that starts at or before `line`:`column`.
    pub fn path_at(&self, line: usize, column: usize) -> Option<String> {
        self.nodes
            .iter()
            .take_while(|(position, _)| *position <= (line, column))
            .last()
            .map(|(_, path)| path.clone())
    }
}

/// Appends a mapping key to a path.
fn join(path: &str, key: &str) -> String {
    let key = key_segment(key);
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// A mapping key as a path segment, quoted when it would read ambiguously.
pub fn key_segment(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
listen:
  - addr: 127.0.0.1:8080
upstreams:
  app: { targets: [\"http://a\", \"http://b\"] }
routes:
  - id: api
    upstream: ap
";

    #[test]
    fn locates_values_by_path() {
        let source = Source::new(Path::new("x.yaml"), TEXT);
        assert_eq!(source.locate("listen[0].addr"), Some((2, 11)));
        assert_eq!(source.locate("upstreams.app.targets[1]"), Some((4, 32)));
        assert_eq!(source.locate("routes[0].upstream"), Some((7, 15)));
        assert_eq!(source.locate("routes[1]"), None);
    }

    #[test]
    fn finds_path_at_position() {
        let source = Source::new(Path::new("x.yaml"), TEXT);
        assert_eq!(source.path_at(7, 5).as_deref(), Some("routes[0].upstream"));
        assert_eq!(source.path_at(2, 5).as_deref(), Some("listen[0].addr"));
        assert_eq!(source.path_at(1, 1).as_deref(), Some("listen"));
    }

    #[test]
    fn quotes_odd_keys() {
        let source = Source::new(Path::new("x.yaml"), "upstreams:\n  a.b: 1\n");
        assert_eq!(source.locate("upstreams.\"a.b\""), Some((2, 8)));
    }
}
