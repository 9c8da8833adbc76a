"""Schema versions: an ordered list of migrations per backend and the code that applies them.

Both backends keep one row in ``schema_version``. A migration runs in one transaction with
the version bump, so a crash leaves the schema at a whole version. SQLite stores migrate
when opened (one server per file). PostgreSQL is shared by several servers, so only
``nac store migrate`` changes it (under an advisory lock); a server that finds an older
schema refuses to start instead of racing another server's migration.

Append new migrations at the end of a list; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Migration", "POSTGRES_MIGRATIONS", "SQLITE_MIGRATIONS", "SchemaError",
    "check_postgres", "jobs_table", "latest", "migrate_postgres", "migrate_sqlite",
    "postgres_version", "postures_apart", "sqlite_version", "table_counts_postgres",
    "table_counts_sqlite",
]


class SchemaError(ValueError):
    """The database schema does not match what this version of the code needs.

    A ValueError so that `nac serve` reports it as a configuration problem, not a crash."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def jobs_table(backend: str) -> list[str]:
    """The enforcement job queue's table (enforcers/queue.py), the one definition for both
    backends; only the id column's type and the idempotence of the statements differ."""
    sqlite = backend == "sqlite"
    ine = "IF NOT EXISTS " if sqlite else ""
    return [
        f"""CREATE TABLE {ine}enforcement_jobs (
            id {"INTEGER PRIMARY KEY" if sqlite else "BIGSERIAL PRIMARY KEY"},
            kind TEXT NOT NULL,
            switch TEXT NOT NULL,
            port TEXT NOT NULL DEFAULT '',
            vlan INTEGER,
            mac TEXT,
            session_id TEXT,
            payload TEXT NOT NULL DEFAULT '{{}}',
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            next_attempt_at DOUBLE PRECISION NOT NULL,
            lease_owner TEXT,
            lease_expires_at DOUBLE PRECISION,
            decided_at DOUBLE PRECISION NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            claimed_at DOUBLE PRECISION,
            applied_at DOUBLE PRECISION,
            superseded_by {"INTEGER" if sqlite else "BIGINT"},
            last_error TEXT,
            result TEXT
        )""",
        f"CREATE INDEX {ine}enforcement_jobs_due ON enforcement_jobs (state, next_attempt_at)",
        f"CREATE INDEX {ine}enforcement_jobs_port ON enforcement_jobs (switch, port, state)",
    ]


def postures_apart(backend: str) -> list[str]:
    """A node's last whole posture (hundreds of kB with a package inventory) in a table of
    its own: every decision rewrites the node's row, and a row rewrite copies every column
    (SQLite rewrites the whole record with its overflow pages), so a fleet re-evaluation
    moving thousands of nodes was rewriting their inventories; reading posture_at also
    walked the posture's pages. A posture row changes only when a new posture arrives."""
    real = "REAL" if backend == "sqlite" else "DOUBLE PRECISION"
    return [
        f"""CREATE TABLE node_postures (
            mac TEXT PRIMARY KEY,
            posture_at {real} NOT NULL,
            posture TEXT NOT NULL
        )""",
        "INSERT INTO node_postures (mac, posture_at, posture) "
        "SELECT mac, COALESCE(posture_at, last_seen), posture FROM nodes "
        "WHERE posture IS NOT NULL",
        "ALTER TABLE nodes DROP COLUMN posture",
        "ALTER TABLE nodes DROP COLUMN posture_at",
    ]


# Migration 2's index on decisions (at) was never read: nothing in nac/ or the CLI asks for
# decisions by time (they are read by MAC, through decisions_mac, and counted), and ids
# follow the order decisions were committed in. Every decision paid for it (one more index
# entry, ~25 bytes a row on disk). A time-range audit query would want it back.
DROP_DECISIONS_AT = "DROP INDEX IF EXISTS decisions_at"

# When the decision a node row reflects was made: the node upsert keeps the row when an
# older decision commits after a newer one (two writers of a pool, two servers on one
# PostgreSQL; nac/store/sqlite.py). Not last_seen: accounting moves it. Existing rows get
# NULL, which loses to any decision: every decision after the migration is newer than the
# row's, and a NULL does not make a server whose clock lags lose to its own past.
NODE_DECIDED_AT = "ALTER TABLE nodes ADD COLUMN decided_at DOUBLE PRECISION"

# ---- SQLite ---------------------------------------------------------------------------
SQLITE_MIGRATIONS: list[Migration] = [
    Migration(1, "nodes, registrations, decisions, sessions", (
        """CREATE TABLE IF NOT EXISTS nodes (
            mac TEXT PRIMARY KEY,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            segment TEXT,
            vlan INTEGER,
            reason TEXT,
            registered_segment TEXT,
            identity TEXT,
            role TEXT,
            last_nas TEXT,
            last_port TEXT,
            posture TEXT,
            posture_at REAL
        )""",
        """CREATE TABLE IF NOT EXISTS node_changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            mac TEXT NOT NULL,
            registered_segment TEXT,
            at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            mac TEXT,
            identity TEXT,
            role TEXT,
            nas TEXT,
            nas_port TEXT,
            method TEXT,
            source TEXT NOT NULL,
            segment TEXT NOT NULL,
            vlan INTEGER NOT NULL,
            reasons TEXT NOT NULL,
            remediation TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS decisions_mac ON decisions (mac, id)",
        """CREATE TABLE IF NOT EXISTS sessions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            nas TEXT NOT NULL,
            acct_session_id TEXT NOT NULL,
            mac TEXT,
            user_name TEXT,
            nas_port INTEGER,
            nas_port_id TEXT,
            framed_ip TEXT,
            framed_ipv6_prefix TEXT,
            started_at REAL,
            updated_at REAL NOT NULL,
            stopped_at REAL,
            input_octets INTEGER,
            output_octets INTEGER,
            session_time INTEGER,
            terminate_cause INTEGER,
            UNIQUE (nas, acct_session_id)
        )""",
        "CREATE INDEX IF NOT EXISTS sessions_mac ON sessions (mac, updated_at)",
        "CREATE INDEX IF NOT EXISTS sessions_ip ON sessions (framed_ip, updated_at)",
    )),
    # The audit trail is read by time ("what was decided between ..."), not only by MAC.
    Migration(2, "decisions by time", (
        "CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at)",
    )),
    # IF NOT EXISTS: files from before this migration got the table from enforcers/queue.py.
    Migration(3, "enforcement jobs", tuple(jobs_table("sqlite"))),
    Migration(4, "postures apart from nodes", tuple(postures_apart("sqlite"))),
    Migration(5, "no index of decisions by time", (DROP_DECISIONS_AT,)),
    # How far each server's stream of batches is committed, written with them: the writer
    # process skips a batch resent after its predecessor committed it (nac/store/sqlite.py).
    Migration(6, "writer streams", (
        """CREATE TABLE IF NOT EXISTS store_streams (
            stream INTEGER PRIMARY KEY,
            committed INTEGER NOT NULL,
            at REAL NOT NULL
        )""",
    )),
    Migration(7, "node rows keep their latest decision", (NODE_DECIDED_AT,)),
]

# ---- PostgreSQL -----------------------------------------------------------------------
# Same tables and columns as SQLite (rows come back with the same keys). NAS-Port and the
# octet counters are unsigned 32-bit on the wire, hence BIGINT; reasons/remediation are JSONB
# so they come back decoded.
POSTGRES_MIGRATIONS: list[Migration] = [
    Migration(1, "nodes, registrations, decisions, sessions", (
        """CREATE TABLE nodes (
            mac TEXT PRIMARY KEY,
            first_seen DOUBLE PRECISION NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL,
            segment TEXT,
            vlan INTEGER,
            reason TEXT,
            registered_segment TEXT,
            identity TEXT,
            role TEXT,
            last_nas TEXT,
            last_port TEXT,
            posture TEXT,
            posture_at DOUBLE PRECISION
        )""",
        """CREATE TABLE node_changes (
            seq BIGSERIAL PRIMARY KEY,
            mac TEXT NOT NULL,
            registered_segment TEXT,
            at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE decisions (
            id BIGSERIAL PRIMARY KEY,
            at DOUBLE PRECISION NOT NULL,
            mac TEXT,
            identity TEXT,
            role TEXT,
            nas TEXT,
            nas_port TEXT,
            method TEXT,
            source TEXT NOT NULL,
            segment TEXT NOT NULL,
            vlan INTEGER NOT NULL,
            reasons JSONB NOT NULL,
            remediation JSONB NOT NULL
        )""",
        "CREATE INDEX decisions_mac ON decisions (mac, id)",
        """CREATE TABLE sessions (
            id BIGSERIAL PRIMARY KEY,
            nas TEXT NOT NULL,
            acct_session_id TEXT NOT NULL,
            mac TEXT,
            user_name TEXT,
            nas_port BIGINT,
            nas_port_id TEXT,
            framed_ip TEXT,
            framed_ipv6_prefix TEXT,
            started_at DOUBLE PRECISION,
            updated_at DOUBLE PRECISION NOT NULL,
            stopped_at DOUBLE PRECISION,
            input_octets BIGINT,
            output_octets BIGINT,
            session_time BIGINT,
            terminate_cause INTEGER,
            UNIQUE (nas, acct_session_id)
        )""",
        "CREATE INDEX sessions_mac ON sessions (mac, updated_at)",
        "CREATE INDEX sessions_ip ON sessions (framed_ip, updated_at)",
    )),
    Migration(2, "decisions by time", (
        "CREATE INDEX decisions_at ON decisions (at)",
    )),
    # The enforcement queue shared by every server (nac/store/pg_jobs.py).
    Migration(3, "enforcement jobs", tuple(jobs_table("postgresql"))),
    Migration(4, "postures apart from nodes", tuple(postures_apart("postgresql"))),
    # Every decision updates its node row; with room on the page PostgreSQL updates it in
    # place (HOT, no new index entries): its CPU per decision 16 -> 12-13 us, measured.
    # Only new pages get the room; an existing table has it after `VACUUM FULL nodes`.
    Migration(5, "node rows updated in place", (
        "ALTER TABLE nodes SET (fillfactor = 50)",
    )),
    Migration(6, "no index of decisions by time", (DROP_DECISIONS_AT,)),
    # One site policy for every server on the database (nac/store/pg_policy.py): each
    # `nac policy apply --store` adds a version (the history stays); each server says which
    # digest it enforces, so `nac policy apply --wait` can name the ones that did not follow.
    Migration(7, "site policy", (
        """CREATE TABLE site_policy (
            version BIGSERIAL PRIMARY KEY,
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            text TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            applied_by_host TEXT NOT NULL,
            applied_by_user TEXT NOT NULL
        )""",
        """CREATE TABLE site_policy_servers (
            server TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            state_dir TEXT NOT NULL,
            digest TEXT,
            version BIGINT,
            loaded_at TIMESTAMPTZ,
            seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
    )),
    Migration(8, "node rows keep their latest decision", (NODE_DECIDED_AT,)),
]

# One fixed key for pg_advisory_lock: "nac store migrate" runs one at a time per database.
MIGRATE_LOCK_KEY = 0x6E61635F6D6967  # "nac_mig"


def latest(backend: str) -> int:
    """The newest schema version this code knows for 'sqlite' or 'postgresql'."""
    migs = SQLITE_MIGRATIONS if backend == "sqlite" else POSTGRES_MIGRATIONS
    return migs[-1].version


# ---- SQLite runner ----------------------------------------------------------------------
def sqlite_version(conn: sqlite3.Connection) -> int:
    """0 for a new file (no schema_version table or no row)."""
    has = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not has:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate_sqlite(conn: sqlite3.Connection, target: int | None = None) -> tuple[int, int]:
    """Apply pending SQLite migrations up to ``target`` (default: all); (before, after)."""
    target = latest("sqlite") if target is None else target
    if conn.in_transaction:
        conn.commit()
    before = sqlite_version(conn)
    if before > latest("sqlite"):
        raise SchemaError(f"the store's schema is version {before}, newer than this code "
                          f"({latest('sqlite')}): upgrade nac")
    current = before
    for mig in SQLITE_MIGRATIONS:
        if mig.version <= current or mig.version > target:
            continue
        # IMMEDIATE: another process opening the same file waits, then sees the new version.
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = sqlite_version(conn)
            if mig.version <= current:
                conn.execute("COMMIT")
                continue
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for stmt in mig.statements:
                conn.execute(stmt)
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (mig.version,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        current = mig.version
    return before, current


def table_counts_sqlite(conn: sqlite3.Connection) -> dict[str, int]:
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {n: int(conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0]) for n in names}


# ---- PostgreSQL runner ------------------------------------------------------------------
def postgres_version(conn: Any) -> int:
    """Schema version of the database behind a psycopg connection; 0 when empty."""
    row = conn.execute("SELECT to_regclass('schema_version')").fetchone()
    if row is None or row[0] is None:
        if not conn.autocommit:
            conn.rollback()
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    if not conn.autocommit:
        conn.rollback()
    return int(row[0]) if row and row[0] is not None else 0


def migrate_postgres(conn: Any, target: int | None = None) -> tuple[int, int]:
    """Apply pending PostgreSQL migrations (psycopg connection); (before, after).

    Holds a session advisory lock so two concurrent `nac store migrate` runs take turns;
    each migration commits with its version bump.
    """
    target = latest("postgresql") if target is None else target
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
    try:
        before = postgres_version(conn)
        if before > latest("postgresql"):
            raise SchemaError(f"the store's schema is version {before}, newer than this "
                              f"code ({latest('postgresql')}): upgrade nac")
        current = before
        for mig in POSTGRES_MIGRATIONS:
            if mig.version <= current or mig.version > target:
                continue
            with conn.transaction():
                conn.execute("CREATE TABLE IF NOT EXISTS schema_version "
                             "(version INTEGER NOT NULL)")
                for stmt in mig.statements:
                    conn.execute(stmt)
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)",
                             (mig.version,))
            current = mig.version
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))
    return before, current


def check_postgres(conn: Any, url: str = "") -> int:
    """Raise SchemaError unless the database is at exactly the version this code needs."""
    have, want = postgres_version(conn), latest("postgresql")
    where = f" {url}" if url else ""
    if have < want:
        raise SchemaError(
            f"the PostgreSQL store{where} has schema version {have}, this nac needs {want}: "
            f"run `nac store migrate --store URL` once (from one host) before starting servers")
    if have > want:
        raise SchemaError(f"the PostgreSQL store{where} has schema version {have}, newer "
                          f"than this nac ({want}): upgrade nac on this host")
    return have


def table_counts_postgres(conn: Any) -> dict[str, int]:
    names = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")]
    out = {n: int(conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0]) for n in names}
    if not conn.autocommit:
        conn.rollback()
    return out
