//! The on-disk formats that more than one program of cvm-image reads, each defined once:
//!
//! | module | what | read by |
//! |---|---|---|
//! | [`gpt`] | the GUID partition table (UEFI 2.10 ch. 5): header, entries, CRCs, `EFI_GPT_DATA` | builder (PCR 5 prediction, inspect, run), init (partition lookup), agent (ESP lookup) |
//! | [`fat`] (feature `fat`) | reading a file out of a FAT volume | builder (inspect), agent (`/golden-measurement`) |
//! | [`verity_pair`] | a verity pair's partition UUIDs ↔ its root hash | builder (layout), measure (workload register), init |
//! | [`verity_superblock`] | cryptsetup's dm-verity superblock | builder (inspect; its writer uses the offsets), init (workload partition) |
//! | [`esp_paths`] | where the builder puts files on the ESP | builder (writes), agent (reads) |
//!
//! Writers stay with the builder; this crate only reads, and depends on nothing heavy so the static
//! init can link it.

pub mod esp_paths;
#[cfg(feature = "fat")]
pub mod fat;
pub mod gpt;
pub mod guid;
pub mod verity_pair;
pub mod verity_superblock;
