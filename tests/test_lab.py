"""`nac lab` end to end: the namespace switch, hostapd, wpa_supplicant with the IMC, and a
`nac serve` that pushes VLANs over SSH, through every scenario an operator can run.

One lab for the module (building it takes seconds); every scenario resets the hosts it
uses, so each test stands alone in any order. The last test takes the lab down and checks
that nothing is left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nac.lab import scenarios
from nac.lab import topology as topo
from nac.lab.netns import vlan_filtering_supported
from nac.lab.scenarios import budget
from nac.lab.story import Story

pytestmark = [pytest.mark.netns, pytest.mark.peer]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    missing = topo.missing_programs()
    if missing:
        return f"missing programs: {', '.join(missing)} (CI installs them: .ci/install)"
    if not scenarios.DSA_FEED.exists():
        return "tests/data/osv is missing"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topo.Lab]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    lab_dir = tmp_path_factory.mktemp("nac-lab")
    try:
        yield topo.up(lab_dir, say=lambda _line: None)
    finally:
        topo.down(lab_dir)


def _run(lab: topo.Lab, name: str) -> Story:
    lines: list[str] = []
    try:
        return scenarios.run(lab, name, out=lines.append)
    finally:
        print("\n".join(lines))  # the story, shown by pytest on failure (or with -s)


def test_compliant_host_reaches_corp(lab: topo.Lab) -> None:
    story = _run(lab, "compliant")
    assert lab.port_vlan("host1") == topo.NORMAL
    # Includes the server's first SSH login to the switch: a sanity bound, not the budget.
    assert story.timings["host1_enforce_s"] < budget(5)


def test_vulnerable_host_isolated_then_fixed(lab: topo.Lab) -> None:
    story = _run(lab, "vulnerable")
    assert lab.port_vlan("host2") == topo.NORMAL
    assert story.timings["isolate_enforce_s"] < budget(5)


def test_mab_host_quarantined(lab: topo.Lab) -> None:
    _run(lab, "mab")


def test_new_advisory_isolates_a_running_host(lab: topo.Lab) -> None:
    story = _run(lab, "advisory")
    assert story.timings["queued_to_isolated_s"] < budget(scenarios.ENFORCE_BUDGET)


def test_ids_alert_isolates_forged_alert_does_not(lab: topo.Lab) -> None:
    story = _run(lab, "ids")
    assert story.timings["alert_to_isolated_s"] < budget(scenarios.ENFORCE_BUDGET)


def test_server_killed_and_restarted(lab: topo.Lab) -> None:
    _run(lab, "restart")
    assert lab.running("nac-serve")


def test_server_killed_with_a_push_in_flight(lab: topo.Lab) -> None:
    story = _run(lab, "inflight")
    # The restarted server releases its dead predecessor's claim instead of waiting out the
    # 30 s lease: the push lands soon after the restart.
    assert story.timings["restart_to_applied_s"] < budget(20)


def test_down_leaves_nothing(lab: topo.Lab) -> None:
    pids = dict(lab.pids)
    topo.down(lab.dir)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ns for ns in lab.namespaces if ns in left]
    assert not [n for n, pid in pids.items() if Path(f"/proc/{pid}").exists()]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert lab.mgmt_root_if not in links
    assert not (lab.dir / "lab.json").exists()


def test_cli_run_builds_tells_and_takes_down(tmp_path: Path) -> None:
    """`nac lab run compliant --enforcer snmp` without a lab: builds one (the server sets VLANs
    over SNMP, Q-BRIDGE-MIB on snmpd, this time), narrates, takes it down."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    lab_dir = tmp_path / "lab"
    proc = subprocess.run([sys.executable, "-m", "nac.cli.main", "lab", "run", "compliant",
                           "--enforcer", "snmp", "--dir", str(lab_dir)],
                          capture_output=True, text=True, timeout=budget(180),
                          cwd=Path(__file__).resolve().parents[1])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "host1 plugs in (swp1)" in out
    assert "snmpd on" in out and "switch port swp1 set to VLAN 30 over SNMP" in out
    assert "ok: host1 reaches the corporate server" in out
    assert "1 scenario(s) passed" in out and "taken down" in out
    assert not (lab_dir / "lab.json").exists()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    tag_line = next(line for line in out.splitlines() if line.startswith("switch labsw"))
    # The mode the kernel allows (filtering natively, or in test_vlan_filtering_vm's VM).
    mode = os.environ.get("NAC_LAB_VLAN_MODE") or (
        "filtering" if vlan_filtering_supported() else "bridge-per-vlan")
    assert f"bridge br0 ({mode})" in tag_line, tag_line
    ns = tag_line.split("namespace ")[1].split(",")[0]
    assert ns not in left
