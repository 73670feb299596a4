"""Version pins live in pyproject.toml; every other place that names them agrees (or reads them from there)."""

from __future__ import annotations

import re
import tomllib

from simflib.book import ROOT

PINS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["simflib"]["pins"]
ALL = [PINS["torch"], *PINS["embedded"], *PINS["peers"]]


def _pinned(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"([A-Za-z0-9][A-Za-z0-9_.-]*)==([0-9][0-9A-Za-z.+-]*)", text)}


def test_environment_yml_and_readme_agree_with_the_pins():
    expected = _pinned(" ".join(ALL))
    for name in ("environment.yml", "README.md"):
        found = _pinned((ROOT / name).read_text())
        wrong = {k: v for k, v in found.items() if k in expected and expected[k] != v}
        assert not wrong, f"{name} pins {wrong}; pyproject.toml says {[expected[k] for k in wrong]}"
    environment = _pinned((ROOT / "environment.yml").read_text())
    assert set(expected) <= set(environment), f"environment.yml lacks {set(expected) - set(environment)}"


def test_makefile_and_postbuild_read_the_pins_instead_of_repeating_them():
    for name in ("Makefile", "postBuild"):
        repeated = set(_pinned((ROOT / name).read_text())) & set(_pinned(" ".join(ALL)))
        assert not repeated, f"{name} repeats the pins of {sorted(repeated)}: read them from pyproject.toml"
