"""Posture cost: server CPU per TTLS/EAP-MSCHAPv2 conversation with EAP-TNC posture and a
host inventory of N packages, against FreeRADIUS's PEAP-MSCHAPv2 without posture, same run.

    python3 bench/posture.py [-n 40] [--packages 1500] [--parallel 4] [--rounds 3]
                             [--rsa] [--pace S]
                             [--cases first,certificate,feeds,off,plain,freeradius,frpaced]
                             [--phase2 autheap=MSCHAPV2|auth=MSCHAPV2]
                             [--profile FILE [--profile-gil] [--profile-case C]
                              [--profile-rate HZ]]

eapol_test loads our IMC plug-in (private mount namespace, overlay /etc with its own
tnc_config; the real /etc is untouched) and reports a Debian 12 host (NAC_AGENT_ROOT) with
N installed packages. Cases, alternated round by round on the same machine, medians
reported:

    posture, first contact   the agent has no certificate: the whole posture, compact;
                             each conversation's host has one package version no other
                             host has (a new inventory, as a new host brings)
    posture, certificate     the agent holds a certificate: with digest_first servers it
                             leads with certificate + digest (no inventory), else the
                             certificate goes along with the posture (decision reused);
                             each station is its own host (one package version its own)
    certificate, feeds changed  the same stations right after a feed sync (the epoch
                             bumped): no certificate holds; a server that remembers the
                             posture a digest names judges it again without the inventory
    ttls, posture off        the same TTLS/EAP-MSCHAPv2 against a second nac server run
                             with --posture off: the tunnel alone, the baseline that
                             posture adds to (same peers, same eapol_test set-up)
    ttls, no agent           the same TTLS/EAP-MSCHAPv2 with an empty tnc_config against
                             the posture server: wpa_supplicant gives up at EAP-TNC and
                             its retry runs without posture, so two conversations each
    freeradius peap          FreeRADIUS 3.2 PEAP-MSCHAPv2, TLS 1.2, no posture, the same
                             server certificate and key as nac (ECDSA P-256, or RSA-2048
                             with --rsa, the issue's yardstick)
    freeradius peap, paced   (frpaced) the same, each station waiting --pace seconds first
                             as a posture station waits for its agent: the server meets
                             each packet as cold as nac does in the posture cases (more
                             --parallel does not make nac as busy as back-to-back PEAP on
                             a small machine: the agents' own CPU is the limit). "server
                             busy" in each line is server CPU seconds per wall second.

The number compared is server CPU (utime+stime of the process tree, /proc) per
conversation; conversations per server CPU-second is its inverse. EAP round trips (RADIUS
Access-Requests) per conversation are counted in each peer's eapol_test log. Also printed: CPU per
conversation by thread, and the "idle share": what the server burns with no traffic
(housekeeping polls, measured before the rounds) times the case's wall time, per
conversation. A case whose peers are slow (the agent starts a Python process and collects
1,500 packages) is charged more of it than FreeRADIUS PEAP, whose idle is ~0; the
headline keeps it in; the summary also gives each case without it ("less idle"). --profile
FILE samples `nac serve` (tree) with py-spy during the first round of one case (collapsed
stacks). Needs root.

What the target is judged on (issue #4: at least 0.8x FreeRADIUS PEAP-MSCHAPv2 without
posture, conversations per server CPU-second): "posture, certificate", the re-inspection
of a host that holds its certificate, against FreeRADIUS PEAP back to back. That is the
steady state (Session-Timeout 3600 s: almost every posture conversation of a known fleet is
one). The paced yardstick (frpaced) is printed beside it, like with like; first contact (a
host the server has never seen, an inventory no cache holds) and "feeds changed" (once per
feed sync per host) are reported too, never folded into the headline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import freeradius  # noqa: E402
import mab  # noqa: E402
import probe  # noqa: E402

from eap_ext.agent.imc.install import build_library, imc_line  # noqa: E402
from tests.test_agent_fixtures import build_debian_root  # noqa: E402

SECRET = "testing123"
# EAP round trips of the conversations of the case being measured (one per Access-Request
# in eapol_test's log); list.append is atomic, the pool's threads share it
ROUNDS: list[int] = []
# the peers' phase 2: EAP-MSCHAPv2 (autheap=) or TTLS's own MS-CHAP-V2 AVPs (auth=)
PHASE2 = ["autheap=MSCHAPV2"]
PROFILE_RATE = [200]  # py-spy samples per second (--profile-rate)


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


def host_variant(root: Path, dest: Path, k: int) -> Path:
    """The host of `root` with one package at a version no other host has: every first
    contact brings an inventory the server has not seen (no cache keyed by inventory or
    digest can answer it), as a new host would; the other 1,499 packages are shared, as
    on hosts installed from one image."""
    shutil.copytree(root, dest, symlinks=True)
    status = dest / "var/lib/dpkg/status"
    text = status.read_text()
    stanza = "Source: benchsrc0\nVersion: 1.0.0-1\n"
    assert text.count(stanza) == 1, "bench package 0 not found"
    status.write_text(text.replace(stanza, f"Source: benchsrc0\nVersion: 1.0.0-1+b{k}\n"))
    return dest


def ttls_run(run_dir: Path, agent_dir: Path, port: int, ca: Path, lib: Path | None,
             root: Path, i: int) -> bool:
    """One eapol_test TTLS/EAP-MSCHAPv2 + EAP-TNC conversation with our plug-in (lib None:
    an empty tnc_config, no IMC)."""
    for d in ("upper", "work"):  # overlay dirs must start empty
        (run_dir / d).mkdir(parents=True)
    agent_dir.mkdir(parents=True, exist_ok=True)
    conf = run_dir / "c.conf"
    conf.write_text(textwrap.dedent(f"""\
        network={{
          key_mgmt=IEEE8021X
          eap=TTLS
          identity="demo"
          anonymous_identity="anonymous"
          password="demo-password"
          ca_cert="{ca}"
          phase2="{PHASE2[0]}"
        }}
        """))
    script = run_dir / "run.sh"
    script.write_text(
        f"mount -t overlay overlay -o lowerdir=/etc,upperdir={run_dir}/upper,"
        f"workdir={run_dir}/work /etc && echo '{imc_line(lib) if lib else ''}' > "
        f"/etc/tnc_config && "
        f"exec eapol_test -c {conf} -a127.0.0.1 -p{port} -s{SECRET} -t60 "
        f"-M 02:77:00:00:{i >> 8 & 255:02x}:{i & 255:02x} > {run_dir}/log 2>&1\n")
    env = {**os.environ, "NAC_AGENT_ROOT": str(root), "NAC_AGENT_STATE_DIR": str(agent_dir)}
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", str(script)],
                       env=env, capture_output=True, timeout=180)
    with contextlib.suppress(OSError):
        ROUNDS.append((run_dir / "log").read_text(errors="replace").count(SENT))
    return r.returncode == 0


SENT = "Sending RADIUS message to authentication server"


def peap_run(conf: Path, port: int, i: int) -> bool:
    mac = f"02:78:00:00:{i >> 8 & 255:02x}:{i & 255:02x}"
    r = subprocess.run(["eapol_test", "-c", str(conf), "-a", "127.0.0.1", "-p", str(port),
                        "-s", SECRET, "-t", "20", "-r", "0", f"-M{mac}"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                       errors="replace")
    ROUNDS.append(r.stdout.count(SENT))
    return r.returncode == 0


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by thread name (comm) over the process tree: where the server's time
    goes (packet loop, EAP lane, store writer process, fleet intake...)."""
    out: dict[str, float] = {}
    for p in probe.tree_pids(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                stat = Path(f"/proc/{p}/task/{tid}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            key = "main" if tid == str(p) and p == pid else name
            out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / probe.CLK_TCK
    return out


def idle_cpu_ms_per_s(pid: int, seconds: float = 5.0) -> float:
    """What the server burns with no traffic (housekeeping polls), per wall second. In ns
    (schedstat): at ~1 ms/s, 5 s of 10 ms ticks read as 0 or 2 ms/s."""
    cpu0 = probe.tree_cpu_ns(pid)
    time.sleep(seconds)
    return round((probe.tree_cpu_ns(pid) - cpu0) / 1e6 / seconds, 3)


def settle(pid: int, quiet_ms_per_s: float = 4.0, limit: float = 30.0) -> None:
    """Wait until the server burns under quiet_ms_per_s for a whole second (at most
    `limit` seconds)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        cpu0 = probe.tree_cpu_seconds(pid)
        time.sleep(1.0)
        if 1000 * (probe.tree_cpu_seconds(pid) - cpu0) < quiet_ms_per_s:
            return


def measure(pid: int, n: int, parallel: int, one: Callable[[int], bool]) -> dict:
    ROUNDS.clear()
    threads0 = thread_cpu(pid)
    cpu0 = probe.tree_cpu_seconds(pid)
    ns0 = probe.tree_cpu_ns(pid)
    t0 = time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        ok = sum(pool.map(one, range(1, n + 1)))
    wall = time.monotonic() - t0
    cpu = probe.tree_cpu_seconds(pid) - cpu0
    ns_cpu = (probe.tree_cpu_ns(pid) - ns0) / 1e9
    # 40 conversations of FreeRADIUS PEAP are 4-6 clock ticks of 10 ms: +-20%. The live
    # threads' ns (schedstat) are exact, unless a thread exited during the run (its time
    # left with it): then the two disagree by more than a tick or two per process, and the
    # ticks stand.
    exact = abs(ns_cpu - cpu) <= 2 * len(probe.tree_pids(pid)) / probe.CLK_TCK
    if exact:
        cpu = ns_cpu
    per = {k: round(1000 * (v - threads0.get(k, 0.0)) / max(ok, 1), 3)
           for k, v in thread_cpu(pid).items() if v - threads0.get(k, 0.0) > 0}
    return {"n": n, "ok": ok, "cpu_ms_per_conv": round(1000 * cpu / max(ok, 1), 3),
            "cpu_from": "schedstat ns" if exact else "clock ticks",
            "wall_s": round(wall, 2), "threads_ms_per_conv": per,
            # how busy the server was: CPU seconds per wall second (FreeRADIUS's peers run
            # back to back; posture peers each start Python and collect 1,500 packages)
            "busy": round(cpu / wall, 3) if wall else None,
            "rounds": statistics.median(ROUNDS) if ROUNDS else None}


@contextlib.contextmanager
def py_spy(pid: int, out: Path | None, gil: bool = False) -> Iterator[None]:
    """Sample `nac serve` (and its workers) with py-spy while the block runs; gil: only
    threads holding the GIL (Python work; C that drops the GIL, e.g. OpenSSL, not seen)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if out is None or not Path(exe).exists():
        yield
        return
    proc = subprocess.Popen([exe, "record", "--pid", str(pid), "--subprocesses", "--format",
                             "raw", "--rate", str(PROFILE_RATE[0]), "--output", str(out),
                             "--nonblocking",
                             *(["--gil"] if gil else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(2)  # SIGINT: py-spy writes the file and exits
        proc.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=40, help="conversations per case and round")
    ap.add_argument("--packages", type=int, default=1500)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rsa", action="store_true", help="RSA-2048 server key for both")
    ap.add_argument("--phase2", default="autheap=MSCHAPV2",
                    choices=["autheap=MSCHAPV2", "auth=MSCHAPV2"],
                    help="the stations' TTLS phase 2: EAP-MSCHAPv2 or TTLS-MSCHAPv2 AVPs")
    ap.add_argument("--profile", type=Path, help="py-spy collapsed stacks of nac serve")
    ap.add_argument("--profile-gil", action="store_true", help="sample GIL holders only")
    ap.add_argument("--profile-rate", type=int, default=200,
                    help="py-spy samples per second (a re-inspection is ~4 ms of CPU: at "
                         "200/s, 40 of them give ~30 samples)")
    ap.add_argument("--profile-case", default="posture, first contact",
                    help="the case sampled (its first round)")
    ap.add_argument("--pace", type=float, default=0.5,
                    help="seconds each station of the 'frpaced' case waits before its "
                         "conversation (what a posture station spends starting its agent)")
    ap.add_argument("--cases", default="first,certificate,feeds,off,freeradius",
                    help="which cases to run, comma-separated (first, certificate, feeds, "
                         "off, plain, freeradius, frpaced)")
    args = ap.parse_args()
    PHASE2[0] = args.phase2
    PROFILE_RATE[0] = args.profile_rate
    keep = os.environ.get("NAC_BENCH_KEEP")  # a directory to keep logs in, for post-mortems
    ctx = (contextlib.nullcontext(tempfile.mkdtemp(prefix="nac-posture-", dir=keep)) if keep
           else tempfile.TemporaryDirectory(prefix="nac-posture-"))
    results: dict[str, list[dict]] = {}
    with ctx as tmp:
        work = Path(tmp)
        root = big_root(work / "host", args.packages)
        lib = build_library(work / "nac_imc.so", command=(
            f"PYTHONPATH={ROOT} exec {sys.executable} -m eap_ext.agent imc"))
        state = work / "state"
        if args.rsa:
            from nac.pki import init_pki

            init_pki(state, use_rsa=True)  # nac serve keeps a complete PKI it finds
        wanted = set(args.cases.split(","))
        with contextlib.ExitStack() as stack:
            pid, port = stack.enter_context(mab.nac_server(state, work / "serve.log", 1))
            off_pid = off_port = None
            if "off" in wanted:  # the tunnel alone: a second server, posture off
                off_state = work / "state-off"
                shutil.copytree(state / "pki", off_state / "pki")  # same certificates
                off_pid, off_port = stack.enter_context(mab.nac_server(
                    off_state, work / "serve-off.log", 1, ["--posture", "off"]))
            from nac.pki import PkiPaths

            pki = PkiPaths.under(state)
            peap_conf = work / "peap.conf"
            peap_conf.write_text(
                "network={\n  key_mgmt=IEEE8021X\n  eap=PEAP\n  identity=\"demo\"\n"
                f"  password=\"demo-password\"\n  ca_cert=\"{pki.ca_cert}\"\n"
                "  phase1=\"tls_disable_tlsv1_3=1\"\n  phase2=\"auth=MSCHAPV2\"\n}\n")
            fr = None
            if freeradius.binary() is not None:
                (fr_port,) = probe.free_udp_ports(1)
                fr = stack.enter_context(freeradius.FreeRadius(
                    work / "freeradius", fr_port, 2,
                    freeradius.EapCerts(pki.server_cert, pki.server_key, pki.ca_cert)))
            else:
                print("FreeRADIUS is not installed: no yardstick", file=sys.stderr)
            ca = pki.ca_cert
            seq = iter(range(1 << 30))

            def first_contact(i: int) -> bool:
                k = next(seq)
                host = host_variant(root, work / f"first-host-{k}", k)
                try:
                    return ttls_run(work / f"first-{k}", work / f"first-agent-{k}", port, ca,
                                    lib, host, i)
                finally:
                    if not keep:
                        shutil.rmtree(host, ignore_errors=True)

            # certified stations: each its own host (its own posture digest) and agent state
            cert_hosts = {i: host_variant(root, work / f"cert-host-{i}", 1_000_000 + i)
                          for i in range(1, args.n + 1)}

            def certified(i: int) -> bool:  # station i's agent keeps its certificate
                return ttls_run(work / f"cert-{next(seq)}", work / f"cert-agent-{i}", port,
                                ca, lib, cert_hosts[i], i)

            def feeds_changed() -> None:
                """A feed sync: every certificate names an old feed epoch from now on."""
                from nac.prevention import cache as feed_cache

                with feed_cache.opened(state / "nac.db") as conn, conn:  # commits
                    epoch = feed_cache.bump_epoch(conn)
                time.sleep(2.5)  # the server polls the epoch every second
                print(f"feed epoch now {epoch}", flush=True)

            # warm up both servers, and give every certified station its certificate
            first_contact(0)
            with ThreadPoolExecutor(args.parallel) as pool:
                assert all(pool.map(certified, range(1, args.n + 1))), "no certificates"
            def no_agent(i: int) -> bool:
                k = next(seq)
                return ttls_run(work / f"plain-{k}", work / f"plain-agent-{k}", port, ca,
                                None, root, i)

            def posture_off(i: int) -> bool:
                k = next(seq)
                return ttls_run(work / f"off-{k}", work / f"off-agent-{k}", off_port, ca,
                                None, root, i)

            cases: list[tuple[str, int, Callable[[int], bool]]] = [
                (label, pid, one) for key, label, one in (
                    ("first", "posture, first contact", first_contact),
                    ("certificate", "posture, certificate", certified),
                    ("feeds", "certificate, feeds changed", certified),
                    ("plain", "ttls, no agent", no_agent)) if key in wanted]
            if off_pid is not None:
                posture_off(0)
                cases.append(("ttls, posture off", off_pid, posture_off))
            if fr is not None and "freeradius" in wanted:
                peap_run(peap_conf, fr.port, 0)
                cases.append(("freeradius peap", fr.pid,
                              lambda i: peap_run(peap_conf, fr.port, i)))
            if fr is not None and "frpaced" in wanted:
                def paced(i: int) -> bool:
                    time.sleep(args.pace)
                    return peap_run(peap_conf, fr.port, i)

                cases.append(("freeradius peap, paced", fr.pid, paced))
            # Housekeeping polls cost CPU per wall second, not per conversation: say how
            # much, so a case whose peers are slow (the agent collects and encodes its
            # inventory) can be read without it. The headline figures keep it in.
            # The warm-up's postures are still being compiled (fleet intake) and written
            # (store writer) for a few seconds: let that finish first, or it counts as idle
            # CPU and lands in the first case measured.
            settle(pid)
            idle = {p: idle_cpu_ms_per_s(p) for p in {server for _, server, _ in cases}}
            names = {pid: "nac", off_pid: "nac (posture off)"}
            print("idle CPU, ms per second: " + ", ".join(
                f"{names.get(p, 'freeradius')} {v}" for p, v in idle.items()))
            for rnd in range(args.rounds):
                for label, server, one in cases:
                    spy = args.profile if label == args.profile_case and rnd == 0 else None
                    if label == "certificate, feeds changed":
                        feeds_changed()  # the same stations re-certify: valid next round
                    with py_spy(pid, spy, args.profile_gil):
                        r = measure(server, args.n, args.parallel, one)
                    r["idle_ms_per_conv"] = round(idle[server] * r["wall_s"] / max(r["ok"], 1),
                                                  3)
                    results.setdefault(label, []).append(r)
                    print(f"round {rnd + 1}: {label:26} {r['ok']}/{r['n']} ok, "
                          f"{r['cpu_ms_per_conv']:7.2f} ms server CPU per conversation "
                          f"({r['cpu_from']}), "
                          f"{r['rounds']} EAP rounds "
                          f"({args.packages} packages; {r['wall_s']} s, server busy "
                          f"{r['busy']}, idle share {r['idle_ms_per_conv']} ms)", flush=True)
                    print("         by thread, ms per conversation: " + ", ".join(
                        f"{k} {v}" for k, v in sorted(r["threads_ms_per_conv"].items(),
                                                       key=lambda kv: -kv[1])), flush=True)
    summary: dict = {"packages": args.packages, "n": args.n, "rounds": args.rounds,
                     "key": "rsa-2048" if args.rsa else "ecdsa-p256"}
    for label, rs in results.items():
        med = statistics.median(r["cpu_ms_per_conv"] for r in rs)
        summary[label] = {"median_cpu_ms_per_conv": med,
                          # housekeeping charged over the case's wall time, taken out
                          "median_cpu_ms_per_conv_less_idle": statistics.median(
                              r["cpu_ms_per_conv"] - r["idle_ms_per_conv"] for r in rs),
                          "conv_per_cpu_s": round(1000 / med, 1) if med else None,
                          "median_idle_ms_per_conv": statistics.median(
                              r["idle_ms_per_conv"] for r in rs),
                          "ok": sum(r["ok"] for r in rs), "of": sum(r["n"] for r in rs),
                          "runs": [r["cpu_ms_per_conv"] for r in rs],
                          "median_busy": statistics.median(r["busy"] or 0 for r in rs),
                          "eap_rounds": statistics.median(r["rounds"] for r in rs
                                                          if r["rounds"] is not None)
                          if any(r["rounds"] is not None for r in rs) else None}
    fr_med = summary.get("freeradius peap", {}).get("median_cpu_ms_per_conv")
    # FreeRADIUS with its stations paced like posture stations (each waits --pace s, as an
    # agent's start and collection make it wait): packets meet a server that has gone
    # cold between them in both, like with like; the headline keeps back-to-back PEAP
    paced_med = summary.get("freeradius peap, paced", {}).get("median_cpu_ms_per_conv")
    for label in ("posture, first contact", "posture, certificate",
                  "certificate, feeds changed"):
        ours = summary.get(label, {}).get("median_cpu_ms_per_conv")
        if fr_med and ours:
            summary[label]["vs_freeradius"] = round(fr_med / ours, 3)  # target >= 0.8
            print(f"{label}: {1000 / ours:.0f} conversations per server CPU-second = "
                  f"{fr_med / ours:.2f}x FreeRADIUS PEAP-MSCHAPv2 ({1000 / fr_med:.0f}/s)")
        if paced_med and ours:
            summary[label]["vs_freeradius_paced"] = round(paced_med / ours, 3)
            print(f"{label}: {paced_med / ours:.2f}x FreeRADIUS PEAP-MSCHAPv2 with stations "
                  f"paced like posture stations ({1000 / paced_med:.0f}/s)")
        off = summary.get("ttls, posture off", {})
        if ours and off.get("median_cpu_ms_per_conv"):
            print(f"{label}: {ours - off['median_cpu_ms_per_conv']:.2f} ms and "
                  f"{(summary[label]['eap_rounds'] or 0) - (off['eap_rounds'] or 0)} EAP "
                  f"rounds more than the tunnel alone (ttls, posture off)")
    judged = summary.get("posture, certificate", {})
    if judged.get("vs_freeradius") is not None:
        print(f"target (>= 0.8x, judged on the re-inspection with certificate vs FreeRADIUS "
              f"PEAP back to back): {judged['vs_freeradius']:.2f}x"
              + (f"; paced {judged['vs_freeradius_paced']:.2f}x"
                 if judged.get("vs_freeradius_paced") is not None else "")
              + f"; less idle share {judged['median_cpu_ms_per_conv_less_idle']:.2f} ms "
              f"vs {fr_med:.2f} ms")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
