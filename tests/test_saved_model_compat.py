"""A model directory saved by the flat ``search/`` layout (before it became packages) still loads and predicts the
same numbers with ``losstune predict``'s checked loader, which reads the directory's files and runs none of its
code. (MLflow's pyfunc loader runs the directory's bundled ``code/``: in a directory of the flat layout that
bundle, a hand-written list, lacks ``search/verdict.py``, which its ``exported.py`` imports, so a fresh process
never could load one that way. The bundle is now derived from the pyfunc model's imports, and the last test here
imports the pyfunc model from the bundle alone.)

The old directory is made here, by the old code itself: ``git archive`` of :data:`OLD_COMMIT` (the last commit of
the flat layout) into a temporary folder, whose ``tests/model_fixture.py`` trains the tiny model with that code
and records its predictions. A committed copy would freeze a second copy of every bundled module in the tree;
this needs the repository's history instead (a full clone, as CI has)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.cli import main
from search.model.bundled_code import bundled_files
from search.model.model_dir_loading import load_model_dir

REPO = Path(__file__).resolve().parents[1]
OLD_COMMIT = "a01f133bc0772b15e40259d01c73b8c71ff5f4f1"  # flat search/: search/model_package.py, search/exported.py


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, timeout=120)


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH from outside: the old code must be the one imported."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> dict[str, Path]:
    if _git("cat-file", "-e", f"{OLD_COMMIT}^{{commit}}").returncode != 0:
        pytest.fail(f"commit {OLD_COMMIT[:7]} is not in this clone: fetch the full history (git fetch --unshallow)")
    root = tmp_path_factory.mktemp("old")
    code, work = root / "code", root / "work"
    code.mkdir()
    work.mkdir()
    archive = _git("archive", "--format=tar", OLD_COMMIT, "objectives", "search", "tests")
    assert archive.returncode == 0, archive.stderr.decode()
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True, timeout=120)
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import numpy as np, pandas as pd
        import search
        assert Path(search.__file__).resolve().parent == Path({str(code / "search")!r}), search.__file__
        from search.model_package import load_model_dir
        from tests.model_fixture import make_model_dir
        paths = make_model_dir(Path({str(work)!r}))
        out = load_model_dir(paths["model"]).predict(pd.read_csv(paths["test"]))
        np.save({str(root / "old_proba.npy")!r}, out["proba"].to_numpy())
        np.save({str(root / "old_label.npy")!r}, out["label"].to_numpy())
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=code, env=_clean_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"model": work / "model", "test": work / "test.csv", "root": root}


def test_the_directory_is_one_of_the_flat_layout(old):
    manifest = json.loads((old["model"] / "artifacts" / "losstune_model.json").read_text())
    assert "code/search/model_package.py" in manifest["files"]
    assert "losstune_pyfunc.py" in manifest["files"]
    assert "from search.pyfunc_model import LosstunePyfunc" in (old["model"] / "losstune_pyfunc.py").read_text()
    assert not (REPO / "search" / "model_package.py").exists()


def test_predict_loads_it_and_gives_the_old_numbers(old, tmp_path, capsys):
    loaded = load_model_dir(old["model"]).predict(pd.read_csv(old["test"]))
    np.testing.assert_array_equal(loaded["proba"].to_numpy(), np.load(old["root"] / "old_proba.npy"))
    np.testing.assert_array_equal(loaded["label"].to_numpy(), np.load(old["root"] / "old_label.npy"))
    out = tmp_path / "submission.csv"
    assert main(["predict", str(old["model"]), str(old["test"]), "-o", str(out), "--proba"]) == 0
    np.testing.assert_array_equal(pd.read_csv(out)["proba"].to_numpy(), np.load(old["root"] / "old_proba.npy"))


def test_the_bundle_is_what_the_pyfunc_model_imports(tmp_path):
    """The derived bundle alone imports the pyfunc model: copied without the rest of losstune, with nothing of
    losstune's on the path, every losstune module imported comes from the copy."""
    for rel in bundled_files():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    assert Path("search/model/pyfunc_model.py") in bundled_files()
    assert Path("search/run/worker.py") not in bundled_files()  # only what the model imports
    script = textwrap.dedent(f"""
        import sys
        sys.path = [p for p in sys.path if p not in ({str(REPO)!r}, "", ".")]
        sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
        sys.path.insert(0, {str(tmp_path)!r})
        import search.model.pyfunc_model
        own = [m for name, m in sys.modules.items() if name.split(".")[0] in ("search", "objectives")]
        outside = [m.__name__ for m in own if not (getattr(m, "__file__", None) or "").startswith({str(tmp_path)!r})]
        assert not outside, outside
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
