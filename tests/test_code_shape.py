"""The code's shape, as a prompt to look rather than a rule: a file over 400 lines or a function over 80 lines in
objectives/ or search/ needs a comment saying why it is one piece (``# over 400 lines: <why>`` among a file's
first lines, ``# over 80 lines: <why>`` on the line above a function or in its first lines). What each module owns
is the code map's (docs/code-map.md, kept complete by tests/test_code_map.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80


def _explained(lines: list[str], first: int, last: int, marker: str) -> bool:
    return any(marker in line for line in lines[max(0, first) : last])


def too_long(root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted(p for package in ("objectives", "search") for p in (root / package).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        if len(lines) > MAX_FILE_LINES and not _explained(lines, 0, 30, f"# over {MAX_FILE_LINES} lines:"):
            found.append(rel)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                marker = f"# over {MAX_FUNCTION_LINES} lines:"
                if length > MAX_FUNCTION_LINES and not _explained(lines, start - 2, start + 5, marker):
                    found.append(f"{rel}:{node.name}")
    return found


def test_a_long_file_or_function_says_why_it_is_one_piece():
    assert too_long() == []


def test_the_check_sees_a_long_file_and_function_and_honours_a_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    (tmp_path / "objectives").mkdir()
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "search" / "why.py").write_text(f"# over 80 lines: a table, clearer in one piece\ndef why():\n{body}\n")
    (tmp_path / "objectives" / "big.py").write_text("x = 1\n" * 401)
    (tmp_path / "objectives" / "big_why.py").write_text("# over 400 lines: one table\n" + "x = 1\n" * 401)
    assert too_long(tmp_path) == ["objectives/big.py", "search/long.py:long"]
