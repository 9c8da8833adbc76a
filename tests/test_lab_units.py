"""`nac lab` pieces that need no namespaces: host trees, process handling, configs, CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from eap_ext.agent.collectors import packages
from eap_ext.agent.hostroot import HostRoot
from nac.cli.main import cli
from nac.config import load_config
from nac.lab import hostroot, procs
from nac.lab import topology as topo


def test_host_tree_upgrade_moves_source_and_binaries(tmp_path: Path) -> None:
    root = hostroot.build(tmp_path / "h", "02:00:00:00:00:01", extra={"nac-lab-demo": "1.0-1"})
    assert hostroot.package_version(root, "openssl") == hostroot.FIXED_OPENSSL
    old = hostroot.set_package_version(root, "openssl", hostroot.VULNERABLE_OPENSSL)
    assert old == hostroot.FIXED_OPENSSL
    text = (root / "var/lib/dpkg/status").read_text()
    # libssl3 (Source: openssl) moves with openssl, like a real upgrade; others do not.
    assert text.count(f"Version: {hostroot.VULNERABLE_OPENSSL}") == 2
    assert hostroot.package_version(root, "nac-lab-demo") == "1.0-1"
    assert hostroot.package_version(root, "libc6") == "2.36-9+deb12u4"


def test_agent_reads_the_host_tree(tmp_path: Path) -> None:
    root = hostroot.build(tmp_path / "h", "02:00:00:00:00:01")
    found = packages.collect(HostRoot(root, True))
    assert isinstance(found, list)
    versions = {p["name"]: p["version"] for p in found}
    assert versions["openssl"] == hostroot.FIXED_OPENSSL and "libc6" in versions


def test_stop_only_signals_processes_naming_the_lab(tmp_path: Path) -> None:
    marker = str(tmp_path)
    pid = procs.spawn([sys.executable, "-c", "import time; time.sleep(60)", marker],
                      tmp_path / "p.log")
    assert procs.alive(pid, marker)
    assert procs.stop(pid, "/some/other/lab") is False  # not ours: left alone
    assert procs.alive(pid, marker)
    t0 = time.monotonic()
    assert procs.stop(pid, marker) is True
    assert not procs.alive(pid, marker) and time.monotonic() - t0 < 5
    assert procs.stop(pid, marker) is False  # twice is fine


def test_server_config_is_valid(tmp_path: Path) -> None:
    nodes = {"host1": topo.Node("host1", "supplicant", "nsh1", "swp1", 1, "10.99.7.129",
                                "02:00:00:00:00:01", 10)}
    for enforcer in ("ssh", "snmp"):
        lab = topo.Lab(dir=tmp_path, tag="t", k=7, mode="filtering", switch_ns="nssw",
                       mgmt_root_if="nmt", namespaces=[], enforcer=enforcer, auth_port=18120,
                       acct_port=18121, nodes=nodes)
        path = tmp_path / f"{enforcer}.toml"
        path.write_text(topo.server_config(lab, ssh_user="nacsw", ssh_key=tmp_path / "id",
                                           snmp_community="c"))
        cfg = load_config(path)
        assert cfg.listen == ["10.99.7.1"] and cfg.clients[0].address.startswith("10.99.7.2")
        assert cfg.switches[0]["enforce_on_auth"] is True
        assert cfg.switches[0]["driver"] == ("snmp" if enforcer == "snmp"
                                             else "ssh-linux-bridge")
        hostapd = topo.hostapd_config(lab, nodes["host1"])
        assert "radius_auth_req_attr=61:d:15" in hostapd
        assert "radius_auth_req_attr=87:s:swp1" in hostapd
        assert "radius_acct_req_attr=8:x:0a630781" in hostapd  # 10.99.7.129
        assert "own_ip_addr=10.99.7.2" in hostapd


def test_cli_without_a_lab(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["lab", "status", "--dir", str(tmp_path)])
    assert res.exit_code == 1 and "nac lab up" in res.output
    res = runner.invoke(cli, ["lab", "down", "--dir", str(tmp_path)])
    assert res.exit_code == 0 and "no lab" in res.output
    res = runner.invoke(cli, ["lab", "run", "nosuch", "--dir", str(tmp_path)])
    assert res.exit_code == 2


def test_nac_lab_help_lists_the_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "nac.cli.main", "lab", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for cmd in ("up", "down", "status", "run"):
        assert f"  {cmd} " in out


def test_push_after_a_nas_port_only_decision_resolves_the_interface(tmp_path: Path) -> None:
    from nac.enforcement import Planner, Target, parse_switches

    switches, push = parse_switches([{
        "name": "labsw", "address": "10.99.7.2", "driver": "ssh-linux-bridge",
        "enforce_on_auth": True, "ssh": {"username": "u", "password": "p"},
        "ports": {"name_pattern": "swp{nas_port}"}}], "test")
    planner = Planner(switches, tmp_path / "q.db", push)
    try:
        # What Server.on_decision pushes for a request with NAS-Port = 3 and no NAS-Port-Id.
        from nac.events import DecisionRecord

        rec = DecisionRecord(at=time.time(), mac="02:00:00:00:00:03", segment="quarantine",
                             vlan=10, source="mab", nas="labsw", nas_port="3",
                             nas_port_number=3)
        job = planner.set_vlan(Target.from_decision(rec), 10, decided_at=time.time(),
                               reason="mab", live=False)
        assert job is not None
        found = planner.queue.get(job)
        assert found is not None
        port = found.port
    finally:
        planner.close()
    assert port == "swp3"
