//! The ACPI power button (QEMU `system_powerdown`, a cloud "stop" request).
//!
//! Without acpid or systemd-logind nothing turns the button into a signal: on the Debian 6.1 and
//! 6.12 kernels (`CONFIG_ACPI_TINY_POWER_BUTTON` unset) the `button` driver reports it as an input
//! event, `KEY_POWER` on an input device named "Power Button" (and as an ACPI netlink event). The
//! agent reads that input device through evdev (`/dev/input/eventN`, created by devtmpfs), so the
//! kernel modules `button` and `evdev` must be loaded by the init.
//!
//! Devices are found by capability, not by name: `/sys/class/input/eventN/device/capabilities/key`
//! is the device's key bitmap, and a power button is any device with `KEY_POWER` in it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::log;

/// `EV_KEY` and `KEY_POWER` from `<linux/input-event-codes.h>`.
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: `struct timeval` (16) + type (2) + code (2) + value (4).
const INPUT_EVENT_SIZE: usize = 24;
/// Key value for a press (0 release, 2 autorepeat).
const KEY_PRESSED: i32 = 1;
/// Bits per word of the sysfs bitmap: the kernel prints `unsigned long`s.
const BITMAP_WORD_BITS: u32 = usize::BITS;

/// Does the sysfs key bitmap (hex words, most significant first, space separated) have `code` set?
pub fn bitmap_has(bitmap: &str, code: u16) -> bool {
    let words: Vec<&str> = bitmap.split_whitespace().collect();
    let index = usize::from(code) / BITMAP_WORD_BITS as usize;
    let bit = u32::from(code) % BITMAP_WORD_BITS;
    let Some(word) = words
        .len()
        .checked_sub(index + 1)
        .and_then(|i| words.get(i))
    else {
        return false;
    };
    u64::from_str_radix(word, 16).is_ok_and(|w| w & (1u64 << bit) != 0)
}

/// `/dev/input/eventN` for every input device under `sys_class_input` that can report KEY_POWER.
pub fn find_power_buttons(sys_class_input: &Path, dev_input: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_class_input) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("device/capabilities/key"))
                .is_ok_and(|bitmap| bitmap_has(&bitmap, KEY_POWER))
        })
        .map(|e| dev_input.join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// Is this raw `struct input_event` a power-button press?
pub fn is_power_press(event: &[u8; INPUT_EVENT_SIZE]) -> bool {
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == KEY_PRESSED
}

/// Watches every power button on its own thread and calls `on_press` for each press.
/// Returns how many devices are watched.
pub fn watch(
    sys_class_input: &Path,
    dev_input: &Path,
    on_press: impl Fn() + Send + Clone + 'static,
) -> usize {
    let devices = find_power_buttons(sys_class_input, dev_input);
    let mut watched = 0;
    for dev in devices {
        let mut file = match File::open(&dev) {
            Ok(f) => f,
            Err(e) => {
                log!("cannot open power button {}: {e}", dev.display());
                continue;
            }
        };
        let on_press = on_press.clone();
        let spawned = std::thread::Builder::new()
            .name("power-button".into())
            .spawn(move || {
                let mut event = [0u8; INPUT_EVENT_SIZE];
                // evdev delivers whole events per read; read_exact keeps that framing.
                while file.read_exact(&mut event).is_ok() {
                    if is_power_press(&event) {
                        on_press();
                    }
                }
                log!("power button {}: device closed", dev.display());
            });
        match spawned {
            Ok(_) => watched += 1,
            Err(e) => log!("cannot start power button thread: {e}"),
        }
    }
    watched
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `capabilities/key` of the ACPI "Power Button" input device (LNXPWRBN) as Linux prints it:
    /// bit 116 = word 1, bit 52.
    const ACPI_POWER_BUTTON_KEYS: &str = "10000000000000 0\n";

    #[test]
    fn bitmap_bits() {
        assert!(bitmap_has(ACPI_POWER_BUTTON_KEYS, KEY_POWER));
        assert!(!bitmap_has(ACPI_POWER_BUTTON_KEYS, 115));
        assert!(!bitmap_has("0\n", KEY_POWER));
        assert!(!bitmap_has("", KEY_POWER));
        // A keyboard-like map with KEY_POWER among many keys (3 words).
        assert!(bitmap_has("1 10000000000000 fffffffffffffffe", KEY_POWER));
        assert!(bitmap_has("1 0 fffffffffffffffe", 1));
        assert!(bitmap_has("1 0 0", 128));
    }

    fn event(kind: u16, code: u16, value: i32) -> [u8; INPUT_EVENT_SIZE] {
        let mut e = [0u8; INPUT_EVENT_SIZE];
        e[16..18].copy_from_slice(&kind.to_ne_bytes());
        e[18..20].copy_from_slice(&code.to_ne_bytes());
        e[20..24].copy_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn press_detection() {
        assert!(is_power_press(&event(1, 116, 1)));
        assert!(!is_power_press(&event(1, 116, 0)), "release");
        assert!(!is_power_press(&event(0, 0, 0)), "EV_SYN");
        assert!(!is_power_press(&event(1, 115, 1)), "other key");
    }

    #[test]
    fn finds_devices_by_capability() {
        let sys = tempfile::tempdir().unwrap();
        for (name, keys) in [
            ("event0", ACPI_POWER_BUTTON_KEYS),
            ("event1", "0\n"),
            ("mouse0", ACPI_POWER_BUTTON_KEYS),
        ] {
            let caps = sys.path().join(name).join("device/capabilities");
            std::fs::create_dir_all(&caps).unwrap();
            std::fs::write(caps.join("key"), keys).unwrap();
        }
        let found = find_power_buttons(sys.path(), Path::new("/dev/input"));
        assert_eq!(found, vec![PathBuf::from("/dev/input/event0")]);
    }

    #[test]
    fn input_event_size_matches_the_kernel_abi() {
        // struct input_event = struct timeval + __u16 type + __u16 code + __s32 value.
        assert_eq!(std::mem::size_of::<libc::input_event>(), INPUT_EVENT_SIZE);
    }
}
