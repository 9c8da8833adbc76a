"""Collectors against fixture roots (NAC_AGENT_ROOT), with dpkg-query as a cross-check."""

from __future__ import annotations

import calendar
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eap_ext.agent.collectors import (
    collect_posture,
    firewall,
    forwarding,
    interfaces,
    listening,
    os_info,
    packages,
    packages_apk,
    packages_rpm,
    posture_digest,
    security_software,
    updates,
)
from eap_ext.agent.hostroot import HostRoot

# The fixture builder sits beside this file; tests/ may or may not be a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_fixtures import build_debian_root, write  # noqa: E402


@pytest.fixture
def deb_root(tmp_path: Path) -> HostRoot:
    return HostRoot(build_debian_root(tmp_path / "host"), rooted=True)


def test_os_section(deb_root: HostRoot) -> None:
    assert os_info.collect(deb_root) == {
        "family": "linux", "id": "debian", "version_id": "12", "version": "12 (bookworm)",
        "pretty_name": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-18-amd64",
        "arch": "x86_64",
    }


def test_os_unknown_without_os_release(tmp_path: Path) -> None:
    assert os_info.collect(HostRoot(tmp_path, rooted=True)) == "unknown"


def test_dpkg_packages(deb_root: HostRoot) -> None:
    pkgs = {p["name"]: p for p in packages.collect(deb_root)}
    assert "telnetd" not in pkgs  # config-files only: not installed
    assert pkgs["openssl"] == {
        "name": "openssl", "version": "3.0.11-1~deb12u2", "arch": "amd64",
        "source": "openssl", "source_version": "3.0.11-1~deb12u2", "manager": "dpkg",
        "purl": "pkg:deb/debian/openssl@3.0.11-1~deb12u2?arch=amd64&distro=debian-12",
    }
    assert pkgs["libssl3"]["source"] == "openssl"
    assert pkgs["libcap2"]["version"] == "1:2.66-4"
    assert pkgs["libcap2"]["purl"] == "pkg:deb/debian/libcap2@1:2.66-4?arch=amd64&distro=debian-12"
    assert pkgs["libc6"]["purl"].startswith("pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?")
    # binNMU: the source version differs from the binary version.
    assert pkgs["libpam-modules-bin"]["source"] == "pam"
    assert pkgs["libpam-modules-bin"]["source_version"] == "1.5.2-6+deb12u1"


def test_purl_matches_packageurl_python(deb_root: HostRoot) -> None:
    packageurl = pytest.importorskip("packageurl")
    for pkg in packages.collect(deb_root):
        parsed = packageurl.PackageURL.from_string(pkg["purl"])
        assert (parsed.type, parsed.namespace, parsed.name) == ("deb", "debian", pkg["name"])
        assert parsed.version == pkg["version"]
        assert parsed.qualifiers == {"arch": pkg["arch"], "distro": "debian-12"}
        assert parsed.to_string() == pkg["purl"]


@pytest.mark.peer
def test_dpkg_parser_agrees_with_dpkg_query(deb_root: HostRoot) -> None:
    if shutil.which("dpkg-query") is None:
        pytest.skip("dpkg-query not installed")
    fmt = "${db:Status-Status}\\t${Package}\\t${Version}\\t${Architecture}\\t" \
          "${source:Package}\\t${source:Version}\\n"
    out = subprocess.run(
        ["dpkg-query", "--admindir", str(deb_root.path("var/lib/dpkg")), "-W", "-f", fmt],
        capture_output=True, text=True, check=True).stdout
    theirs = sorted(tuple(line.split("\t")[1:]) for line in out.splitlines()
                    if line.startswith("installed\t"))
    ours = sorted((p["name"], p["version"], p["arch"], p["source"], p["source_version"])
                  for p in packages.collect(deb_root))
    assert ours == theirs
    assert len(ours) == 6


def test_rpm_query_parsing() -> None:
    out = ("openssl-libs\t1\t3.0.7\t24.el9\tx86_64\topenssl-3.0.7-24.el9.src.rpm\n"
           "bash\t(none)\t5.1.8\t6.el9_1\tx86_64\tbash-5.1.8-6.el9_1.src.rpm\n"
           "gpg-pubkey\t(none)\tfd431d51\t4ae0493b\t(none)\t(none)\n")
    pkgs = packages_rpm.parse_query(out, "rhel", "rhel-9.2")
    assert [p["name"] for p in pkgs] == ["bash", "openssl-libs"]
    ssl = pkgs[1]
    assert ssl["version"] == "1:3.0.7-24.el9"
    assert (ssl["source"], ssl["source_version"]) == ("openssl", "3.0.7-24.el9")
    assert ssl["purl"] == ("pkg:rpm/rhel/openssl-libs@3.0.7-24.el9"
                           "?arch=x86_64&distro=rhel-9.2&epoch=1")


def test_apk_installed(tmp_path: Path) -> None:
    write(tmp_path, "etc/os-release", 'ID=alpine\nVERSION_ID=3.19.1\n')
    write(tmp_path, "lib/apk/db/installed",
          "C:Q1abc=\nP:libcrypto3\nV:3.1.4-r5\nA:x86_64\nS:1\no:openssl\n\n"
          "C:Q1def=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\no:musl\n")
    pkgs = packages.collect(HostRoot(tmp_path, rooted=True))
    assert pkgs[0]["source"] == "openssl" and pkgs[0]["manager"] == "apk"
    assert pkgs[0]["purl"] == ("pkg:apk/alpine/libcrypto3@3.1.4-r5"
                               "?arch=x86_64&distro=alpine-3.19.1")
    assert packages_apk.parse_installed("", "alpine", None) == []


def test_packages_unknown_without_any_database(tmp_path: Path) -> None:
    assert packages.collect(HostRoot(tmp_path, rooted=True)) == "unknown"


@pytest.mark.parametrize(("v4", "v6"), [(False, False), (True, False), (False, True)])
def test_forwarding(tmp_path: Path, v4: bool, v6: bool) -> None:
    root = HostRoot(build_debian_root(tmp_path, ip_forward=v4, ipv6_forward=v6), rooted=True)
    assert forwarding.collect(root) == {"ipv4": v4, "ipv6": v6, "bridges": [], "tunnels": []}


def test_forwarding_bridge(tmp_path: Path) -> None:
    root = HostRoot(build_debian_root(tmp_path, bridge="br0"), rooted=True)
    assert forwarding.collect(root)["bridges"] == ["br0"]


def test_forwarding_tunnels(tmp_path: Path) -> None:
    build_debian_root(tmp_path)
    write(tmp_path, "sys/class/net/eth0/type", "1\n")
    write(tmp_path, "sys/class/net/wg0/type", "65534\n")   # WireGuard
    write(tmp_path, "sys/class/net/tap0/type", "1\n")      # tap: Ethernet-typed, tun_flags
    write(tmp_path, "sys/class/net/tap0/tun_flags", "0x1002\n")
    write(tmp_path, "sys/class/net/gre1/type", "778\n")
    root = HostRoot(tmp_path, rooted=True)
    assert forwarding.collect(root)["tunnels"] == ["gre1", "tap0", "wg0"]


def test_forwarding_unknown(tmp_path: Path) -> None:
    assert forwarding.collect(HostRoot(tmp_path, rooted=True)) == "unknown"


def test_listening(deb_root: HostRoot) -> None:
    assert listening.collect(deb_root) == [
        {"proto": "tcp", "address": "0.0.0.0", "port": 22},
        {"proto": "tcp", "address": "::", "port": 22},
        {"proto": "tcp", "address": "127.0.0.1", "port": 631},
        {"proto": "tcp", "address": "2001:db8::10", "port": 8080},
        {"proto": "udp", "address": "0.0.0.0", "port": 68},
    ]


def test_listening_live_finds_our_own_socket() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        found = listening.collect(HostRoot())
    assert {"proto": "tcp", "address": "127.0.0.1", "port": port} in found


def test_firewall_from_config(deb_root: HostRoot) -> None:
    assert firewall.collect(deb_root) == {"enabled": True, "backend": "nftables", "rules": 3}


def test_firewall_iptables_persistent(tmp_path: Path) -> None:
    write(tmp_path, "etc/iptables/rules.v4",
          "*filter\n:INPUT DROP [0:0]\n-A INPUT -i lo -j ACCEPT\n-A INPUT -p tcp --dport 22 "
          "-j ACCEPT\nCOMMIT\n")
    assert firewall.collect(HostRoot(tmp_path, rooted=True)) == {
        "enabled": True, "backend": "iptables", "rules": 2}


def test_firewall_unknown_without_config(tmp_path: Path) -> None:
    assert firewall.collect(HostRoot(tmp_path, rooted=True)) == "unknown"


def test_nft_json_count() -> None:
    text = ('{"nftables": [{"metainfo": {}}, {"table": {}}, {"chain": {}},'
            ' {"rule": {}}, {"rule": {}}]}')
    assert firewall.count_nft_json(text) == 2


def test_clamav_signature_age_from_header(tmp_path: Path) -> None:
    root = HostRoot(build_debian_root(tmp_path, clamav_built="27 Nov 2026 18-00",
                                      clamd_running=True), rooted=True)
    now = calendar.timegm((2026, 11, 27, 23, 0, 0))
    assert security_software.collect(root, now=now) == [
        {"name": "clamav", "running": True, "signature_age_hours": 5.0}]


def test_clamav_age_from_mtime_and_not_running(tmp_path: Path) -> None:
    db = write(tmp_path, "var/lib/clamav/daily.cld", b"not a header")
    now = time.time()
    os.utime(db, (now - 7200, now - 7200))
    assert security_software.collect(HostRoot(tmp_path, rooted=True), now=now) == [
        {"name": "clamav", "running": False, "signature_age_hours": 2.0}]


def test_no_security_software(deb_root: HostRoot) -> None:
    assert security_software.collect(deb_root) == []


def test_interfaces_from_sysfs(deb_root: HostRoot) -> None:
    assert interfaces.collect(deb_root) == [
        {"name": "eth0", "mac": "52:54:00:12:34:56", "ipv4": [], "ipv6": ["2001:db8::10/64"]},
        {"name": "lo", "mac": "00:00:00:00:00:00", "ipv4": [], "ipv6": ["::1/128"]},
    ]


def test_interfaces_from_ip_json() -> None:
    text = ('[{"ifname": "eth0", "address": "52:54:00:12:34:56", "addr_info": ['
            '{"family": "inet", "local": "192.0.2.10", "prefixlen": 24},'
            '{"family": "inet6", "local": "2001:db8::10", "prefixlen": 64}]}]')
    assert interfaces.from_ip_json(text) == [{"name": "eth0", "mac": "52:54:00:12:34:56",
                                              "ipv4": ["192.0.2.10/24"],
                                              "ipv6": ["2001:db8::10/64"]}]


def test_updates_parsers() -> None:
    sim = ("NOTE: This is only a simulation!\n"
           "Inst libssl3 [3.0.11-1~deb12u2] (3.0.15-1~deb12u1 Debian-Security:12/stable-security"
           " [amd64])\n"
           "Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable [all])\n"
           "Conf libssl3 (3.0.15-1~deb12u1 Debian-Security:12/stable-security [amd64])\n")
    assert updates.parse_apt_simulation(sim) == {"security": 1, "total": 2}
    cache = ("\n12 updates can be applied immediately.\n"
             "5 of these updates are standard security updates.\n")
    assert updates.parse_notifier_cache(cache) == {"security": 5, "total": 12}


def test_updates_rooted(deb_root: HostRoot) -> None:
    assert updates.collect(deb_root) == "unknown"  # nothing may run against an image
    write(deb_root.base, updates.NOTIFIER_CACHE, "3 updates can be applied immediately.\n")
    assert updates.collect(deb_root) == {"security": 0, "total": 3}


def test_broken_collector_becomes_unknown(deb_root: HostRoot) -> None:
    def boom(_root: HostRoot) -> None:
        raise RuntimeError("probe crashed")

    doc = collect_posture(deb_root, sections={"os": os_info.collect, "firewall": boom})
    assert doc["firewall"] == "unknown" and doc["os"]["id"] == "debian"


def test_certificate_digest(deb_root: HostRoot) -> None:
    doc = collect_posture(deb_root, certificate_token="dG9rZW4=")
    assert doc["certificate"]["token"] == "dG9rZW4="
    again = collect_posture(deb_root)
    assert doc["certificate"]["posture_digest"] == posture_digest(again)


def test_apt_simulation_is_cached_until_its_inputs_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = build_debian_root(tmp_path / "host")
    (host / "var/lib/apt/lists").mkdir(parents=True)
    root = HostRoot(host, rooted=False)  # "live", but on our tree and with a fake apt-get
    runs: list[list[str]] = []

    def fake_run(_self: HostRoot, argv: list[str], timeout: float = 30.0) -> str:
        runs.append(argv)
        return ("Inst libssl3 [3.0.11-1~deb12u2] (3.0.15-1~deb12u1 "
                "Debian-Security:12/stable-security [amd64])\n")

    monkeypatch.setattr(HostRoot, "run", fake_run)
    monkeypatch.setattr(HostRoot, "can_run", lambda _self, _prog: True)
    cache = tmp_path / "state" / "pending_updates.json"
    assert updates.collect(root, cache) == {"security": 1, "total": 1}
    assert updates.collect(root, cache) == {"security": 1, "total": 1}
    assert len(runs) == 1
    status = host / "var/lib/dpkg/status"
    os.utime(status, ns=(0, status.stat().st_mtime_ns + 10**9))  # dpkg ran
    updates.collect(root, cache)
    assert len(runs) == 2
    assert runs[0][:2] == ["apt-get", "-s"]


def test_rpm_cli_is_asked_with_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rpm collector's command line, against a stand-in `rpm` that records its argv."""
    host = tmp_path / "host"
    write(host, "etc/os-release", 'ID="rhel"\nVERSION_ID="9.2"\n')
    (host / "var/lib/rpm").mkdir(parents=True)
    bindir = tmp_path / "bin"
    argv_file = tmp_path / "argv"
    write(bindir, "rpm", f"""#!/bin/sh
printf '%s\\n' "$@" > {argv_file}
printf 'bash\\t(none)\\t5.1.8\\t6.el9_1\\tx86_64\\tbash-5.1.8-6.el9_1.src.rpm\\n'
""").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    pkgs = packages.collect(HostRoot(host, rooted=True))
    assert pkgs == [{"name": "bash", "version": "5.1.8-6.el9_1", "arch": "x86_64",
                     "source": "bash", "source_version": "5.1.8-6.el9_1", "manager": "rpm",
                     "purl": "pkg:rpm/rhel/bash@5.1.8-6.el9_1?arch=x86_64&distro=rhel-9.2"}]
    argv = argv_file.read_text().splitlines()
    assert argv[:3] == ["--root", str(host), "-qa"]
    assert argv[3] == "--queryformat"
