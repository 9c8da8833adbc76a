"""`nac nodes reinspect` queues a re-authentication for the switch a node is on, found
through the accounting session a real radclient reported."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from enforcers.queue import JobQueue
from tests.conftest import NacServer, nac_cmd, radclient

pytestmark = pytest.mark.peer


def test_reinspect_queues_reauth_for_live_session(nac_server: NacServer, tmp_path: Path) -> None:
    mac = "02:00:00:00:00:21"
    r = radclient(nac_server.acct_port, "acct",
                  f'Acct-Status-Type = Start, Acct-Session-Id = "R-1", '
                  f'Calling-Station-Id = "{mac}",'
                  ' NAS-IP-Address = 127.0.0.1, NAS-Port-Id = "Gi1/0/21"')
    assert r.code == "Accounting-Response"
    cfg = tmp_path / "nac.toml"
    cfg.write_text('[[switches]]\nname = "sw1"\naddress = "127.0.0.1"\ndriver = "coa"\n'
                   '[switches.coa]\nsecret = "testing123"\nport = 1\n')
    base = [*nac_cmd(), "nodes", "reinspect", "--config", str(cfg), "--state-dir",
            str(nac_server.state_dir)]
    out = subprocess.run([*base, mac], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "re-authentication queued" in out.stdout
    jobs = JobQueue(nac_server.state_dir / "nac.db").list_jobs()
    (job,) = [j for j in jobs if j.mac == mac]
    assert job.kind == "reauth" and job.switch == "sw1" and job.session_id == "R-1"

    unknown = subprocess.run([*base, "02:00:00:00:00:99"], capture_output=True, text=True,
                             timeout=60)
    assert unknown.returncode == 1 and "unknown node" in unknown.stderr
    none = subprocess.run([*nac_cmd(), "nodes", "reinspect", "--all", "--config",
                           str(tmp_path / "missing.toml")], capture_output=True, text=True)
    assert none.returncode == 1 and "no such file" in none.stderr
