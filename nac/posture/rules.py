"""Policy rules: what each checks in the posture document and what a failure demands.

Every rule has the same outcome vocabulary (after strongSwan's IMV recommendations):
- "compliant": nothing to do;
- "minor": the host goes to the rule's `segment` (default: the policy's minor segment,
  quarantine), unless tolerated by `grace`;
- "major": the host goes to the isolated segment.
`on_fail` says which of minor/major a failure is; `on_unknown` what a posture section the
agent could not collect ("unknown") counts as. Rules compile their patterns and version
ranges once, when the policy is loaded, so that evaluating a posture is only lookups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Protocol

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
)

from nac.posture.durations import parse_duration
from nac.posture.purls import PurlMatcher, purl_pattern

Status = Literal["compliant", "minor", "major"]
Severity = Literal["unknown", "low", "medium", "high", "critical"]
COMPLIANT: Status = "compliant"
MINOR: Status = "minor"
MAJOR: Status = "major"
UNKNOWN = "unknown"  # the posture's marker for "the collector could not tell"

SEVERITY_RANK = {"unknown": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
# Feed trust levels of nac.prevention (a source's `trust`), least trusted first.
TRUST_RANK = {"community": 0, "vendor": 1, "local": 2}
Trust = Literal["community", "vendor", "local"]
Seconds = Annotated[int, BeforeValidator(parse_duration), Field(ge=0)]


class Memo(dict[Any, Any]):
    """A cache held by a model: equal to any other Memo, so it never affects model equality."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Memo)

    __hash__ = None  # type: ignore[assignment]


class FindingLike(Protocol):
    """What the vulnerabilities rule reads from nac.prevention.index.Finding."""

    advisory_id: str
    package: str
    installed: str
    fixed: str | None
    severity: str
    trust: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """One rule's verdict on one posture; `status` None means the section was "unknown"."""

    status: Status | None
    reason: str


class RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    description: str = ""
    on_fail: Literal["minor", "major"] = MAJOR
    on_unknown: Status = MINOR
    segment: str | None = None
    grace: Seconds | None = None
    remediation: str = ""
    # Whether check() reads the package list beyond "is it a list" (fleet re-evaluation keeps
    # only the compiled packages, so it must remember these rules' outcomes).
    reads_packages: ClassVar[bool] = False
    # Whether check() judges prevention-feed findings (fleet re-evaluation pre-filters them).
    uses_findings: ClassVar[bool] = False

    def default_remediation(self) -> str:
        return ""

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        raise NotImplementedError

    def _fail(self, reason: str) -> Outcome:
        return Outcome(self.on_fail, reason)


def _number(value: Any) -> bool:
    """A JSON number (bool is an int to Python, never a count or an age here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _section(posture: dict[str, Any], key: str) -> Any:
    """The section's value, or UNKNOWN when absent or marked unknown."""
    value = posture.get(key, UNKNOWN)
    return UNKNOWN if value is None else value


class OsMatch(BaseModel):
    """One allowed OS: every given field must match; `version` is a PEP 440 range."""

    model_config = ConfigDict(extra="forbid")

    family: str | None = None
    id: str | None = None
    version: str | None = None
    _spec: SpecifierSet | None = PrivateAttr(default=None)

    @field_validator("version")
    @classmethod
    def _valid_range(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                SpecifierSet(value)
            except InvalidSpecifier as exc:
                raise ValueError(f"not a version range like '>=12' or '>=11,<14': {exc}") from exc
        return value

    def model_post_init(self, __context: Any) -> None:
        self._spec = SpecifierSet(self.version) if self.version else None

    def matches(self, os_info: dict[str, Any]) -> bool:
        if self.family is not None and os_info.get("family") != self.family:
            return False
        if self.id is not None and os_info.get("id") != self.id:
            return False
        if self._spec is None:
            return True
        try:
            return Version(str(os_info.get("version_id", ""))) in self._spec
        except InvalidVersion:
            return False  # a version we cannot order is not in any range

    def describe(self) -> str:
        parts = [p for p in (self.family, self.id, self.version) if p]
        return " ".join(parts) or "any"


class OsRule(RuleBase):
    """The OS must match one `allow` entry (family, os-release id, version range)."""

    check_kind: Literal["os"] = Field("os", alias="check")
    allow: list[OsMatch] = Field(min_length=1)
    _verdicts: Memo = PrivateAttr(default_factory=Memo)

    def default_remediation(self) -> str:
        allowed = ", ".join(m.describe() for m in self.allow)
        return f"Upgrade to a supported operating system ({allowed})."

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        os_info = _section(posture, "os")
        if not isinstance(os_info, dict):
            return Outcome(None, "OS unknown")
        key = (os_info.get("family"), os_info.get("id"), os_info.get("version_id"))
        if all(isinstance(k, str) for k in key):
            allowed = self._verdicts.get(key)  # hosts share a handful of OS versions
            if allowed is None:
                if len(self._verdicts) > 10_000:
                    self._verdicts.clear()
                allowed = self._verdicts[key] = any(m.matches(os_info) for m in self.allow)
        else:  # a field missing or of the wrong type: no memo, usually no match
            allowed = any(m.matches(os_info) for m in self.allow)
        if allowed:
            return Outcome(COMPLIANT, "")
        shown = os_info.get("pretty_name") or f"{os_info.get('id')} {os_info.get('version_id')}"
        return self._fail(f"operating system {shown} is not allowed")


class SecuritySoftwareRule(RuleBase):
    """One of `any_of` (empty: any product) must run, signatures younger than the max age."""

    check_kind: Literal["security_software"] = Field("security_software", alias="check")
    any_of: list[str] = Field(default_factory=list)
    must_run: bool = True
    max_signature_age: Seconds | None = None

    def default_remediation(self) -> str:
        names = " or ".join(self.any_of) or "anti-malware software"
        return f"Install and start {names} and update its signatures."

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        products = _section(posture, "security_software")
        if not isinstance(products, list):
            return Outcome(None, "security software unknown")
        wanted = set(self.any_of)
        candidates = [
            p
            for p in products
            if isinstance(p, dict) and (not wanted or str(p.get("name")) in wanted)
        ]
        if not candidates:
            return self._fail(f"none of {', '.join(self.any_of) or 'any product'} installed")
        if self.must_run:
            candidates = [p for p in candidates if p.get("running")]
            if not candidates:
                return self._fail("security software installed but not running")
        if self.max_signature_age is None:
            return Outcome(COMPLIANT, "")
        max_hours = self.max_signature_age / 3600
        ages = [p.get("signature_age_hours") for p in candidates]
        known = [a for a in ages if _number(a)]
        if not known:
            return Outcome(None, "signature age unknown")
        if min(known) <= max_hours:
            return Outcome(COMPLIANT, "")
        return self._fail(f"signatures are {min(known):g} h old (at most {max_hours:g} h allowed)")


class FirewallRule(RuleBase):
    """The host firewall must be enabled (optionally one of the given backends)."""

    check_kind: Literal["firewall"] = Field("firewall", alias="check")
    backends: list[str] = Field(default_factory=list)

    def default_remediation(self) -> str:
        return "Enable the host firewall."

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        fw = _section(posture, "firewall")
        if not isinstance(fw, dict):
            return Outcome(None, "firewall state unknown")
        if not fw.get("enabled"):
            return self._fail("host firewall is off")
        if self.backends and fw.get("backend") not in self.backends:
            return self._fail(f"firewall backend {fw.get('backend')!r} is not allowed")
        return Outcome(COMPLIANT, "")


class ForwardingRule(RuleBase):
    """The host must not route between networks (draft 9.8): forwarding off, maybe no bridge."""

    check_kind: Literal["forwarding"] = Field("forwarding", alias="check")
    ipv4: bool = True
    ipv6: bool = True
    bridges: bool = False
    tunnels: bool = False  # VPN, tun/tap, GRE... (the agent's `forwarding.tunnels`)

    def default_remediation(self) -> str:
        return (
            "Turn off IP forwarding (sysctl net.ipv4.ip_forward=0 and "
            "net.ipv6.conf.all.forwarding=0) and stop routing or VPN software."
        )

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        fwd = _section(posture, "forwarding")
        if not isinstance(fwd, dict):
            return Outcome(None, "forwarding state unknown")
        on = []
        if self.ipv4 and fwd.get("ipv4") is not False:
            on.append("IPv4" if fwd.get("ipv4") else "IPv4 (unknown)")
        if self.ipv6 and fwd.get("ipv6") is not False:
            on.append("IPv6" if fwd.get("ipv6") else "IPv6 (unknown)")
        if self.bridges and fwd.get("bridges"):
            bridges = fwd["bridges"]
            shown = ", ".join(map(str, bridges)) if isinstance(bridges, list) else str(bridges)
            on.append("bridges " + shown)
        if self.tunnels and fwd.get("tunnels"):
            found = fwd["tunnels"]
            shown = ", ".join(map(str, found)) if isinstance(found, list) else str(found)
            on.append("tunnels " + shown)
        if not on:
            return Outcome(COMPLIANT, "")
        if all("unknown" in item for item in on):
            return Outcome(None, "forwarding state unknown")
        return self._fail("forwarding on: " + ", ".join(on))


PurlPattern = Annotated[str, AfterValidator(purl_pattern)]


class SoftwareRule(RuleBase):
    """Allow and deny lists of installed software by purl pattern (shell-style * ? [...]).

    A pattern without '@' matches any version ("pkg:deb/*/telnetd"); one with '@' is matched
    against the whole purl. A denied package fails the rule (`on_fail`); with an `allow` list,
    any package it does not match is unknown software and gets the `unknown` status.
    """

    check_kind: Literal["software"] = Field("software", alias="check")
    deny: list[PurlPattern] = Field(default_factory=list)
    allow: list[PurlPattern] = Field(default_factory=list)
    unknown: Status = COMPLIANT
    _matcher: PurlMatcher | None = PrivateAttr(default=None)
    reads_packages: ClassVar[bool] = True

    def model_post_init(self, __context: Any) -> None:
        self._matcher = PurlMatcher(self.deny, self.allow)

    def default_remediation(self) -> str:
        return "Remove the software the site does not allow."

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        packages = _section(posture, "packages")
        if not isinstance(packages, list):
            return Outcome(None, "installed software unknown")
        assert self._matcher is not None
        os_info = posture.get("os")
        namespace = str(os_info.get("id") or "") if isinstance(os_info, dict) else ""
        denied, unknown = self._matcher.scan(packages, namespace)
        if denied:
            return self._fail("denied software installed: " + _some(denied))
        if unknown and self.unknown != COMPLIANT:
            return Outcome(self.unknown, "software not on the allow list: " + _some(unknown))
        return Outcome(COMPLIANT, "")


def _some(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


class VulnerabilitiesRule(RuleBase):
    """No installed package may have an advisory at or above `min_severity` (prevention feeds).

    Findings from feeds less trusted than `min_trust` (community < vendor < local) are
    ignored, as are the advisories in `ignore` (IDs or aliases: site-accepted risks). A
    severity the feed did not give counts as `unknown_severity`.
    """

    check_kind: Literal["vulnerabilities"] = Field("vulnerabilities", alias="check")
    min_severity: Literal["low", "medium", "high", "critical"] = "high"
    unknown_severity: Severity = "medium"
    min_trust: Trust = "community"
    ignore: list[str] = Field(default_factory=list)
    _min_rank: int = PrivateAttr(default=0)
    _min_trust: int = PrivateAttr(default=0)
    _ignore: frozenset[str] = PrivateAttr(default=frozenset())
    _relevant: Memo = PrivateAttr(default_factory=Memo)
    uses_findings: ClassVar[bool] = True

    def model_post_init(self, __context: Any) -> None:
        self._min_rank = SEVERITY_RANK[self.min_severity]
        self._min_trust = TRUST_RANK[self.min_trust]
        self._ignore = frozenset(self.ignore)

    def default_remediation(self) -> str:
        return "Install the security updates for the listed packages (apt upgrade / dnf upgrade)."

    def relevant(self, finding: FindingLike) -> bool:
        severity = finding.severity if finding.severity in SEVERITY_RANK else UNKNOWN
        if severity == UNKNOWN:
            severity = self.unknown_severity
        if SEVERITY_RANK[severity] < self._min_rank:
            return False
        if TRUST_RANK.get(finding.trust, -1) < self._min_trust:
            return False  # a trust level we do not know counts as below community
        if self._ignore and (
            finding.advisory_id in self._ignore
            or not self._ignore.isdisjoint(getattr(finding, "aliases", ()))
        ):
            return False
        return True

    def _severity_text(self, finding: FindingLike) -> str:
        if finding.severity in SEVERITY_RANK and finding.severity != UNKNOWN:
            return finding.severity
        return f"severity unknown, counted as {self.unknown_severity}"

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        if not isinstance(_section(posture, "packages"), list):
            return Outcome(None, "installed software unknown")
        if findings is None:
            return Outcome(COMPLIANT, "not checked: no prevention feeds loaded")
        # A fleet shares its findings (one object per advisory and package version): judge
        # each once. The memo holds the finding itself, so its id() is not reused meanwhile.
        memo = self._relevant
        if len(memo) > 500_000:
            memo.clear()
        hits = []
        for f in findings:
            known = memo.get(id(f))
            if known is None or known[0] is not f:
                known = memo[id(f)] = (f, self.relevant(f))
            if known[1]:
                hits.append(f)
        if not hits:
            return Outcome(COMPLIANT, "")
        # One order whichever way the findings were gathered (posture or compiled posture).
        hits.sort(key=lambda f: (f.package, f.installed, f.advisory_id))
        described = [
            f"{f.package} {f.installed} ({f.advisory_id}, {self._severity_text(f)}"
            + (f", fixed in {f.fixed})" if f.fixed else ", no fix yet)")
            for f in hits
        ]
        return self._fail(f"{len(hits)} vulnerable package(s): " + _some(described))


class PendingUpdatesRule(RuleBase):
    """At most `max_security` pending security updates (and `max_total` updates, if given)."""

    check_kind: Literal["pending_updates"] = Field("pending_updates", alias="check")
    max_security: int = Field(default=0, ge=0)
    max_total: int | None = Field(default=None, ge=0)

    def default_remediation(self) -> str:
        return "Install the pending updates."

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        pending = _section(posture, "pending_updates")
        if not isinstance(pending, dict) or not _number(pending.get("security")):
            return Outcome(None, "pending updates unknown")
        security = pending["security"]
        if security > self.max_security:
            return self._fail(
                f"{security} pending security update(s) (at most {self.max_security} allowed)"
            )
        total = pending.get("total")
        if self.max_total is not None and _number(total) and total > self.max_total:
            return self._fail(f"{total} pending update(s) (at most {self.max_total} allowed)")
        return Outcome(COMPLIANT, "")


class DefaultPasswordRule(RuleBase):
    """The host must not keep a factory-default password (posture `factory_default_password`)."""

    check_kind: Literal["default_password"] = Field("default_password", alias="check")

    def default_remediation(self) -> str:
        return "Change the factory-default password."

    def check(self, posture: dict[str, Any], findings: Sequence[FindingLike] | None) -> Outcome:
        value = posture.get("factory_default_password", UNKNOWN)
        if not isinstance(value, bool):
            return Outcome(None, "default password state unknown")
        return self._fail("factory-default password in use") if value else Outcome(COMPLIANT, "")


RULE_TYPES: tuple[type[RuleBase], ...] = (
    OsRule,
    SecuritySoftwareRule,
    FirewallRule,
    ForwardingRule,
    SoftwareRule,
    VulnerabilitiesRule,
    PendingUpdatesRule,
    DefaultPasswordRule,
)
RULE_KINDS = frozenset(
    t.model_fields["check_kind"].default
    for t in RULE_TYPES  # type: ignore[misc]
)

Rule = Annotated[
    OsRule
    | SecuritySoftwareRule
    | FirewallRule
    | ForwardingRule
    | SoftwareRule
    | VulnerabilitiesRule
    | PendingUpdatesRule
    | DefaultPasswordRule,
    Field(discriminator="check_kind"),
]
