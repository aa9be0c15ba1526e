//! The predicted event log of the `qemu` profile against ONE real boot of the default image with
//! Debian's 6.1 LTS kernel (kernel/debian-6.1.toml): see predict_boot_checks.rs for what is checked.

const KERNEL_PROFILE: Option<&str> = Some("kernel/debian-6.1.toml");
include!("predict_boot_checks.rs");
