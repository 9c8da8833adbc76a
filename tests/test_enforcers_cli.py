"""`nac enforce` against the lab switch (snmpd + hostapd DAS) and the queue in STATE/nac.db."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import tomli_w
from click.testing import CliRunner

from nac.cli import enforce as enforce_cli
from tests.lab.fixtures import Lab, switch_lab
from tests.pg import pg_server, pg_url  # noqa: F401  (pytest fixtures)

pytestmark = [pytest.mark.netns, pytest.mark.peer]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with switch_lab(tmp_path_factory.mktemp("cli"), snmpd=True, hostapd_port="swp1",
                    initial={1: 10, 2: 10, 3: 20}) as lab:
        yield lab


@pytest.fixture
def cli() -> click.Group:
    group = click.Group()
    enforce_cli.register(group)
    return group


def write_config(lab: Lab, path: Path) -> Path:
    assert lab.snmpd is not None
    sw = lab.switch
    cfg = {"switches": [{
        "name": "labsw", "address": sw.mgmt_ip, "driver": "snmp",
        "snmp": {"version": "3", "user": lab.snmpd.v3_user, "auth_key": lab.snmpd.v3_auth_key,
                 "priv_key": lab.snmpd.v3_priv_key, "timeout": 0.5, "retries": 1},
        "coa": {"secret": "das-secret", "timeout": 0.3, "retries": 1},
        "bounce_down_seconds": 0.1,
        "ports": {"table": [{"name": p, "ifindex": sw.ifindex(p), "nas_port": i + 1}
                            for i, p in enumerate(sw.ports)]},
    }]}
    path.write_bytes(tomli_w.dumps(cfg).encode())
    return path


def test_set_vlan_list_retry_reauth(lab: Lab, cli: click.Group, tmp_path: Path) -> None:
    cfg = write_config(lab, tmp_path / "nac.toml")
    state = tmp_path / "state"
    base = ["--config", str(cfg), "--state-dir", str(state)]
    runner = CliRunner()

    # By NAS-Port 3 -> swp3, applied at once over SNMPv3.
    r = runner.invoke(cli, ["enforce", "set-vlan", "labsw", "3", "10", *base])
    assert r.exit_code == 0, r.output
    assert "done: snmp set VLAN 10 + bounce" in r.output
    assert lab.switch.port_vlan("swp3") == 10

    # Live session on swp1: CoA NAK from hostapd, SNMP fallback.
    mac = lab.switch.hosts[0].mac
    r = runner.invoke(cli, ["enforce", "set-vlan", "labsw", "swp1", "30", "--mac", mac, *base])
    assert r.exit_code == 0, r.output
    assert "Unsupported-Attribute" in r.output and lab.switch.port_vlan("swp1") == 30

    # A port the SNMP driver cannot map: dead letter.
    r = runner.invoke(cli, ["enforce", "set-vlan", "labsw", "eth9", "20", *base])
    assert r.exit_code == 1 and "dead" in r.output

    # reauth of a MAC without a session: Disconnect-NAK, the job is dead.
    r = runner.invoke(cli, ["enforce", "reauth", "02:00:00:00:00:99", *base])
    assert r.exit_code == 1 and "Session-Context-Not-Found" in r.output

    # Queue only (for the server's worker).
    r = runner.invoke(cli, ["enforce", "set-vlan", "labsw", "swp2", "20", "--no-wait", *base])
    assert r.exit_code == 0 and "queued job 5" in r.output

    r = runner.invoke(cli, ["enforce", "list", "--json", "--state-dir", str(state)])
    jobs = {j["id"]: j for j in json.loads(r.output)}
    assert jobs[1]["state"] == "done" and jobs[1]["latency"] > 0
    assert jobs[3]["state"] == "dead" and jobs[4]["state"] == "dead"
    assert jobs[5]["state"] == "pending"
    r = runner.invoke(cli, ["enforce", "list", "--state-dir", str(state)])
    assert r.exit_code == 0 and "labsw" in r.output and "LATENCY" in r.output

    r = runner.invoke(cli, ["enforce", "retry", "3", "--state-dir", str(state)])
    assert r.exit_code == 0 and "was dead" in r.output
    r = runner.invoke(cli, ["enforce", "retry", "99", "--state-dir", str(state)])
    assert r.exit_code == 1

    # The worker applies the queued job 5 (and job 3 dies again).
    r = runner.invoke(cli, ["enforce", "run", "--once", *base])
    assert r.exit_code == 0, r.output
    assert lab.switch.port_vlan("swp2") == 20
    r = runner.invoke(cli, ["enforce", "list", "--json", "--state-dir", str(state)])
    jobs = {j["id"]: j for j in json.loads(r.output)}
    assert jobs[5]["state"] == "done" and jobs[3]["state"] == "dead"


def test_bad_config_is_reported(cli: click.Group, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[switches]]\nname = "x"\naddress = "192.0.2.1"\ndriver = "snmp"\n')
    r = CliRunner().invoke(cli, ["enforce", "set-vlan", "x", "1", "10", "--config", str(cfg),
                                 "--state-dir", str(tmp_path / "s")])
    assert r.exit_code == 1 and "needs a [snmp] section" in r.output


def test_queue_in_postgresql(lab: Lab, cli: click.Group, tmp_path: Path,
                             pg_url: str) -> None:  # noqa: F811
    """--store postgresql://...: the same commands over the store's PostgreSQL queue."""
    import psycopg

    from nac.store.migrations import migrate_postgres

    runner = CliRunner()
    cfg = write_config(lab, tmp_path / "nac.toml")
    base = ["--config", str(cfg), "--store", pg_url]
    r = runner.invoke(cli, ["enforce", "list", "--store", pg_url])
    assert r.exit_code == 1 and "nac store migrate" in r.output
    with psycopg.connect(pg_url) as conn:
        migrate_postgres(conn)
    target = 30 if lab.switch.port_vlan("swp2") != 30 else 20
    r = runner.invoke(cli, ["enforce", "set-vlan", "labsw", "swp2", str(target), *base])
    assert r.exit_code == 0, r.output
    assert "done: snmp set VLAN" in r.output
    assert lab.switch.port_vlan("swp2") == target
    r = runner.invoke(cli, ["enforce", "list", "--json", "--store", pg_url])
    (job,) = json.loads(r.output)
    assert job["state"] == "done" and job["latency"] > 0
