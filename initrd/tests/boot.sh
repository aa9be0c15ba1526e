#!/bin/bash
# Boots cvm-init for real under QEMU (TCG) + swtpm, on disks built with the reference tools
# (mksquashfs, veritysetup, sgdisk, GNU cpio) — independent of the cvm-image builder.
#
#   initrd/tests/boot.sh [6.12|6.1 ...]      (default: 6.12 6.1)
#
# Per kernel, four boots:
#   good           reaches the agent (PID 1); PCR 23 from the TPM = the prediction of
#                  cvm_measure::workload (predict-pcr23) = an independent python fold; the replayed
#                  runtime event log agrees.
#   corrupt-root   one byte flipped inside the agent binary in the root squashfs after
#                  `veritysetup format`: a dm-verity error, "cvm-init: FATAL:", power-off, no agent.
#   corrupt-wl     one byte flipped inside workload.toml: the same, and the agent never runs.
#   missing-wl     workload partitions deleted: after device_timeout_secs the init lists the
#                  partitions it saw and powers off with a FATAL line naming what is missing.
# Exit status 0 only if every check passes. Needs: cargo, qemu-system-x86_64, swtpm, mksquashfs,
# veritysetup, sgdisk, cpio, python3 (fails with a message when one is missing).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WS=$(cd "$HERE/../.." && pwd)
FIXTURES=${FIXTURES:-$WS/target/fixtures}
OUT=${OUT:-$(mktemp -d /tmp/cvm-boot-test.XXXXXX)}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-300}
KERNELS=("$@")
[ ${#KERNELS[@]} -gt 0 ] || KERNELS=(6.12 6.1)

# GPT type GUIDs: Discoverable Partitions Spec root (x86-64) and root-verity (x86-64); the workload
# pair uses this test's own types (the init finds it by whatever boot.json says).
ROOT_TYPE=4f68bce3-e8cd-4db1-96e7-fbcaf984b709
ROOT_VERITY_TYPE=2c7357ed-ebd2-46d9-aec1-23d437ec2bf5
WL_TYPE=5a1b3c4d-0e0f-4a1b-8c2d-3e4f5a6b7c01
WL_VERITY_TYPE=5a1b3c4d-0e0f-4a1b-8c2d-3e4f5a6b7c02
ROOT_DATA_UUID=11111111-2222-4333-8444-555555555501
ROOT_HASH_UUID=11111111-2222-4333-8444-555555555502
ROOT_SALT=5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a
WL_SALT=a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5

fail() { echo "boot.sh: FAIL: $*" >&2; exit 1; }
log() { echo "boot.sh: $*" >&2; }
for tool in cargo qemu-system-x86_64 swtpm mksquashfs veritysetup sgdisk cpio python3 timeout; do
    command -v "$tool" >/dev/null || fail "$tool is missing (see scripts/deps.sh)"
done

log "building cvm-init and test-agent (static) …"
(cd "$WS" && RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --profile guest \
    --target x86_64-unknown-linux-gnu -p cvm-init --bin cvm-init --example test-agent)
(cd "$WS" && cargo build -q -p cvm-measure --example predict-pcr23)
GUEST=$WS/target/x86_64-unknown-linux-gnu/guest
INIT=$GUEST/cvm-init
AGENT=$GUEST/examples/test-agent
PREDICT=$WS/target/debug/examples/predict-pcr23
file "$INIT" | grep -q 'static' || fail "$INIT is not statically linked"

# veritysetup format DATA HASH SALT UUID → prints the root hash
verity_format() {
    veritysetup format --hash=sha256 --data-block-size=4096 --hash-block-size=4096 --format=1 \
        --salt="$3" --uuid="$4" "$1" "$2" | awk '/^Root hash:/ {print $3}'
}

# mib FILE → size in MiB, rounded up
mib() { echo $(( ($(stat -c %s "$1") + 1048575) / 1048576 )); }

# build_disk DIR: root + workload trees → DIR/disk.raw, DIR/root.hash, DIR/wl.hash
build_disk() {
    local d=$1
    rm -rf "$d/root" "$d/wl"
    mkdir -p "$d/root"/{dev,proc,sys,run,tmp,workload,usr/bin,etc} "$d/wl/config"
    install -m 0755 "$AGENT" "$d/root/usr/bin/cvm-agent"
    echo 'ID=cvm-test' > "$d/root/etc/os-release"
    printf 'name = "boot-test"\nversion = "1"\n' > "$d/wl/workload.toml"
    printf 'greeting = "hello"\n' > "$d/wl/config/app.toml"
    # Uncompressed data (-noD -noF) so that the test can find and flip bytes of a file.
    mksquashfs "$d/root" "$d/root.sqfs" -noappend -all-root -noD -noF -mkfs-time 0 -all-time 0 -quiet >/dev/null
    mksquashfs "$d/wl" "$d/wl.sqfs" -noappend -all-root -noD -noF -mkfs-time 0 -all-time 0 -quiet >/dev/null
    verity_format "$d/root.sqfs" "$d/root.verity" "$ROOT_SALT" 01234567-89ab-4cde-8f01-23456789abcd > "$d/root.hash"
    verity_format "$d/wl.sqfs" "$d/wl.verity" "$WL_SALT" 01234567-89ab-4cde-8f01-23456789abce > "$d/wl.hash"
    local wl_hash; wl_hash=$(cat "$d/wl.hash")
    # systemd-repart convention: PARTUUIDs = root hash halves (textual UUID order).
    local h=$wl_hash
    local wl_data_uuid=${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}
    local wl_hash_uuid=${h:32:8}-${h:40:4}-${h:44:4}-${h:48:4}-${h:52:12}

    local files=(root.sqfs root.verity wl.sqfs wl.verity)
    local types=($ROOT_TYPE $ROOT_VERITY_TYPE $WL_TYPE $WL_VERITY_TYPE)
    local uuids=($ROOT_DATA_UUID $ROOT_HASH_UUID $wl_data_uuid $wl_hash_uuid)
    local total=2 i
    for f in "${files[@]}"; do total=$(( total + $(mib "$d/$f") )); done
    rm -f "$d/disk.raw"; truncate -s $(( (total + 1) * 1048576 )) "$d/disk.raw"
    local args=(-o) start=2048
    for i in 0 1 2 3; do
        local sectors=$(( $(mib "$d/${files[$i]}") * 2048 ))
        args+=(-n "$((i+1)):$start:$((start + sectors - 1))" -t "$((i+1)):${types[$i]}" -u "$((i+1)):${uuids[$i]}")
        dd if="$d/${files[$i]}" of="$d/disk.raw" bs=512 seek=$start conv=notrunc status=none
        start=$(( start + sectors ))
    done
    sgdisk "${args[@]}" "$d/disk.raw" >/dev/null
    sgdisk -v "$d/disk.raw" | grep -q 'No problems found' || fail "sgdisk -v: $d/disk.raw"
}

# boot_json KVER MODULES… → stdout
boot_json() {
    local kver=$1; shift
    local mods="" m
    for m in "$@"; do mods+="${mods:+, }\"lib/modules/$kver/kernel/$m\""; done
    local sb; sb=$(python3 -c "import struct,sys; d=open(sys.argv[1],'rb').read(512); print(struct.unpack_from('<Q',d,72)[0])" "$D/root.verity")
    cat <<EOF
{
  "version": 1,
  "modules": [$mods],
  "root": {
    "data_partuuid": "$ROOT_DATA_UUID",
    "hash_partuuid": "$ROOT_HASH_UUID",
    "root_hash": "$(cat "$D/root.hash")",
    "salt": "$ROOT_SALT",
    "data_blocks": $sb,
    "hash_start_block": 1,
    "fstype": "squashfs"
  },
  "workload": {
    "data_type_guid": "$WL_TYPE",
    "hash_type_guid": "$WL_VERITY_TYPE",
    "mount_point": "/workload",
    "manifest": "workload.toml",
    "fstype": "squashfs"
  },
  "agent": { "path": "/usr/bin/cvm-agent", "args": [] },
  "device_timeout_secs": 10
}
EOF
}

# build_initrd KDIR KVER MODULES… → $D/initrd.cpio (GNU cpio newc, sorted, reproducible)
build_initrd() {
    local kdir=$1 kver=$2; shift 2
    local s=$D/initramfs m
    rm -rf "$s"; mkdir -p "$s"/{dev,proc,sys,sysroot,etc/cvm}
    install -m 0755 "$INIT" "$s/init"
    boot_json "$kver" "$@" > "$s/etc/cvm/boot.json"
    for m in "$@"; do
        install -D -m 0644 "$kdir/lib/modules/$kver/kernel/$m" "$s/lib/modules/$kver/kernel/$m"
    done
    (cd "$s" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
        cpio -o -H newc --reproducible --renumber-inodes --ignore-devno --null --quiet) > "$D/initrd.cpio"
}

# flip_byte FILE OFFSET
flip_byte() {
    python3 - "$1" "$2" <<'PY'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, 'r+b') as f:
    f.seek(off); b = f.read(1); f.seek(off); f.write(bytes([b[0] ^ 0xFF]))
PY
}

# find_offset FILE NEEDLE [first|unique] → offset of a byte string (python bytes literal) in FILE
find_offset() {
    python3 - "$1" "$2" "${3:-unique}" <<'PY'
import sys, ast
data = open(sys.argv[1], 'rb').read()
needle = ast.literal_eval(sys.argv[2])
i = data.find(needle)
assert i >= 0, f"{needle!r}: not found"
assert sys.argv[3] == "first" or data.find(needle, i + 1) < 0, f"{needle!r}: found twice"
print(i)
PY
}

# partition_start DISK N → byte offset
partition_start() {
    echo $(( $(sgdisk -i "$2" "$1" | awk '/^First sector:/ {print $3}') * 512 ))
}

# boot NAME KERNEL → console log in $D/NAME.log
boot() {
    local name=$1 kernel=$2 tpmdir=$D/tpm-$1
    rm -rf "$tpmdir"; mkdir -p "$tpmdir"
    swtpm socket --tpm2 --tpmstate dir="$tpmdir" --ctrl type=unixio,path="$tpmdir/sock" \
        --log file="$tpmdir/swtpm.log" &
    local swtpm_pid=$!
    for _ in $(seq 100); do [ -S "$tpmdir/sock" ] && break; sleep 0.05; done
    local t0; t0=$(date +%s.%N)
    timeout "$QEMU_TIMEOUT" qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -nographic -no-reboot \
        -kernel "$kernel" -initrd "$D/initrd.cpio" -append "console=ttyS0 panic=-1" \
        -drive file="$D/$name.raw",if=virtio,format=raw \
        -chardev socket,id=chrtpm,path="$tpmdir/sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
        -device tpm-tis,tpmdev=tpm0 </dev/null > "$D/$name.log" 2>&1 || true
    local t1; t1=$(date +%s.%N)
    kill "$swtpm_pid" 2>/dev/null || true; wait "$swtpm_pid" 2>/dev/null || true
    log "$name: QEMU ran $(python3 -c "print(round($t1-$t0,1))") s (wall); console in $D/$name.log"
    tr -d '\r' < "$D/$name.log" > "$D/$name.txt"
}

expect() { grep -q -- "$2" "$D/$1.txt" || { tail -40 "$D/$1.txt" >&2; fail "$1: no line matching '$2'"; }; }
expect_not() { ! grep -q -- "$2" "$D/$1.txt" || { tail -40 "$D/$1.txt" >&2; fail "$1: unexpected '$2'"; }; }

for K in "${KERNELS[@]}"; do
    case $K in
    6.12)
        KVER=6.12.117+deb12-amd64
        MODS=(drivers/block/virtio_blk.ko.xz drivers/md/dm-mod.ko.xz drivers/md/dm-bufio.ko.xz
              lib/reed_solomon/reed_solomon.ko.xz drivers/md/dm-verity.ko.xz fs/squashfs/squashfs.ko.xz) ;;
    6.1)
        KVER=6.1.0-56-amd64
        MODS=(drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko drivers/virtio/virtio_pci_modern_dev.ko
              drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci.ko drivers/block/virtio_blk.ko
              drivers/md/dm-mod.ko drivers/md/dm-bufio.ko lib/reed_solomon/reed_solomon.ko
              drivers/md/dm-verity.ko fs/squashfs/squashfs.ko) ;;
    *) fail "unknown kernel $K (6.12 or 6.1)" ;;
    esac
    KDIR=$FIXTURES/linux-image-$KVER
    KERNEL=$KDIR/boot/vmlinuz-$KVER
    [ -f "$KERNEL" ] || fail "missing $KERNEL"
    D=$OUT/$K; mkdir -p "$D"
    build_disk "$D"
    build_initrd "$KDIR" "$KVER" "${MODS[@]}"
    WL_HASH=$(cat "$D/wl.hash")

    # --- good boot ---
    cp "$D/disk.raw" "$D/good.raw"
    boot good "$KERNEL"
    expect good "test-agent: agent started as PID 1\$"
    expect good "cvm-init: mounted root"
    expect good "cvm-init: measured \"workload.toml\" into PCR 23"
    expect good "test-agent: workload files: config workload.toml"
    PRED=$("$PREDICT" "$WL_HASH" "$D/wl/workload.toml")
    PY=$(python3 - "$WL_HASH" "$D/wl/workload.toml" <<'PY'
import hashlib, sys
root_hex, manifest = sys.argv[1], open(sys.argv[2], 'rb').read()
d1 = hashlib.sha256(("cvm-image.workload.verity-root-hash:" + root_hex).encode()).digest()
d2 = hashlib.sha256(manifest).digest()
p = bytes(32)
for d in (d1, d2):
    p = hashlib.sha256(p + d).digest()
print(p.hex())
PY
)
    [ "$PRED" = "$PY" ] || fail "$K: predict-pcr23 $PRED != python fold $PY"
    expect good "test-agent: tpm PCR23 $PRED"
    expect good "test-agent: replayed PCR23 $PRED"
    log "$K good: agent reached, PCR23 = $PRED (prediction = python = TPM = replayed log)"

    # --- corrupt root: flip a byte 256 KiB into the agent binary (a pure file-data block, so the
    # squashfs still mounts and the init's read of the agent meets the verity error). The first
    # ELF magic in the uncompressed image is the start of the only binary (std embeds it again).
    cp "$D/disk.raw" "$D/corrupt-root.raw"
    OFF=$(( $(partition_start "$D/corrupt-root.raw" 1) + $(find_offset "$D/root.sqfs" "b'\\x7fELF'" first) + 262144 ))
    flip_byte "$D/corrupt-root.raw" "$OFF"
    boot corrupt-root "$KERNEL"
    expect corrupt-root "device-mapper: verity: .* is corrupted"
    expect corrupt-root "^cvm-init: FATAL: "
    expect corrupt-root "reboot: Power down"
    expect_not corrupt-root "test-agent:"
    log "$K corrupt-root: $(grep -m1 '^cvm-init: FATAL' "$D/corrupt-root.txt")"

    # --- corrupt workload: flip a byte of workload.toml ---
    cp "$D/disk.raw" "$D/corrupt-wl.raw"
    OFF=$(( $(partition_start "$D/corrupt-wl.raw" 3) + $(find_offset "$D/wl.sqfs" "b'name = \"boot-test\"'") ))
    flip_byte "$D/corrupt-wl.raw" "$OFF"
    boot corrupt-wl "$KERNEL"
    expect corrupt-wl "device-mapper: verity: .* is corrupted"
    expect corrupt-wl "^cvm-init: FATAL: "
    expect corrupt-wl "reboot: Power down"
    expect_not corrupt-wl "test-agent:"
    log "$K corrupt-wl: $(grep -m1 '^cvm-init: FATAL' "$D/corrupt-wl.txt")"

    # --- missing workload: partitions 3 and 4 deleted → timeout, inventory listed, power-off ---
    cp "$D/disk.raw" "$D/missing-wl.raw"
    sgdisk -d 3 -d 4 "$D/missing-wl.raw" >/dev/null
    boot missing-wl "$KERNEL"
    expect missing-wl "cvm-init: saw partition vda1 "
    expect missing-wl "^cvm-init: FATAL: timed out after 10 s waiting for: workload data partition type $WL_TYPE; workload hash partition type $WL_VERITY_TYPE"
    expect missing-wl "reboot: Power down"
    expect_not missing-wl "test-agent:"
    log "$K missing-wl: $(grep -m1 '^cvm-init: FATAL' "$D/missing-wl.txt")"
done
log "PASS (${KERNELS[*]}); logs in $OUT"
