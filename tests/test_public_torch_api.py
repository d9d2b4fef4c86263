"""No private torch API in the package: torch's names that start with an underscore (``torch._foreach_add_``,
``torch._fused_adam_``, ...) and its raw operators (``torch.ops.aten``) are outside its compatibility promise, so
an upgrade could change what they compute without notice. The engine uses torch.func, autograd and torch.optim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRIVATE = re.compile(r"torch\._|torch\.ops\.aten")


def private_uses(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(p for package in ("objectives", "search") for p in (root / package).rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if PRIVATE.search(line):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_no_private_torch_api_in_objectives_or_search():
    assert private_uses() == []


def test_the_check_sees_a_private_call(tmp_path):
    (tmp_path / "objectives").mkdir()
    (tmp_path / "search").mkdir()
    (tmp_path / "objectives" / "step.py").write_text("torch._foreach_add_(steps, 1.0)\n")
    (tmp_path / "search" / "op.py").write_text("y = torch.ops.aten.threshold_backward(g, x, 0.0)\n")
    assert private_uses(tmp_path) == [
        "objectives/step.py:1: torch._foreach_add_(steps, 1.0)",
        "search/op.py:1: y = torch.ops.aten.threshold_backward(g, x, 0.0)",
    ]
