//! The predicted event log of the `qemu` profile against ONE real boot of the default image with
//! Debian's 6.1 LTS kernel (kernel/debian-6.1.toml): see common/predict_boot.rs for what is checked.

mod common;

predict_boot_tests!(Some("kernel/debian-6.1.toml"));
