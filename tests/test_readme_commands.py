"""The documentation's commands run as written: the shell blocks of the guide's pages (evaluate, the weekly
search, export / train / predict), in that order, then the README's weekly loop (its ``make`` lines left out: the
test runs inside the environment they make), in a fresh directory holding a copy of ``studies/`` and the
project's ``.venv``.

The pages are this test's input, so the documented commands cannot drift from what works. Slow (it runs the
demo's ten trials and trains models): ``make test-fast`` leaves it out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.test_strict_json import strict_loads

ROOT = Path(__file__).resolve().parents[1]
# the pages whose shell blocks run, in this order; then the README's weekly loop
SECTIONS = ("docs/guide/evaluate.md", "docs/guide/weekly-search.md", "docs/guide/export-train-predict.md")
README_LOOP = "README.md"


def shell_blocks(text: str) -> list[str]:
    """The ```sh / ```bash fenced blocks of a page."""
    return re.findall(r"^```(?:sh|bash)\n(.*?)^```", text, flags=re.S | re.M)


def page_blocks(page: str) -> list[str]:
    """The blocks a page contributes: all of a guide page's; the README's weekly loop without its ``make`` lines."""
    blocks = shell_blocks((ROOT / page).read_text(encoding="utf-8"))
    if page != README_LOOP:
        return blocks
    loop = [b for b in blocks if "losstune search" in b]
    return ["".join(line for line in b.splitlines(keepends=True) if not line.startswith("make ")) for b in loop]


def test_the_pages_have_the_commands_this_test_expects():
    blocks = {page: page_blocks(page) for page in (*SECTIONS, README_LOOP)}
    assert all(blocks.values()), blocks
    assert any("losstune evaluate" in b for b in blocks["docs/guide/evaluate.md"])
    assert any("losstune predict" in b for b in blocks["docs/guide/export-train-predict.md"])
    loop = blocks[README_LOOP]
    assert len(loop) == 1 and all(f"losstune {c}" in loop[0] for c in ("search", "export", "train", "predict"))
    assert len(loop[0].strip().splitlines()) <= 10  # the weekly loop in ten lines
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.findall(r"^make (\w+)", readme, flags=re.M) == ["demo", "test"]  # the two set-up commands


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    venv = ROOT / ".venv"
    if not (venv / "bin" / "losstune").exists():
        pytest.skip(f"no {venv}/bin/losstune: run `make venv` first (the README's commands use it)")
    work = tmp_path / "project"
    work.mkdir()
    shutil.copytree(
        ROOT / "studies",
        work / "studies",
        ignore=shutil.ignore_patterns("*.db", "mlartifacts", "mlruns", "my_study.yaml", "__pycache__"),
    )
    (work / ".venv").symlink_to(venv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOSSTUNE_", "MLFLOW_"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(venv)))

    outputs: dict[str, str] = {}
    for heading in (*SECTIONS, README_LOOP):
        for block in page_blocks(heading):
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, f"{heading} block failed:\n{block}\n{done.stdout}\n{done.stderr}"
            # the demo declares its ID column: no warning on any command
            assert "an ID?" not in done.stderr, done.stderr
            outputs[heading] = outputs.get(heading, "") + done.stdout

    assert "threshold" in outputs["docs/guide/evaluate.md"]
    search_out = outputs["docs/guide/weekly-search.md"]
    # the printed UI command names an mlflow that exists although the venv is not on PATH
    printed = re.search(r"compare trials: (\S+) ui --backend-store-uri sqlite:///", search_out)
    assert printed and printed.group(1) != "mlflow" and (work / printed.group(1)).is_file(), search_out
    assert re.search(r"then open http://127\.0\.0\.1:5000/#/experiments/\d+/runs\?viewStateShareKey=", search_out)
    status = strict_loads(search_out[search_out.index("\n{") : search_out.rindex("}") + 1])  # status --json
    assert status["study"] == "demo" and len(status["trials"]) == status["spent"] > 0
    assert (work / "report.html").is_file() and "<svg" in (work / "report.html").read_text(encoding="utf-8")
    # the README's loop ends with a prediction for every row of the new table, with its id column
    predictions = pd.read_csv(work / "predictions.csv")
    assert list(predictions.columns) == ["customer_id", "churn"] and len(predictions) > 0

    assert (work / "best.yaml").is_file() and (work / "model" / "MLmodel").is_file()
    submission = pd.read_csv(work / "submission.csv")
    test_rows = pd.read_csv(work / "studies" / "data" / "demo_churn_test.csv")
    assert list(submission.columns) == ["customer_id", "churn", "proba"]
    assert submission["customer_id"].tolist() == test_rows["customer_id"].tolist()
    assert submission["proba"].between(0, 1).all() and set(submission["churn"]) <= {0, 1}

    # every output the README's commands leave in the project directory is ignored by git
    ignored = subprocess.run(
        [
            "git",
            "check-ignore",
            "--no-index",
            "best.yaml",
            "model/",
            "submission.csv",
            "predictions.csv",
            "my_model/",
            "report.html",
            "studies/my_study.yaml",
            "studies/demo.optuna.db",
            "studies/mlflow.db",
            "studies/mlartifacts/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert len(ignored.stdout.split()) == 10, ignored.stdout + ignored.stderr


if __name__ == "__main__":  # print the commands this test runs: python -m tests.test_readme_commands
    for page in (*SECTIONS, README_LOOP):
        print(f"# {page}\n" + "".join(page_blocks(page)), file=sys.stdout)
