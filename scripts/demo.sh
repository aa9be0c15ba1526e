#!/usr/bin/env bash
# The end of `make demo` (after `make image`): boot OUT/disk.raw under QEMU/OVMF/swtpm, wait for the
# guest agent, show what it attests (/pcrs, /workload) and the workload's greeting, shut the VM down,
# and print the verdict: do the PCRs the TPM reports equal the ones the build predicted?
#
#   scripts/demo.sh [OUT]        (default: out; CVM=path/to/cvm-image, SPEC=image.toml, KEYS=keys)
#
# The image carries its golden measurement signed with KEYS/golden.key on its ESP; the verifier takes
# it from the VM's agent and trusts it only because KEYS/golden.pub verifies its signature.
#
# Exit status: 0 when PCR 23 (and PCR 11) equal the prediction, 1 when not, 2 when the demo could not
# run (no image, no tools, the VM did not become healthy).
set -euo pipefail

OUT=${1:-out}
CVM=${CVM:-target/release/cvm-image}
SPEC=${SPEC:-image.toml}
KEYS=${KEYS:-keys}

say() { printf '\n== %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 2; }

[ -x "$CVM" ] || die "$CVM not found: build it with \`make tool\`"
[ -f "$OUT/manifest.json" ] || die "$OUT/manifest.json not found: build the image with \`make image\`"
command -v curl >/dev/null || die "curl is missing: apt-get install curl"

# value_after FILE SECTION KEY: the first "KEY": "…" string after the line naming "SECTION" (the
# manifest is pretty-printed JSON; no jq on a fresh machine).
value_after() {
    awk -v sec="\"$2\"" -v key="\"$3\"" '
        index($0, sec) { found = 1 }
        found && index($0, key) { sub(/.*: *"/, ""); sub(/".*/, ""); print; exit }' "$1"
}

# pcr JSON N: PCR N of the agent's {"sha256": {"N": "<hex>", …}} answer.
# pcr JSON N: the sha256 value of PCR N in a /pcrs answer ({"sha1": {…}, "sha256": {…}, …}).
pcr() { printf '%s' "$1" | sed 's/.*"sha256": *{\([^}]*\)}.*/\1/' | grep -o "\"$2\": *\"[0-9a-f]*\"" | head -1 | sed 's/.*"\([0-9a-f]*\)"$/\1/'; }

# pretty JSON: indented when python3 is there, as is otherwise.
pretty() {
    if command -v python3 >/dev/null; then printf '%s' "$1" | python3 -m json.tool; else printf '%s\n' "$1"; fi
}

stop_vm() {
    if [ -f "$OUT/run.json" ]; then
        say "Shutting down"
        "$CVM" stop --out "$OUT" --grace 20 || true
    fi
}
trap stop_vm EXIT

SB=()
SB_TEXT="Secure Boot off"
if [ -f "$OUT/OVMF_VARS.fd" ]; then
    SB=(--secure-boot)
    SB_TEXT="Secure Boot on, the owner's keys enrolled"
fi
say "Booting $OUT/disk.raw (QEMU + OVMF + swtpm, TCG, $SB_TEXT; console in $OUT/console.log)"
urls=$("$CVM" run --out "$OUT" --spec "$SPEC" --detach "${SB[@]}") || die "the VM did not become healthy; see $OUT/console.log"
AGENT=$(printf '%s\n' "$urls" | awk '$1 == "agent" { print $2 }')
WORKLOAD=$(printf '%s\n' "$urls" | awk '$1 == "workload" { print $2 }')
[ -n "$AGENT" ] && [ -n "$WORKLOAD" ] || die "cvm-image run printed no URLs: $urls"
echo "agent API: $AGENT    workload: $WORKLOAD"

say "GET $AGENT/pcrs"
PCRS=$(curl -fsS --max-time 20 "$AGENT/pcrs") || die "GET /pcrs failed"
pretty "$PCRS"

say "GET $AGENT/workload"
WL=$(curl -fsS --max-time 20 "$AGENT/workload") || die "GET /workload failed"
pretty "$WL"

say "GET $WORKLOAD/ (the workload's greeting)"
HELLO=$(curl -fsS --max-time 20 "$WORKLOAD/") || die "the workload did not answer"
pretty "$HELLO"

say "GET $WORKLOAD/signed (the greeting signed by the VM's PCR-bound boot key)"
SIGNED=$(curl -fsS --max-time 20 "$WORKLOAD/signed") || die "the workload did not sign"
pretty "$SIGNED"

say "cvm-image verify --agent $AGENT --ek-ca $OUT/ek-ca.pem --golden-from-agent --golden-pubkey $KEYS/golden.pub"
VERIFY=0
"$CVM" verify --golden-from-agent --golden-pubkey "$KEYS/golden.pub" --profile qemu \
    --agent "$AGENT" --ek-ca "$OUT/ek-ca.pem" || VERIFY=$?

stop_vm
trap - EXIT

PRED23=$(value_after "$OUT/manifest.json" pcr23 value)
PRED11=$(value_after "$OUT/manifest.json" pcr11 value)
GOT23=$(pcr "$PCRS" 23)
GOT11=$(pcr "$PCRS" 11)

say "Verdict"
verdict=0
check() {
    if [ -n "$3" ] && [ "$2" = "$3" ]; then
        printf 'PCR %-3s OK        %s (TPM = prediction)\n' "$1" "$2"
    else
        printf 'PCR %-3s MISMATCH  TPM %s, predicted %s\n' "$1" "${2:-?}" "${3:-?}"
        verdict=1
    fi
}
check 23 "$GOT23" "$PRED23"
check 11 "$GOT11" "$PRED11"
if [ "$VERIFY" -ne 0 ]; then
    echo "cvm-image verify: the VM does not match the golden measurements (exit $VERIFY)"
    verdict=1
fi
if [ $verdict -eq 0 ]; then
    echo "PASS: the booted VM measured exactly what the build predicted (every predicted PCR, its event log, the workload)."
else
    echo "FAIL: the booted VM's measurements differ from the prediction."
fi
exit $verdict
