"""MAB/PAP throughput: our server against FreeRADIUS, same load, same run.

    python3 bench/mab.py [--requests N] [--seconds T] [--window W[,W...]] [--mode mab|pap]
                         [--workers K] [--only freeradius|nac] [--per-socket-window]

Builds N signed Access-Requests once (bench/packets.py), compiles the C
load generator (bench/radload.c -> bench/out/radload), then for each
server: start it on a free loopback port, wait until it answers, replay the
same packets with radload, read the server's CPU time from /proc, stop it.
Prints each result, the ratio nac/freeradius, and one JSON summary line
(last line of output). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import freeradius  # noqa: E402
import packets  # noqa: E402
import probe  # noqa: E402

OUT = BENCH / "out"
SECRET = b"testing123"


def build_radload() -> Path:
    """Compile radload with gcc -O2 unless the binary is newer than the source."""
    src = BENCH / "radload.c"
    exe = OUT / "radload"
    if exe.exists() and exe.stat().st_mtime >= src.stat().st_mtime:
        return exe
    OUT.mkdir(exist_ok=True)
    tmp = exe.with_suffix(f".tmp{os.getpid()}")
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(tmp), str(src)], check=True)
    tmp.replace(exe)  # atomic: parallel runs never see a half-written binary
    return exe


def run_radload(exe: Path, pkt_file: Path, port: int, window: int, timeout_ms: int,
                seconds: float = 0, sockets: int = 0, per_socket: bool = False) -> dict:
    cmd = [str(exe), "-f", str(pkt_file), "-h", "127.0.0.1", "-p", str(port),
           "-w", str(window), "-t", str(timeout_ms)]
    if sockets:
        cmd += ["-s", str(sockets)]
    if per_socket:  # each socket its share of the window (radload -P)
        cmd += ["-P"]
    if seconds:
        cmd += ["-T", str(seconds)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # the load generator's own CPU: if near result["seconds"], it was the limit
    result["client_cpu_s"] = round(after.ru_utime + after.ru_stime
                                   - before.ru_utime - before.ru_stime, 3)
    return result


def measure(pid: int, run: Callable[[], dict], warm: Callable[[], dict] | None = None) -> dict:
    """Run the load and add the server's CPU seconds over it, and requests
    per server CPU-second. `warm` runs first, unmeasured."""
    if warm is not None:
        w = warm()
        print(f"  warm-up: {w['received']}/{w['sent']} answered, {w['rps']:.0f} req/s",
              file=sys.stderr)
    cpu0 = probe.tree_cpu_seconds(pid)
    parts0 = cpu_by_role(pid)
    threads0 = cpu_by_thread(pid)
    each0 = worker_cpu(pid)
    drops0 = probe.udp_rcvbuf_errors()
    result = run()
    cpu = probe.tree_cpu_seconds(pid) - cpu0
    parts = cpu_by_role(pid)
    if result["received"] and len(parts) > 1:
        # where nac's CPU per request goes: event-loop worker(s), store writer(s), supervisor
        result["server_us_per_req"] = {
            role: round((t - parts0.get(role, 0.0)) / result["received"] * 1e6, 1)
            for role, t in sorted(parts.items())}
    if result["received"]:
        # per thread name, user and kernel time: which thread pays for what
        threads = cpu_by_thread(pid)
        result["thread_us_per_req"] = {
            name: [round((u - threads0.get(name, (0.0, 0.0))[0]) / result["received"] * 1e6, 1),
                   round((k - threads0.get(name, (0.0, 0.0))[1]) / result["received"] * 1e6, 1)]
            for name, (u, k) in sorted(threads.items())}
    each = worker_cpu(pid)
    spent = {p: t - each0.get(p, 0.0) for p, t in each.items()}
    if len(spent) > 1 and sum(spent.values()) > 0:
        # how evenly SO_REUSEPORT spread the load generator's sockets over the workers
        result["worker_cpu_split"] = sorted(
            (round(t / sum(spent.values()), 2) for t in spent.values()), reverse=True)
    # system-wide, so other programs count too; but timeouts together with
    # drops mean a socket buffer overflowed rather than a request got lost
    result["udp_rcvbuf_errors"] = probe.udp_rcvbuf_errors() - drops0
    result["server_cpu_s"] = round(cpu, 3)
    result["rps_per_cpu"] = round(result["received"] / cpu, 1) if cpu > 0 else None
    result["server_cores"] = round(cpu / result["seconds"], 2) if result["seconds"] else None
    return result


def cpu_by_role(pid: int) -> dict[str, float]:
    """utime+stime (s) of a server tree by role: for nac, "writer" (the SQLite store's
    writer processes), "worker" (event loops: the process itself with --workers 1, else
    the pool's) and "supervisor"; any other server is all "server"."""
    out: dict[str, float] = {}
    cmds: dict[int, bytes] = {}
    for p in probe.tree_pids(pid):
        try:
            cmds[p] = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
    pool = any(b"--worker-id" in cmd for cmd in cmds.values())
    for p, cmd in cmds.items():
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if b"nac.cli" not in cmd and b"writer_main" not in cmd:
            role = "server"
        elif b"writer_main" in cmd:
            role = "writer"
        elif p == pid and pool:
            role = "supervisor"
        else:
            role = "worker"
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / probe.CLK_TCK
    return out


def cpu_by_thread(pid: int) -> dict[str, tuple[float, float]]:
    """(utime, stime) in seconds of a server tree's threads, summed by process role and
    thread name ("worker/store-feeder"), so user and kernel time per thread show."""
    roles: dict[int, str] = {}
    for p in probe.tree_pids(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        roles[p] = "writer" if b"writer_main" in cmd else "main" if p == pid else "worker"
    out: dict[str, tuple[float, float]] = {}
    for p, role in roles.items():
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                comm = (task / "comm").read_text().strip()
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            u, k = out.get(f"{role}/{comm}", (0.0, 0.0))
            out[f"{role}/{comm}"] = (u + int(fields[11]) / probe.CLK_TCK,
                                     k + int(fields[12]) / probe.CLK_TCK)
    return out


def worker_cpu(pid: int) -> dict[int, float]:
    """utime+stime (s) of each event-loop worker of a `nac serve --workers N` pool."""
    out: dict[int, float] = {}
    for p in probe.tree_pids(pid):
        try:
            if b"--worker-id" not in Path(f"/proc/{p}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[p] = (int(fields[11]) + int(fields[12])) / probe.CLK_TCK
    return out


def nac_command(state_dir: Path, auth_port: int, acct_port: int,
                workers: int | None) -> list[str]:
    # the tree's code, whatever `nac` may be installed
    cmd = [sys.executable, "-c", "from nac.cli.main import main; main()", "serve",
           "--state-dir", str(state_dir), "--auth-port", str(auth_port),
           "--acct-port", str(acct_port), "--log-level", "warning"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return cmd


def nac_available() -> str | None:
    """None if `nac serve` can run here, else why not."""
    proc = subprocess.run(
        [sys.executable, "-c", "from nac.cli.main import main; main()", "serve", "--help"],
        capture_output=True, text=True, cwd=ROOT, env=_env(),
    )
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return None


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def warm_up(exe: Path, port: int, window: int,
            args: argparse.Namespace) -> Callable[[], dict] | None:
    """An unmeasured run of other requests (other MACs) first: a server's
    first requests pay for lazy set-up, which is not what is measured."""
    if not args.warmup:
        return None
    # getattr: other benches (store.py) pass their own argument namespaces here
    return partial(run_radload, exe, args.warmup_file, port, window, 10_000, 0, args.sockets,
                   getattr(args, "per_socket_window", False))


def bench_freeradius(exe: Path, pkt_file: Path, windows: list[int], args: argparse.Namespace,
                     tmp: Path) -> dict[int, dict]:
    results = {}
    for w in windows:
        (port,) = probe.free_udp_ports(1)
        with freeradius.FreeRadius(tmp / f"freeradius-{w}", port, args.threads) as fr:
            results[w] = measure(fr.pid, partial(run_radload, exe, pkt_file, port, w,
                                                 args.timeout_ms, args.seconds, args.sockets,
                                                 args.per_socket_window),
                                 warm_up(exe, port, w, args))
    return results


@contextlib.contextmanager
def nac_server(state: Path, log_path: Path, workers: int | None,
               extra: Sequence[str] = ()) -> Iterator[tuple[int, int]]:
    """Run `nac serve` on free loopback ports with `state` as its state
    directory (and `extra` arguments, e.g. a store URL); yields (pid, auth
    port) once every worker answers."""
    auth, acct = probe.free_udp_ports(2)
    state.mkdir(exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*nac_command(state, auth, acct, workers), *extra], cwd=ROOT,
                                env=_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            try:
                waited = probe.wait_answers(auth, SECRET, timeout=60, alive=proc)
                # the first worker answers before the others have bound the
                # port: wait for all (or, not knowing how many, until their
                # number holds still), or the load starts lopsided
                expected = None
                if workers is not None:
                    expected = workers or len(os.sched_getaffinity(0))
                t0 = time.monotonic()
                probe.wait_listeners(auth, expected, alive=proc)
                waited += time.monotonic() - t0 + probe.wait_answers(auth, SECRET, alive=proc)
            except (RuntimeError, TimeoutError) as exc:
                # The first error lines say why (the supervisor's restart notes come after).
                lines = log_path.read_text(errors="replace").splitlines()
                why = "\n".join([ln for ln in lines if "restarting in" not in ln][-40:])
                raise RuntimeError(f"nac serve did not answer: {exc}\n{why}") from None
            print(f"nac answered after {waited:.1f} s ({probe.udp_listeners(auth)} sockets "
                  f"on port {auth})", file=sys.stderr)
            yield proc.pid, auth
        finally:
            family = probe.tree_pids(proc.pid)
            proc.terminate()
            try:
                proc.wait(30)  # a PostgreSQL store's last batch may take a while
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            for pid in family[1:]:  # workers the supervisor failed to stop
                with contextlib.suppress(OSError):
                    # only if the pid is still ours (not reused by now)
                    if str(state).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                        os.kill(pid, signal.SIGKILL)


def bench_nac(exe: Path, pkt_file: Path, windows: list[int], args: argparse.Namespace,
              tmp: Path) -> dict[int, dict]:
    results = {}
    for w in windows:
        with nac_server(tmp / f"nac-{w}", tmp / f"nac-{w}.log", args.workers) as (pid, auth):
            results[w] = measure(pid, partial(run_radload, exe, pkt_file, auth, w,
                                              args.timeout_ms, args.seconds, args.sockets,
                                              args.per_socket_window),
                                 warm_up(exe, auth, w, args))
    return results


def line(name: str, r: dict) -> str:
    return (f"{name:<11} w={r['window']:<4} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
            f"p99 {r['p99_ms']:.2f} ms  accepts {r['accepts']}/{r['sent']}  "
            f"timeouts {r['timeouts']} (UDP drops {r['udp_rcvbuf_errors']})  "
            f"server CPU {r['server_cpu_s']:.2f} s "
            f"({r['rps_per_cpu'] or 0:.0f} req per CPU-s)  radload CPU {r['client_cpu_s']:.2f} s"
            + "".join(f"  {role} {us} us/req"
                      for role, us in r.get("server_us_per_req", {}).items())
            + (f"  worker split {'/'.join(map(str, r['worker_cpu_split']))}"
               if "worker_cpu_split" in r else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--window", default="64",
                    help="outstanding requests; a comma list runs each (e.g. 64,256)")
    ap.add_argument("--mode", choices=sorted(packets.BUILDERS), default="mab")
    ap.add_argument("--workers", type=int, help="passed to nac serve --workers")
    ap.add_argument("--threads", type=int, default=2, help="FreeRADIUS worker threads")
    ap.add_argument("--timeout-ms", type=int, default=2000)
    ap.add_argument("--sockets", type=int, default=16,
                    help="radload source sockets; SO_REUSEPORT spreads them over workers")
    ap.add_argument("--per-socket-window", action="store_true",
                    help="each radload socket keeps at most its share of the window "
                         "outstanding (NASes waiting for their own replies): workers that "
                         "the kernel's hash gave uneven shares of the sockets each run at "
                         "their own pace")
    ap.add_argument("--seconds", type=float, default=0,
                    help="stop sending after this long even if requests are left")
    ap.add_argument("--warmup", type=int, default=5000,
                    help="requests sent (other MACs, 10 s timeout) before each measured run")
    ap.add_argument("--only", choices=["freeradius", "nac"])
    args = ap.parse_args()
    windows = [int(w) for w in args.window.split(",")]

    exe = build_radload()
    summary: dict = {"mode": args.mode, "requests": args.requests, "cpus": os.cpu_count(),
                     "freeradius": {}, "nac": {}, "ratio": {}}
    with tempfile.TemporaryDirectory(prefix="nac-bench-") as t:
        tmp = Path(t)
        pkt_file = tmp / f"{args.mode}.bin"
        t0 = time.monotonic()
        packets.write(pkt_file, packets.build(args.mode, args.requests, SECRET))
        args.warmup_file = tmp / f"{args.mode}-warmup.bin"
        packets.write(args.warmup_file,
                      packets.build(args.mode, args.warmup, SECRET, first=2**31))
        print(f"built {args.requests} {args.mode} requests in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)

        if args.only != "nac":
            if freeradius.binary() is None:
                print("FreeRADIUS is not installed (apt-get install freeradius): skipped",
                      file=sys.stderr)
            else:
                summary["freeradius"] = bench_freeradius(exe, pkt_file, windows, args, tmp)
                for r in summary["freeradius"].values():
                    print(line("freeradius", r))
        if args.only != "freeradius":
            why = nac_available()
            if why:
                print(f"nac serve is not available yet ({why}): skipped", file=sys.stderr)
                summary["nac_error"] = why
            else:
                summary["nac"] = bench_nac(exe, pkt_file, windows, args, tmp)
                for r in summary["nac"].values():
                    print(line("nac", r))

    for w in windows:
        fr, ours = summary["freeradius"].get(w), summary["nac"].get(w)
        if fr and ours and fr["rps"]:
            summary["ratio"][w] = {
                "rps": round(ours["rps"] / fr["rps"], 3),
                "rps_per_cpu": round(ours["rps_per_cpu"] / fr["rps_per_cpu"], 3)
                if ours["rps_per_cpu"] and fr["rps_per_cpu"] else None,
            }
            print(f"ratio nac/freeradius w={w}: {summary['ratio'][w]['rps']:.3f} (throughput), "
                  f"{summary['ratio'][w]['rps_per_cpu']} (per server CPU-second)")
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
