//! Paths of the files the builder writes on the ESP (`/`-separated, relative to the volume root, as
//! the FAT reader takes them). The builder writes them and the agent reads them: one definition, so
//! the two cannot drift apart.

/// The UKI, at the removable-media default path so firmware boots it with no boot entry.
pub const UKI: &str = "EFI/BOOT/BOOTX64.EFI";
/// The golden measurement of this image: on the ESP because the firmware measures the UKI and the
/// partition table, never the ESP's other files, so embedding it changes no measurement.
pub const GOLDEN: &str = "cvm/golden-measurement.json";
/// The detached signature of [`GOLDEN`], when the build signed it.
pub const GOLDEN_SIG: &str = "cvm/golden-measurement.json.sig";
