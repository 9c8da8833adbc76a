"""PEAP-MSCHAPv2 over TLS 1.2, server CPU per conversation: the old command line, kept for
callers that still use it; bench/eap.py does the work (same servers, PKI and peers) and
measures more (TTLS, TLS 1.3, RSA, rounds, resumption).

    python3 bench/peap.py [--conversations N] [--parallel P] [--workers K]
                          [--only freeradius|nac]

Last line: the JSON summary this script always printed (per server: ok, exit_codes,
server_cpu_ms_per_conv, ...; ratio nac/freeradius of server CPU per conversation).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eap  # noqa: E402  (bench scripts import their helpers by path)

METHOD, TLS = "peap-mschapv2", "1.2"


def run(server: eap.Server, conf: Path, count: int, parallel: int) -> dict:
    eap.warm(server, conf, parallel)
    cpu0, start = server.cpu(), time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        codes = list(pool.map(lambda i: eap.eapol(server.port, conf, 0, i).returncode,
                              range(count)))
    seconds, cpu = time.monotonic() - start, server.cpu() - cpu0
    ok = codes.count(0)
    return {
        "conversations": count,
        "ok": ok,
        "exit_codes": {str(c): codes.count(c) for c in sorted(set(codes)) if c != 0},
        "seconds": round(seconds, 3),
        "conv_per_s": round(ok / seconds, 1) if seconds else None,
        "server_cpu_s": round(cpu, 3),
        "server_cpu_ms_per_conv": round(1000 * cpu / ok, 3) if ok else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--workers", type=int, help="passed to nac serve --workers")
    ap.add_argument("--threads", type=int, default=2, help="FreeRADIUS worker threads")
    ap.add_argument("--only", choices=eap.KINDS)
    args = ap.parse_args()
    if shutil.which("eapol_test") is None:
        print("eapol_test is not installed (apt-get install eapoltest)", file=sys.stderr)
        return 2
    summary: dict = {"method": "PEAP-MSCHAPv2", "tls": TLS, "cpus": os.cpu_count(),
                     "freeradius": None, "nac": None, "ratio": None}
    with tempfile.TemporaryDirectory(prefix="nac-bench-peap-") as t:
        work = Path(t)
        state = work / "state"
        subprocess.run([*eap.nac_cmd(), "pki", "init", "--state-dir", str(state)], check=True,
                       capture_output=True)
        os.chmod(state / "pki" / "server.key", 0o644)  # FreeRADIUS may run as another user
        conf = eap.conf(work, METHOD, TLS, state / "pki" / "ca.pem")
        for kind in [args.only] if args.only else list(eap.KINDS):
            n = args.workers if (kind == "nac" and args.workers) else args.threads
            server = eap.Server(kind, work, state, n)
            try:
                summary[kind] = r = run(server, conf, args.conversations, args.parallel)
            finally:
                server.stop()
            print(f"{kind:<11} {r['ok']}/{r['conversations']} ok in {r['seconds']:.1f} s, "
                  f"server CPU {r['server_cpu_ms_per_conv'] or 0:.2f} ms per conversation"
                  + (f", failures by eapol_test exit code {r['exit_codes']}"
                     if r["exit_codes"] else ""))
    fr, ours = summary["freeradius"], summary["nac"]
    if fr and ours and fr["server_cpu_ms_per_conv"] and ours["server_cpu_ms_per_conv"]:
        summary["ratio"] = {"cpu_per_conv": round(
            ours["server_cpu_ms_per_conv"] / fr["server_cpu_ms_per_conv"], 3)}
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
