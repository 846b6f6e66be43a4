//! Config errors and how they read to a person: one grep-able line each,
//! `file:line:column: yaml.path: message`, then an optional `help:` line.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// Line and column, both 1-based, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// Where in the YAML document, e.g. `routes[2].upstream`; empty for the whole file.
    pub yaml_path: String,
    /// What is wrong, lower-case, no final period.
    pub message: String,
    /// A suggestion, such as a near-miss name.
    pub help: Option<String>,
}

impl ConfigError {
    /// A problem at a known position.
    pub fn at(
        file: &Path,
        position: Option<(usize, usize)>,
        yaml_path: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: file.to_owned(),
            position,
            yaml_path: yaml_path.into(),
            message: message.into(),
            help: None,
        }
    }

    /// The file could not be read at all.
    pub fn unreadable(file: &Path, err: &std::io::Error) -> ConfigError {
        ConfigError::at(file, None, "", format!("cannot read the file: {err}"))
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: Option<String>) -> ConfigError {
        self.help = help;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        if !self.yaml_path.is_empty() {
            write!(f, ": {}", self.yaml_path)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The known name closest to `unknown`, when it is close enough to be a typo.
pub fn did_you_mean<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let limit = (unknown.chars().count() / 3).max(1);
    known
        .into_iter()
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| format!("did you mean \"{candidate}\"?"))
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(
            did_you_mean("ap", ["app", "auth"]),
            Some("did you mean \"app\"?".to_owned())
        );
        assert_eq!(did_you_mean("billing", ["app", "auth"]), None);
    }

    #[test]
    fn renders_one_line_then_help() {
        let error = ConfigError::at(
            Path::new("c.yaml"),
            Some((31, 15)),
            "routes[2].upstream",
            "unknown upstream \"ap\"",
        )
        .with_help(Some("did you mean \"app\"?".to_owned()));
        assert_eq!(
            error.to_string(),
            "c.yaml:31:15: routes[2].upstream: unknown upstream \"ap\"\n  help: did you mean \"app\"?"
        );
    }
}
