//! `deploy --execute`: runs a plan step by step, the same commands the printed script holds, with
//! captured stdout values substituted for `${NAME}` exactly as the shell would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::command::PlannedCommand;

/// How to install each program a plan runs, for the "not found" error.
fn install_hint(program: &str) -> &'static str {
    match program {
        "gcloud" => "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install, then `gcloud auth login`",
        "aws" => "install the AWS CLI (scripts/deps.sh pins awscli from PyPI; or AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html), then `aws configure`",
        "az" => "install the Azure CLI (scripts/deps.sh pins azure-cli from PyPI; or https://learn.microsoft.com/cli/azure/install-azure-cli), then `az login`",
        "curl" => "install curl (the plan polls the agent's /health with it)",
        _ => "install it and make sure it is on PATH",
    }
}

/// Finds `program` on `PATH` (or as given, when it is a path).
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Checks that every program the plan needs is installed, before anything runs.
pub fn check_programs(commands: &[PlannedCommand]) -> Result<()> {
    let mut programs: Vec<&str> = commands.iter().map(|c| c.program.as_str()).collect();
    programs.sort_unstable();
    programs.dedup();
    for p in programs {
        if find_program(p).is_none() {
            bail!("`{p}` is not installed or not on PATH: {}", install_hint(p));
        }
    }
    Ok(())
}

/// Replaces `${NAME}` with captured values; an unknown name is a plan error.
pub fn substitute(arg: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("${") {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .context("unterminated ${ in a planned argument")?;
        let name = &rest[start + 2..end];
        let value = vars
            .get(name)
            .with_context(|| format!("planned argument uses ${{{name}}} before it is captured"))?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Runs the plan in order, stopping at the first failure. Prints each step before it runs.
pub fn execute(commands: &[PlannedCommand]) -> Result<()> {
    check_programs(commands)?;
    let mut vars = BTreeMap::new();
    for (i, c) in commands.iter().enumerate() {
        eprintln!(
            "==> [{}/{}] {}\n    {}",
            i + 1,
            commands.len(),
            c.description,
            c.shell_line()
        );
        let args = c
            .args
            .iter()
            .map(|a| substitute(a, &vars))
            .collect::<Result<Vec<_>>>()?;
        let mut cmd = Command::new(&c.program);
        cmd.args(&args).stdin(Stdio::null());
        let step = || format!("step {} ({}) failed", i + 1, c.description);
        match &c.capture {
            Some(var) => {
                let out = cmd.stderr(Stdio::inherit()).output().with_context(step)?;
                if !out.status.success() {
                    bail!("{}: {} exited with {}", step(), c.program, out.status);
                }
                let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if value.is_empty() || value == "None" || value == "null" {
                    bail!(
                        "{}: expected a value for {var} on stdout, got {value:?}",
                        step()
                    );
                }
                eprintln!("    {var}={value}");
                vars.insert(var.clone(), value);
            }
            None => {
                let status = cmd.status().with_context(step)?;
                if !status.success() {
                    bail!("{}: {} exited with {status}", step(), c.program);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_uses_captured_values_and_rejects_unknown_ones() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(substitute("x${A}y${A}", &vars).unwrap(), "x1y1");
        assert!(substitute("${B}", &vars)
            .unwrap_err()
            .to_string()
            .contains("${B}"));
    }

    #[test]
    fn a_missing_cli_is_reported_with_an_install_hint() {
        let c = PlannedCommand::new("surely-not-a-cloud-cli-xyz", "x");
        let err = check_programs(&[c]).unwrap_err().to_string();
        assert!(err.contains("not installed"), "{err}");
        let c = PlannedCommand::new("/surely/not/cvm-image", "x");
        assert!(check_programs(&[c]).is_err());
    }

    #[test]
    fn execute_captures_and_substitutes() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("cvm-deploy-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("made-by-step-2");
        let plan = vec![
            PlannedCommand::new("echo", "produce")
                .arg("  value-1 ")
                .capture("V"),
            PlannedCommand::new("touch", "consume").arg(format!("{}-${{V}}", file.display())),
        ];
        execute(&plan)?;
        assert!(dir.join("made-by-step-2-value-1").is_file());
        let failing = vec![PlannedCommand::new("false", "fails")];
        assert!(execute(&failing)
            .unwrap_err()
            .to_string()
            .contains("step 1 (fails) failed"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
