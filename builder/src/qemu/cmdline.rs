//! The QEMU command line of a run: one pure function, so that what we boot is reviewable and tested.
//!
//! Choices, and why:
//! * `-nodefaults`: no default NIC (its iPXE option ROM would add a PXE boot option), no CD-ROM, no
//!   VGA, no monitor; everything the VM has is listed here.
//! * q35 + OVMF as two pflash drives: CODE read-only, VARS a private copy (the firmware writes boot
//!   variables to it; the system or cache file must never change).
//! * The disk is `snapshot=on`: QEMU writes into a temporary overlay and the image file stays
//!   byte-identical, so a run cannot change what was measured. `bootindex=1` makes it the first
//!   boot option.
//! * virtio-net with `romfile=` (empty): no iPXE ROM, so no network boot option is even created. A
//!   failed PXE attempt before the disk would add "Returning from EFI Application from Boot Option"
//!   and a second "Calling …" event to PCR 4 (docs/measured-boot.md §4) and break the prediction.
//! * User networking with the guest's agent (8000) and workload (8080) ports forwarded to 127.0.0.1.
//! * TPM 2.0 via swtpm on a CRB interface (`tpm-crb`, the TPM 2.0 native interface; OVMF and the
//!   Linux kernel drive it without modules).
//! * Serial console into a file that the runner follows (see [`super::console`]); QMP on a unix socket
//!   for `system_powerdown`. `-no-reboot`: a guest reboot ends the run like a power-off.
//!
//! * Secure Boot (`run --secure-boot`): the SMM build of OVMF needs `smm=on`, and
//!   `cfi.pflash01.secure=on` makes the variable flash writable only from SMM — without it the OS
//!   could rewrite PK/db directly and Secure Boot would mean nothing.
//!
//! Option values are comma-separated in QEMU's syntax; commas inside paths are escaped by doubling.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// QEMU machine type of every run.
pub const MACHINE_TYPE: &str = "q35";
/// Guest memory and vCPUs of a run unless `run --memory/--cpus` say otherwise (the configuration the
/// reference boot is recorded with, src/reference).
pub const DEFAULT_MEMORY_MIB: u32 = 1024;
pub const DEFAULT_CPUS: u32 = 1;
/// The devices of a run, as `-device` values. Their PCI slots decide the boot options OVMF creates,
/// which it measures into PCR 1: the boot disk is 00:01.0 because it is the first device.
const DISK_DEVICE: &str = "virtio-blk-pci,drive=disk0,bootindex=1";
const NET_DEVICE: &str = "virtio-net-pci,netdev=net0,romfile=";
const TPM_DEVICE: &str = "tpm-crb,tpmdev=tpm0";

/// The guest's attestation API port (docs/attestation-api.md).
pub const GUEST_AGENT_PORT: u16 = 8000;
/// The example workload's HTTP port.
pub const GUEST_WORKLOAD_PORT: u16 = 8080;

/// The QEMU accelerator.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Software emulation: works everywhere, including inside VMs without nested virtualisation.
    Tcg,
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
}

/// One `hostfwd`: 127.0.0.1:`host` → guest:`guest` (TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

/// Everything the QEMU command line depends on.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub ovmf_code: PathBuf,
    /// The run's private copy of the VARS template.
    pub ovmf_vars: PathBuf,
    pub disk: PathBuf,
    /// "raw" or "qcow2".
    pub disk_format: &'static str,
    pub tpm_socket: PathBuf,
    pub qmp_socket: PathBuf,
    pub console_log: PathBuf,
    pub forwards: Vec<Forward>,
    /// Boot the Secure Boot (SMM) firmware: SMM on, variable flash SMM-only.
    pub secure_boot: bool,
}

/// The guest-visible machine of a run: what the firmware can see and measure (PCR 0/1), without the
/// per-run paths and ports. [`args`] is built from it, so a recorded reference names exactly what ran.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// `-machine` value.
    pub machine: String,
    /// `cfi.pflash01` `secure=on`: the variable flash is writable only from SMM.
    pub secure_pflash: bool,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// `-device` values, in command-line order (this order assigns the PCI slots).
    pub devices: Vec<String>,
}

/// The machine of a run with these settings.
pub fn machine(secure_boot: bool, accel: Accel, memory_mib: u32, cpus: u32) -> Machine {
    let machine = if secure_boot {
        format!("{MACHINE_TYPE},smm=on")
    } else {
        MACHINE_TYPE.to_string()
    };
    Machine {
        machine,
        secure_pflash: secure_boot,
        accel,
        memory_mib,
        cpus,
        devices: [DISK_DEVICE, NET_DEVICE, TPM_DEVICE]
            .map(String::from)
            .to_vec(),
    }
}

/// Escapes a path for a QEMU option value: ',' is the separator and is written as ",,".
fn q(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

/// The arguments after the program name.
pub fn args(c: &QemuConfig) -> Vec<OsString> {
    let m = machine(c.secure_boot, c.accel, c.memory_mib, c.cpus);
    let mut a: Vec<String> = vec!["-nodefaults".into(), "-no-user-config".into()];
    let mut opt = |k: &str, v: String| {
        a.push(k.into());
        a.push(v);
    };
    opt("-machine", m.machine.clone());
    if m.secure_pflash {
        opt(
            "-global",
            "driver=cfi.pflash01,property=secure,value=on".into(),
        );
    }
    match m.accel {
        Accel::Tcg => opt("-accel", "tcg".into()),
        Accel::Kvm => {
            opt("-accel", "kvm".into());
            opt("-cpu", "host".into());
        }
    }
    opt("-m", m.memory_mib.to_string());
    opt("-smp", m.cpus.to_string());
    opt("-display", "none".into());
    opt(
        "-drive",
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            q(&c.ovmf_code)
        ),
    );
    opt(
        "-drive",
        format!("if=pflash,format=raw,unit=1,file={}", q(&c.ovmf_vars)),
    );
    opt(
        "-drive",
        format!(
            "if=none,id=disk0,format={},snapshot=on,file={}",
            c.disk_format,
            q(&c.disk)
        ),
    );
    opt("-device", m.devices[0].clone());
    let mut netdev = "user,id=net0".to_string();
    for f in &c.forwards {
        netdev.push_str(&format!(
            ",hostfwd=tcp:{}:{}-:{}",
            super::ports::LOOPBACK,
            f.host,
            f.guest
        ));
    }
    opt("-netdev", netdev);
    opt("-device", m.devices[1].clone());
    opt(
        "-chardev",
        format!("socket,id=chrtpm,path={}", q(&c.tpm_socket)),
    );
    opt("-tpmdev", "emulator,id=tpm0,chardev=chrtpm".into());
    opt("-device", m.devices[2].clone());
    opt(
        "-chardev",
        format!("file,id=console,path={}", q(&c.console_log)),
    );
    opt("-serial", "chardev:console".into());
    opt(
        "-chardev",
        format!("socket,id=qmp,path={},server=on,wait=off", q(&c.qmp_socket)),
    );
    opt("-mon", "chardev=qmp,mode=control".into());
    a.push("-no-reboot".into());
    a.into_iter().map(OsString::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> QemuConfig {
        QemuConfig {
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 1,
            ovmf_code: "/fw/OVMF_CODE_4M.fd".into(),
            ovmf_vars: "/run/x/OVMF_VARS.fd".into(),
            disk: "/out,1/disk.raw".into(),
            disk_format: "raw",
            tpm_socket: "/run/x/swtpm.sock".into(),
            qmp_socket: "/run/x/qmp.sock".into(),
            console_log: "/out,1/console.log".into(),
            forwards: vec![
                Forward {
                    host: 40000,
                    guest: 8000,
                },
                Forward {
                    host: 40001,
                    guest: 8080,
                },
            ],
            secure_boot: false,
        }
    }

    fn joined(c: &QemuConfig) -> String {
        args(c)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn command_line_boots_the_disk_first_without_pxe_and_never_writes_the_image() {
        let s = joined(&config());
        for want in [
            "-nodefaults",
            "-machine q35 -accel tcg -m 1024 -smp 1",
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE_4M.fd",
            "-drive if=pflash,format=raw,unit=1,file=/run/x/OVMF_VARS.fd",
            // Commas in paths doubled; snapshot=on keeps the image unchanged.
            "-drive if=none,id=disk0,format=raw,snapshot=on,file=/out,,1/disk.raw",
            "-device virtio-blk-pci,drive=disk0,bootindex=1",
            "-netdev user,id=net0,hostfwd=tcp:127.0.0.1:40000-:8000,hostfwd=tcp:127.0.0.1:40001-:8080",
            "-device virtio-net-pci,netdev=net0,romfile= ",
            "-chardev socket,id=chrtpm,path=/run/x/swtpm.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0",
            "-chardev file,id=console,path=/out,,1/console.log -serial chardev:console",
            "-chardev socket,id=qmp,path=/run/x/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control",
            "-no-reboot",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        assert!(!s.contains("-cpu"), "{s}");
        let kvm = joined(&QemuConfig {
            accel: Accel::Kvm,
            ..config()
        });
        assert!(kvm.contains("-accel kvm -cpu host"), "{kvm}");
        assert!(!s.contains("smm") && !s.contains("cfi.pflash01"), "{s}");
    }

    /// Secure Boot: SMM on and the variable flash writable from SMM only.
    #[test]
    fn secure_boot_turns_on_smm_and_secure_pflash() {
        let s = joined(&QemuConfig {
            secure_boot: true,
            ovmf_code: "/fw/OVMF_CODE_4M.secboot.fd".into(),
            ..config()
        });
        for want in [
            "-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on -accel tcg",
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE_4M.secboot.fd",
            "-drive if=pflash,format=raw,unit=1,file=/run/x/OVMF_VARS.fd",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }
}
