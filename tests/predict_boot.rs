//! The predicted event log of the `qemu` profile against ONE real boot of the default image with the
//! spec's kernel (Debian 6.12): see common/predict_boot.rs for what is checked.

mod common;

predict_boot_tests!(None);
