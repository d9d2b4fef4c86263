"""The documentation: the study-file reference is generated from the pydantic models (every key documented,
none stale), the README's links lead to files that exist, and the sections other branches edit were moved
whole."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from search.study.study_file import StudyFile

ROOT = Path(__file__).resolve().parents[1]


def _hook():
    spec = importlib.util.spec_from_file_location("study_reference", ROOT / "docs" / "_hooks" / "study_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_study_file_reference_lists_every_key_of_the_models():
    hook = _hook()
    page = hook.render()
    for model, prefix in hook.SECTIONS:
        assert f"## `{prefix or 'top level'}`" in page
        for name, field in model.model_fields.items():
            if not field.exclude:
                assert re.search(rf"^\| `{re.escape(name)}` \|", page, flags=re.M), f"{prefix}.{name} missing"
    assert "| `trials_per_week` | integer | `10` | >= 0, <= 100000 |" in page  # type, default and limit from the model
    assert "## `plan: default`" in page and "kind: confirm" in page


def test_a_key_without_a_meaning_stops_the_build(monkeypatch):
    hook = _hook()
    monkeypatch.delitem(hook.MEANING, "data.drop")
    try:
        hook.render()
    except KeyError as exc:
        assert "data.drop" in str(exc)
    else:
        raise AssertionError("render() accepted a key without a meaning")
    assert "base_dir" in StudyFile.model_fields  # excluded from the page: set by the loader, not the user


def test_readme_links_exist_and_the_readme_is_short():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert links
    for link in links:
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link
    assert len(readme.splitlines()) < 80


def test_sections_moved_verbatim_keep_their_guarantees():
    # the two pages other branches edit: moved as whole sections (their first and last sentences)
    what = (ROOT / "docs/operations/what-happens-when.md").read_text(encoding="utf-8")
    assert what.startswith("# What happens when…\n\nEvery guarantee below has a test:")
    trust = (ROOT / "docs/operations/trust.md").read_text(encoding="utf-8")
    assert "**Trust.** Nothing in a model directory is a pickle." in trust
    assert trust.rstrip().endswith("ignored without a warning.")
