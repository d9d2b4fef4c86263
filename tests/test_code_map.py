"""The code map (docs/code-map.md) names every module under objectives/ and search/ (a package by its folder,
``search/run/``), so that it cannot fall behind the code; and it names nothing that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "code-map.md"


def modules(root: Path = ROOT) -> list[str]:
    """Every module as the map names it: ``search/run/worker.py``; a package's ``__init__.py`` as its folder."""
    found = []
    for path in sorted(p for package in ("objectives", "search") for p in (root / package).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        found.append(rel.removesuffix("__init__.py") if path.name == "__init__.py" else rel)
    return found


def test_the_code_map_names_every_module():
    text = MAP.read_text(encoding="utf-8")
    missing = [m for m in modules() if f"`{m}`" not in text]
    assert missing == [], f"add a line for each of these to {MAP.relative_to(ROOT)}: {missing}"


def test_the_code_map_names_only_modules_that_exist():
    named = set(re.findall(r"`((?:objectives|search)/[\w/]*(?:\.py|/))`", MAP.read_text(encoding="utf-8")))
    assert sorted(named - set(modules())) == []
