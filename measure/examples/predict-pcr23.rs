//! Prints the PCR 23 a correct boot produces for a workload:
//! `predict-pcr23 <verity root hash hex> <manifest file> [manifest name] [bank]` (bank: sha256 by
//! default; sha1, sha384, sha512). Used by initrd/tests/boot.sh to compare the TPM with the prediction.

use cvm_measure::eventlog::HashAlg;
use cvm_measure::workload::predict_pcr23;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root_hex, manifest_path, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: predict-pcr23 ROOT_HASH_HEX MANIFEST_FILE [MANIFEST_NAME] [BANK]".into(),
        );
    };
    let name = rest.first().map(String::as_str).unwrap_or("workload.toml");
    let bank_name = rest.get(1).map(String::as_str).unwrap_or("sha256");
    let bank = HashAlg::from_name(bank_name).ok_or(format!("unknown bank {bank_name:?}"))?;
    let root: [u8; 32] = hex::decode(root_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or("root hash must be 64 hex digits")?;
    let manifest = std::fs::read(manifest_path).map_err(|e| format!("{manifest_path}: {e}"))?;
    let value = predict_pcr23(&root, name, &manifest, bank)?;
    println!("{}", hex::encode(value));
    Ok(())
}
