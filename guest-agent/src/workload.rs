//! `workload.toml`: what the workload runs.
//!
//! The manifest is read from the verity-protected, measured workload partition, so it is trusted
//! input — but a typo must still fail loudly rather than run something unexpected. Parsing is strict:
//! unknown keys are errors, and every rule the supervisor relies on (absolute paths, unique names,
//! numeric users) is checked here, with one clear line per problem.
//!
//! ```toml
//! name = "hello"
//!
//! [[service]]
//! name = "hello"
//! command = "/workload/bin/hello"
//! args = ["--verbose"]
//! env = { GREETING_FILE = "/workload/config/greeting.txt" }
//! workdir = "/workload"
//! restart = "always"          # "always" | "on-failure" | "never"
//! user = 1000                 # numeric uid, or "root"
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{de, Deserialize, Deserializer, Serialize};

/// File name of the manifest inside the workload directory.
pub const MANIFEST_NAME: &str = "workload.toml";

/// The parsed and validated manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
}

/// One supervised process.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// Absolute path of the executable (there is no `PATH` search: the image has no shell).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment; the service otherwise gets only a default `PATH`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; `/` when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub user: User,
}

/// When a service that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// After every exit, successful or not.
    Always,
    /// After a non-zero exit code or death by signal.
    #[default]
    OnFailure,
    /// Never.
    Never,
}

/// The uid a service runs as. The image has no user database (no `/etc/passwd`, no NSS), so names
/// other than `root` cannot be resolved; the gid is set equal to the uid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
}

impl<'de> Deserialize<'de> for User {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct UserVisitor;
        impl de::Visitor<'_> for UserVisitor {
            type Value = User;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a numeric uid or \"root\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<User, E> {
                u32::try_from(v)
                    .map(|uid| User { uid })
                    .map_err(|_| E::custom(format!("uid {v} is out of range 0..=4294967295")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<User, E> {
                u32::try_from(v)
                    .map(|uid| User { uid })
                    .map_err(|_| E::custom(format!("uid {v} is out of range 0..=4294967295")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<User, E> {
                match v {
                    "root" => Ok(User { uid: 0 }),
                    other => Err(E::custom(format!(
                        "user \"{other}\" cannot be resolved: the image has no user database; \
                         give a numeric uid or \"root\""
                    ))),
                }
            }
        }
        d.deserialize_any(UserVisitor)
    }
}

impl Workload {
    /// Parses and validates manifest text; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let workload: Workload =
            toml::from_str(text).with_context(|| format!("parsing workload manifest {origin}"))?;
        workload
            .validate()
            .with_context(|| format!("invalid workload manifest {origin}"))?;
        Ok(workload)
    }

    /// Reads `<dir>/workload.toml`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_NAME);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading workload manifest {} (is the workload partition mounted?)",
                path.display()
            )
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn validate(&self) -> Result<()> {
        check_name("workload name", &self.name)?;
        let mut seen = BTreeSet::new();
        for svc in &self.services {
            svc.validate()
                .with_context(|| format!("service \"{}\"", svc.name))?;
            if !seen.insert(svc.name.as_str()) {
                bail!("service name \"{}\" is used twice", svc.name);
            }
        }
        Ok(())
    }
}

impl Service {
    fn validate(&self) -> Result<()> {
        check_name("service name", &self.name)?;
        if !self.command.starts_with('/') {
            bail!(
                "command \"{}\" must be an absolute path (there is no PATH lookup)",
                self.command
            );
        }
        if let Some(dir) = &self.workdir {
            if !dir.starts_with('/') {
                bail!("workdir \"{dir}\" must be an absolute path");
            }
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                bail!("env key \"{key}\" must be non-empty and contain neither '=' nor NUL");
            }
            if value.contains('\0') {
                bail!("env value of {key} contains NUL");
            }
        }
        if self.args.iter().any(|a| a.contains('\0')) || self.command.contains('\0') {
            bail!("command and args must not contain NUL");
        }
        Ok(())
    }
}

/// Names appear in console prefixes and JSON: keep them to a safe, printable set.
fn check_name(what: &str, name: &str) -> Result<()> {
    const MAX_NAME: usize = 64;
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(ok_char) {
        bail!("{what} \"{name}\" must be 1-{MAX_NAME} characters of A-Z a-z 0-9 - _ .");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
name = "hello"

[[service]]
name = "hello"
command = "/workload/bin/hello"
args = ["-v", "x y"]
env = { GREETING_FILE = "/workload/config/greeting.txt" }
workdir = "/workload"
restart = "always"
user = 1000

[[service]]
name = "second"
command = "/bin/true"
user = "root"
"#;

    fn err(text: &str) -> String {
        format!("{:#}", Workload::parse(text, "test.toml").unwrap_err())
    }

    #[test]
    fn parses_full_example() {
        let w = Workload::parse(EXAMPLE, "test.toml").unwrap();
        assert_eq!(w.name, "hello");
        assert_eq!(w.services.len(), 2);
        let s = &w.services[0];
        assert_eq!(s.command, "/workload/bin/hello");
        assert_eq!(s.args, vec!["-v".to_string(), "x y".to_string()]);
        assert_eq!(
            s.env.get("GREETING_FILE").map(String::as_str),
            Some("/workload/config/greeting.txt")
        );
        assert_eq!(s.workdir.as_deref(), Some("/workload"));
        assert_eq!(s.restart, RestartPolicy::Always);
        assert_eq!(s.user, User { uid: 1000 });
        let t = &w.services[1];
        assert_eq!(t.user, User { uid: 0 });
        assert_eq!(t.restart, RestartPolicy::OnFailure, "default policy");
        assert!(t.args.is_empty() && t.env.is_empty() && t.workdir.is_none());
    }

    #[test]
    fn the_shipped_example_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../workload/workload.toml");
        let text = std::fs::read_to_string(path).expect("workload/workload.toml exists");
        let w = Workload::parse(&text, path).unwrap();
        assert_eq!(w.services.len(), 1);
        assert_eq!(w.services[0].command, "/workload/bin/hello");
        assert_eq!(w.services[0].restart, RestartPolicy::Always);
        assert!(w.services[0].env.contains_key("GREETING_FILE"));
    }

    #[test]
    fn no_services_is_allowed() {
        let w = Workload::parse("name = \"empty\"\n", "t").unwrap();
        assert!(w.services.is_empty());
    }

    #[test]
    fn unknown_top_level_key_is_rejected() {
        let e = err("name = \"x\"\nnmae = \"y\"\n");
        assert!(e.contains("unknown field `nmae`"), "{e}");
        assert!(e.contains("test.toml"), "{e}");
    }

    #[test]
    fn unknown_service_key_is_rejected_with_line() {
        let e = err(
            "name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\nrestrat = \"always\"\n",
        );
        assert!(e.contains("unknown field `restrat`"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn missing_name_and_command_are_rejected() {
        assert!(err("[[service]]\n").contains("missing field `name`"));
        let e = err("name = \"x\"\n[[service]]\nname = \"a\"\n");
        assert!(e.contains("missing field `command`"), "{e}");
    }

    #[test]
    fn bad_restart_policy_lists_the_choices() {
        let e = err(
            "name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\nrestart = \"sometimes\"\n",
        );
        assert!(
            e.contains("always") && e.contains("on-failure") && e.contains("never"),
            "{e}"
        );
    }

    #[test]
    fn user_names_other_than_root_are_rejected() {
        let e =
            err("name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\nuser = \"nobody\"\n");
        assert!(e.contains("no user database"), "{e}");
        let e = err("name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\nuser = -1\n");
        assert!(e.contains("out of range"), "{e}");
        let e =
            err("name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\nuser = 4294967296\n");
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn relative_command_and_workdir_are_rejected() {
        let e = err("name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"hello\"\n");
        assert!(
            e.contains("absolute path") && e.contains("service \"a\""),
            "{e}"
        );
        let e =
            err("name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\nworkdir = \"tmp\"\n");
        assert!(e.contains("workdir"), "{e}");
    }

    #[test]
    fn duplicate_and_unsafe_names_are_rejected() {
        let e = err("name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\n[[service]]\nname = \"a\"\ncommand = \"/b\"\n");
        assert!(e.contains("used twice"), "{e}");
        let e = err("name = \"x\"\n[[service]]\nname = \"a b\"\ncommand = \"/a\"\n");
        assert!(e.contains("service name"), "{e}");
        assert!(err("name = \"\"\n").contains("workload name"));
    }

    #[test]
    fn bad_env_key_is_rejected() {
        let e = err("name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\nenv = { \"A=B\" = \"1\" }\n");
        assert!(e.contains("env key"), "{e}");
    }

    #[test]
    fn wrong_types_are_rejected() {
        let e = err("name = \"x\"\n[[service]]\nname = \"a\"\ncommand = \"/a\"\nargs = \"-v\"\n");
        assert!(e.contains("args") || e.contains("sequence"), "{e}");
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", Workload::load(dir.path()).unwrap_err());
        assert!(e.contains("workload.toml") && e.contains("mounted"), "{e}");
    }
}
