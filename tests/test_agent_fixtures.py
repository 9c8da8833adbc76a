"""Fixture host roots for the agent tests (imported by the test_agent_* modules).

Builds a small Debian 12 file tree the way the real files look, so the collectors run
against NAC_AGENT_ROOT=<tmp dir> exactly as they would against an offline image.
"""

from __future__ import annotations

import os
from pathlib import Path

OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""

DPKG_STATUS = """Package: openssl
Status: install ok installed
Priority: optional
Section: utils
Installed-Size: 2303
Maintainer: Debian OpenSSL Team <pkg-openssl-devel@alioth-lists.debian.net>
Architecture: amd64
Version: 3.0.11-1~deb12u2
Depends: libc6 (>= 2.34), libssl3 (>= 3.0.9)
Description: Secure Sockets Layer toolkit - cryptographic utility
 This package is part of the OpenSSL project's implementation of the SSL
 and TLS cryptographic protocols.

Package: libssl3
Status: install ok installed
Priority: optional
Section: libs
Architecture: amd64
Multi-Arch: same
Source: openssl
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit - shared libraries

Package: libcap2
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 1:2.66-4
Description: POSIX 1003.1e capabilities (library)

Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries

Package: libpam-modules-bin
Status: install ok installed
Architecture: amd64
Source: pam (1.5.2-6+deb12u1)
Version: 1.5.2-6+deb12u1+b1
Description: Pluggable Authentication Modules for PAM - helper binaries

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1
Description: time zone and daylight-saving time data

Package: telnetd
Status: deinstall ok config-files
Architecture: amd64
Source: netkit-telnet
Version: 0.17+2.4-2
Description: removed, only its conffiles remain
"""

# proc/net/tcp: sshd on 0.0.0.0:22 LISTEN, a connected socket (state 01), 127.0.0.1:631.
PROC_NET_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   1: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0
   2: 0A00020F:0016 0100020A:D431 01 00000000:00000000 02:000A3C5F 00000000     0
"""
# proc/net/tcp6: [::]:22 LISTEN and 2001:db8::10:8080 LISTEN.
PROC_NET_TCP6 = (
    "  sl  local_address                         remote_address                        st\n"
    "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A"
    " 00000000:00000000 00:00000000 00000000     0\n"
    "   1: B80D0120000000000000000010000000:1F90 00000000000000000000000000000000:0000 0A"
    " 00000000:00000000 00:00000000 00000000     0\n"
)
PROC_NET_UDP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
  10: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0
  11: 0A00020F:A1B2 08080808:0035 01 00000000:00000000 00:00000000 00000000     0
"""

NFTABLES_CONF = """#!/usr/sbin/nft -f

flush ruleset

table inet filter {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tct state established,related accept
\t\tiif "lo" accept
\t\ttcp dport 22 accept  # ssh
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t}
\tchain output {
\t\ttype filter hook output priority filter;
\t}
}
"""


def write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def build_debian_root(root: Path, *, ip_forward: bool = False, ipv6_forward: bool = False,
                      bridge: str | None = None, clamav_built: str | None = None,
                      clamd_running: bool = False) -> Path:
    """A Debian 12 host tree; clamav_built is a CVD header date such as '27 Nov 2026 18-00'."""
    write(root, "etc/os-release", OS_RELEASE)
    write(root, "var/lib/dpkg/status", DPKG_STATUS)
    (root / "var/lib/dpkg/info").mkdir(parents=True, exist_ok=True)
    write(root, "var/lib/dpkg/available", "")
    write(root, "proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
    write(root, "proc/sys/kernel/arch", "x86_64\n")
    write(root, "proc/sys/net/ipv4/ip_forward", "1\n" if ip_forward else "0\n")
    write(root, "proc/sys/net/ipv6/conf/all/forwarding", "1\n" if ipv6_forward else "0\n")
    write(root, "proc/net/tcp", PROC_NET_TCP)
    write(root, "proc/net/tcp6", PROC_NET_TCP6)
    write(root, "proc/net/udp", PROC_NET_UDP)
    write(root, "proc/net/if_inet6",
          "20010db8000000000000000000000010 02 40 00 80     eth0\n"
          "00000000000000000000000000000001 01 80 10 80       lo\n")
    write(root, "sys/class/net/eth0/address", "52:54:00:12:34:56\n")
    write(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n")
    if bridge:
        write(root, f"sys/class/net/{bridge}/address", "02:00:00:00:00:01\n")
        (root / f"sys/class/net/{bridge}/bridge").mkdir(parents=True, exist_ok=True)
    write(root, "etc/nftables.conf", NFTABLES_CONF)
    write(root, "etc/systemd/system/sysinit.target.wants/nftables.service", "")
    write(root, "etc/shadow", "root:*:19700:0:99999:7:::\n")
    if clamav_built:
        header = f"ClamAV-VDB:{clamav_built} +0000:27100:2050000:90:x:x:builder:0"
        db = write(root, "var/lib/clamav/daily.cvd", header.ljust(512).encode() + b"\0" * 64)
        os.utime(db, (0, 0))  # the header date, not the mtime, must win
    if clamd_running:
        write(root, "proc/4242/comm", "clamd\n")
    write(root, "proc/1/comm", "systemd\n")
    return root
