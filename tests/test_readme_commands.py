"""The README's commands run as written: the shell blocks of its evaluate, weekly-search and export/train/predict
sections, in that order, in a fresh directory holding a copy of ``studies/`` and the project's ``.venv``.

The README is this test's input, so the documented commands cannot drift from what works. Slow (it runs the
demo's ten trials and trains a model): ``make test-fast`` leaves it out.
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
SECTIONS = ("Evaluate one configuration", "The weekly search", "Export, train, predict")


def shell_blocks(readme: str, heading: str) -> list[str]:
    """The ```sh / ```bash fenced blocks of the ``## heading`` section, up to the next ``## ``."""
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme, flags=re.S | re.M)
    assert found, f"README has no section '## {heading}'"
    return re.findall(r"^```(?:sh|bash)\n(.*?)^```", found.group(1), flags=re.S | re.M)


def test_the_sections_have_the_commands_this_test_expects():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {h: shell_blocks(readme, h) for h in SECTIONS}
    assert all(blocks.values()), blocks
    assert any("losstune evaluate" in b for b in blocks["Evaluate one configuration"])
    assert any("losstune predict" in b for b in blocks["Export, train, predict"])


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    venv = ROOT / ".venv"
    if not (venv / "bin" / "losstune").exists():
        pytest.skip(f"no {venv}/bin/losstune: run `make venv` first (the README's commands use it)")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
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
    for heading in SECTIONS:
        for block in shell_blocks(readme, heading):
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert done.returncode == 0, f"README '{heading}' block failed:\n{block}\n{done.stdout}\n{done.stderr}"
            # the demo declares its ID column: no warning on any command
            assert "an ID?" not in done.stderr, done.stderr
            outputs[heading] = outputs.get(heading, "") + done.stdout

    assert "threshold" in outputs["Evaluate one configuration"]
    search_out = outputs["The weekly search"]
    # the printed UI command names an mlflow that exists although the venv is not on PATH
    printed = re.search(r"compare trials: (\S+) ui --backend-store-uri sqlite:///", search_out)
    assert printed and printed.group(1) != "mlflow" and (work / printed.group(1)).is_file(), search_out
    assert re.search(r"then open http://127\.0\.0\.1:5000/#/experiments/\d+/runs", search_out)
    status = strict_loads(search_out[search_out.rindex("\n{") :])  # the last command: status --json
    assert status["study"] == "demo" and len(status["trials"]) == status["spent"] > 0

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
            "studies/my_study.yaml",
            "studies/demo.optuna.db",
            "studies/mlflow.db",
            "studies/mlartifacts/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert len(ignored.stdout.split()) == 7, ignored.stdout + ignored.stderr


if __name__ == "__main__":  # print the commands this test runs: python -m tests.test_readme_commands
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for h in SECTIONS:
        print(f"# {h}\n" + "".join(shell_blocks(text, h)), file=sys.stdout)
