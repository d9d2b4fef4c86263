"""A user's own model (``model: {module: "pkg.mod:Class", kwargs: {...}}``): its configuration, its validation
before any store is opened (one line, exit 2, nothing created), and the model directory that bundles its source.

The model-directory tests train the user's module with a few plain torch steps (not through the engine), so that
they test the directory alone: saving, bundling, loading the bundled copy in a fresh process and through MLflow,
refusing a tampered copy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from objectives.config import CVConfig, LossConfig, MetricConfig, ModelConfig, TrainConfig, TrialConfig
from objectives.data import DataSpec, load_dataset
from objectives.errors import LosstuneError
from objectives.final import FinalModel
from objectives.memory import TrialShape
from objectives.preprocess import make_preprocessor
from objectives.user_model_check import check_user_model
from objectives.user_module import UserModelError, load_user_class, user_source
from search.cli import EXIT_BAD_INPUT, main
from search.model.exported_config import ExportedConfig, Provenance, dump_exported, load_exported, parse_exported
from search.model.model_dir import self_sha256
from search.model.model_dir_loading import load_model_dir
from search.model.model_dir_saving import save_model_dir
from tests.conftest import synthetic_frame

ROOT = Path(__file__).resolve().parents[1]
MODELS = '''\
import torch
from torch import nn


class BinaryClassifier(nn.Module):
    """Linear-ReLU-Dropout blocks and one logit, as in the tutorials."""

    def __init__(self, n_features, hidden=(16, 8), dropout=0.1):
        super().__init__()
        layers, width = [], n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)  # [rows, 1]: accepted as one logit per row


class ThreeOutputs(nn.Module):
    def __init__(self, n_features):
        super().__init__()
        self.linear = nn.Linear(n_features, 3)

    def forward(self, x):
        return self.linear(x)


class IntegerOutput(nn.Module):
    def __init__(self, n_features):
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x):
        return (self.linear(x).squeeze(-1) > 0).long()


class NanOutput(nn.Module):
    def __init__(self, n_features):
        super().__init__()
        self.linear = nn.Linear(n_features, 1)

    def forward(self, x):
        return self.linear(x).squeeze(-1) * float("nan")


class NoParameters(nn.Module):
    def __init__(self, n_features):
        super().__init__()

    def forward(self, x):
        return x.sum(dim=1)


class NoNFeatures(nn.Module):
    def __init__(self):
        super().__init__()


class NotAModule:
    def __init__(self, n_features):
        pass


class Allocates(nn.Module):
    """Reads a tensor value in __init__: cannot be built on the meta device, fine for real."""

    def __init__(self, n_features):
        super().__init__()
        width = int(torch.tensor([4]).item())
        self.net = nn.Sequential(nn.Linear(n_features, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)
'''


@pytest.fixture
def user_dir(tmp_path) -> Path:
    """A study directory: ``models.py`` (the classes above), ``broken.py`` (raises on import), ``data.csv``."""
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "broken.py").write_text("raise RuntimeError('this module cannot be imported')\n")
    synthetic_frame(n=150, seed=1, missing=False).to_csv(tmp_path / "data.csv", index=False)
    return tmp_path


def study(directory: Path, model: str, name: str = "mine") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ndata: {{path: data.csv, target: label}}\ncv: {{folds: 3, seed: 0}}\nmodel: {model}\n"
        "train: {epochs: 2, batch_size: 64, lr: 0.01, device: cpu}\nbudget: {trials_per_week: 2}\n"
    )
    return path


def tree(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def one_line(code: int, err: str, command: str, expected: str) -> None:
    assert code == EXIT_BAD_INPUT, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"losstune {command}: error: "), lines[0]
    assert expected in lines[0], lines[0]


# --- the configuration ---------------------------------------------------------------------------------------


def test_a_user_model_dumps_only_its_own_fields_and_an_mlp_dumps_as_before():
    # numeric_scaling and numeric_embedding are the preprocessing's, so they are every model's
    mine = ModelConfig(module="models:BinaryClassifier", kwargs={"hidden": [8], "dropout": 0.2})
    numeric = {"numeric_scaling": "standard", "numeric_embedding": "none"}  # a user's module: no embedding by default
    assert mine.model_dump() == {
        "module": "models:BinaryClassifier",
        "kwargs": {"hidden": [8], "dropout": 0.2},
        **numeric,
    }
    assert ModelConfig.model_validate(mine.model_dump(mode="json")) == mine
    assert ModelConfig(hidden=(8,), dropout=0.0, numeric_embedding="none").model_dump() == {
        "hidden": (8,),
        "dropout": 0.0,
        **numeric,
    }
    embedded = ModelConfig(numeric_embedding="piecewise_linear", embedding_bins=8)
    assert embedded.model_dump()["embedding_bins"] == 8 and embedded.model_dump()["numeric_embedding"] != "none"
    assert ModelConfig.model_validate(embedded.model_dump(mode="json")) == embedded
    params = TrialConfig(model=mine).flat_params()
    assert params["model_module"] == "models:BinaryClassifier"
    assert json.loads(str(params["model_kwargs"])) == {"hidden": [8], "dropout": 0.2}
    assert "hidden" not in params and "dropout" not in params


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("{module: 'models:BinaryClassifier', hidden: [8]}", "model: hidden is the built-in MLP's"),
        ("{module: 'models:BinaryClassifier', dropout: 0.1, hidden: [8]}", "hidden and dropout are the built-in"),
        ("{kwargs: {hidden: [8]}}", "model: kwargs are the arguments of a model.module"),
        ("{module: models.BinaryClassifier}", "model: module must be 'package.module:ClassName'"),
        ("{module: 'models:Binary-Classifier'}", "module must be 'package.module:ClassName'"),
        ("{module: 'models:BinaryClassifier', kwargs: {when: 2026-01-01}}", "model.kwargs.when"),
    ],
)
def test_a_mixed_or_malformed_model_is_one_line_and_creates_nothing(user_dir, capsys, model, expected):
    path = study(user_dir, model)
    before = tree(user_dir)
    code = main(["search", str(path), "--no-progress"])
    one_line(code, capsys.readouterr().err, "search", expected)
    assert tree(user_dir) == before


# --- validation before any store is opened -------------------------------------------------------------------

REFUSED = {
    "not_importable": ("{module: 'nowhere:Model'}", "no module 'nowhere' in"),
    "import_raises": ("{module: 'broken:Model'}", "importing it failed: RuntimeError: this module cannot be imported"),
    "no_such_class": ("{module: 'models:Missing'}", "module 'models' has no 'Missing'"),
    "not_a_module": ("{module: 'models:NotAModule'}", "NotAModule is not a subclass of torch.nn.Module"),
    "wrong_shape": ("{module: 'models:ThreeOutputs'}", "returned shape (2, 3) of torch.float32; it must return one"),
    "integer_output": ("{module: 'models:IntegerOutput'}", "returned shape (2,) of torch.int64"),
    "nan_output": ("{module: 'models:NanOutput'}", "returned NaN or infinite logits"),
    "no_parameters": ("{module: 'models:NoParameters'}", "NoParameters has no trainable parameters"),
    "no_n_features": ("{module: 'models:NoNFeatures'}", "its __init__ must take n_features and model.kwargs"),
    "bad_kwargs": ("{module: 'models:BinaryClassifier', kwargs: {hiden: [8]}}", "unexpected keyword argument 'hiden'"),
    "too_large": (
        "{module: 'models:BinaryClassifier', kwargs: {hidden: [200000, 200000]}}",
        "parameters per model x",
    ),
    "own_package": ("{module: 'objectives.model:MLP'}", "names losstune's own package"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_search_refuses_an_unusable_model_in_one_line_before_any_store(user_dir, capsys, case):
    model, expected = REFUSED[case]
    path = study(user_dir, model)
    before = tree(user_dir)
    code = main(["search", str(path), "--no-progress"])
    one_line(code, capsys.readouterr().err, "search", expected)
    assert tree(user_dir) == before  # no Optuna database, no mlflow.db, no mlartifacts/, no __pycache__
    assert not (user_dir / "mlartifacts").exists()


def exported_for(directory: Path, model: ModelConfig, module_dir: Path | None) -> ExportedConfig:
    return ExportedConfig(
        format_version=1,
        loss=LossConfig(gamma=2.0),
        threshold=0.4,
        model=model,
        train=TrainConfig(epochs=3, batch_size=32, lr=1e-2, device="cpu"),
        cv=CVConfig(folds=3, seed=0),
        metric=MetricConfig(),
        data=DataSpec(path=directory / "data.csv", target="label", positive="yes"),
        provenance=Provenance(
            study="mine",
            trial=0,
            selected_by="oof",
            metric="f1",
            cv_score=0.5,
            tracking_uri=f"sqlite:///{directory / 'final' / 'mlflow.db'}",
            exported_at="2026-11-30T09:00:00+00:00",
            versions={},
        ),
        module_dir=module_dir,
    )


@pytest.mark.parametrize("case", ["not_importable", "wrong_shape", "too_large"])
def test_train_and_evaluate_refuse_an_unusable_model_in_one_line_before_any_store(user_dir, tmp_path, capsys, case):
    model = ModelConfig.model_validate(__import__("yaml").safe_load(REFUSED[case][0]))
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    dump_exported(exported_for(user_dir, model, user_dir), out_dir / "best.yaml")
    before = tree(user_dir)
    code = main(["train", str(out_dir / "best.yaml"), "-o", str(tmp_path / "model")])
    one_line(code, capsys.readouterr().err, "train", REFUSED[case][1])
    code = main(["evaluate", "--config", str(out_dir / "best.yaml")])
    one_line(code, capsys.readouterr().err, "evaluate", REFUSED[case][1])
    assert tree(user_dir) == before
    assert not (tmp_path / "model").exists() and not (user_dir / "final").exists()


def test_an_mlp_option_given_to_evaluate_a_user_models_config_is_one_line(user_dir, tmp_path, capsys):
    (tmp_path / "exports").mkdir()
    model = ModelConfig(module="models:BinaryClassifier")
    dump_exported(exported_for(user_dir, model, user_dir), tmp_path / "exports" / "best.yaml")
    code = main(["evaluate", "--config", str(tmp_path / "exports" / "best.yaml"), "--hidden", "8"])
    one_line(code, capsys.readouterr().err, "evaluate", "options.model: hidden is the built-in MLP's")


def test_the_exported_module_dir_is_relative_to_the_file_and_resolved_on_load(user_dir, tmp_path):
    model = ModelConfig(module="models:BinaryClassifier")
    (tmp_path / "exports").mkdir()
    dump_exported(exported_for(user_dir, model, user_dir), tmp_path / "exports" / "best.yaml")
    text = (tmp_path / "exports" / "best.yaml").read_text()
    assert "module_dir: ..\n" in text  # exports/ is inside the study directory
    loaded = load_exported(tmp_path / "exports" / "best.yaml")
    assert loaded.module_dir is not None and loaded.module_dir.resolve() == user_dir.resolve()
    assert loaded.trial_config.model == model
    mlp = exported_for(user_dir, ModelConfig(hidden=(8,)), None)
    assert "module_dir" not in mlp.to_dict() and "module" not in mlp.to_dict()["model"]
    with pytest.raises(LosstuneError, match=r"best\.yaml: module_dir is where model\.module is imported from"):
        parse_exported({**mlp.to_dict(), "module_dir": str(user_dir)}, "best.yaml", user_dir)


# --- the checks themselves --------------------------------------------------------------------------------------


def test_the_check_measures_without_allocating_and_leaves_the_random_state(user_dir):
    load_user_class("models:BinaryClassifier", [user_dir])
    shape = TrialShape(n_rows=1000, n_inputs=20, hidden=(), folds=15, batch_size=256)
    state = torch.get_rng_state()
    need = check_user_model(ModelConfig(module="models:BinaryClassifier", kwargs={"hidden": [64, 32]}), shape)
    assert torch.equal(torch.get_rng_state(), state)
    params = (20 + 1) * 64 + (64 + 1) * 32 + 32 + 1
    assert need >= 15 * 4 * params * 4  # weights, gradients, Adam's two moments, for each of the 15 models
    # 10^11 parameters would take 400 GB to build: refused from the meta-device build, in well under a second
    huge = ModelConfig(module="models:BinaryClassifier", kwargs={"hidden": [316_228, 316_228]})
    with pytest.raises(LosstuneError, match=r"100,\d{3},\d{3},\d{3} parameters per model x 15 model\(s\)"):
        check_user_model(huge, shape)


def test_a_model_that_cannot_be_built_on_the_meta_device_is_built_for_real(user_dir):
    load_user_class("models:Allocates", [user_dir])
    shape = TrialShape(n_rows=100, n_inputs=5, hidden=(), folds=3, batch_size=32)
    assert check_user_model(ModelConfig(module="models:Allocates"), shape) > 0


def test_the_study_directory_wins_over_a_module_of_the_same_name_imported_earlier(tmp_path):
    for name, width in (("a", 3), ("b", 5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "samename.py").write_text(
            f"from torch import nn\nclass M(nn.Linear):\n    def __init__(self, n_features):\n"
            f"        super().__init__(n_features, 1)\n        self.width = {width}\n"
        )
    path_before = list(sys.path)
    first = load_user_class("samename:M", [tmp_path / "a"])
    second = load_user_class("samename:M", [tmp_path / "b"])
    assert sys.path == path_before  # the study's directory was on the import path for the import only
    assert first(2).width == 3 and second(2).width == 5
    assert user_source("samename:M")[0] == (tmp_path / "b" / "samename.py").resolve()
    assert not list(tmp_path.rglob("__pycache__"))


def test_train_refuses_a_module_that_imports_a_sibling_file_before_training(user_dir, tmp_path, capsys):
    """A search may use it; a model directory could not (only the module's own file is bundled)."""
    (user_dir / "layers_of_mine.py").write_text("from torch import nn\nBlock = nn.Linear\n")
    (user_dir / "with_sibling.py").write_text(
        "from torch import nn\nfrom layers_of_mine import Block\n\nclass Net(nn.Module):\n"
        "    def __init__(self, n_features):\n        super().__init__()\n        self.block = Block(n_features, 1)\n\n"
        "    def forward(self, x):\n        return self.block(x)\n"
    )
    (tmp_path / "exports").mkdir()
    model = ModelConfig(module="with_sibling:Net")
    dump_exported(exported_for(user_dir, model, user_dir), tmp_path / "exports" / "best.yaml")
    before = tree(user_dir)
    code = main(["train", str(tmp_path / "exports" / "best.yaml"), "-o", str(tmp_path / "model"), "--no-track"])
    one_line(code, capsys.readouterr().err, "train", "imports other modules of its directory (layers_of_mine)")
    assert tree(user_dir) == before and not (tmp_path / "model").exists()


@pytest.mark.parametrize("name", ["json", "fractions", "numpy"])
def test_a_file_that_would_replace_a_library_module_is_refused(tmp_path, name):
    (tmp_path / f"{name}.py").write_text("from torch import nn\nclass Net(nn.Linear):\n    pass\n")
    before = sys.modules.get(name)
    with pytest.raises(UserModelError, match=rf"holds a module '{name}' that would replace .*rename your file"):
        load_user_class(f"{name}:Net", [tmp_path])
    assert sys.modules.get(name) is before


def test_a_class_reexported_from_another_module_is_refused_naming_the_defining_module(tmp_path):
    (tmp_path / "reexport.py").write_text("from torch.nn import Linear\n")
    with pytest.raises(UserModelError, match=r"defined in 'torch.nn.modules.linear'.*'torch.nn.modules.linear:Linear'"):
        load_user_class("reexport:Linear", [tmp_path])


# --- the model directory ------------------------------------------------------------------------------------------


def trained_model_dir(user_dir: Path, out: Path) -> tuple[Path, pd.DataFrame, np.ndarray]:
    """A model directory of ``models:BinaryClassifier`` trained with a few plain torch steps; the test rows and
    the probabilities the in-memory network gives them."""
    spec, kwargs = "models:BinaryClassifier", {"hidden": [8, 4], "dropout": 0.1}
    cls = load_user_class(spec, [user_dir])
    dataset = load_dataset(DataSpec(path=user_dir / "data.csv", target="label", positive="yes"))
    pre = make_preprocessor(dataset.numeric_columns, dataset.categorical_columns).fit(dataset.features)
    x = torch.from_numpy(np.asarray(pre.transform(dataset.features), dtype=np.float32))
    y = torch.from_numpy(dataset.y.astype(np.float32))
    torch.manual_seed(0)
    net = cls(x.shape[1], **kwargs)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x).squeeze(-1), y).backward()
        opt.step()
    final = FinalModel(
        preprocessor=pre,
        state_dict={k: v.detach().clone() for k, v in net.state_dict().items()},
        model_config=ModelConfig(module=spec, kwargs=kwargs),
        n_inputs=x.shape[1],
        numeric_columns=list(dataset.numeric_columns),
        categorical_columns=list(dataset.categorical_columns),
        positive_label=dataset.positive_label,
        negative_label=dataset.negative_label,
    )
    exported = exported_for(user_dir, final.model_config, user_dir)
    save_model_dir(final, exported, out, {"excluded_columns": [], "path": str(user_dir / "data.csv")})
    test = synthetic_frame(n=40, seed=9, missing=False).drop(columns=["label"])
    with torch.no_grad():
        expected = torch.sigmoid(net.eval()(torch.from_numpy(pre.transform(test).astype(np.float32)))).squeeze(-1)
    return out, test, expected.double().numpy()


def test_the_manifest_records_the_module_and_the_directory_bundles_its_source(user_dir, tmp_path):
    model_dir, _, _ = trained_model_dir(user_dir, tmp_path / "model")
    manifest = json.loads((model_dir / "artifacts" / "losstune_model.json").read_text())
    entry = manifest["model_module"]
    source = (user_dir / "models.py").read_bytes()
    assert entry == {
        "module": "models:BinaryClassifier",
        "file": "models.py",
        "source_path": str((user_dir / "models.py").resolve()),
        "sha256": hashlib.sha256(source).hexdigest(),
    }
    assert (model_dir / "artifacts" / "models.py").read_bytes() == source
    assert manifest["files"]["artifacts/models.py"] == entry["sha256"]
    assert "models.py" in (model_dir / "MLmodel").read_text()


def fresh_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}


def test_a_user_model_predicts_in_a_fresh_process_from_its_bundled_copy(user_dir, tmp_path):
    model_dir, test, expected = trained_model_dir(user_dir, tmp_path / "model")
    (user_dir / "models.py").unlink()  # the original is gone ...
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # ... and what the import path would find under its name is another module: neither may be used
    (elsewhere / "models.py").write_text("raise RuntimeError('the wrong models.py was imported')\n")
    test.to_csv(elsewhere / "test.csv", index=False)
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "losstune"),
            "predict",
            str(model_dir),
            "test.csv",
            "-o",
            "out.csv",
            "--proba",
        ],
        cwd=elsewhere,
        env={**fresh_env(), "PYTHONPATH": str(elsewhere)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    got = pd.read_csv(elsewhere / "out.csv")["proba"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def test_a_user_model_loads_through_mlflow_pyfunc_in_a_fresh_process(user_dir, tmp_path):
    model_dir, test, expected = trained_model_dir(user_dir, tmp_path / "model")
    (user_dir / "models.py").unlink()
    test.to_csv(tmp_path / "test.csv", index=False)
    script = (
        "import sys, mlflow.pyfunc, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({str(model_dir)!r})\n"
        f"out = model.predict(pd.read_csv({str(tmp_path / 'test.csv')!r}))\n"
        "assert 'models' not in sys.modules, 'the import path was used'\n"
        "print(out['proba'].to_json(orient='values', double_precision=15))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=fresh_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    got = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


def resign(model_dir: Path, manifest: dict) -> None:
    manifest["self_sha256"] = self_sha256(manifest)
    (model_dir / "artifacts" / "losstune_model.json").write_text(json.dumps(manifest, indent=2) + "\n")


def test_a_tampered_bundled_source_is_refused_in_one_line(user_dir, tmp_path, capsys):
    model_dir, test, _ = trained_model_dir(user_dir, tmp_path / "model")
    test.to_csv(tmp_path / "test.csv", index=False)
    bundled = model_dir / "artifacts" / "models.py"
    bundled.write_text(bundled.read_text() + "\nimport os; os.system('echo pwned')\n")
    code = main(["predict", str(model_dir), str(tmp_path / "test.csv"), "-o", str(tmp_path / "out.csv")])
    one_line(code, capsys.readouterr().err, "predict", "artifacts/models.py does not match the sha256")
    # the file listing re-signed to match: the module's own checksum still refuses it
    manifest = json.loads((model_dir / "artifacts" / "losstune_model.json").read_text())
    manifest["files"]["artifacts/models.py"] = hashlib.sha256(bundled.read_bytes()).hexdigest()
    resign(model_dir, manifest)
    with pytest.raises(LosstuneError, match=r"bundled model source artifacts/models\.py does not match the sha256 its"):
        load_model_dir(model_dir)
    assert not (tmp_path / "out.csv").exists()


def test_a_directory_whose_config_and_bundle_disagree_is_refused(user_dir, tmp_path):
    model_dir, _, _ = trained_model_dir(user_dir, tmp_path / "model")
    manifest = json.loads((model_dir / "artifacts" / "losstune_model.json").read_text())
    manifest["model_module"]["module"] = "models:ThreeOutputs"
    resign(model_dir, manifest)
    with pytest.raises(LosstuneError, match=r"model.module \('models:BinaryClassifier'\) is not the bundled model's"):
        load_model_dir(model_dir)
    del manifest["model_module"]
    resign(model_dir, manifest)
    with pytest.raises(LosstuneError, match="is not the bundled model's"):
        load_model_dir(model_dir)
