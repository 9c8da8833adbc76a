"""Soak: MAB requests and EAP conversations in a row against one `nac serve`, with the
server's resident memory sampled as it goes, to show that memory stops growing.

    python3 bench/soak.py [--mab 1000000] [--eap 10000] [--parallel 8] [--workers 1]

MAB requests are replayed by radload in chunks (distinct MACs each chunk, so every chunk
adds nodes and decisions); EAP conversations are PEAP-MSCHAPv2 by eapol_test, each with
its own MAC. RSS is the sum over the server's process tree (/proc/PID/status VmRSS),
printed after every chunk and summarised as start / middle / end. Not a test: minutes long.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import mab  # noqa: E402
import packets  # noqa: E402
import probe  # noqa: E402

CHUNKS = 10


def rss_kib(pid: int) -> int:
    total = 0
    for p in probe.tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def eapol(port: int, conf: Path, mac: str) -> bool:
    r = subprocess.run(["eapol_test", "-c", str(conf), "-a127.0.0.1", f"-p{port}",
                        "-stesting123", "-t30", "-M", mac], capture_output=True, timeout=90)
    return r.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mab", type=int, default=1_000_000)
    ap.add_argument("--eap", type=int, default=10_000)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--window", type=int, default=64)
    args = ap.parse_args()
    exe = mab.build_radload()
    samples: list[tuple[str, int]] = []
    with tempfile.TemporaryDirectory(prefix="nac-soak-") as tmp:
        work = Path(tmp)
        state = work / "state"
        with mab.nac_server(state, work / "serve.log", args.workers) as (pid, port):
            samples.append(("start", rss_kib(pid)))
            per = max(1, args.mab // CHUNKS)
            for i in range(CHUNKS if args.mab else 0):
                pkt = work / "mab.bin"
                packets.write(pkt, packets.build("mab", per, first=i * per))
                r = mab.run_radload(exe, pkt, port, args.window, 2000)
                samples.append((f"mab {(i + 1) * per}", rss_kib(pid)))
                print(f"MAB {(i + 1) * per:>8}: {r['rps']:8.0f} req/s, accepts {r['accepts']}"
                      f"/{per}, RSS {samples[-1][1] / 1024:.1f} MiB", flush=True)
            conf = work / "peap.conf"
            conf.write_text(
                'network={\n key_mgmt=IEEE8021X\n eap=PEAP\n identity="demo"\n'
                f' password="demo-password"\n ca_cert="{state}/pki/ca.pem"\n'
                ' phase2="auth=MSCHAPV2"\n}\n')
            per = max(1, args.eap // CHUNKS)
            ok = 0
            for i in range(CHUNKS if args.eap else 0):
                macs = [f"02:5a:{(n >> 16) & 255:02x}:{(n >> 8) & 255:02x}:{n & 255:02x}:01"
                        for n in range(i * per, (i + 1) * per)]
                with ThreadPoolExecutor(args.parallel) as pool:
                    ok += sum(pool.map(lambda m: eapol(port, conf, m), macs))
                samples.append((f"eap {(i + 1) * per}", rss_kib(pid)))
                print(f"EAP {(i + 1) * per:>8}: ok {ok}, RSS {samples[-1][1] / 1024:.1f} MiB",
                      flush=True)
    start, middle, end = samples[0], samples[len(samples) // 2], samples[-1]
    summary = {"rss_mib": {k: round(v / 1024, 1) for k, v in (start, middle, end)},
               "points": {k: round(v / 1024, 1) for k, v in samples}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
