"""`nac-agent` commands: collect, status, install, watch (run as real subprocesses)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eap_ext.agent import state
from eap_ext.agent.hostroot import HostRoot
from eap_ext.agent.imc import install as imc_install
from eap_ext.agent.watch import snapshot, watch, wpa_cli_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_fixtures import build_debian_root, write  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DOC = REPO / "eap_ext" / "POSTURE_SCHEMA.md"


def agent(*args: str, env: dict[str, str] | None = None,
          check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "eap_ext.agent", *args], env=full_env,
                          capture_output=True, text=True, timeout=120, check=check)


def schema_example() -> dict:
    text = SCHEMA_DOC.read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block, "POSTURE_SCHEMA.md lost its example"
    return json.loads(block.group(1))


def test_collect_json_matches_schema(tmp_path: Path) -> None:
    root = build_debian_root(tmp_path / "host", clamav_built="27 Nov 2026 18-00")
    out = agent("collect", "--json", env={"NAC_AGENT_ROOT": str(root),
                                          "NAC_AGENT_STATE_DIR": str(tmp_path / "st")})
    doc = json.loads(out.stdout)
    example = schema_example()
    assert set(doc) == set(example)
    assert doc["schema"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", doc["collected_at"])
    for section in ("os", "forwarding", "firewall"):
        assert set(doc[section]) >= set(example[section]), section
    # Keys the agent adds beyond the schema example (readers ignore unknown keys).
    assert set(doc["forwarding"]) - set(example["forwarding"]) == {"tunnels"}
    assert set(doc["os"]) == set(example["os"])
    for section in ("packages", "listening", "security_software", "interfaces"):
        assert doc[section], section
        for item in doc[section]:
            assert set(item) == set(example[section][0]), section
    assert doc["pending_updates"] == "unknown"  # nothing may run against an image
    assert doc["certificate"] is None
    ssl = next(p for p in doc["packages"] if p["name"] == "openssl")
    assert ssl == example["packages"][0]


def test_collect_includes_certificate_from_state(tmp_path: Path) -> None:
    root = build_debian_root(tmp_path / "host")
    st = tmp_path / "st"
    state.save({"certificate": {"token": "Y2VydA=="}}, st / "last.json")
    doc = json.loads(agent("collect", "--json", env={
        "NAC_AGENT_ROOT": str(root), "NAC_AGENT_STATE_DIR": str(st)}).stdout)
    assert doc["certificate"]["token"] == "Y2VydA=="
    assert re.fullmatch(r"[0-9a-f]{64}", doc["certificate"]["posture_digest"])


def test_collect_summary(tmp_path: Path) -> None:
    root = build_debian_root(tmp_path / "host", ip_forward=True, bridge="br0")
    out = agent("collect", env={"NAC_AGENT_ROOT": str(root),
                                "NAC_AGENT_STATE_DIR": str(tmp_path / "st")}).stdout
    assert "Debian GNU/Linux 12 (bookworm)" in out
    assert "Packages:         6 (6 dpkg)" in out
    assert "enabled for ipv4; bridges: br0" in out
    assert "enabled (nftables, 3 rules)" in out


def test_status_without_state(tmp_path: Path) -> None:
    res = agent("status", env={"NAC_AGENT_STATE_DIR": str(tmp_path / "none")}, check=False)
    assert res.returncode == 1
    assert "No assessment yet" in res.stdout


def test_status_shows_server_answer(tmp_path: Path) -> None:
    state.update({"assessment": "major-non-compliance", "recommendation": "isolate",
                  "segment": "isolated", "remediation": ["Upgrade openssl to 3.0.15"]},
                 tmp_path / "last.json")
    out = agent("status", env={"NAC_AGENT_STATE_DIR": str(tmp_path)}).stdout
    assert "major-non-compliance" in out and "isolate" in out and "isolated" in out
    assert "- Upgrade openssl to 3.0.15" in out
    as_json = json.loads(agent("status", "--json",
                               env={"NAC_AGENT_STATE_DIR": str(tmp_path)}).stdout)
    assert as_json["segment"] == "isolated"


@pytest.mark.peer
def test_install_builds_and_registers(tmp_path: Path) -> None:
    if shutil.which("gcc") is None or shutil.which("nm") is None:
        pytest.skip("gcc/nm not installed")
    config = tmp_path / "etc" / "tnc_config"
    write(tmp_path, "etc/tnc_config", 'IMV "other" /usr/lib/other.so\n'
                                      'IMC "nac-agent" /old/place.so\n')
    prefix = tmp_path / "usr"
    out = agent("install", "--tnc-config", str(config), "--prefix", str(prefix)).stdout
    lib = prefix / "lib" / "nac-agent" / "nac_imc.so"
    assert f"built {lib}" in out and "registered in" in out
    assert config.read_text() == f'IMV "other" /usr/lib/other.so\nIMC "nac-agent" {lib}\n'
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True,
                             text=True, check=True).stdout
    exported = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
    assert exported == set(imc_install.EXPORTED)
    # Idempotent: a second run leaves the configuration alone.
    before = config.stat().st_mtime_ns
    out = agent("install", "--tnc-config", str(config), "--prefix", str(prefix)).stdout
    assert "already in" in out and config.stat().st_mtime_ns == before


def test_register_keeps_order_and_other_lines(tmp_path: Path) -> None:
    config = tmp_path / "tnc_config"
    lib = Path("/x/nac_imc.so")
    assert imc_install.register(config, lib) is True
    config.write_text(f'IMC "nac-agent" {lib}\nIMC "vendor" /y.so\n')
    assert imc_install.register(config, lib) is False
    assert config.read_text().splitlines()[1] == 'IMC "vendor" /y.so'


def test_watch_triggers_on_package_change(tmp_path: Path) -> None:
    root = HostRoot(build_debian_root(tmp_path / "host"), rooted=True)
    calls: list[list[str]] = []
    status = root.path("var/lib/dpkg/status")
    checks = iter(range(10))

    def tick(_interval: float) -> None:
        n = next(checks)
        if n == 1:  # dpkg installs something between the 1st and 2nd check
            os.utime(status, ns=(0, status.stat().st_mtime_ns + 10**9))
        if n == 3:  # someone enables forwarding
            write(root.base, "proc/sys/net/ipv4/ip_forward", "1\n")

    count = watch(wpa_cli_command("eth0", "/run/wpa"), root=root, interval=0, max_checks=5,
                  runner=lambda argv: calls.append(argv) or 0, sleep=tick,
                  prepare=lambda: calls.append(["prepare"]))
    assert count == 2
    reauth = ["wpa_cli", "-p", "/run/wpa", "-i", "eth0", "reauthenticate"]
    assert calls == [["prepare"], reauth] * 2


def test_watch_ignores_signature_age(tmp_path: Path) -> None:
    root = HostRoot(build_debian_root(tmp_path, clamav_built="27 Nov 2026 18-00"), rooted=True)
    first = snapshot(root)
    db = root.path("var/lib/clamav/daily.cvd")
    db.write_bytes(db.read_bytes().replace(b"27 Nov 2026 18-00", b"27 Nov 2026 19-00"))
    assert snapshot(root) == first


def test_watch_cli_runs_trigger(tmp_path: Path) -> None:
    root = build_debian_root(tmp_path / "host")
    out = agent("watch", "-i", "eth0", "--interval", "0", "--max-checks", "2",
                "--trigger", f"echo x >> {tmp_path / 'fired'}",
                env={"NAC_AGENT_ROOT": str(root)}).stdout
    assert "0 re-authentication(s) requested" in out
    assert not (tmp_path / "fired").exists()


def test_status_per_interface(tmp_path: Path) -> None:
    path = tmp_path / "last.json"
    state.update({"recommendation": "allow", "assessment": "compliant"}, path, "eth0")
    state.update({"recommendation": "isolate", "remediation": ["Enable the firewall"]},
                 path, "wlan0")
    data = state.load(path)
    assert data["recommendation"] == "isolate" and data["interface"] == "wlan0"
    assert data["by_interface"]["eth0"]["recommendation"] == "allow"
    out = agent("status", env={"NAC_AGENT_STATE_DIR": str(tmp_path)}).stdout
    eth0, wlan0 = out.split("Last assessment on ")[1:]
    assert eth0.startswith("eth0") and "allow" in eth0 and "compliant" in eth0
    assert wlan0.startswith("wlan0") and "isolate" in wlan0 and "Enable the firewall" in wlan0
