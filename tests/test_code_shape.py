"""The code's shape: no file over 300 lines and no function over 50 lines in objectives/ and search/, unless a
comment says why (``# over 300 lines: <why>`` among a file's first lines, ``# over 50 lines: <why>`` on the
line above a function or in its first lines)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 50


def _explained(lines: list[str], first: int, last: int, marker: str) -> bool:
    return any(marker in line for line in lines[max(0, first) : last])


def too_long(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(p for package in ("objectives", "search") for p in (root / package).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if len(lines) > MAX_FILE_LINES and not _explained(lines, 0, 30, "# over 300 lines:"):
            found.append(rel)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES and not _explained(lines, start - 2, start + 5, "# over 50 lines:"):
                    found.append(f"{rel}:{node.name}")
    return found


def test_no_file_over_300_lines_and_no_function_over_50_lines():
    assert too_long() == []


def test_the_check_sees_a_long_file_and_function_and_honours_a_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (tmp_path / "objectives").mkdir()
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "search" / "why.py").write_text(f"# over 50 lines: a table, clearer in one piece\ndef why():\n{body}\n")
    (tmp_path / "objectives" / "big.py").write_text("x = 1\n" * 301)
    assert too_long(tmp_path) == ["objectives/big.py", "search/long.py:long"]
