//! The rule index: host → path trie → the rules whose hosts and paths can fit a request,
//! so a decision costs O(rules that can match this host and path), not O(all rules).
//!
//! Each trie node has literal edges (hashed segment text), one edge for `*` and
//! `{name}`, and one for `**`. A request walks the trie once per host bucket it falls in:
//! its exact host, each `*.suffix` of it, and the rules that name no host.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::decision::Effect;
use super::rule::{HostPattern, PathGlob, Rule, Segment, split};

/// A rule whose hosts and paths fit the request, with the path's captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'p, 'f> {
    /// Position of the rule in file order.
    pub rule: usize,
    /// `{name}` captures of the first of its paths that fits: (name, segment).
    pub captures: Vec<(&'p str, &'f str)>,
}

/// All rules, indexed by host and path.
#[derive(Debug, Default)]
pub struct Index {
    /// Rules without hosts or paths: they fit every request, no walk needed.
    everywhere: Vec<usize>,
    any_host: Trie,
    exact: HashMap<String, Trie>,
    suffix: HashMap<String, Trie>,
}

impl Index {
    /// Indexes `rules`; a rule with several hosts or paths gets an entry for each.
    pub fn new(rules: &[Rule]) -> Index {
        let mut index = Index::default();
        let every_path = PathGlob::everything();
        for (rule_number, rule) in rules.iter().enumerate() {
            if rule.hosts.is_empty() && rule.paths.is_empty() {
                index.everywhere.push(rule_number);
                continue;
            }
            if rule.hosts.is_empty() {
                index.any_host.insert_rule(rule, rule_number, &every_path);
            }
            // A rule that lists a host twice is indexed under it once.
            let mut seen: Vec<&HostPattern> = Vec::new();
            for host in &rule.hosts {
                if seen.contains(&host) {
                    continue;
                }
                seen.push(host);
                let trie = match host {
                    HostPattern::Exact(name) => index.exact.entry(name.clone()).or_default(),
                    HostPattern::Suffix(suffix) => index.suffix.entry(suffix.clone()).or_default(),
                };
                trie.insert_rule(rule, rule_number, &every_path);
            }
        }
        index
    }

    /// The rules whose hosts and paths fit, in file order, each once.
    pub fn candidates<'p, 'f>(
        &'p self,
        rules: &'p [Rule],
        host: Option<&str>,
        path: &'f str,
    ) -> Vec<Candidate<'p, 'f>> {
        // Room for the rules that apply everywhere and a few path rules: one allocation.
        let mut ends: Vec<End> = Vec::with_capacity(self.everywhere.len() + 4);
        ends.extend(self.everywhere.iter().map(|&rule| End {
            rule,
            glob: None,
            wild: Vec::new(),
        }));
        let no_tries =
            self.any_host.nodes.is_empty() && self.exact.is_empty() && self.suffix.is_empty();
        let parts: Vec<&'f str> = if no_tries {
            Vec::new()
        } else {
            split(path).collect()
        };
        let mut wild = Vec::new();
        self.any_host.walk(0, &parts, 0, &mut wild, &mut ends);
        if host.is_none() {
            // SECURITY: a request that names no host (HTTP/1.0) still meets every deny
            // rule that names hosts; it cannot be shown to be outside them.
            let mut host_ends = Vec::new();
            for trie in self.exact.values().chain(self.suffix.values()) {
                trie.walk(0, &parts, 0, &mut wild, &mut host_ends);
            }
            host_ends.retain(|end| rules[end.rule].effect == Effect::Deny);
            ends.extend(host_ends);
        }
        if let Some(host) = host {
            if let Some(trie) = self.exact.get(host) {
                trie.walk(0, &parts, 0, &mut wild, &mut ends);
            }
            if !self.suffix.is_empty() {
                for (dot, _) in host.match_indices('.').filter(|(dot, _)| *dot > 0) {
                    if let Some(trie) = self.suffix.get(&host[dot..]) {
                        trie.walk(0, &parts, 0, &mut wild, &mut ends);
                    }
                }
            }
        }
        ends.sort_unstable_by_key(|end| (end.rule, end.glob));
        ends.dedup_by_key(|end| end.rule);
        ends.into_iter()
            .map(|end| {
                let rule = end.rule;
                let captures = match end.glob {
                    Some(glob) if !end.wild.is_empty() => {
                        let glob = &rules[rule].paths[glob];
                        glob.segments()
                            .iter()
                            .filter_map(|segment| match segment {
                                Segment::Single(name) => Some(name.as_deref()),
                                _ => None,
                            })
                            .zip(end.wild.iter())
                            .filter_map(|(name, &at)| Some((name?, parts[at])))
                            .collect()
                    }
                    _ => Vec::new(),
                };
                Candidate { rule, captures }
            })
            .collect()
    }
}

/// A glob that ended at a trie node the path reached.
struct End {
    rule: usize,
    /// Which of the rule's paths; `None` for a rule without paths.
    glob: Option<usize>,
    /// Path positions of the segments that `*` and `{name}` took, in order.
    wild: Vec<usize>,
}

#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Debug, Default)]
struct Node {
    literals: HashMap<Box<str>, usize, BuildHasherDefault<SegmentHasher>>,
    single: Option<usize>,
    rest: Option<usize>,
    ends: Vec<(usize, Option<usize>)>,
}

impl Trie {
    fn insert_rule(&mut self, rule: &Rule, rule_number: usize, every_path: &PathGlob) {
        if rule.paths.is_empty() {
            self.insert(every_path.segments(), rule_number, None);
        }
        for (glob_number, glob) in rule.paths.iter().enumerate() {
            self.insert(glob.segments(), rule_number, Some(glob_number));
        }
    }

    fn insert(&mut self, segments: &[Segment], rule: usize, glob: Option<usize>) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut at = 0usize;
        for segment in segments {
            let next = self.nodes.len();
            let node = &mut self.nodes[at];
            let (child, created) = match segment {
                Segment::Literal(text) => match node.literals.get(text.as_str()) {
                    Some(&child) => (child, false),
                    None => {
                        node.literals.insert(text.as_str().into(), next);
                        (next, true)
                    }
                },
                Segment::Single(_) => match node.single {
                    Some(child) => (child, false),
                    None => {
                        node.single = Some(next);
                        (next, true)
                    }
                },
                Segment::Rest => match node.rest {
                    Some(child) => (child, false),
                    None => {
                        node.rest = Some(next);
                        (next, true)
                    }
                },
            };
            if created {
                self.nodes.push(Node::default());
            }
            at = child;
        }
        self.nodes[at].ends.push((rule, glob));
    }

    fn walk(
        &self,
        at: usize,
        parts: &[&str],
        next: usize,
        wild: &mut Vec<usize>,
        out: &mut Vec<End>,
    ) {
        let Some(node) = self.nodes.get(at) else {
            return;
        };
        if next == parts.len() {
            out.extend(node.ends.iter().map(|&(rule, glob)| End {
                rule,
                glob,
                wild: wild.clone(),
            }));
        }
        if let Some(rest) = node.rest {
            // `**` takes any number of segments, none included.
            for resume in next..=parts.len() {
                self.walk(rest, parts, resume, wild, out);
            }
        }
        let Some(part) = parts.get(next) else {
            return;
        };
        if let Some(&child) = node.literals.get(*part) {
            self.walk(child, parts, next + 1, wild, out);
        }
        if let Some(child) = node.single
            && !part.is_empty()
        {
            wild.push(next);
            self.walk(child, parts, next + 1, wild, out);
            wild.pop();
        }
    }
}

/// FNV-1a: path segments are short, and a keyed hash buys nothing here, since the trie's
/// keys come from policy files, not from requests.
#[derive(Default)]
struct SegmentHasher(u64);

impl Hasher for SegmentHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = hash;
    }
}
