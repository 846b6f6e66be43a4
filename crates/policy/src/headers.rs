//! Header conditions, in `match.headers` (which requests a rule is about) and in
//! `when.headers` (what a request must carry to pass).

use super::facts::RequestFacts;

/// How a header value with bytes that are not text is given to the policy (and written in
/// a decision-log line): it equals no value a policy file can hold, but it is present, so
/// `"*"` still sees it.
pub const NOT_TEXT: &str = "\u{fffd}";

/// What a header's value must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValuePattern {
    /// Exactly this value.
    Exact(String),
    /// Any value: the header must be present.
    Present,
    /// The value of the path capture with this name (`"{tenant}"`).
    Capture(String),
}

/// One header and the values it may have: the request passes when one of its field lines
/// for the header has one of the values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    /// Lower-case header name.
    pub name: String,
    /// Accepted values.
    pub values: Vec<ValuePattern>,
}

impl HeaderCondition {
    /// Whether the request carries the header with an accepted value. `captures` are the
    /// path captures of the rule's matching path.
    pub fn holds(&self, facts: &RequestFacts<'_>, captures: &[(&str, &str)]) -> bool {
        facts.header_values(&self.name).any(|value| {
            self.values.iter().any(|pattern| match pattern {
                ValuePattern::Exact(exact) => exact == value,
                ValuePattern::Present => true,
                ValuePattern::Capture(name) => captures
                    .iter()
                    .any(|(capture, captured)| capture == name && *captured == value),
            })
        })
    }

    /// The condition as an operator reads it: `header x-env: staging or dev`.
    pub fn describe(&self) -> String {
        let values: Vec<String> = self
            .values
            .iter()
            .map(|pattern| match pattern {
                ValuePattern::Exact(exact) => format!("\"{exact}\""),
                ValuePattern::Present => "any value".to_owned(),
                ValuePattern::Capture(name) => format!("{{{name}}}"),
            })
            .collect();
        format!("header {} must be {}", self.name, values.join(" or "))
    }
}
