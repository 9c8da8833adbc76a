"""Human-readable renderings for `nac-agent collect` and `nac-agent status`."""

from __future__ import annotations

from collections import Counter
from typing import Any


def _known(value: Any) -> bool:
    return value != "unknown"


def posture_summary(doc: dict[str, Any]) -> str:
    lines = [f"Posture collected at {doc.get('collected_at')}"]
    os_ = doc.get("os")
    if isinstance(os_, dict):
        lines.append(f"  OS:               {os_.get('pretty_name') or os_.get('id')} "
                     f"(kernel {os_.get('kernel') or '?'}, {os_.get('arch') or '?'})")
    else:
        lines.append("  OS:               unknown")
    pkgs = doc.get("packages")
    if isinstance(pkgs, list):
        per = Counter(p.get("manager") for p in pkgs)
        detail = ", ".join(f"{n} {m}" for m, n in sorted(per.items())) or "none"
        lines.append(f"  Packages:         {len(pkgs)} ({detail})")
    else:
        lines.append("  Packages:         unknown")
    upd = doc.get("pending_updates")
    lines.append("  Pending updates:  " + (
        f"{upd['total']} ({upd['security']} security)" if isinstance(upd, dict) else "unknown"))
    fwd = doc.get("forwarding")
    if isinstance(fwd, dict):
        on = [k for k in ("ipv4", "ipv6") if fwd.get(k)]
        text = ("enabled for " + ", ".join(on)) if on else "disabled"
        if fwd.get("bridges"):
            text += "; bridges: " + ", ".join(fwd["bridges"])
        lines.append(f"  Forwarding:       {text}")
    else:
        lines.append("  Forwarding:       unknown")
    fw = doc.get("firewall")
    lines.append("  Firewall:         " + (
        f"{'enabled' if fw.get('enabled') else 'disabled'} ({fw.get('backend')}, "
        f"{fw.get('rules')} rules)" if isinstance(fw, dict) else "unknown"))
    lst = doc.get("listening")
    if isinstance(lst, list):
        ports = ", ".join(f"{s['proto']}/{s['address']}:{s['port']}" for s in lst[:12])
        more = f" (+{len(lst) - 12} more)" if len(lst) > 12 else ""
        lines.append(f"  Listening:        {len(lst)} {ports}{more}".rstrip())
    else:
        lines.append("  Listening:        unknown")
    sec = doc.get("security_software")
    if isinstance(sec, list):
        items = [f"{s['name']} ({'running' if s.get('running') else 'not running'}, "
                 f"signatures {s.get('signature_age_hours')} h old)" for s in sec]
        lines.append("  Security software: " + (", ".join(items) or "none found"))
    else:
        lines.append("  Security software: unknown")
    ifs = doc.get("interfaces")
    if isinstance(ifs, list):
        for i in ifs:
            addrs = ", ".join([*i.get("ipv4", []), *i.get("ipv6", [])]) or "no address"
            lines.append(f"  Interface {i['name']}: {i.get('mac')} {addrs}")
    else:
        lines.append("  Interfaces:       unknown")
    lines.append(f"  Default password: {doc.get('factory_default_password')}")
    lines.append("  Certificate:      " + ("present" if doc.get("certificate") else "none"))
    return "\n".join(lines)


def status_summary(data: dict[str, Any]) -> str:
    per = data.get("by_interface")
    if isinstance(per, dict) and per:
        # Draft 5.4.1: one result per inspected interface.
        return "\n".join(_one_status(entry, f" on {name}")
                         for name, entry in sorted(per.items()))
    return _one_status(data, "")


def _one_status(data: dict[str, Any], where: str) -> str:
    lines = [f"Last assessment{where} (updated {data.get('updated_at', '?')})"]
    for key, label in (("assessment", "Assessment"), ("recommendation", "Recommendation"),
                       ("segment", "Segment")):
        lines.append(f"  {label + ':':16}{data.get(key, '-')}")
    remediation = data.get("remediation") or []
    if remediation:
        lines.append("  Remediation:")
        lines += [f"    - {item}" for item in remediation]
    else:
        lines.append("  Remediation:    none")
    lines.append("  Certificate:    " + ("present" if data.get("certificate") else "none"))
    return "\n".join(lines)
