"""The site policy file (draft 8.2.1): segments, roles and posture rules, in TOML.

`load_policy(path)` validates the whole file and raises PolicyError listing every problem as
`FILE: key.path: reason`. Every key is documented in nac/posture/POLICY.md; the sample
(`Policy.sample()`, nac/posture/sample_policy.toml) is the starting point `nac policy show`
prints.
"""

from __future__ import annotations

import hashlib
import os
import threading
import tomllib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nac.posture.digest import canonical_json
from nac.posture.rules import RULE_KINDS, Rule, RuleBase, VulnerabilitiesRule
from nac.posture.segments import ISOLATED, QUARANTINE, Segment

SAMPLE_POLICY_FILE = "sample_policy.toml"
ACTIVE_POLICY_FILE = "policy.toml"  # in the state directory; `nac policy apply` writes it
SCHEMA_VERSION = 1


class PolicyError(ValueError):
    """A policy file that cannot be used; `errors` holds (key path, reason) pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]) -> None:
        self.source = source
        self.errors = errors
        lines = (f"{source}: {key or '(top level)'}: {why}" for key, why in errors)
        super().__init__("\n".join(lines))


class Policy(BaseModel):
    """A validated site policy. Build it with load_policy / Policy.from_dict / Policy.sample."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    version: int = Field(default=SCHEMA_VERSION, ge=SCHEMA_VERSION, le=SCHEMA_VERSION)
    name: str = "site"
    require_posture: bool = True
    quarantine_segment: str = QUARANTINE
    isolated_segment: str = ISOLATED
    minor_segment: str = QUARANTINE
    default_role: str = "default"
    roles: dict[str, str] = Field(default_factory=dict)
    segments: dict[str, Segment]
    rules: list[Rule] = Field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<policy>") -> Policy:
        """Validate parsed TOML; PolicyError names `source` and each offending key."""
        if isinstance(data, dict):
            data = _with_segment_names(data)
        try:
            policy = cls.model_validate(data)
        except ValidationError as exc:
            raise PolicyError(source, [_describe(err) for err in exc.errors()]) from None
        problems = policy._reference_errors()
        if problems:
            raise PolicyError(source, problems)
        return policy

    @classmethod
    def sample(cls) -> Policy:
        """The shipped sample policy (nac/posture/sample_policy.toml)."""
        return cls.from_dict(tomllib.loads(sample_policy_text()), SAMPLE_POLICY_FILE)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Policy:
        """A copy whose derived values (digest, top segment, ...) follow the updated fields."""
        copy = super().model_copy(update=update, deep=deep)
        for name in _DERIVED:
            copy.__dict__.pop(name, None)
        return copy

    # --- derived, computed once per loaded policy ---------------------------------------

    @cached_property
    def digest(self) -> str:
        """Hex SHA-256 of the policy's canonical JSON: certificates bind to it."""
        return hashlib.sha256(canonical_json(self.to_data())).hexdigest()

    @cached_property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(_rule_name(i, r) for i, r in enumerate(self.rules))

    @cached_property
    def top_segment(self) -> Segment:
        """The highest-level segment: where a fully compliant host goes."""
        return max(self.segments.values(), key=lambda s: s.level)

    @cached_property
    def uses_feeds(self) -> bool:
        """Whether any rule reads prevention-feed findings (so evaluation asks the index)."""
        return any(isinstance(r, VulnerabilitiesRule) for r in self.rules)

    def role_cap(self, role: str | None) -> Segment:
        """The highest segment `role` may reach; roles not listed get the default role's."""
        target = self.roles.get(role or self.default_role)
        if target is None:
            target = self.roles.get(self.default_role)
        if target is None:  # no roles configured: nothing caps
            return max(self.segments.values(), key=lambda s: s.level)
        return self.segments[target]

    def to_data(self) -> dict[str, Any]:
        """Plain data in file form (segment names are the table keys)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["segments"] = {
            name: {k: v for k, v in _drop_empty(seg).items() if k != "name"}
            for name, seg in data["segments"].items()
        }
        data["rules"] = [_drop_empty(r) for r in data["rules"]]
        return data

    def to_toml(self) -> str:
        """The policy as TOML that load_policy reads back to an equal Policy."""
        return tomli_w.dumps(self.to_data())

    def _reference_errors(self) -> list[tuple[str, str]]:
        """Cross-key checks pydantic cannot see: names that must exist, unique names."""
        errors: list[tuple[str, str]] = []
        known = sorted(self.segments)

        def need(key: str, name: str | None) -> None:
            if name is not None and name not in self.segments:
                errors.append((key, f"unknown segment {name!r} (defined: {', '.join(known)})"))

        for key in ("quarantine_segment", "isolated_segment", "minor_segment"):
            need(key, getattr(self, key))
        for role, target in self.roles.items():
            need(f"roles.{role}", target)
        if self.roles and self.default_role not in self.roles:
            errors.append(("default_role", f"role {self.default_role!r} is not in [roles]"))
        seen: dict[str, int] = {}
        for i, rule in enumerate(self.rules):
            need(f"rules[{i}].segment", rule.segment)
            name = _rule_name(i, rule)
            if name in seen:
                errors.append(
                    (f"rules[{i}].name", f"{name!r} is also rules[{seen[name]}]; names must differ")
                )
            seen[name] = i
        levels: dict[int, str] = {}
        for name, seg in self.segments.items():
            if seg.level in levels:
                errors.append(
                    (f"segments.{name}.level", f"same level as segment {levels[seg.level]!r}")
                )
            levels[seg.level] = name
        return errors


# cached_property values of Policy; a copy with other fields must compute them anew.
_DERIVED = ("digest", "rule_names", "top_segment", "uses_feeds")


def load_policy(path: Path | str) -> Policy:
    """Read and validate a policy file; PolicyError names the file, the key and the reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(str(path), [("", f"cannot read: {exc.strerror or exc}")]) from None
    return loads_policy(text, str(path))


def loads_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, [("", f"not valid TOML: {exc}")]) from None
    return Policy.from_dict(data, source)


def active_policy_path(state_dir: Path) -> Path | None:
    """STATE/policy.toml if an administrator installed one, else None (the sample applies)."""
    path = Path(state_dir) / ACTIVE_POLICY_FILE
    return path if path.is_file() else None


def install_policy_text(state_dir: Path, data: bytes,
                        force: bool = True) -> tuple[Path, bool]:
    """Write `data` (a validated policy) as STATE/policy.toml, atomically: a server polling
    the file reads the old one or the new one, never half of one. Returns (path, written).
    Unless forced (`nac policy apply` always writes: servers reload), a file that already
    holds these bytes is left alone: each worker's site policy thread installs the same
    version, and a new mtime would make every worker reload it again."""
    state_dir = Path(state_dir)
    target = state_dir / ACTIVE_POLICY_FILE
    try:
        if not force and target.read_bytes() == data:
            return target, False
    except OSError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    # Per process and thread: two writers (a CLI, a server's site policy thread) never
    # share a temporary file.
    tmp = state_dir / f".{ACTIVE_POLICY_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target, True


def load_active_policy(state_dir: Path) -> Policy:
    """The policy the server enforces: STATE/policy.toml, or the embedded sample."""
    path = active_policy_path(state_dir)
    return load_policy(path) if path is not None else Policy.sample()


def sample_policy_text() -> str:
    return resources.files("nac.posture").joinpath(SAMPLE_POLICY_FILE).read_text("utf-8")


def _rule_name(index: int, rule: RuleBase) -> str:
    return rule.name or f"{rule.check_kind}"  # type: ignore[attr-defined]


def _with_segment_names(data: dict[str, Any]) -> dict[str, Any]:
    """Segment tables are keyed by name; Segment wants the name inside."""
    segments = data.get("segments")
    if not isinstance(segments, dict):
        return data
    named = {
        key: ({"name": key, **value} if isinstance(value, dict) else value)
        for key, value in segments.items()
    }
    return {**data, "segments": named}


def _drop_empty(table: dict[str, Any]) -> dict[str, Any]:
    # Empty strings, lists and tables are the defaults; leaving them out keeps the TOML short.
    first = {"check": table["check"]} if "check" in table else {}
    return first | {k: v for k, v in table.items() if v not in ("", [], {}) and k not in first}


def _describe(err: Any) -> tuple[str, str]:
    """A pydantic error as (key path in the file's terms, reason)."""
    loc = list(err["loc"])
    # Discriminated unions insert the rule kind after the index: rules[2].os.allow -> drop it.
    path: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path.append(f"[{part}]")
        elif i > 0 and isinstance(loc[i - 1], int) and part in RULE_KINDS:
            continue
        else:
            path.append(("." if path else "") + str(part))
    key = "".join(path)
    kind = err["type"]
    if kind == "extra_forbidden":
        return key, "unknown key (see nac/posture/POLICY.md for the keys)"
    if kind == "missing":
        return key, "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        kinds = ", ".join(sorted(RULE_KINDS))
        got = err.get("ctx", {}).get("tag")
        what = f"unknown check {got!r}" if got else "missing `check`"
        return f"{key}.check", f"{what} (one of: {kinds})"
    return key, err["msg"].removeprefix("Value error, ")
