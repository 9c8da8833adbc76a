"""A minimal FreeRADIUS 3.2 to benchmark against, configured from scratch
in a temporary directory (nothing under /etc/freeradius is used).

It answers what bench/packets.py sends, the way our server should:
- MAB (Service-Type = Call-Check) and the PAP user demo/demo-password get
  Access-Accept with the VLAN (RFC 3580 tunnel attributes, tag 1),
  Session-Timeout 3600, Termination-Action RADIUS-Request and a
  Message-Authenticator;
- everything else gets Access-Reject.
The client 127.0.0.1 must sign requests (require_message_authenticator).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import probe

FREERADIUS = "/usr/sbin/freeradius"
SECRET = "testing123"
VLAN = "10"


def binary() -> str | None:
    """Path of the FreeRADIUS daemon, or None when it is not installed."""
    return shutil.which("freeradius") or (FREERADIUS if Path(FREERADIUS).exists() else None)


@dataclass(frozen=True)
class EapCerts:
    """PEM files of the TLS server for PEAP: certificate, key, issuing CA."""

    cert: Path
    key: Path
    ca: Path


def eap_conf(certs: EapCerts) -> str:
    """The eap and mschap modules: PEAP (TLS 1.2, no session cache, so
    each conversation pays for a full handshake) with MSCHAPv2 inside."""
    return f"""
	eap {{
		default_eap_type = peap
		timer_expire = 60
		ignore_unknown_eap_types = no
		max_sessions = ${{max_requests}}
		tls-config tls-common {{
			private_key_file = {certs.key}
			certificate_file = {certs.cert}
			ca_file = {certs.ca}
			cipher_list = "DEFAULT"
			tls_min_version = "1.2"
			tls_max_version = "1.2"
			cache {{
				enable = no
			}}
		}}
		peap {{
			tls = tls-common
			default_eap_type = mschapv2
			virtual_server = "inner-tunnel"
		}}
		mschapv2 {{
		}}
	}}
	mschap {{
	}}
"""


# EAP first, the other cases as elsif: a "return" inside an if block
# leaves only the block, so an EAP conversation would fall through to the
# final reject
EAP_AUTHORIZE = """\
		if (&EAP-Message) {
			eap
		}"""

INNER_TUNNEL = """
server inner-tunnel {
	authorize {
		if (&User-Name == "demo") {
			update control {
				&Cleartext-Password := "demo-password"
			}
		}
		eap {
			ok = return
		}
		mschap
	}
	authenticate {
		Auth-Type MS-CHAP {
			mschap
		}
		eap
	}
}
"""


def radiusd_conf(d: Path, port: int, threads: int, eap: EapCerts | None = None) -> str:
    # max_requests counts requests kept for cleanup_delay too (duplicate
    # detection): at ~50k/s for 5 s that is far above the default 16384.
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
certdir = {d}/certs
cadir = {d}/certs
run_dir = {d}/run
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/run/freeradius.pid
correct_escapes = true
max_request_time = 30
cleanup_delay = 5
max_requests = 1048576
hostname_lookups = no

log {{
	destination = files
	file = {d}/log/radius.log
	colourise = no
	stripped_names = no
	auth = no
	auth_badpass = no
	auth_goodpass = no
}}

security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}}

# One worker per core: more threads only add contention on 2 cores.
thread pool {{
	start_servers = {threads}
	max_servers = {threads}
	min_spare_servers = 1
	max_spare_servers = {threads}
	max_requests_per_server = 0
	max_queue_size = 65536
	auto_limit_acct = no
}}

client localhost {{
	ipaddr = 127.0.0.1
	proto = udp
	secret = {SECRET}
	require_message_authenticator = yes
	nas_type = other
}}

modules {{
	pap {{
		normalise = yes
	}}
{eap_conf(eap) if eap else ""}
}}

instantiate {{
}}

policy {{
}}

server bench {{
	# the kernel default (~200 KB) holds only ~250 small datagrams: a
	# window of 256 overflows it and the losses look like a slow server
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
		recv_buff = 4194304
	}}

	authorize {{
{EAP_AUTHORIZE if eap else ""}
		{"elsif" if eap else "if"} (&Service-Type == Call-Check) {{
			update control {{
				&Auth-Type := Accept
			}}
		}}
		elsif (&User-Name == "demo" && &User-Password) {{
			update control {{
				&Cleartext-Password := "demo-password"
			}}
			pap
		}}
		else {{
			update control {{
				&Auth-Type := Reject
			}}
		}}
	}}

	authenticate {{
		Auth-Type PAP {{
			pap
		}}
{"		eap" if eap else ""}
	}}

	post-auth {{
		update reply {{
			&Tunnel-Type:1 := VLAN
			&Tunnel-Medium-Type:1 := IEEE-802
			&Tunnel-Private-Group-Id:1 := "{VLAN}"
			&Session-Timeout := 3600
			&Termination-Action := RADIUS-Request
			&Message-Authenticator := 0x00
		}}
		Post-Auth-Type REJECT {{
			update reply {{
				&Message-Authenticator := 0x00
			}}
		}}
	}}

	Autz-Type Status-Server {{
		ok
	}}
}}
{INNER_TUNNEL if eap else ""}"""


def write_config(d: Path, port: int, threads: int = 2, eap: EapCerts | None = None) -> Path:
    """Write the configuration into d (created) and return d."""
    for sub in ("log", "run", "radacct", "mods-config", "certs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "radiusd.conf").write_text(radiusd_conf(d, port, threads, eap))
    return d


def check_config(d: Path) -> None:
    """Let FreeRADIUS parse and load the configuration (-XC); raises with
    its output when it refuses."""
    exe = binary()
    if exe is None:
        raise FileNotFoundError("freeradius is not installed")
    proc = subprocess.run(
        [exe, "-XC", "-d", str(d)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"freeradius -XC failed:\n{proc.stdout[-4000:]}{proc.stderr}")


class FreeRadius:
    """Run FreeRADIUS in the foreground on a loopback port; a context manager
    that always stops it."""

    def __init__(self, d: Path, port: int, threads: int = 2,
                 eap: EapCerts | None = None) -> None:
        self.dir = write_config(d, port, threads, eap)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        """Validate the config, start the daemon and return once it answered
        a signed MAB request (its reply proves the client and secret work)."""
        check_config(self.dir)
        exe = binary()
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "-f", "-d", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            probe.wait_answers(self.port, SECRET.encode(), timeout, alive=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            log = self.dir / "log" / "radius.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"freeradius did not start: {exc}\n{tail}") from None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> FreeRadius:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
