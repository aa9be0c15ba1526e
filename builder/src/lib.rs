//! cvm-image: reproducible confidential-VM disk images and the measurements they will produce.
//!
//! The pipeline (see [`pipeline`]) reads top-down:
//!
//! | step | module | produces |
//! |---|---|---|
//! | spec | [`spec`] | the parsed `image.toml` and kernel profile |
//! | inputs | [`fetch`] over [`inputs`] | pinned, verified, extracted Debian packages |
//! | guest binaries | [`guest`] | static init, agent, workload programs |
//! | trees | [`rootfs`] over [`fstree`] | root and workload file trees |
//! | filesystems | [`verity_image`] over [`squashfs`], [`verity`] | squashfs + dm-verity pairs |
//! | boot chain | [`boot`] over [`kmod`], [`initramfs`], [`uki`], [`esp`] | initramfs → UKI → ESP |
//! | disk | [`gpt`] | the GPT disk image |
//! | record | [`manifest`] | `manifest.json` |
//!
//! Every stage is a pure function of its inputs; [`ids`] derives every identifier from content, and
//! [`stages`] caches the expensive stages by content hash.

pub mod automata;
pub mod bench;
pub mod boot;
pub mod cli;
pub mod deploy;
pub mod esp;
pub mod fetch;
pub mod formats;
pub mod fstree;
pub mod golden;
pub mod gpt;
pub mod guest;
pub mod ids;
pub mod initramfs;
pub mod inputs;
pub mod inspect;
pub mod kmod;
pub mod lockcmd;
pub mod manifest;
pub mod output;
pub mod pcr_prediction;
pub mod pe_checksum;
pub mod pipeline;
pub mod predict;
pub mod qemu;
pub mod recorder;
pub mod reference;
pub mod rootfs;
pub mod secureboot;
pub mod spec;
pub mod squashfs;
pub mod stages;
pub mod uki;
pub mod verify;
// The verifier lives in its own crate (shared with the guest agent's peer verifier); these keep the
// builder's paths to it short.
pub use cvm_verify::{attest, golden_sign};
pub mod verity;
pub mod verity_image;

#[cfg(test)]
mod testutil;
