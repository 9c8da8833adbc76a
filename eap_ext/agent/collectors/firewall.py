"""The `firewall` section: {"enabled", "backend", "rules"}.

Live host (root, not rooted): the loaded ruleset, `nft -j list ruleset` (rules counted from
the JSON), else `iptables-save` ("-A" lines). Non-root cannot read either: "unknown".
Under NAC_AGENT_ROOT nothing runs, so we can only read configuration: etc/nftables.conf
(rules counted from its text, enabled when nftables.service is wanted by a systemd target),
else etc/iptables/rules.v4 (iptables-persistent). A config file is what *would* be loaded
at boot, not proof of what is loaded; readers should treat it as such.
"""

from __future__ import annotations

import json
import logging
import os

from ..hostroot import HostRoot

log = logging.getLogger(__name__)

# Lines of an nft chain body that are not rules.
_NFT_NON_RULE = ("type ", "policy ", "chain ", "table ", "flush ", "include ", "define ", "}",
                 "#", "set ", "map ", "elements ", "counter ", "comment ")
_WANTS = ("etc/systemd/system/sysinit.target.wants/nftables.service",
          "etc/systemd/system/multi-user.target.wants/nftables.service")


def count_nft_json(text: str) -> int:
    data = json.loads(text)
    return sum(1 for item in data.get("nftables", []) if "rule" in item)


def count_nft_conf(text: str) -> int:
    """Rules in an nftables.conf: statements inside chain blocks."""
    rules = 0
    in_chain = 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("chain ") and line.endswith("{"):
            in_chain = 1
            continue
        if in_chain:
            if line == "}":
                in_chain = 0
            elif not line.startswith(_NFT_NON_RULE):
                rules += 1
    return rules


def count_iptables_save(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("-A "))


def _live(root: HostRoot) -> dict[str, object] | str:
    if os.geteuid() != 0:
        log.debug("not root: the loaded ruleset is unreadable")
        return "unknown"
    out = root.run(["nft", "-j", "list", "ruleset"])
    if out is not None:
        try:
            rules = count_nft_json(out)
        except (ValueError, AttributeError) as exc:
            log.debug("bad nft JSON: %s", exc)
        else:
            return {"enabled": rules > 0, "backend": "nftables", "rules": rules}
    out = root.run(["iptables-save"])
    if out is not None:
        rules = count_iptables_save(out)
        return {"enabled": rules > 0, "backend": "iptables", "rules": rules}
    return "unknown"


def _config(root: HostRoot) -> dict[str, object] | str:
    conf = root.read_text("etc/nftables.conf")
    if conf is not None:
        rules = count_nft_conf(conf)
        wanted = any(root.path(p).exists() for p in _WANTS)
        return {"enabled": wanted and rules > 0, "backend": "nftables", "rules": rules}
    saved = root.read_text("etc/iptables/rules.v4")
    if saved is not None:
        rules = count_iptables_save(saved)
        return {"enabled": rules > 0, "backend": "iptables", "rules": rules}
    return "unknown"


def collect(root: HostRoot) -> dict[str, object] | str:
    return _config(root) if root.rooted else _live(root)
