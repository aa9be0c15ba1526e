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

# install_venv NAME REQUIREMENTS WHAT: a venv of its own at $CVM_IMAGE_CACHE/NAME holding the pins of
# scripts/REQUIREMENTS, reinstalled only when the pins change.
install_venv() {
  local req venv
  req="$(cd "$(dirname "$0")" && pwd)/$2"
  venv="${CVM_IMAGE_CACHE:-$HOME/.cache/cvm-image}/$1"
  if ! cmp -s "$req" "$venv/requirements.txt"; then
    echo "deps: pip installing $3 into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/requirements.txt"
  fi
}
# The real aws and az CLIs (PyPI, pinned in scripts/cloud-cli-requirements.txt) that
# tests/deploy_cli.rs feeds the deploy plans to, in a venv of their own (azure-cli's dependencies
# must not meet the oracles' above).
install_venv cloud-cli cloud-cli-requirements.txt "the pinned cloud CLIs (a few minutes)"

# The SEV-SNP launch-digest oracle (sev-snp-measure, PyPI, pinned in
# scripts/snp-measure-requirements.txt) that tests/snp_measure.rs compares `cvm-image tee snp-measure`
# with, in a venv of its own.
install_venv sev-snp-measure snp-measure-requirements.txt "the pinned sev-snp-measure"

# Debian trixie's ovmf package: a second OVMF generation (2025.02, with the SVSM_CAA section) for
# the SNP digest tests, next to bookworm's installed /usr/share/ovmf/OVMF.fd. Pinned by sha256 and
# kept in the cache under its sha256, like the lock's packages (tests/snp_measure.rs holds the same pin).
trixie_ovmf_sha256=78e0d54df11fc77406cb7a0bc9a39e5bca6d1cbe06556b91d9a73491c52decdf
trixie_ovmf_url="http://deb.debian.org/debian/pool/main/e/edk2/ovmf_2025.02-8+deb13u1_all.deb"
debs="${CVM_IMAGE_CACHE:-$HOME/.cache/cvm-image}/debs"
if [ ! -f "$debs/$trixie_ovmf_sha256.deb" ]; then
  echo "deps: downloading trixie's ovmf 2025.02-8+deb13u1 (pinned)"
  mkdir -p "$debs"
  curl -fsSL -o "$debs/.trixie-ovmf.part" "$trixie_ovmf_url"
  echo "$trixie_ovmf_sha256  $debs/.trixie-ovmf.part" | sha256sum -c --quiet
  mv "$debs/.trixie-ovmf.part" "$debs/$trixie_ovmf_sha256.deb"
fi
