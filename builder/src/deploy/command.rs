//! One step of a plan ([`PlannedCommand`]) and how the plan prints: POSIX-sh quoting that keeps
//! `${VAR}` references to captured values expandable, and the commented script [`render`] writes.

use std::fmt;

use super::options::Cloud;

/// One step of a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCommand {
    pub program: String,
    pub args: Vec<String>,
    pub description: String,
    /// When set, the command's trimmed stdout becomes `${capture}` for the following commands.
    pub capture: Option<String>,
}

impl PlannedCommand {
    pub fn new(program: &str, description: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            description: description.into(),
            capture: None,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// `--flag=value` as one argument (gcloud style).
    pub fn eq(self, flag: &str, value: impl fmt::Display) -> Self {
        self.arg(format!("{flag}={value}"))
    }

    /// `--flag value` as two arguments (aws / az style).
    pub fn opt(self, flag: &str, value: impl Into<String>) -> Self {
        self.arg(flag).arg(value)
    }

    pub fn capture(mut self, var: &str) -> Self {
        self.capture = Some(var.into());
        self
    }

    /// The command as one shell line (`VAR=$(…)` when captured).
    pub fn shell_line(&self) -> String {
        let words: Vec<String> = std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(String::as_str))
            .map(shell_quote)
            .collect();
        match &self.capture {
            Some(var) => format!("{var}=$({})", words.join(" ")),
            None => words.join(" "),
        }
    }
}

/// Quotes a word for POSIX sh: bare when safe, single quotes when it has no `${`, double quotes
/// (escaping everything but `${VAR}` references) when it must expand a captured variable.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=,@%+".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_string();
    }
    if !word.contains("${") {
        return format!("'{}'", word.replace('\'', r"'\''"));
    }
    let mut out = String::from("\"");
    let mut rest = word;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("${") {
            if let Some(end) = rest.find('}') {
                out.push_str(&rest[..=end]);
                rest = &rest[end + 1..];
                continue;
            }
        }
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out.push('"');
    out
}

/// The whole plan as a commented shell script (what `deploy` prints).
pub fn render(cloud: Cloud, commands: &[PlannedCommand]) -> String {
    let mut s = format!(
        "#!/bin/sh\n# cvm-image deploy {cloud}: {} steps\nset -eu\n",
        commands.len()
    );
    for (i, c) in commands.iter().enumerate() {
        s.push_str(&format!(
            "\n# {}. {}\n{}\n",
            i + 1,
            c.description,
            c.shell_line()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_variables_expandable_and_everything_else_literal() {
        assert_eq!(shell_quote("c3-standard-4"), "c3-standard-4");
        assert_eq!(shell_quote("East US 2"), "'East US 2'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(
            shell_quote("--image-id=${IMAGE}"),
            "\"--image-id=${IMAGE}\""
        );
        assert_eq!(shell_quote(r#"{"a":"${X}$"}"#), r#""{\"a\":\"${X}\$\"}""#);
    }
}
