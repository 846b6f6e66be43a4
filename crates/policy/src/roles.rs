//! Roles: which roles inherit which (`roles.admin.inherits: [editor]`), and the `roles`
//! condition. A role grants every role it inherits, transitively; cycles are refused
//! when the graph is built.

use std::collections::{HashMap, HashSet};

use super::decision::Reason;

/// Every declared role and the roles it inherits directly.
#[derive(Debug, Clone, Default)]
pub struct RoleGraph {
    inherits: HashMap<String, Vec<String>>,
}

impl RoleGraph {
    /// Builds the graph from `(role, inherits)` pairs. An inheritance cycle is an error
    /// naming it (`admin → editor → admin`); roles that are named but not defined grant
    /// only themselves (the caller checks references).
    ///
    /// Nothing here recurses, so no depth of inheritance a policy file writes can
    /// exhaust the stack.
    pub fn new(roles: &[(String, Vec<String>)]) -> Result<RoleGraph, String> {
        let inherits: HashMap<String, Vec<String>> = roles.iter().cloned().collect();
        // Depth-first search with an explicit stack; a role met again while it is still
        // on the stack closes a cycle.
        let mut finished: HashSet<&str> = HashSet::new();
        for (start, _) in roles {
            if finished.contains(start.as_str()) {
                continue;
            }
            let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
            let mut on_stack: HashSet<&str> = HashSet::from([start.as_str()]);
            while let Some((role, next)) = stack.last_mut() {
                let parents = inherits.get(*role).map_or(&[][..], Vec::as_slice);
                let Some(parent) = parents.get(*next) else {
                    finished.insert(role);
                    on_stack.remove(role);
                    stack.pop();
                    continue;
                };
                *next += 1;
                let parent = parent.as_str();
                if on_stack.contains(parent) {
                    let at = stack
                        .iter()
                        .position(|(on_stack, _)| *on_stack == parent)
                        .unwrap_or(0);
                    let mut cycle: Vec<&str> = stack[at..].iter().map(|(role, _)| *role).collect();
                    cycle.push(parent);
                    return Err(cycle.join(" → "));
                }
                if !finished.contains(parent) {
                    on_stack.insert(parent);
                    stack.push((parent, 0));
                }
            }
        }
        Ok(RoleGraph { inherits })
    }

    /// Whether `role` is declared in a policy file's `roles`.
    pub fn declares(&self, role: &str) -> bool {
        self.inherits.contains_key(role)
    }

    /// The roles `granted` amount to, inherited ones included, each once, sorted.
    pub fn effective<'a>(&'a self, granted: &'a [String]) -> Vec<&'a str> {
        let mut roles: Vec<&str> = granted.iter().map(String::as_str).collect();
        let mut next = 0;
        // Breadth-first over what the granted roles inherit; `roles` is the queue and
        // the visited set at once (a caller's roles are few).
        while let Some(&role) = roles.get(next) {
            next += 1;
            for parent in self.inherits.get(role).into_iter().flatten() {
                if !roles.contains(&parent.as_str()) {
                    roles.push(parent);
                }
            }
        }
        roles.sort_unstable();
        roles.dedup();
        roles
    }
}

/// `roles: { any: [...], all: [...] }`: the caller's roles (inherited included) must hold
/// one of `any` (when given) and every one of `all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesCondition {
    /// At least one of these.
    pub any: Vec<String>,
    /// Every one of these.
    pub all: Vec<String>,
}

impl RolesCondition {
    /// `None` when the roles satisfy the condition, otherwise why not.
    pub fn failure(&self, roles: &[&str]) -> Option<Reason> {
        let has = |role: &String| roles.contains(&role.as_str());
        let any_ok = self.any.is_empty() || self.any.iter().any(has);
        let missing: Vec<String> = self.all.iter().filter(|role| !has(role)).cloned().collect();
        if any_ok && missing.is_empty() {
            return None;
        }
        let required = if any_ok { missing } else { self.any.clone() };
        Some(Reason::MissingRole {
            required,
            one_of: !any_ok && self.any.len() > 1,
            present: roles.iter().map(|role| (*role).to_owned()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(pairs: &[(&str, &[&str])]) -> Result<RoleGraph, String> {
        let roles: Vec<(String, Vec<String>)> = pairs
            .iter()
            .map(|(role, inherits)| {
                (
                    (*role).to_owned(),
                    inherits.iter().map(|r| (*r).to_owned()).collect(),
                )
            })
            .collect();
        RoleGraph::new(&roles)
    }

    #[test]
    fn roles_grant_what_they_inherit_transitively() {
        let graph = graph(&[
            ("admin", &["editor"]),
            ("editor", &["viewer"]),
            ("viewer", &[]),
        ])
        .unwrap();
        let granted = vec!["admin".to_owned(), "auditor".to_owned()];
        assert_eq!(
            graph.effective(&granted),
            ["admin", "auditor", "editor", "viewer"]
        );
    }

    #[test]
    fn a_lattice_of_diamonds_builds_quickly() {
        // Each level inherits both roles of the next: 2^40 paths, 80 roles.
        let mut pairs: Vec<(String, Vec<String>)> = Vec::new();
        for level in 0..40 {
            for side in ["a", "b"] {
                pairs.push((
                    format!("{side}{level}"),
                    vec![format!("a{}", level + 1), format!("b{}", level + 1)],
                ));
            }
        }
        let graph = RoleGraph::new(&pairs).unwrap();
        assert_eq!(graph.effective(&["a0".to_owned()]).len(), 81);
    }

    #[test]
    fn a_long_chain_neither_recurses_nor_repeats() {
        let pairs: Vec<(String, Vec<String>)> = (0..100_000)
            .map(|n| (format!("r{n}"), vec![format!("r{}", n + 1)]))
            .collect();
        let graph = RoleGraph::new(&pairs).unwrap();
        assert_eq!(graph.effective(&["r99990".to_owned()]).len(), 11);
    }

    #[test]
    fn cycles_are_named() {
        assert_eq!(
            graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]).unwrap_err(),
            "a → b → c → a"
        );
        assert_eq!(graph(&[("a", &["a"])]).unwrap_err(), "a → a");
    }

    #[test]
    fn any_and_all() {
        let condition = RolesCondition {
            any: vec!["editor".into(), "admin".into()],
            all: vec!["staff".into()],
        };
        assert_eq!(condition.failure(&["editor", "staff"]), None);
        assert!(matches!(
            condition.failure(&["editor"]),
            Some(Reason::MissingRole { required, .. }) if required == ["staff"]
        ));
        assert!(matches!(
            condition.failure(&["staff"]),
            Some(Reason::MissingRole { required, one_of: true, .. }) if required == ["editor", "admin"]
        ));
    }
}
