"""Each ecosystem's own version order and release keys (nac.prevention.ecosystems)."""

from __future__ import annotations

import pytest

from nac.prevention.ecosystems import (
    host_release,
    normalize_name,
    parse_version,
    split_ecosystem,
)


def lt(base: str, a: str, b: str) -> bool:
    return bool(parse_version(base, a) < parse_version(base, b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("2.0", "1:1.0"),  # an epoch outranks any upstream version
        ("1.0~rc1", "1.0"),  # a tilde sorts before the release
        ("3.0.11-1~deb12u2", "3.0.11-1"),  # stable update sorts before the unstable upload
        ("3.0.11-1~deb12u1", "3.0.11-1~deb12u2"),
        ("3.0.9-1", "3.0.11-1~deb12u2"),  # numeric, not lexical
        ("1.0-1", "1.0-1+b1"),  # binNMU
    ],
)
def test_dpkg_order(a: str, b: str) -> None:
    assert lt("Debian", a, b)
    assert not lt("Debian", b, a)


def test_rpm_apk_pypi_semver_order() -> None:
    assert lt("Red Hat", "3.0.7-25.el9", "1:3.0.7-24.el9")  # epoch
    assert lt("Rocky Linux", "3.0.7-9.el9", "3.0.7-24.el9")
    assert lt("Alpine", "3.1.4-r0", "3.1.4-r1")
    assert lt("Alpine", "3.1.4_rc1-r0", "3.1.4-r0")
    assert lt("PyPI", "2.31.0rc1", "2.31.0")
    assert lt("PyPI", "2.9", "2.31.0")
    assert lt("npm", "4.17.21-beta.1", "4.17.21")
    assert lt("npm", "4.9.0", "4.17.0")


@pytest.mark.parametrize(
    ("eco", "want"),
    [
        ("Debian:12", ("Debian", "12")),
        ("Debian", ("Debian", "")),
        ("Ubuntu:22.04:LTS", ("Ubuntu", "22.04")),
        ("Ubuntu:Pro:18.04:LTS", ("Ubuntu", "18.04")),
        ("Alpine:v3.18", ("Alpine", "3.18")),
        ("Red Hat:enterprise_linux:9::appstream", ("Red Hat", "9")),
        ("Rocky Linux:9", ("Rocky Linux", "9")),
        ("AlmaLinux:8", ("AlmaLinux", "8")),
        ("PyPI", ("PyPI", "")),
        ("npm", ("npm", "")),
    ],
)
def test_split_ecosystem(eco: str, want: tuple[str, str]) -> None:
    assert split_ecosystem(eco) == want


def test_host_release_from_os_release() -> None:
    assert host_release({"id": "debian", "version_id": "12"}) == ("Debian", "12")
    assert host_release({"id": "alpine", "version_id": "3.18.4"}) == ("Alpine", "3.18")
    assert host_release({"id": "rocky", "version_id": "9.3"}) == ("Rocky Linux", "9")
    assert host_release({"id": "windows"}) is None
    assert host_release("unknown") is None


def test_pypi_names_pep503() -> None:
    assert normalize_name("PyPI", "Typing_Extensions") == "typing-extensions"
    assert normalize_name("npm", "@Scope/Pkg") == "@Scope/Pkg"
