//! `cvm-image verify`: its arguments and the check live with the verifier's builder side in
//! [`crate::verify`] (adapted there to the verifier library); this is the command's entry.

pub use crate::verify::VerifyArgs;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    args.run()
}
