//! Roles: which roles inherit which (`roles.admin.inherits: [editor]`), and the `roles`
//! condition. A role grants every role it inherits, transitively; cycles are refused
//! when the graph is built.

use std::collections::HashMap;

use super::decision::Reason;

/// Every role and the roles it grants, itself included.
#[derive(Debug, Clone, Default)]
pub struct RoleGraph {
    grants: HashMap<String, Vec<String>>,
}

impl RoleGraph {
    /// Builds the graph from `(role, inherits)` pairs. An inheritance cycle is an error
    /// naming it (`admin → editor → admin`); roles that are named but not defined grant
    /// only themselves (the caller checks references).
    pub fn new(roles: &[(String, Vec<String>)]) -> Result<RoleGraph, String> {
        let parents: HashMap<&str, &[String]> = roles
            .iter()
            .map(|(role, inherits)| (role.as_str(), inherits.as_slice()))
            .collect();
        let mut grants = HashMap::new();
        for (role, _) in roles {
            let mut granted: Vec<String> = Vec::new();
            let mut path = vec![role.as_str()];
            collect(role, &parents, &mut granted, &mut path)?;
            grants.insert(role.clone(), granted);
        }
        Ok(RoleGraph { grants })
    }

    /// Whether `role` is declared in a policy file's `roles`.
    pub fn declares(&self, role: &str) -> bool {
        self.grants.contains_key(role)
    }

    /// The roles `granted` amount to, inherited ones included, each once.
    pub fn effective<'a>(&'a self, granted: &'a [String]) -> Vec<&'a str> {
        let mut roles: Vec<&str> = Vec::with_capacity(granted.len());
        for role in granted {
            match self.grants.get(role) {
                Some(all) => roles.extend(all.iter().map(String::as_str)),
                None => roles.push(role),
            }
        }
        roles.sort_unstable();
        roles.dedup();
        roles
    }
}

fn collect<'a>(
    role: &'a str,
    parents: &HashMap<&'a str, &'a [String]>,
    granted: &mut Vec<String>,
    path: &mut Vec<&'a str>,
) -> Result<(), String> {
    if !granted.iter().any(|known| known == role) {
        granted.push(role.to_owned());
    }
    for parent in parents.get(role).copied().unwrap_or(&[]) {
        if path.contains(&parent.as_str()) {
            let mut cycle: Vec<&str> = path.clone();
            cycle.push(parent);
            return Err(cycle.join(" → "));
        }
        // A role granted already, and not on the current path, has been explored in full
        // (cycles through it included): walking it again would only repeat work, which
        // on a lattice of diamonds grows exponentially.
        if granted.iter().any(|known| known == parent) {
            continue;
        }
        path.push(parent);
        collect(parent, parents, granted, path)?;
        path.pop();
    }
    Ok(())
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
