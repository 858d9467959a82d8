"""constraints.txt (the exact set tools/setup.sh installs) must agree with pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"constraints.txt: {line!r} is not an exact pin (NAME==VERSION)"
        key = canonicalize_name(name)
        assert key not in pins, f"constraints.txt pins {name} twice"
        pins[key] = version
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return [Requirement(spec) for spec in specs]


def test_every_dependency_is_pinned_inside_its_declared_range():
    pins = pinned_versions()
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        if name == "torch":  # pinned exactly in its extra (the CPU build), kept out of the file
            assert name not in pins
            continue
        assert name in pins, f"{requirement.name} is a dependency but constraints.txt omits it"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside {requirement}"
        )
