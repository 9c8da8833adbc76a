"""The bridge VLAN filtering tests, run for real in a qemu VM with Debian 12's kernel.

Issues #6/#7 want the lab switch to be a Linux bridge with vlan_filtering. Where the host
kernel lacks CONFIG_BRIDGE_VLAN_FILTERING (this project's CI kernel does) the lab falls back
to one bridge per VLAN and the filtering-mode tests skip; this test boots Debian's own
kernel (.ci/vm/run-tests) over the host's root, runs them there, and asserts that they
passed, not skipped, on a bridge the guest kernel reports as vlan_filtering=1. Where the
host kernel has VLAN filtering those tests ran natively, and this one skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from nac.lab.netns import vlan_filtering_supported

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / ".ci/vm/run-tests"
# The runner's default runs: (1) the filtering-mode tests of both push drivers, (2) the lab.
FILTERING_TESTS = (
    "tests.test_enforcers_snmp::test_agent_and_driver_in_each_vlan_mode[filtering]",
    "tests.test_enforcers_ssh::test_each_vlan_mode_on_a_real_bridge[filtering]",
    "tests.test_enforcers_ssh::test_recorded_vlan_show_matches_a_filtering_bridge",
)
# The lab scenarios the VM runs (1-5: each ends in VLANs that must separate hosts), and down.
LAB_SCENARIOS = tuple(f"tests.test_lab::test_{name}" for name in (
    "compliant_host_reaches_corp", "vulnerable_host_isolated_then_fixed",
    "mab_host_quarantined", "new_advisory_isolates_a_running_host",
    "ids_alert_isolates_forged_alert_does_not", "down_leaves_nothing"))
# Every lab test that builds a switch; each must have left evidence of a filtering bridge.
LAB_SWITCH_TESTS = (
    "tests.test_lab::test_compliant_host_reaches_corp",
    "tests.test_enforcers_snmp::test_agent_and_driver_in_each_vlan_mode[filtering]",
    "tests.test_enforcers_ssh::test_each_vlan_mode_on_a_real_bridge[filtering]",
)

pytestmark = [pytest.mark.netns, pytest.mark.peer]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if vlan_filtering_supported():
        return "host kernel has bridge VLAN filtering: the filtering tests ran natively"
    missing = [p for p in ("qemu-system-x86_64", "apt-get", "dpkg-deb", "depmod")
               if not shutil.which(p)] + [p for p in ("/bin/busybox",) if not Path(p).exists()]
    if missing:
        return f"missing {', '.join(missing)} (.ci/install installs qemu-system-x86, " \
            "busybox-static, kmod)"
    fetch = subprocess.run([sys.executable, str(RUNNER), "--fetch-only"], capture_output=True,
                           text=True, timeout=600)
    if fetch.returncode != 0:
        return f"Debian's kernel package is not available: {fetch.stderr.strip()[-300:]}"
    return None


def _results(out: Path) -> dict[str, str]:
    """nodeid-like "module::name" -> passed / failed / error / skipped, from every junit file."""
    found: dict[str, str] = {}
    for xml in sorted(out.glob("junit-*.xml")):
        for case in ET.parse(xml).iter("testcase"):
            kinds = {c.tag for c in case}
            state = next((k for k in ("failure", "error", "skipped") if k in kinds), "passed")
            found[f"{case.get('classname')}::{case.get('name')}"] = state
    return found


# Under TCG (no usable KVM) the VM run takes 7-15 minutes; the runner has its own timeout.
@pytest.mark.timeout(2700)
def test_filtering_tests_pass_in_a_vm_with_debians_kernel(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run([sys.executable, str(RUNNER), "--out", str(tmp_path),
                           "--timeout", "2400"], capture_output=True, text=True, timeout=2600)
    log = proc.stdout + proc.stderr
    print(log)
    for f in sorted(tmp_path.glob("pytest-*.log")):
        print(f.read_text(errors="replace"))  # the inner runs, shown on failure
    assert proc.returncode == 0, log

    guest = json.loads((tmp_path / "guest.json").read_text())
    assert guest["kernel"] != os.uname().release and guest["vlan_filtering"] == 1, guest
    results = _results(tmp_path)
    for name in FILTERING_TESTS:
        assert results.get(name) == "passed", (name, results.get(name))
    for name in LAB_SCENARIOS:
        assert results.get(name) == "passed", (name, results.get(name))
    assert not [k for k, v in results.items() if v != "passed"], results

    # Each switch those tests built was a filtering bridge by the guest kernel's own account.
    evidence = [json.loads(line)
                for line in (tmp_path / "evidence.jsonl").read_text().splitlines()]
    assert evidence and all(e["mode"] == "filtering" and e["vlan_filtering"] == 1
                            for e in evidence), evidence
    built = {e["test"].replace("/", ".").replace(".py::", "::") for e in evidence}
    for name in LAB_SWITCH_TESTS:
        assert name in built, (name, sorted(built))
    summary = json.loads((tmp_path / "summary.json").read_text())
    print(f"VM run: {summary}")
