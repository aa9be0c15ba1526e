#!/usr/bin/env bash
# Installs what cvm-image needs on a Debian bookworm machine: the reference tools the tests check our
# outputs with, and QEMU/OVMF/swtpm for booting. Idempotent: does nothing when all is there.
set -euo pipefail

packages=(
  cryptsetup-bin      # veritysetup: dm-verity oracle
  squashfs-tools      # unsquashfs/mksquashfs: squashfs oracle and benchmark reference
  dosfstools mtools   # fsck.fat, mtype: ESP oracle
  gdisk               # sgdisk -v: GPT oracle
  cpio                # cpio -t: initramfs oracle
  binutils            # objdump/objcopy: PE oracle
  sbsigntool osslsigncode  # Authenticode oracles
  efitools openssl    # ESL / authenticated-variable oracles, key and signature checks
  file procps         # file -s (FAT volume id), pgrep/ps (no stray VM processes)
  systemd             # systemd-measure: PCR 11 oracle
  xz-utils zstd kmod  # decompressors and modinfo (module dependency oracle)
  qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools tpm2-tools  # booting and TPM
  time                # /usr/bin/time -v for peak-memory figures in make bench
  curl                # make demo and the boot tests talk to the agent
  python3-venv        # the pinned cloud CLIs' venv (below)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Some machines carry qemu-utils from bookworm-backports, which conflicts with bookworm's
# qemu-system-x86; pin both to bookworm so they install together.
if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
  missing+=("qemu-utils/bookworm")
fi
install_apt() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  local args=()
  for p in "${missing[@]}"; do
    case "$p" in
      qemu-utils) args+=("qemu-utils/bookworm") ;;
      *) args+=("$p") ;;
    esac
  done
  $sudo apt-get install -y -qq --no-install-recommends --allow-downgrades "${args[@]}"
}
if [ ${#missing[@]} -gt 0 ]; then
  install_apt
fi

# PyPI oracles of the Secure Boot tests: virt-fw-vars reads OVMF variable stores back, uefivars reads the
# AWS --uefi-data blob back (python-uefivars, the format's reference). Pinned versions.
pip_missing=()
command -v virt-fw-vars >/dev/null || pip_missing+=("virt-firmware==26.10")
command -v uefivars >/dev/null || pip_missing+=("uefivars==1.2")
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "deps: pip installing ${pip_missing[*]}"
  python3 -m pip install --quiet --root-user-action=ignore "${pip_missing[@]}"
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# The real aws and az CLIs (PyPI, pinned in scripts/cloud-cli-requirements.txt) that
# tests/deploy_cli.rs feeds the deploy plans to, in a venv of their own (azure-cli's dependencies
# must not meet the oracles' above). Reinstalled only when the pins change.
cloud_req="$(cd "$(dirname "$0")" && pwd)/cloud-cli-requirements.txt"
cloud_venv="${CVM_IMAGE_CACHE:-$HOME/.cache/cvm-image}/cloud-cli"
if ! cmp -s "$cloud_req" "$cloud_venv/requirements.txt"; then
  echo "deps: pip installing the pinned cloud CLIs into $cloud_venv (a few minutes)"
  rm -rf "$cloud_venv"
  python3 -m venv "$cloud_venv"
  "$cloud_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$cloud_req"
  cp "$cloud_req" "$cloud_venv/requirements.txt"
fi
