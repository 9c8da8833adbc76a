"""Prototype shim: the daemon helpers live in tests/lab until they move here."""

from tests.lab.daemons import start_snmpd, start_sshd  # noqa: F401
