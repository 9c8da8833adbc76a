"""EAP cost: server CPU-seconds per conversation, `nac serve` against FreeRADIUS 3.2.

Both servers get the same PKI (ours, from `nac pki init`), the same demo account and the same
real peer: N eapol_test conversations, P at a time, per method (PEAP-MSCHAPv2, EAP-TTLS/PAP)
and TLS version. The number that matters is the server's CPU time (utime+stime of its process
tree, /proc) divided by N; wall time and conversations/s are printed too but include the
eapol_test processes that share the machine.

    python3 bench/eap.py                     # N=200, P=8, both servers, TLS 1.2 and 1.3
    python3 bench/eap.py -n 500 -p 16 --only nac
    python3 bench/eap.py --workers 1          # nac with one worker, FreeRADIUS 2 threads
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
import probe  # noqa: E402  (bench scripts import their helpers by path)

ROOT = Path(__file__).resolve().parents[1]
SECRET = "testing123"
PASSWORD = "demo-password"
PHASE1 = {"1.2": "tls_disable_tlsv1_3=1",
          "1.3": "tls_disable_tlsv1_0=1 tls_disable_tlsv1_1=1 tls_disable_tlsv1_2=1 "
                 "tls_disable_tlsv1_3=0"}
METHODS = {"peap-mschapv2": ("PEAP", "auth=MSCHAPV2"), "ttls-pap": ("TTLS", "auth=PAP")}


def nac_cmd() -> list[str]:
    exe = shutil.which("nac")
    return [exe] if exe else [sys.executable, "-m", "nac.cli.main"]


def freeradius_conf(d: Path, port: int, pki: Path, threads: int) -> str:
    """A from-scratch FreeRADIUS 3.2 with the eap module (PEAP, TTLS) and an inner server."""
    return f"""\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = {d}
sbindir = /usr/sbin
logdir = {d}/log
raddbdir = {d}
radacctdir = {d}/radacct
name = freeradius
confdir = {d}
modconfdir = {d}/mods-config
certdir = {pki}
cadir = {pki}
run_dir = {d}/run
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/run/freeradius.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 65536
hostname_lookups = no
log {{
	destination = files
	file = {d}/log/radius.log
	auth = no
}}
security {{
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}}
thread pool {{
	start_servers = {threads}
	max_servers = {threads}
	min_spare_servers = 1
	max_spare_servers = {threads}
	max_requests_per_server = 0
	max_queue_size = 65536
}}
client localhost {{
	ipaddr = 127.0.0.1
	secret = {SECRET}
	require_message_authenticator = yes
}}
modules {{
	pap {{
	}}
	mschap {{
	}}
	eap {{
		default_eap_type = peap
		timer_expire = 60
		max_sessions = ${{max_requests}}
		tls-config tls-common {{
			private_key_file = {pki}/server.key
			certificate_file = {pki}/server.pem
			ca_file = {pki}/ca.pem
			cipher_list = "DEFAULT"
			tls_min_version = "1.2"
			tls_max_version = "1.3"
			ecdh_curve = ""
			cache {{
				enable = no
			}}
		}}
		peap {{
			tls = tls-common
			default_eap_type = mschapv2
			virtual_server = "inner"
		}}
		ttls {{
			tls = tls-common
			virtual_server = "inner"
		}}
		mschapv2 {{
		}}
	}}
}}
instantiate {{
}}
policy {{
}}
server outer {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
	}}
	authorize {{
		if (&Service-Type == Call-Check) {{
			update control {{
				&Auth-Type := Accept
			}}
		}}
		else {{
			eap {{
				ok = return
			}}
		}}
	}}
	authenticate {{
		Auth-Type eap {{
			eap
		}}
	}}
	post-auth {{
		update reply {{
			&Tunnel-Type:1 := VLAN
			&Tunnel-Medium-Type:1 := IEEE-802
			&Tunnel-Private-Group-Id:1 := "10"
		}}
	}}
	Autz-Type Status-Server {{
		ok
	}}
}}
server inner {{
	authorize {{
		if (&User-Name == "demo") {{
			update control {{
				&Cleartext-Password := "{PASSWORD}"
			}}
		}}
		mschap
		eap {{
			ok = return
		}}
		pap
	}}
	authenticate {{
		Auth-Type PAP {{
			pap
		}}
		Auth-Type MS-CHAP {{
			mschap
		}}
		Auth-Type eap {{
			eap
		}}
	}}
}}
"""


class Server:
    def __init__(self, kind: str, work: Path, pki_state: Path, threads: int) -> None:
        self.kind = kind
        self.port, acct = probe.free_udp_ports(2)
        self.proc: subprocess.Popen[bytes]
        log = (work / f"{kind}.log").open("wb")
        if kind == "nac":
            cmd = [*nac_cmd(), "serve", "--state-dir", str(pki_state), "--auth-port",
                   str(self.port), "--acct-port", str(acct), "--listen", "127.0.0.1",
                   "--log-level", "warning", "--workers", str(threads),
                   # FreeRADIUS runs no posture method: compare authentication alone.
                   "--posture", "off"]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        else:
            d = work / "freeradius"
            for sub in ("log", "run", "radacct", "mods-config"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            (d / "radiusd.conf").write_text(
                freeradius_conf(d, self.port, pki_state / "pki", threads))
            exe = shutil.which("freeradius") or "/usr/sbin/freeradius"
            check = subprocess.run([exe, "-XC", "-d", str(d)], capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError(f"freeradius -XC:\n{check.stdout[-3000:]}")
            self.proc = subprocess.Popen([exe, "-f", "-d", str(d)], stdout=log,
                                         stderr=subprocess.STDOUT)
        probe.wait_answers(self.port, SECRET.encode(), 30, alive=self.proc)
        if kind == "nac":
            # Every worker bound before the first conversation: a worker that binds later
            # takes over part of the flows (SO_REUSEPORT rehashes), and conversations in
            # flight then land where they are unknown.
            probe.wait_listeners(self.port, threads, alive=self.proc)

    def cpu(self) -> float:
        return probe.tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def conf(work: Path, method: str, tls: str, ca: Path) -> Path:
    eap, phase2 = METHODS[method]
    path = work / f"{method}-{tls}.conf"
    path.write_text(f"""network={{
  key_mgmt=IEEE8021X
  eap={eap}
  identity="demo"
  anonymous_identity="anonymous"
  password="{PASSWORD}"
  ca_cert="{ca}"
  phase1="{PHASE1[tls]}"
  phase2="{phase2}"
}}
""")
    return path


def one(port: int, path: Path) -> bool:
    r = subprocess.run(["eapol_test", "-c", str(path), "-a127.0.0.1", f"-p{port}",
                        f"-s{SECRET}", "-t30"], capture_output=True, timeout=90)
    return r.returncode == 0


def measure(server: Server, path: Path, n: int, parallel: int) -> dict[str, float]:
    # Warm up outside the measurement (imports, caches, and nac's password memo: one scrypt
    # per worker, as FreeRADIUS's cleartext password needs none), with as many conversations
    # in flight as measured so that every worker gets some.
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda _: one(server.port, path), range(2 * parallel)))
    cpu0, t0 = server.cpu(), time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        ok = sum(pool.map(lambda _: one(server.port, path), range(n)))
    wall, cpu = time.monotonic() - t0, server.cpu() - cpu0
    return {"n": n, "ok": ok, "wall_s": round(wall, 2), "conv_per_s": round(n / wall, 1),
            "server_cpu_s": round(cpu, 3), "cpu_ms_per_conv": round(1000 * cpu / n, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="conversations per case")
    ap.add_argument("-p", type=int, default=8, help="conversations in flight")
    ap.add_argument("--tls", default="1.2,1.3")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--only", choices=["nac", "freeradius"])
    ap.add_argument("--threads", type=int, default=2,
                    help="FreeRADIUS worker threads and nac serve worker processes")
    ap.add_argument("--workers", type=int,
                    help="nac serve worker processes, if not --threads (CPU per conversation "
                         "is lower with one: the conversation rate here is far from a core)")
    args = ap.parse_args()
    if not shutil.which("eapol_test"):
        sys.exit("eapol_test is not installed")
    kinds = [args.only] if args.only else ["freeradius", "nac"]
    results = []
    with tempfile.TemporaryDirectory(prefix="nac-bench-eap-") as tmp:
        work = Path(tmp)
        state = work / "state"
        subprocess.run([*nac_cmd(), "pki", "init", "--state-dir", str(state)], check=True,
                       capture_output=True)
        os.chmod(state / "pki" / "server.key", 0o644)  # FreeRADIUS may run as another user
        ca = state / "pki" / "ca.pem"
        for kind in kinds:
            if kind == "freeradius" and not (shutil.which("freeradius")
                                             or Path("/usr/sbin/freeradius").exists()):
                print("freeradius is not installed: skipped")
                continue
            n = args.workers if (kind == "nac" and args.workers) else args.threads
            server = Server(kind, work, state, n)
            try:
                for method in args.methods.split(","):
                    for tls in args.tls.split(","):
                        r = measure(server, conf(work, method, tls, ca), args.n, args.p)
                        r.update(server=kind, method=method, tls=tls)
                        results.append(r)
                        print(f"{kind:10} {method:14} TLS {tls}: {r['ok']}/{r['n']} ok, "
                              f"{r['cpu_ms_per_conv']:7.2f} ms server CPU/conversation, "
                              f"{r['conv_per_s']:6.1f} conv/s (wall, with the peers)")
            finally:
                server.stop()
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "eap.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
