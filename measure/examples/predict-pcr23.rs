//! Prints the PCR 23 a correct boot produces for a workload:
//! `predict-pcr23 <verity root hash hex> <manifest file> [manifest name]`.
//! Used by initrd/tests/boot.sh to compare the TPM with the prediction.

use cvm_measure::workload::predict_pcr23;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root_hex, manifest_path, rest @ ..] = args.as_slice() else {
        return Err("usage: predict-pcr23 ROOT_HASH_HEX MANIFEST_FILE [MANIFEST_NAME]".into());
    };
    let name = rest.first().map(String::as_str).unwrap_or("workload.toml");
    let root: [u8; 32] = hex::decode(root_hex)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or("root hash must be 64 hex digits")?;
    let manifest = std::fs::read(manifest_path).map_err(|e| format!("{manifest_path}: {e}"))?;
    println!("{}", hex::encode(predict_pcr23(&root, name, &manifest)));
    Ok(())
}
