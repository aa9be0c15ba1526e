//! Fixtures of the deploy unit tests: a fake `out/` and the plan as shell lines.

use std::path::PathBuf;

use super::command::PlannedCommand;
use super::keys::SECURE_BOOT_DIR;
use super::options::GOLDEN_FILE;

/// An `out/` with the three artifacts and the golden file (empty files) and optionally Secure
/// Boot keys.
pub fn out_dir(name: &str, keys: bool, aws_blob: Option<&[u8]>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cvm-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(SECURE_BOOT_DIR)).unwrap();
    for a in [
        "gcp-disk.tar.gz",
        "aws-disk.vmdk",
        "azure-disk.vhd",
        GOLDEN_FILE,
    ] {
        std::fs::write(dir.join(a), b"").unwrap();
    }
    if keys {
        for (n, c) in [("PK.der", b"pk"), ("KEK.der", b"kk"), ("db.der", b"db")] {
            std::fs::write(dir.join(SECURE_BOOT_DIR).join(n), c).unwrap();
        }
    }
    if let Some(blob) = aws_blob {
        std::fs::write(dir.join(SECURE_BOOT_DIR).join("aws-uefi-data.bin"), blob).unwrap();
    }
    dir
}

pub fn lines(commands: &[PlannedCommand]) -> Vec<String> {
    commands.iter().map(PlannedCommand::shell_line).collect()
}

/// The two final steps as `deploy` prints them for `cloud` with the default options.
pub fn verdict_lines(out: &std::path::Path, cloud: &str, ip_var: &str) -> [String; 2] {
    [
        format!(
            "curl --silent --show-error --fail --output /dev/null --connect-timeout 5 --retry 60 \
             --retry-delay 10 --retry-all-errors \"http://${{{ip_var}}}:8000/health\""
        ),
        format!(
            "cvm-image verify --agent \"http://${{{ip_var}}}:8000\" --profile {cloud} --golden {}/golden-measurement.json \
             --insecure-no-ek",
            out.display()
        ),
    ]
}
