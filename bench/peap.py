"""PEAP-MSCHAPv2 cost: server CPU per conversation, nac against FreeRADIUS.

    python3 bench/peap.py [--conversations N] [--parallel P] [--workers K]
                          [--only freeradius|nac]

Both servers get the same TLS server certificate and key (a fresh nac PKI,
ECDSA P-256), TLS 1.2 without session resumption, so every conversation
pays for a full handshake plus MSCHAPv2 inside the tunnel. The peer is
eapol_test (wpa_supplicant's EAP code), P of them at a time, each with its
own station MAC (Calling-Station-Id); each must
succeed and derive the same MPPE keys as the server (exit 0; 252 MPPE
mismatch, 253 Access-Reject, 254 timeout). eapol_test
is a heavy client (a process and a TLS handshake per conversation), so the
number to compare is the server's CPU per conversation, read from /proc;
conversations per second are printed too. Last line: JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import freeradius  # noqa: E402
import mab  # noqa: E402
import packets  # noqa: E402
import probe  # noqa: E402

SECRET = "testing123"


def eapol_conf(path: Path, ca: Path) -> Path:
    path.write_text(
        "network={\n"
        "  key_mgmt=IEEE8021X\n"
        "  eap=PEAP\n"
        '  identity="demo"\n'
        '  password="demo-password"\n'
        f'  ca_cert="{ca}"\n'
        '  phase1="tls_disable_tlsv1_3=1"\n'
        '  phase2="auth=MSCHAPV2"\n'
        "}\n"
    )
    return path


def one(exe: str, conf: Path, port: int, i: int) -> int:
    # each conversation its own station MAC, as on a real network
    mac = packets.mac_address(i).replace("-", ":")
    proc = subprocess.run(
        [exe, "-c", str(conf), "-a", "127.0.0.1", "-p", str(port), "-s", SECRET,
         "-t", "20", "-r", "0", f"-M{mac}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return proc.returncode


def run_conversations(pid: int, port: int, conf: Path, count: int, parallel: int) -> dict:
    exe = shutil.which("eapol_test")
    assert exe is not None
    one(exe, conf, port, 0xFFFFFF)  # warm-up, not counted: first-use costs (loading, caches)
    cpu0 = probe.tree_cpu_seconds(pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(lambda i: one(exe, conf, port, i), range(count)))
    seconds = time.monotonic() - start
    cpu = probe.tree_cpu_seconds(pid) - cpu0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ok = codes.count(0)
    return {
        "conversations": count,
        "ok": ok,
        "exit_codes": {str(c): codes.count(c) for c in sorted(set(codes)) if c != 0},
        "seconds": round(seconds, 3),
        "conv_per_s": round(ok / seconds, 1) if seconds else None,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_ms_per_conv": round(1000 * cpu / ok, 3) if ok else None,
        "client_cpu_s": round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 3),
    }


def line(name: str, r: dict) -> str:
    return (f"{name:<11} {r['ok']}/{r['conversations']} ok in {r['seconds']:.1f} s "
            f"({r['conv_per_s'] or 0:.0f}/s)  server CPU {r['server_cpu_s']:.2f} s = "
            f"{r['server_cpu_ms_per_conv'] or 0:.2f} ms per conversation  "
            f"eapol_test CPU {r['client_cpu_s']:.1f} s"
            + (f"  failures by eapol_test exit code {r['exit_codes']}" if r["exit_codes"] else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--workers", type=int, help="passed to nac serve --workers")
    ap.add_argument("--threads", type=int, default=2, help="FreeRADIUS worker threads")
    ap.add_argument("--only", choices=["freeradius", "nac"])
    args = ap.parse_args()
    if shutil.which("eapol_test") is None:
        print("eapol_test is not installed (apt-get install eapoltest)", file=sys.stderr)
        return 2
    from nac.pki import PkiPaths, init_pki

    summary: dict = {"method": "PEAP-MSCHAPv2", "tls": "1.2", "cpus": os.cpu_count(),
                     "freeradius": None, "nac": None, "ratio": None}
    with tempfile.TemporaryDirectory(prefix="nac-bench-peap-") as t:
        tmp = Path(t)
        state = tmp / "nac-state"
        init_pki(state)  # nac uses it as is; FreeRADIUS gets the same files
        pki = PkiPaths.under(state)
        conf = eapol_conf(tmp / "peap.conf", pki.ca_cert)
        if args.only != "nac":
            if freeradius.binary() is None:
                print("FreeRADIUS is not installed: skipped", file=sys.stderr)
            else:
                (port,) = probe.free_udp_ports(1)
                certs = freeradius.EapCerts(pki.server_cert, pki.server_key, pki.ca_cert)
                with freeradius.FreeRadius(tmp / "freeradius", port, args.threads,
                                           certs) as fr:
                    r = run_conversations(fr.pid, port, conf, args.conversations,
                                          args.parallel)
                summary["freeradius"] = r
                print(line("freeradius", r))
        if args.only != "freeradius":
            why = mab.nac_available()
            if why:
                print(f"nac serve is not available ({why}): skipped", file=sys.stderr)
            else:
                with mab.nac_server(state, tmp / "nac.log", args.workers) as (pid, port):
                    r = run_conversations(pid, port, conf, args.conversations, args.parallel)
                summary["nac"] = r
                print(line("nac", r))
    fr, ours = summary["freeradius"], summary["nac"]
    if fr and ours and fr["server_cpu_ms_per_conv"] and ours["server_cpu_ms_per_conv"]:
        summary["ratio"] = {
            "cpu_per_conv": round(ours["server_cpu_ms_per_conv"] / fr["server_cpu_ms_per_conv"],
                                  3),
            "conv_per_s": round(ours["conv_per_s"] / fr["conv_per_s"], 3),
        }
        print(f"ratio nac/freeradius: {summary['ratio']['cpu_per_conv']} (server CPU per "
              f"conversation; above 1 = nac costs more), {summary['ratio']['conv_per_s']} "
              f"(conversations per second)")
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
