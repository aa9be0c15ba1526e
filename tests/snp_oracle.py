"""Runs sev-snp-measure's own digest functions over a list of cases in one process.

tests/snp_measure.rs writes the cases as JSON on stdin (one object per case: mode, vcpus, vcpu_sig,
ovmf, kernel, initrd, append, guest_features, snp_ovmf_hash, vmm) and reads one line per case: the
digest in hex, or "error: <message>" when the oracle refuses the input. One interpreter for the
whole matrix instead of one per case keeps the test's wall time down; the functions are the ones
the sev-snp-measure CLI calls.
"""
import json
import sys

from sevsnpmeasure import guest
from sevsnpmeasure.sev_mode import SevMode
from sevsnpmeasure.vmm_types import VMMType

MODES = {"snp": SevMode.SEV_SNP, "seves": SevMode.SEV_ES, "sev": SevMode.SEV}
VMMS = {"qemu": VMMType.QEMU, "ec2": VMMType.ec2, "gce": VMMType.gce}

for case in json.load(sys.stdin):
    try:
        if case["mode"] == "snp:ovmf-hash":
            ld = guest.calc_snp_ovmf_hash(case["ovmf"])
        else:
            ld = guest.calc_launch_digest(
                MODES[case["mode"]], case["vcpus"], case["vcpu_sig"], case["ovmf"],
                case["kernel"], case["initrd"], case["append"], case["guest_features"],
                case["snp_ovmf_hash"] or "", VMMS[case["vmm"]])
        print(ld.hex())
    except Exception as e:  # the oracle signals bad input with assorted exception types
        print("error: " + (type(e).__name__ + " " + str(e)).replace("\n", " "))
