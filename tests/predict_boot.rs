//! The predicted event log of the `qemu` profile against ONE real boot of the default image with the
//! spec's kernel (Debian 6.12): see predict_boot_checks.rs for what is checked.

const KERNEL_PROFILE: Option<&str> = None;
include!("predict_boot_checks.rs");
