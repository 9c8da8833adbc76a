"""A feed change re-evaluates every node's last posture (draft 6.4.2): `nac feed import`
moves a node with vulnerable openssl to isolated and queues its switch port; the advisory
withdrawn, the node returns to normal."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from enforcers.queue import JobQueue
from nac.events import DecisionRecord
from nac.store import open_store
from tests.conftest import ROOT, nac_cmd
from tests.pg import PgServer, pg_server, pg_store_url  # noqa: F401  (pytest fixtures)

MAC = "02:00:00:00:bb:01"


def posture(openssl: str) -> dict[str, object]:
    return {
        "schema": 1, "collected_at": "2026-11-27T23:30:00Z",
        "os": {"family": "linux", "id": "debian", "version_id": "12", "arch": "x86_64"},
        "packages": [{"name": "openssl", "version": openssl, "arch": "amd64",
                      "source": "openssl", "source_version": openssl, "manager": "dpkg",
                      "purl": f"pkg:deb/debian/openssl@{openssl}?arch=amd64&distro=debian-12"}],
        "forwarding": {"ipv4": False, "ipv6": False, "bridges": []},
        "firewall": "unknown", "listening": [], "security_software": [],
        "interfaces": [], "pending_updates": "unknown",
        "factory_default_password": False, "certificate": None,
    }


def nac(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*nac_cmd(), *args, "--state-dir", str(state)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def record_compliant(store: Any) -> None:
    """The node as its last inspection left it: normal, with openssl 3.0.9-1, on Gi1/0/5."""
    store.record_decision(DecisionRecord(
        at=time.time(), mac=MAC, segment="normal", vlan=30, source="posture",
        reasons=("compliant",), identity="demo", role="default", nas="127.0.0.1",
        nas_port="Gi1/0/5", posture=posture("3.0.9-1")))
    store.flush()


def switch_config(tmp_path: Path) -> Path:
    """A server config whose switch inventory takes the node's port jobs."""
    cfg = tmp_path / "nac.toml"
    cfg.write_text('[[switches]]\nname = "sw1"\naddress = "127.0.0.1"\n'
                   'driver = "ssh-linux-bridge"\n[switches.ssh]\nusername = "nac"\n'
                   'password = "x"\n')
    return cfg


def test_feed_change_moves_node_and_queues_its_port(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = open_store(None, state)
    record_compliant(store)
    store.close()
    cfg = switch_config(tmp_path)

    out = nac(state, "feed", "import", str(ROOT / "tests/data/osv/DSA-5532-1.json"),
              "--config", str(cfg))
    assert "1 changed segment" in out.stdout and "normal -> isolated" in out.stdout
    assert "DSA-5532-1" in out.stdout
    node = json.loads(nac(state, "nodes", "show", MAC, "--json").stdout)
    assert node["node"]["segment"] == "isolated" and node["node"]["vlan"] == 20
    assert node["decisions"][0]["source"] == "feed"
    (job,) = JobQueue(state / "nac.db").list_jobs()
    assert (job.kind, job.switch, job.port, job.vlan) == ("set_vlan", "sw1", "Gi1/0/5", 20)

    withdrawn = json.loads((ROOT / "tests/data/osv/DSA-5532-1.json").read_text())
    withdrawn["withdrawn"] = "2026-11-27T00:00:00Z"
    withdrawn["modified"] = "2026-11-27T00:00:00Z"
    w = tmp_path / "withdrawn.json"
    w.write_text(json.dumps(withdrawn))
    out = nac(state, "feed", "import", str(w))
    assert "isolated -> normal" in out.stdout
    node = json.loads(nac(state, "nodes", "show", MAC, "--json").stdout)
    assert node["node"]["segment"] == "normal" and node["node"]["vlan"] == 30


def test_feed_import_and_policy_apply_take_store(tmp_path: Path,
                                                 pg_store_url: str) -> None:  # noqa: F811
    """--store postgresql://: the nodes re-evaluated are PostgreSQL's, their new decisions go
    there, and so does the port's job (nothing in the state dir's SQLite file)."""
    from nac.store.pg_jobs import PgJobQueue

    state = tmp_path / "state"
    store = open_store(pg_store_url, state)
    record_compliant(store)
    cfg = switch_config(tmp_path)
    out = nac(state, "feed", "import", str(ROOT / "tests/data/osv/DSA-5532-1.json"),
              "--config", str(cfg), "--store", pg_store_url)
    assert "1 changed segment" in out.stdout and "normal -> isolated" in out.stdout
    node = store.get_node(MAC)
    assert node is not None and node["segment"] == "isolated"
    queue = PgJobQueue(pg_store_url)
    try:
        (job,) = queue.list_jobs()
    finally:
        queue.close()  # its pool, else collected by one of its own threads (a warning)
    assert (job.switch, job.port, job.vlan) == ("sw1", "Gi1/0/5", 20)
    assert not (state / "nac.db").exists() or not JobQueue(state / "nac.db").list_jobs()

    policy = tmp_path / "p.toml"  # the sample policy, applied: it re-checks PostgreSQL's node
    policy.write_text(nac(state, "policy", "show").stdout)
    out = nac(state, "policy", "apply", str(policy), "--wait", "0", "--store", pg_store_url)
    assert "re-evaluated 1 node(s): 0 changed" in out.stdout, out.stdout
    store.close()
