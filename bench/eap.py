"""EAP cost: server CPU-seconds per conversation, `nac serve` against FreeRADIUS 3.2.

Both servers get the same PKI (ours, from `nac pki init`; --rsa for RSA-2048), the same demo
account and the same real peer: N eapol_test conversations, P at a time, per method
(PEAP-MSCHAPv2, EAP-TTLS/PAP) and TLS version. The number that matters is the server's CPU
time (utime+stime of its process tree, /proc) divided by N; wall time and conversations/s are
printed too but include the eapol_test processes that share the machine. The part spent in
the server's child processes is shown apart (nac: the store's writer process, which commits a
decision row per conversation; FreeRADIUS has none).

Both servers run side by side for the whole bench, and each case is measured --rounds times,
FreeRADIUS and nac in turn (the first of the pair alternates), so that a noisy neighbour
weighs on both; the summary gives medians and the ratio nac/FreeRADIUS of conversations per
server CPU-second (above 1: nac is cheaper).

    python3 bench/eap.py                      # N=200, P=8, 3 rounds, TLS 1.2 and 1.3
    python3 bench/eap.py --workers 1 -n 400   # nac with one worker, FreeRADIUS 2 threads
    python3 bench/eap.py --rsa                # RSA-2048 certificates instead of ECDSA P-256
    python3 bench/eap.py --reauth 4           # + 4 re-authentications per peer (resumption)
    python3 bench/eap.py --only freeradius -n 6 --rounds 1

FreeRADIUS sends the same certificate as nac (auto_chain = no; --fr-auto-chain for its
default, which appends the CA); its TLS session cache is off (its default) unless --fr-cache
or --reauth. nac runs as shipped (TLS resumption on: one TLS 1.3 ticket per handshake) unless
--nac-resumption off. --together measures both servers at the same time, the peers taking
them in turn, which on a busy machine gives far steadier ratios than one after the other.
Before the rounds, one verbose conversation per case and server counts the round
trips (Access-Challenges) and reads the key exchange group and cipher suite; a second one from
the same station counts them again (nac offers a station the method it last succeeded with).
Each case has its own stations (Calling-Station-Id), the same in every round, as stations
re-authenticating: round 0 is their first contact, the later rounds are re-authentications.

    python3 bench/eap.py --replay 200 --thrash 0,4,16

--replay runs no server and no eapol_test: the conversations go through Engine.handle_auth in
this process (RADIUS decode, Message-Authenticator, duplicate cache, EAP service, reply),
the repository's test peer (tests/test_eap_peer.py) answering between rounds, and reports
the thread CPU of the server side per conversation, all of it and the EAP service's part.
--thrash writes that many MB of memory between rounds (what the 8 eapol_test peers do to
the caches live): the same code then costs what it costs in the live server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
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
KINDS = ("freeradius", "nac")


def nac_cmd() -> list[str]:
    exe = shutil.which("nac")
    return [exe] if exe else [sys.executable, "-m", "nac.cli.main"]


def freeradius_conf(d: Path, port: int, pki: Path, threads: int, *, cache: bool = False,
                    auto_chain: bool = False) -> str:
    """A from-scratch FreeRADIUS 3.2 with the eap module (PEAP, TTLS) and an inner server.

    auto_chain no: FreeRADIUS sends server.pem as it is (the leaf), as nac does; with yes it
    appends the CA from ca_file, 0.5 kB more and one more round trip per conversation.
    cache: TLS session resumption (its cache; in TLS 1.3 it then sends session tickets, as
    nac always does)."""
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
			auto_chain = {"yes" if auto_chain else "no"}
			cache {{
				enable = {"yes" if cache else "no"}
				lifetime = 1
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


def nac_config(work: Path, resumption: bool, skip_inner_identity: bool = False) -> Path:
    """What the embedded default gives the bench (the loopback client, the demo account),
    plus the [eap] settings the bench varies."""
    sys.path.insert(0, str(ROOT))
    from nac.accounts import hash_password, nt_hash

    path = work / "nac.toml"
    path.write_text(f"""\
[[clients]]
address = "127.0.0.1"
secret = "{SECRET}"
name = "localhost"

[accounts.demo]
password_hash = "{hash_password(PASSWORD)}"
nt_hash = "{nt_hash(PASSWORD).hex()}"

[eap]
tls_resumption = {"true" if resumption else "false"}
peap_skip_inner_identity = {"true" if skip_inner_identity else "false"}
""")
    return path


class Server:
    def __init__(self, kind: str, work: Path, pki_state: Path, threads: int, *,
                 fr_cache: bool = False, fr_auto_chain: bool = False,
                 nac_config: Path | None = None) -> None:
        self.kind = kind
        self.port, acct = probe.free_udp_ports(2)
        self.proc: subprocess.Popen[bytes]
        log = (work / f"{kind}.log").open("wb")
        if kind == "nac":
            cmd = [*nac_cmd(), "serve", "--state-dir", str(pki_state), "--auth-port",
                   str(self.port), "--acct-port", str(acct), "--listen", "127.0.0.1",
                   "--log-level", "warning", "--workers", str(threads),
                   # FreeRADIUS runs no posture method: compare authentication alone.
                   "--posture", "off",
                   *(["--config", str(nac_config)] if nac_config else [])]
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        else:
            d = work / "freeradius"
            for sub in ("log", "run", "radacct", "mods-config"):
                (d / sub).mkdir(parents=True, exist_ok=True)
            (d / "radiusd.conf").write_text(
                freeradius_conf(d, self.port, pki_state / "pki", threads, cache=fr_cache,
                                auto_chain=fr_auto_chain))
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

    def cpu(self) -> probe.CpuMark:
        return probe.cpu_mark(self.proc.pid)

    def helpers_cpu(self) -> list[probe.CpuMark]:
        """CPU of the server's child processes only (nac: the store's writer process with
        one worker; FreeRADIUS has none): what the bench pays for besides the packet path."""
        return [probe.cpu_mark(p) for p in probe._children(self.proc.pid)]  # noqa: SLF001

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def helpers_between(a: list[probe.CpuMark], b: list[probe.CpuMark]) -> float:
    """CPU seconds of the child processes between two readings (pairs by position: the
    children are the same unless one was replaced, and then its ticks count from zero)."""
    return sum(probe.cpu_between(x, y)[0] for x, y in zip(a, b, strict=False)) + sum(
        y.ticks_s for y in b[len(a):])


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


def eapol(port: int, path: Path, reauth: int = 0, i: int = 0,
          capture: bool = False) -> subprocess.CompletedProcess[str]:
    # Each peer its own station MAC, as on a real network.
    mac = ":".join(f"{b:02x}" for b in (2, 0, 0, (i >> 16) & 255, (i >> 8) & 255, i & 255))
    return subprocess.run(["eapol_test", "-c", str(path), "-a127.0.0.1", f"-p{port}",
                           f"-s{SECRET}", "-t30", f"-r{reauth}", f"-M{mac}"],
                          capture_output=capture, text=True, timeout=120,
                          stdout=None if capture else subprocess.DEVNULL,
                          stderr=None if capture else subprocess.DEVNULL)


def one(port: int, path: Path, reauth: int = 0, i: int = 0) -> bool:
    return eapol(port, path, reauth, i).returncode == 0


GROUPS = {0x1D: "X25519", 0x17: "P-256", 0x18: "P-384", 0x19: "P-521", 0x1E: "X448"}


def anatomy(port: int, path: Path, reauth: int, station: int) -> dict[str, object]:
    """One verbose conversation (and its re-authentications): round trips and what TLS
    negotiated, read from eapol_test's debug output."""
    out = eapol(port, path, reauth, station, capture=True).stdout
    flights = [int(n) for n in re.findall(
        r"RADIUS message: code=11 \(Access-Challenge\) identifier=\d+ length=(\d+)", out)]
    info: dict[str, object] = {
        "ok": "SUCCESS" in out and "MPPE keys OK" in out,
        "round_trips": len(flights) + out.count("code=2 (Access-Accept)"),
        "conversations": out.count("code=2 (Access-Accept)"),
        "resumed": out.count("resumed=1"),
        "tickets": out.count("new session ticket"),
    }
    suite = re.search(r"Server selected cipher suite 0x([0-9a-f]+)", out)
    info["suite"] = f"0x{suite.group(1)}" if suite else None
    # The group: TLS 1.3 key_share extension of the ServerHello, or the TLS 1.2
    # ServerKeyExchange (named curve).
    hello = re.search(r"Message - hexdump\(len=\d+\): 02 00 .*? 00 33 00 .. (..) (..)", out)
    ske = re.search(r"Message - hexdump\(len=\d+\): 0c 00 .. .. 03 (..) (..)", out)
    m = hello or ske
    info["group"] = GROUPS.get(int(m.group(1) + m.group(2), 16), "?") if m else None
    return info


Marks = tuple[probe.CpuMark, list[probe.CpuMark]]


def marks(server: Server) -> Marks:
    return server.cpu(), server.helpers_cpu()


def measured(server: Server, before: Marks, n: int, ok: int, convs: int, wall: float,
        conv_per_s: float) -> dict:
    """One measurement: the server's CPU since `before`, per conversation, and how it was
    read; its child processes' part apart."""
    cpu, cpu_from = probe.cpu_between(before[0], server.cpu())
    helpers = helpers_between(before[1], server.helpers_cpu())
    return {"n": n, "ok": ok, "conversations": convs, "wall_s": round(wall, 2),
            "conv_per_s": round(conv_per_s, 1), "server_cpu_s": round(cpu, 4),
            "cpu_ms_per_conv": round(1000 * cpu / convs, 3), "cpu_from": cpu_from,
            "helpers_ms_per_conv": round(1000 * helpers / convs, 3)}


def measure(server: Server, path: Path, n: int, parallel: int, reauth: int = 0,
            stations: int = 0) -> dict[str, float]:
    before, t0 = marks(server), time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        ok = sum(pool.map(lambda i: one(server.port, path, reauth, stations + i), range(n)))
    wall = time.monotonic() - t0
    convs = n * (1 + reauth)
    return measured(server, before, n, ok, convs, wall, convs / wall)


def measure_together(servers: dict[str, Server], path: Path, n: int, parallel: int,
                     reauth: int = 0, stations: int = 0,
                     first: int = 0) -> dict[str, dict[str, float]]:
    """n conversations per server at the same time: the peers take the servers in turn
    (P in flight in all), so load from elsewhere on the machine weighs on each alike; each
    server's CPU per conversation over the same interval. Station i talks to every server."""
    names = list(servers)
    k = len(names)
    before, t0 = {name: marks(s) for name, s in servers.items()}, time.monotonic()

    def go(i: int) -> tuple[str, bool]:
        name = names[(i + first) % k]
        return name, one(servers[name].port, path, reauth, stations + i // k)

    with ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(go, range(n * k)))
    wall = time.monotonic() - t0
    convs = n * (1 + reauth)
    return {name: measured(server, before[name], n,
                           sum(ok for who, ok in results if who == name), convs, wall,
                           k * convs / wall)
            for name, server in servers.items()}


def warm(server: Server, path: Path, parallel: int, stations: int = 0xFF0000) -> None:
    # Outside the measurement: imports, caches, and nac's password memo (one scrypt per
    # worker, as FreeRADIUS's cleartext password needs none), with as many conversations
    # in flight as measured so that every worker gets some. Stations of their own.
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda i: one(server.port, path, 0, stations + 0xF000 + i),
                      range(2 * parallel)))


def station_base(case: int) -> int:
    """First station number (Calling-Station-Id 02:00:00:xx:xx:xx) of a case."""
    return (case + 1) << 16


def median(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


class _ReplayPeer:
    """One in-process conversation's client: the test peer's TLS (pyOpenSSL over memory
    BIOs) behind RADIUS Access-Requests signed as a NAS signs them."""

    def __init__(self, lab: object, method: str, tls: str, station: int) -> None:
        from tests.test_eap_peer import TlsPeer

        self.peer = TlsPeer(lab, method, version=tls)  # type: ignore[arg-type]
        self.mac = "-".join(f"{b:02X}" for b in (2, 0, 0, (station >> 16) & 255,
                                                   (station >> 8) & 255, station & 255))
        self.ident = 0

    def request(self, eap: bytes, state: bytes | None) -> bytes:
        from nac.radius import codec as c

        attrs = (c.encode_attr(c.USER_NAME, b"anonymous")
                 + c.encode_attr(c.CALLING_STATION_ID, self.mac.encode())
                 + c.encode_attr(c.NAS_PORT, (7).to_bytes(4, "big")) + c.split_eap(eap)
                 + (c.encode_attr(c.STATE, state) if state else b""))
        self.ident = (self.ident + 1) & 0xFF
        return c.encode_request(c.ACCESS_REQUEST, self.ident, SECRET.encode(), attrs)

    def answer(self, eap: bytes) -> bytes:
        from nac.eap import packet
        from tests.test_eap_peer import nak, response

        req = packet.parse(eap)
        if req.type != self.peer.type:  # the default proposal differs: NAK to ours
            return nak(req.identifier, self.peer.type)
        return response(req.identifier, self.peer.type, self.peer.respond(req.data))


def replay(methods: list[str], versions: list[str], n: int, rounds: int,
           thrash: list[int]) -> list[dict[str, object]]:
    """In-process conversations through Engine.handle_auth; thread CPU of the server side
    per conversation, with `mb` MB of memory written between rounds (0: warm caches)."""
    sys.path.insert(0, str(ROOT))
    from nac.authorize import Authorizer
    from nac.eap.service import EapService
    from nac.radius import codec as c
    from nac.radius.clients import ClientTable, NasClient, profile
    from nac.radius.engine import Deferred, Engine
    from tests.test_eap_peer import Lab, identity

    sys.path.insert(0, str(ROOT / "bench"))
    from fuzz import lab as flab

    lab = Lab(Path(tempfile.mkdtemp(prefix="nac-bench-eap-replay-")))
    service = lab.service()  # posture off, resumption on: as the bench's nac serve
    clients = ClientTable([NasClient(network="127.0.0.1", secret=SECRET.encode(), name="nas",
                                     profile=profile("generic"), group=None,
                                     require_message_authenticator=True)])
    engine = Engine(clients, Authorizer(flab.sample_policy(), flab.evaluator()), lab.accounts,
                    eap=service, on_decision=lambda r: None)
    spent = {"service": 0.0}
    handle = EapService.handle
    clock = time.thread_time

    def timed(self: EapService, **kw: object) -> object:
        t = clock()
        try:
            return handle(self, **kw)  # type: ignore[arg-type]
        finally:
            spent["service"] += clock() - t

    service.handle = timed.__get__(service)  # type: ignore[method-assign]
    junk = bytearray(max(thrash) << 20)
    pattern = memoryview(bytes(range(256)) * (max(thrash) << 6))  # made once: no mmap a round

    def conversation(method: str, tls: str, station: int, mb: int) -> tuple[float, int]:
        peer = _ReplayPeer(lab, method, tls, station)
        eap, state, cpu, rounds = identity(7, "anonymous"), None, 0.0, 0
        while True:
            data = peer.request(eap, state)
            if mb:  # one write per cache line: the caches hold others' data afterwards
                junk[:mb << 20:64] = pattern[:mb << 14]
            t = clock()
            out = engine.handle_auth(data, "127.0.0.1", 40000 + station % 1000, flab.NOW)
            if isinstance(out, Deferred):  # a password hash (warm-up: then memoised)
                out = out.finish(out.work(), flab.NOW)
            cpu += clock() - t
            rounds += 1
            reply = c.decode(out) if isinstance(out, bytes) else None
            if reply is None or reply.code != c.ACCESS_CHALLENGE:
                if reply is None or reply.code != c.ACCESS_ACCEPT:
                    raise RuntimeError(f"{method} TLS {tls}: conversation failed")
                return cpu, rounds
            state = reply.get(c.STATE)
            eap = peer.answer(c.join_eap(reply) or b"")

    rows: list[dict[str, object]] = []
    station = 0
    for method in methods:
        kind = METHODS[method][0].lower()
        for tls in versions:
            for i in range(20):  # warm-up: imports, TLS contexts, the password memo
                conversation(kind, tls, 0xF00000 + i, 0)
            for rnd in range(rounds):
                for mb in thrash if rnd % 2 == 0 else thrash[::-1]:
                    total, spent["service"] = 0.0, 0.0
                    for _ in range(n):
                        station += 1
                        cpu, rounds_per_conv = conversation(kind, tls, station, mb)
                        total += cpu
                    row = {"method": method, "tls": tls, "thrash_mb": mb, "round": rnd,
                           "rounds_per_conv": rounds_per_conv,
                           "us_per_conv": round(total / n * 1e6, 1),
                           "service_us_per_conv": round(spent["service"] / n * 1e6, 1)}
                    rows.append(row)
                    print(f"replay round {rnd} {method:14} TLS {tls} thrash {mb:3} MB: "
                          f"{row['us_per_conv']:7.1f} us/conversation server side "
                          f"(EAP service {row['service_us_per_conv']:.1f}), "
                          f"{rounds_per_conv} rounds", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="peers (eapol_test runs) per case")
    ap.add_argument("-p", type=int, default=8, help="peers in flight")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per case and server")
    ap.add_argument("--tls", default="1.2,1.3")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--only", choices=KINDS)
    ap.add_argument("--rsa", action="store_true", help="RSA-2048 PKI instead of ECDSA P-256")
    ap.add_argument("--reauth", type=int, default=0,
                    help="re-authentications per peer after its first conversation (TLS "
                         "session resumption; wpa_supplicant 2.10 resumes TLS 1.3 only); "
                         "turns FreeRADIUS's session cache on")
    ap.add_argument("--fr-cache", action="store_true",
                    help="FreeRADIUS TLS session cache on (nac's resumption is always on)")
    ap.add_argument("--nac-resumption", choices=("on", "off"), default="on",
                    help="nac's eap.tls_resumption (default on, as shipped; on, TLS 1.3 "
                         "sends one session ticket, off none)")
    ap.add_argument("--nac-skip-inner-identity", action="store_true",
                    help="nac's eap.peap_skip_inner_identity on (off as shipped): PEAP opens "
                         "phase 2 with the MSCHAPv2 Challenge, one round trip fewer")
    ap.add_argument("--together", action="store_true",
                    help="measure the servers at the same time, conversations taking them in "
                         "turn, instead of one after the other: on a busy machine both then "
                         "see the same neighbours (conv/s is then of all servers together)")
    ap.add_argument("--fr-auto-chain", action="store_true",
                    help="FreeRADIUS appends the CA to the chain it sends (its default)")
    ap.add_argument("--threads", type=int, default=2,
                    help="FreeRADIUS worker threads and nac serve worker processes")
    ap.add_argument("--workers", type=int,
                    help="nac serve worker processes, if not --threads (CPU per conversation "
                         "is lower with one: the conversation rate here is far from a core)")
    ap.add_argument("--replay", type=int, metavar="N",
                    help="no servers: N in-process conversations per case, round and "
                         "--thrash level through Engine.handle_auth (see above)")
    ap.add_argument("--thrash", default="0,4,16",
                    help="with --replay: MB of memory written between rounds, per level")
    args = ap.parse_args()
    if args.replay:
        levels = [int(x) for x in args.thrash.split(",")]
        rows = replay(args.methods.split(","), args.tls.split(","), args.replay,
                      args.rounds, levels)
        print(f"medians of {args.rounds} (us of server-side thread CPU per conversation, "
              "in process; EAP service part in brackets):")
        for method in args.methods.split(","):
            for tls in args.tls.split(","):
                parts = []
                for mb in levels:
                    mine = [r for r in rows if (r["method"], r["tls"], r["thrash_mb"])
                            == (method, tls, mb)]
                    parts.append(f"thrash {mb} MB {median(mine, 'us_per_conv')} "
                                 f"({median(mine, 'service_us_per_conv')})")
                print(f"  {method:14} TLS {tls}: " + ", ".join(parts))
        return
    if not shutil.which("eapol_test"):
        sys.exit("eapol_test is not installed")
    kinds = [args.only] if args.only else list(KINDS)
    if "freeradius" in kinds and not (shutil.which("freeradius")
                                      or Path("/usr/sbin/freeradius").exists()):
        print("freeradius is not installed: skipped")
        kinds.remove("freeradius")
    fr_cache = args.fr_cache or args.reauth > 0
    cases = [(m, t) for m in args.methods.split(",") for t in args.tls.split(",")]
    rows: list[dict] = []
    anatomies: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="nac-bench-eap-") as tmp:
        work = Path(tmp)
        state = work / "state"
        subprocess.run([*nac_cmd(), "pki", "init", "--state-dir", str(state),
                        *(["--rsa"] if args.rsa else [])], check=True, capture_output=True)
        os.chmod(state / "pki" / "server.key", 0o644)  # FreeRADIUS may run as another user
        ca = state / "pki" / "ca.pem"
        servers: dict[str, Server] = {}
        # Not as shipped: a config file with what the embedded default has and the
        # settings asked for.
        nac_conf = (nac_config(work, args.nac_resumption == "on", args.nac_skip_inner_identity)
                    if args.nac_resumption == "off" or args.nac_skip_inner_identity else None)
        try:
            for kind in kinds:
                n = args.workers if (kind == "nac" and args.workers) else args.threads
                servers[kind] = Server(kind, work, state, n, fr_cache=fr_cache,
                                       fr_auto_chain=args.fr_auto_chain, nac_config=nac_conf)
            for c, (method, tls) in enumerate(cases):
                path = conf(work, method, tls, ca)
                for kind, server in servers.items():
                    warm(server, path, args.p, station_base(c))
                    # The same station twice: nac offers a station the method it last
                    # succeeded with, so a known TTLS station skips the NAK of PEAP.
                    a = anatomy(server.port, path, args.reauth, station_base(c) + 0xFFFF)
                    again = anatomy(server.port, path, args.reauth, station_base(c) + 0xFFFF)
                    a["round_trips_known_station"] = again["round_trips"]
                    anatomies[f"{kind} {method} {tls}"] = a
                    print(f"{kind:10} {method:14} TLS {tls}: {a['round_trips']} round trips "
                          f"({again['round_trips']} for the same station again) for "
                          f"{a['conversations']} conversation(s), {a['resumed']} resumed, "
                          f"{a['tickets']} tickets, group {a['group']}, suite {a['suite']}"
                          + ("" if a["ok"] and again["ok"] else "  (FAILED)"), flush=True)
            for rnd in range(args.rounds):
                order = list(servers.items())
                if rnd % 2:
                    order.reverse()
                for c, (method, tls) in enumerate(cases):
                    path = conf(work, method, tls, ca)
                    together = measure_together(servers, path, args.n, args.p, args.reauth,
                                                station_base(c), rnd) \
                        if args.together else {}
                    for kind, server in order:
                        # Each case has its own stations, the same ones every round: a
                        # station re-authenticates with the method it used before.
                        r = together.get(kind) or measure(server, path, args.n, args.p,
                                                          args.reauth, station_base(c))
                        r.update(server=kind, method=method, tls=tls, round=rnd)
                        rows.append(r)
                        print(f"round {rnd} {kind:10} {method:14} TLS {tls}: {r['ok']}/{r['n']} "
                              f"ok, {r['cpu_ms_per_conv']:7.3f} ms server CPU/conversation "
                              f"({r['helpers_ms_per_conv']:.3f} in child processes), "
                              f"{r['conv_per_s']:6.1f} conv/s (wall, with the peers), "
                              f"CPU from {r['cpu_from']}",
                              flush=True)
        finally:
            for server in servers.values():
                server.stop()
    summary = []
    for method, tls in cases:
        entry: dict[str, object] = {"method": method, "tls": tls}
        for kind in kinds:
            mine = [r for r in rows if (r["server"], r["method"], r["tls"]) == (kind, method, tls)]
            entry[kind] = {"cpu_ms_per_conv": median(mine, "cpu_ms_per_conv"),
                           "helpers_ms_per_conv": median(mine, "helpers_ms_per_conv"),
                           "runs": [r["cpu_ms_per_conv"] for r in mine],
                           "failed": sum(r["n"] - r["ok"] for r in mine),
                           **{k: anatomies.get(f"{kind} {method} {tls}", {}).get(k)
                              for k in ("round_trips", "round_trips_known_station", "group",
                                        "suite", "tickets")}}
        fr, ours = entry.get("freeradius"), entry.get("nac")
        if isinstance(fr, dict) and isinstance(ours, dict) and ours["cpu_ms_per_conv"]:
            # Conversations per server CPU-second, nac over FreeRADIUS: the target.
            entry["ratio"] = round(fr["cpu_ms_per_conv"] / ours["cpu_ms_per_conv"], 3)
        summary.append(entry)
    print(f"medians of {args.rounds} (ms of server CPU per conversation"
          + (f", 1 full + {args.reauth} resumed per peer" if args.reauth else "")
          + f"; {'RSA-2048' if args.rsa else 'ECDSA P-256'}; nac resumption "
          f"{args.nac_resumption}, FreeRADIUS cache {'on' if fr_cache else 'off'}"
          + ("; measured together" if args.together else "") + "):")
    for e in summary:
        parts = [f"{k} {e[k]['cpu_ms_per_conv']}"  # type: ignore[index]
                 + (f" ({e[k]['helpers_ms_per_conv']} in child processes)"  # type: ignore[index]
                    if e[k]["helpers_ms_per_conv"] else "") for k in kinds]  # type: ignore[index]
        ratio = f"  conversations per CPU-second nac/FreeRADIUS {e['ratio']:.2f}x" \
            if "ratio" in e else ""
        print(f"  {e['method']:14} TLS {e['tls']}: " + ", ".join(parts) + ratio)
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    result = {"rsa": args.rsa, "reauth": args.reauth, "fr_cache": fr_cache,
              "nac_resumption": args.nac_resumption,
              "nac_skip_inner_identity": args.nac_skip_inner_identity, "together": args.together,
              "fr_auto_chain": args.fr_auto_chain, "n": args.n, "p": args.p,
              "summary": summary, "runs": rows}
    (out / "eap.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
