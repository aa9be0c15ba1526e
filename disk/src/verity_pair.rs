//! The partition UUIDs of a dm-verity pair, systemd-repart's convention (Discoverable Partitions
//! Specification): the data partition's UUID is the first 128 bits of the verity root hash, the
//! hash partition's the last 128, taken raw (no version bits) in textual byte order. So the textual
//! PARTUUIDs are the root-hash hex split in two, and a disk carries its partitions' root hash in
//! its partition table: the init reads the workload's root hash from there and measures it before
//! opening the partition.

/// A root hash too short to fill two UUIDs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("verity root hash is {0} bytes; partition UUIDs need at least 32")]
pub struct ShortRootHash(pub usize);

/// (data partition UUID, hash partition UUID), textual byte order.
pub fn partition_uuids(root_hash: &[u8]) -> Result<([u8; 16], [u8; 16]), ShortRootHash> {
    if root_hash.len() < 32 {
        return Err(ShortRootHash(root_hash.len()));
    }
    let mut data = [0u8; 16];
    let mut hash = [0u8; 16];
    data.copy_from_slice(&root_hash[..16]);
    hash.copy_from_slice(&root_hash[root_hash.len() - 16..]);
    Ok((data, hash))
}

/// The SHA-256 root hash a pair's UUIDs carry (the inverse of [`partition_uuids`] for 32 bytes).
pub fn root_hash(data_uuid: &[u8; 16], hash_uuid: &[u8; 16]) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[..16].copy_from_slice(data_uuid);
    h[16..].copy_from_slice(hash_uuid);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_the_root_hash_halves() {
        let h: [u8; 32] = std::array::from_fn(|i| i as u8);
        let (d, v) = partition_uuids(&h).unwrap();
        assert_eq!(d, std::array::from_fn(|i| i as u8));
        assert_eq!(v, std::array::from_fn(|i| (i + 16) as u8));
        assert_eq!(root_hash(&d, &v), h);
        assert_eq!(partition_uuids(&[0; 16]), Err(ShortRootHash(16)));
    }
}
