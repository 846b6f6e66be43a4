//! Who is calling, once identified: the principal a credential stands for. Built by
//! `identity` (API keys, and later tokens and certificates) or by `explain --as`.

use std::fmt;

/// An identified caller.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Principal {
    /// The subject: a token's `sub`, an API key's id.
    pub subject: String,
    /// Who vouched for it: a token issuer, or `api-key`.
    pub issuer: String,
    /// Roles as granted (inherited roles are added by the policy).
    pub roles: Vec<String>,
    /// Scopes as granted.
    pub scopes: Vec<String>,
    /// Claims, by name.
    pub claims: Vec<(String, ClaimValue)>,
}

impl Principal {
    /// The claim with this name.
    pub fn claim(&self, name: &str) -> Option<&ClaimValue> {
        self.claims
            .iter()
            .find(|(claim, _)| claim == name)
            .map(|(_, value)| value)
    }
}

/// A claim's value, as far as conditions can compare it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue {
    /// A string.
    String(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// An array: a condition holds when one element equals its value.
    List(Vec<ClaimValue>),
    /// Anything else (objects, null): equal to nothing.
    Other,
}

impl ClaimValue {
    /// Whether this claim satisfies `wanted`: equal, or an array holding it.
    pub fn satisfies(&self, wanted: &ClaimValue) -> bool {
        match self {
            ClaimValue::List(items) => items.iter().any(|item| item == wanted),
            ClaimValue::Other => false,
            value => value == wanted,
        }
    }

    /// Whether this claim equals, or holds, the text `wanted` (a path capture).
    pub fn satisfies_text(&self, wanted: &str) -> bool {
        match self {
            ClaimValue::String(text) => text == wanted,
            ClaimValue::List(items) => items.iter().any(|item| item.satisfies_text(wanted)),
            _ => false,
        }
    }
}

impl fmt::Display for ClaimValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimValue::String(text) => write!(f, "\"{text}\""),
            ClaimValue::Number(number) => write!(f, "{number}"),
            ClaimValue::Bool(value) => write!(f, "{value}"),
            ClaimValue::List(items) => {
                f.write_str("[")?;
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            ClaimValue::Other => f.write_str("(not comparable)"),
        }
    }
}
