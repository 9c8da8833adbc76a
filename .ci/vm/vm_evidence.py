"""pytest plugin the VM loads (-p vm_evidence): for every lab switch a test builds, record
the mode it chose and what the kernel says of its bridge, one JSON line each in
$NAC_VM_EVIDENCE. tests/test_vlan_filtering_vm.py reads them to prove that the inner
tests ran on a real VLAN-filtering bridge (vlan_filtering=1), not the fallback.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


def _record(sw: Any) -> None:
    from nac.lab import netns

    entry: dict[str, Any] = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                             "ns": sw.ns, "mode": sw.mode}
    if sw.mode == "filtering":
        link = json.loads(netns.run([netns.IP, "-d", "-j", "link", "show", "dev", sw.bridge],
                                    ns=sw.ns).stdout)[0]
        entry["vlan_filtering"] = link["linkinfo"]["info_data"].get("vlan_filtering")
    with open(os.environ["NAC_VM_EVIDENCE"], "a") as f:
        f.write(json.dumps(entry) + "\n")


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("NAC_VM_EVIDENCE"):
        return
    from nac.lab import netns, topology
    from tests.lab import fixtures

    real = netns.create_switch

    def create_switch(*args: Any, **kwargs: Any) -> Any:
        sw = real(*args, **kwargs)
        _record(sw)
        return sw

    # Every module that imported the name holds its own reference.
    for mod in (netns, topology, fixtures):
        mod.create_switch = create_switch  # type: ignore[attr-defined]
