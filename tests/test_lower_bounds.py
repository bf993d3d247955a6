"""The declared lower bounds are the tested ones: ``.ci/lower-bounds.txt`` (what CI's lower-bound job installs) pins
every direct dependency of ``pyproject.toml`` at exactly its ``>=`` bound, and its Python at ``requires-python``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / ".ci" / "lower-bounds.txt"


def declared() -> dict[str, str]:
    """Each direct dependency (and the ``evaluate`` extra) -> its ``>=`` bound in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds: dict[str, str] = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["evaluate"]]:
        requirement = Requirement(line)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert len(lower) == 1, f"pyproject.toml: {line!r} needs exactly one >= bound (the tested lowest release)"
        bounds[canonicalize_name(requirement.name)] = lower[0]
    bounds["python"] = project["requires-python"].removeprefix(">=")
    return bounds


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in PINS.read_text().splitlines():
        if match := re.fullmatch(r"# python: (\S+)", line.strip()):
            pins["python"] = match.group(1)
        elif line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{PINS.name}: {line!r} must pin one release (==)"
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def same_release(a: str, b: str) -> bool:
    """``2.6`` and ``2.6.0`` are the same release."""
    from packaging.version import Version

    return Version(a) == Version(b)


def test_the_pins_are_the_declared_lower_bounds():
    bounds, pins = declared(), pinned()
    assert bounds.keys() == pins.keys(), (
        f"pyproject.toml and {PINS.name} name different packages: only declared {sorted(bounds.keys() - pins.keys())},"
        f" only pinned {sorted(pins.keys() - bounds.keys())}"
    )
    differ = {name: (bounds[name], pins[name]) for name in bounds if not same_release(bounds[name], pins[name])}
    assert not differ, f"declared >= bound vs pinned == release differ (name: (declared, pinned)): {differ}"


def test_the_dev_extra_does_not_ask_for_less_than_the_bounds():
    """The dev extra may ask for a newer release where a test needs one (timm 1.0.31: the reference multi-label
    Mixup), never for an older one than the package declares."""
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = declared()
    for line in project["optional-dependencies"]["dev"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in bounds:
            lower = [s.version for s in requirement.specifier if s.operator == ">="]
            assert len(lower) == 1 and Version(lower[0]) >= Version(bounds[name]), (
                f"dev extra: {line!r} allows less than the declared bound >={bounds[name]}"
            )
