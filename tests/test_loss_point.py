"""A loss travels typed: a LossConfig, or a RefusedLoss with the values LossConfig refused and its reason
(search/study/loss_point.py); string-keyed loss dicts only where a loss is flat by nature (storage, tables,
Optuna's params)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from objectives.config import LossConfig
from search.study.loss_point import InvalidLoss, RefusedLoss, checked, config_key, loss_point, loss_values, with_values

ROOT = Path(__file__).resolve().parents[1]
# the one module that turns values by name into a point and back
BOUNDARY = {"search/study/loss_point.py"}
LOSS_NAMES = {"loss", "losses", "base", "point", "reference", "drawn", "changes"}
# flat by nature: the loss attr as stored (StoredTrial's serializer), the study file's ``reference:`` as a user
# writes it (a partial mapping, read as a LossConfig by StudyFile.reference_loss)
FLAT = {("search/study/trial_record.py", "_values"), ("search/study/study_file.py", "StudyFile")}


def test_a_refused_point_keeps_its_values_and_reason_and_the_key_of_its_stored_values():
    point = with_values(LossConfig(bce_weight=0.0, focal_weight=1.0), {"alpha": 1.0})
    assert isinstance(point, RefusedLoss) and point.alpha == 1.0 and "negatives no loss" in point.reason
    with pytest.raises(InvalidLoss, match="negatives no loss"):
        checked(point)
    stored = loss_values(point)  # as the trial's ``loss`` attr holds it
    assert stored == {"alpha": 1.0, "gamma": 2.0, "bce_weight": 0.0, "focal_weight": 1.0}
    assert loss_point(stored) == point and config_key(loss_point(stored)) == config_key(point)
    valid = with_values(point, {"bce_weight": 0.5})
    assert valid == LossConfig(alpha=1.0, bce_weight=0.5, focal_weight=1.0)
    assert config_key(valid) == config_key(loss_point(loss_values(valid)))
    with pytest.raises(ValueError, match="not a loss parameter"):
        loss_point({"beta": 1.0})


def _annotations(path: Path):
    """(function, parameter or 'return', annotation text) of every function in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            for arg in args:
                if arg.annotation is not None:
                    yield node.name, arg.arg, ast.unparse(arg.annotation)
            if node.returns is not None:
                yield node.name, "return", ast.unparse(node.returns)
        if isinstance(node, ast.ClassDef):  # dataclass and pydantic fields
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    yield node.name, item.target.id, ast.unparse(item.annotation)


def test_no_string_keyed_loss_dict_is_passed_between_functions():
    """No function of search/ or objectives/ takes or returns a loss as ``dict[str, float | None]``, and no
    parameter or field named like a loss is a dict or a mapping, but at the one boundary (loss_point.py) and
    where a loss is flat by nature (:data:`FLAT`)."""
    found = []
    for path in sorted(p for package in ("objectives", "search") for p in (ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in BOUNDARY:
            continue
        for func, name, text in _annotations(path):
            flat = "dict[str, float | None]" in text
            named = name in LOSS_NAMES and ("dict" in text or "Mapping" in text)
            if (flat or named) and (rel, func) not in FLAT:
                found.append(f"{rel}:{func}:{name}: {text}")
    assert found == []


def test_the_check_sees_a_loss_dict(tmp_path):
    path = tmp_path / "plan.py"
    path.write_text("def base(loss: dict) -> dict[str, float | None]:\n    return loss\n")
    assert [(n, t) for _, n, t in _annotations(path)] == [("loss", "dict"), ("return", "dict[str, float | None]")]
