"""Prototype shim: the netns helpers live in tests/lab until they move here."""

from tests.lab.netns import IP, LabHost, LabSwitch, create_switch, run  # noqa: F401
