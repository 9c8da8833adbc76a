"""A lab host's file tree, read by its agent through NAC_AGENT_ROOT.

The agent's collectors read /etc, /proc, /sys and the dpkg database; pointing them at a
small tree per host gives every lab host its own posture (packages, forwarding) while all
hosts share the real machine's kernel. Only the files the sample policy looks at matter:
the package list (vulnerabilities) and the forwarding switches.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

OS_RELEASE = (
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
    'VERSION_ID="12"\nVERSION_CODENAME=bookworm\nID=debian\n'
)

# Versions current in Debian 12 at the time of DSA-5532-1 (openssl fixed in 3.0.11-1~deb12u2).
FIXED_OPENSSL = "3.0.11-1~deb12u2"
VULNERABLE_OPENSSL = "3.0.9-1"
BASE_PACKAGES: dict[str, tuple[str, str | None]] = {
    # name: (version, source package or None)
    "openssl": (FIXED_OPENSSL, None),
    "libssl3": (FIXED_OPENSSL, "openssl"),
    "libc6": ("2.36-9+deb12u4", "glibc"),
    "tzdata": ("2024a-0+deb12u1", None),
}


def _stanza(name: str, version: str, source: str | None) -> str:
    lines = [f"Package: {name}", "Status: install ok installed", "Architecture: amd64"]
    if source:
        lines.append(f"Source: {source}")
    lines += [f"Version: {version}", f"Description: {name} (lab host package)", ""]
    return "\n".join(lines) + "\n"


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build(root: Path, mac: str, *, extra: dict[str, str] | None = None) -> Path:
    """A Debian 12 host tree; ``extra`` adds packages (name -> version)."""
    _write(root, "etc/os-release", OS_RELEASE)
    packages = dict(BASE_PACKAGES)
    for name, version in (extra or {}).items():
        packages[name] = (version, None)
    _write(root, "var/lib/dpkg/status",
           "".join(_stanza(n, v, s) for n, (v, s) in packages.items()))
    (root / "var/lib/dpkg/info").mkdir(parents=True, exist_ok=True)
    _write(root, "proc/sys/kernel/osrelease", os.uname().release + "\n")
    _write(root, "proc/sys/kernel/arch", os.uname().machine + "\n")
    _write(root, "proc/sys/net/ipv4/ip_forward", "0\n")
    _write(root, "proc/sys/net/ipv6/conf/all/forwarding", "0\n")
    _write(root, "sys/class/net/eth0/address", mac + "\n")
    _write(root, "proc/1/comm", "systemd\n")
    return root


def set_package_version(root: Path, name: str, version: str) -> str:
    """Rewrite one package's (and its binaries') version as ``dpkg -i`` would; the old one.

    Every stanza whose package or source is ``name`` changes, so openssl and libssl3 move
    together like a real upgrade.
    """
    status = root / "var/lib/dpkg/status"
    old = ""
    stanzas = status.read_text().split("\n\n")
    for i, stanza in enumerate(stanzas):
        pkg = re.search(r"^Package: (\S+)$", stanza, re.M)
        src = re.search(r"^Source: (\S+)", stanza, re.M)
        if pkg and name in (pkg.group(1), src.group(1) if src else None):
            ver = re.search(r"^Version: (\S+)$", stanza, re.M)
            if ver and pkg.group(1) == name:
                old = ver.group(1)
            stanzas[i] = re.sub(r"^Version: \S+$", f"Version: {version}", stanza, flags=re.M)
    tmp = status.with_suffix(".tmp")
    tmp.write_text("\n\n".join(stanzas))
    # A rename, like dpkg does: the agent's watcher sees a new file, never a torn one.
    tmp.replace(status)
    return old


def package_version(root: Path, name: str) -> str | None:
    text = (root / "var/lib/dpkg/status").read_text()
    m = re.search(rf"^Package: {re.escape(name)}\n(?:.+\n)*?Version: (\S+)$", text, re.M)
    return m.group(1) if m else None
