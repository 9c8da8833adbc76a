"""Posture cost: server CPU per TTLS/EAP-MSCHAPv2 conversation with EAP-TNC posture and a
host inventory of N packages, against the same conversation without posture.

    python3 bench/posture.py [-n 40] [--packages 1500] [--parallel 4]

eapol_test loads our IMC plug-in (private mount namespace, overlay /etc with its own
tnc_config; the real /etc is untouched) and reports a Debian 12 host (NAC_AGENT_ROOT) with
N installed packages. Needs root. Compare with bench/eap.py's FreeRADIUS PEAP figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import mab  # noqa: E402
import probe  # noqa: E402

from eap_ext.agent.imc.install import build_library, imc_line  # noqa: E402
from tests.test_agent_fixtures import build_debian_root  # noqa: E402


def big_root(root: Path, count: int) -> Path:
    build_debian_root(root)
    status = root / "var/lib/dpkg/status"
    extra = "".join(
        f"\nPackage: benchpkg{i}\nStatus: install ok installed\nPriority: optional\n"
        f"Section: libs\nInstalled-Size: 100\nMaintainer: Bench <b@example.org>\n"
        f"Architecture: amd64\nSource: benchsrc{i % 400}\nVersion: 1.{i % 50}.{i}-1\n"
        f"Description: bench package {i}\n" for i in range(count))
    status.write_text(status.read_text().rstrip("\n") + "\n" + extra)
    return root


def run(work: Path, port: int, ca: Path, lib: Path | None, root: Path, i: int) -> bool:
    run_dir = work / f"{'agent' if lib else 'plain'}-{i}"  # overlay dirs must start empty
    for d in ("upper", "work", "agent"):
        (run_dir / d).mkdir(parents=True, exist_ok=True)
    conf = run_dir / "c.conf"
    conf.write_text(textwrap.dedent(f"""\
        network={{
          key_mgmt=IEEE8021X
          eap=TTLS
          identity="demo"
          anonymous_identity="anonymous"
          password="demo-password"
          ca_cert="{ca}"
          phase2="autheap=MSCHAPV2"
        }}
        """))
    line = imc_line(lib) if lib else ""
    script = run_dir / "run.sh"
    script.write_text(
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={run_dir}/upper,"
        f"workdir={run_dir}/work /etc && echo '{line}' > /etc/tnc_config && "
        f"exec eapol_test -c {conf} -a127.0.0.1 -p{port} -stesting123 -t60 "
        f"-M 02:77:00:00:{i >> 8 & 255:02x}:{i & 255:02x} > {run_dir}/log 2>&1\n")
    env = {**os.environ, "NAC_AGENT_ROOT": str(root),
           "NAC_AGENT_STATE_DIR": str(run_dir / "agent")}
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", str(script)],
                       env=env, capture_output=True, timeout=180)
    return r.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--packages", type=int, default=1500)
    ap.add_argument("--parallel", type=int, default=4)
    args = ap.parse_args()
    out = {}
    keep = os.environ.get("NAC_BENCH_KEEP")  # a directory to keep logs in, for post-mortems
    ctx = (contextlib.nullcontext(tempfile.mkdtemp(prefix="nac-posture-", dir=keep)) if keep
           else tempfile.TemporaryDirectory(prefix="nac-posture-"))
    with ctx as tmp:
        work = Path(tmp)
        root = big_root(work / "host", args.packages)
        lib = build_library(work / "nac_imc.so", command=(
            f"PYTHONPATH={ROOT} exec {sys.executable} -m eap_ext.agent imc"))
        with mab.nac_server(work / "state", work / "serve.log", 1) as (pid, port):
            ca = work / "state" / "pki" / "ca.pem"
            cases = (("ttls-mschapv2 + posture", lib), ("ttls-mschapv2, no agent", None))
            for label, plugin in cases:
                run(work, port, ca, plugin, root, 0)  # warm up
                cpu0 = probe.tree_cpu_seconds(pid)
                with ThreadPoolExecutor(args.parallel) as pool:
                    ok = sum(pool.map(lambda i, p=plugin: run(work, port, ca, p, root, i),
                                      range(1, args.n + 1)))
                cpu = probe.tree_cpu_seconds(pid) - cpu0
                out[label] = {"n": args.n, "ok": ok,
                              "cpu_ms_per_conv": round(1000 * cpu / args.n, 2)}
                print(f"{label:28} {ok}/{args.n} ok, {1000 * cpu / args.n:7.2f} ms server CPU"
                      f" per conversation ({args.packages} packages)", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
