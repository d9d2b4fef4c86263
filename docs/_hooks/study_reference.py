"""The study-file reference page, generated from the pydantic models that read a study file, when the site is
built (an MkDocs hook, ``hooks:`` in mkdocs.yml): keys, types, defaults and limits come from the models
themselves, so the page cannot drift from the code. The one thing written by hand is a sentence per key
(:data:`MEANING`); a key without one, or a sentence for a key that no longer exists, stops the build.

``python docs/_hooks/study_reference.py`` prints the page."""

from __future__ import annotations

import re
import types
import typing
from typing import Any

import yaml
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from objectives.config import CVConfig, ModelConfig, TrainConfig
from search.study.phases import DEFAULT_PLAN, Phase
from search.study.study_file import BudgetBlock, DataBlock, StudyFile, TrackingBlock

PAGE = "reference/study-file.md"

# (model, the key path it sits under) in the order of the page
SECTIONS: list[tuple[type[BaseModel], str]] = [
    (StudyFile, ""),
    (DataBlock, "data"),
    (CVConfig, "cv"),
    (ModelConfig, "model"),
    (TrainConfig, "train"),
    (BudgetBlock, "budget"),
    (TrackingBlock, "tracking"),
    (Phase, "plan[]"),
]

MEANING: dict[str, str] = {
    "name": "The study's name: its Optuna study, its MLflow parent run and default experiment.",
    "data": "The table: see `data` below.",
    "cv": "Cross-validation: see `cv` below.",
    "model": "The MLP: see `model` below.",
    "train": "Training: see `train` below.",
    "metric": "The score the threshold maximises and trials are ranked by.",
    "beta": "F-beta's beta; only with `metric: fbeta`, and required there.",
    "budget": "The weekly budget: see `budget` below.",
    "plan": "`default` (printed below), or a list of phases: see `plan[]` below.",
    "reference": "The loss every trial is compared with (missing keys: the loss defaults); default: the plan's "
    "first trial.",
    "storage": "Optuna storage URL (`${VAR}` expanded); default: `<name>.optuna.db` beside the study file; "
    "`LOSSTUNE_STORAGE` overrides it.",
    "tracking": "MLflow: see `tracking` below.",
    "data.path": "The CSV file, relative to the study file.",
    "data.target": "The target column (exactly two classes).",
    "data.positive": "The positive label; default: the minority class.",
    "data.sep": "Field separator; default: detected among `,` `;` tab `|`.",
    "data.encoding": "Text encoding; default: detected (UTF-16 by its marks, then UTF-8, then cp932).",
    "data.drop": "Columns left out of the features (an ID column, a leak).",
    "data.na_values": "Strings meaning missing, besides blank cells.",
    "cv.folds": "K of stratified K-fold.",
    "cv.seed": "The CV split and initialisation seed of every trial on the study's own seed.",
    "cv.repeats": "Repeated K-fold: R splits of their own, scored per repeat and pooled.",
    "model.hidden": "Hidden layer sizes.",
    "model.dropout": "Dropout after each hidden layer.",
    "model.module": "Your own `nn.Module` instead of the MLP, as `'package.module:ClassName'`, built as "
    "`ClassName(n_features, **kwargs)` ([your own model](../guide/your-model.md)); exclusive with `hidden` and "
    "`dropout`.",
    "model.kwargs": "The keyword arguments of `model.module`'s class.",
    "model.numeric_scaling": "How numeric columns are scaled, fitted inside each fold: `standard` (mean 0, "
    "variance 1), `quantile` (to a normal distribution), `robust` (median and IQR, then smooth clipping) "
    "([model options](../guide/model-options.md)).",
    "model.numeric_embedding": "`piecewise_linear`: each scaled numeric column becomes `embedding_bins` columns, "
    "its piecewise-linear encoding on quantile bins fitted inside each fold (Gorishniy et al. 2022), for any "
    "model; `piecewise_linear_target`: the same encoding on target-aware bins (a decision tree's splits on the "
    "fold's training labels), plus the scaled value, at most `embedding_bins` + 1 columns (unused bins left out); "
    "`none`: one column each.",
    "model.embedding_bins": "The number of bins of a `numeric_embedding` (2 to 256): quantile bins, or at most "
    "this many target-aware ones.",
    "train.epochs": "Epochs per fold.",
    "train.batch_size": "Minibatch rows.",
    "train.lr": "Adam's learning rate.",
    "train.weight_decay": "Weight decay: an L2 term in the gradient with `adam`, decoupled with `adamw`.",
    "train.optimizer": "`adam`, or `adamw` (decoupled weight decay, Loshchilov & Hutter).",
    "train.lr_schedule": "The learning rate over training, stepped every batch: `constant`, `cosine` (annealed "
    "to 0), `onecycle` (warm-up over 30 % of the steps, then annealed).",
    "train.checkpoint_every": "Score every model on its validation rows every this many epochs (and at the "
    "last); the trial keeps the one epoch count whose mean fold score is best. 0: no checkpoints.",
    "train.schedule_epochs": "The epochs the learning-rate schedule spans (default: `epochs`); set by `export` "
    "so that a final model trained for a chosen epoch count follows the trial's learning rates.",
    "train.device": "`auto` takes a GPU when there is one.",
    "train.precision": "`bf16` runs the hidden matmuls in bfloat16 (fast only with bf16 instructions); `fp32` is "
    "exact.",
    "budget.trials_per_week": "Trials per ISO week, for all workers and machines together (failed ones count).",
    "tracking.uri": "MLflow tracking URI (`${VAR}` expanded); default: `sqlite:///mlflow.db` beside the study "
    "file; `LOSSTUNE_TRACKING_URI` overrides it.",
    "tracking.experiment": "MLflow experiment; default: the study's name.",
    "plan[].name": "The phase's name (unique), recorded on every trial it runs.",
    "plan[].kind": "`grid`, `tpe` or `confirm`; default: `tpe` for a phase with a `space`, else `grid`.",
    "plan[].fixed": "Loss values this phase sets on top of the best configuration so far.",
    "plan[].grid": "A grid phase's points, each over the best configuration of the earlier phases.",
    "plan[].space": "A tpe phase's ranges, `[low, high]` per loss parameter.",
    "plan[].trials": "A tpe phase's trials; the last phase may leave it out and take the rest of the budget.",
    "plan[].batch": "A tpe phase's draws trained together (constant liar).",
    "plan[].top": "A confirm phase's number of best configurations re-run on a fresh seed (default 2).",
    "plan[].repeats": "A confirm phase's repeats per configuration (default 3).",
    "plan[].with_reference": "Whether a confirm phase re-runs the reference too (default true).",
}


def type_text(annotation: Any) -> str:
    """A type as a reader writes it in YAML: ``int``, ``f1 | macro_f1``, ``list of str``, ``null``..."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (list, tuple):
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping {type_text(args[0])} → {type_text(args[1])}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    name = getattr(annotation, "__name__", str(annotation))
    return {"Path": "path", "str": "text", "float": "number", "int": "integer", "bool": "true | false"}.get(name, name)


def limits_text(field: FieldInfo) -> str:
    """The field's limits (>= 0, < 1, pattern...), from its metadata and its annotation's."""
    found: list[str] = []
    metadata = list(field.metadata)
    for arg in typing.get_args(field.annotation):  # Annotated[...] | None keeps its limits inside the union
        metadata += getattr(arg, "__metadata__", ()) if typing.get_origin(arg) is typing.Annotated else []
        metadata += list(getattr(arg, "metadata", []))
    for m in metadata:
        for cls, sign, attr in ((Ge, ">=", "ge"), (Gt, ">", "gt"), (Le, "<=", "le"), (Lt, "<", "lt")):
            if isinstance(m, cls):
                found.append(f"{sign} {getattr(m, attr)}")
        if isinstance(m, (MinLen, MaxLen)):
            found.append(repr(m))
        pattern = getattr(m, "pattern", None)
        if pattern:
            found.append(f"matches `{pattern}`")
    return ", ".join(dict.fromkeys(found))


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        return "see below"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}`"


def render() -> str:
    lines = [
        "# Study file reference",
        "",
        "<!-- generated from the pydantic models when the site is built (docs/_hooks/study_reference.py) -->",
        "",
        "Every key a study file may hold: an unknown key, a wrong type or a value out of its limits is one line",
        "naming the key (`my_study.yaml.plan[1].grid[0].gama: Input should be ...`), exit status 2. Generated from",
        "the models that read the file (`search/study/study_file.py`, `search/study/phases.py`,",
        "`objectives/config.py`), so it says what the code accepts.",
    ]
    used: set[str] = set()
    for model, prefix in SECTIONS:
        lines += ["", f"## `{prefix or 'top level'}`", ""]
        doc = (model.__doc__ or "").strip()
        if doc and model is Phase:
            lines += [re.sub(r"\s+", " ", doc), ""]
        lines += ["| key | type | default | limits | meaning |", "| --- | --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            if field.exclude:
                continue
            key = f"{prefix}.{name}" if prefix else name
            if key not in MEANING:
                raise KeyError(f"study-file reference: no meaning written for {key!r} (docs/_hooks/study_reference.py)")
            used.add(key)
            cells = [f"`{name}`", type_text(field.annotation), default_text(field), limits_text(field), MEANING[key]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    stale = sorted(set(MEANING) - used)
    if stale:
        raise KeyError(f"study-file reference: meanings for keys that no longer exist: {stale}")
    default_plan = [p.model_dump(exclude_none=True, exclude_defaults=True) | {"name": p.name} for p in DEFAULT_PLAN]
    lines += [
        "",
        "## `plan: default`",
        "",
        "```yaml",
        yaml.safe_dump({"plan": default_plan}, sort_keys=False, default_flow_style=None).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: the reference page, generated now, and the dated benchmark logs of ``tests/benchmarks/``
    (``*_log.md``) as ``benchmarks/`` pages, so that the docs link to them where they live."""
    from pathlib import Path

    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    logs = Path(config["config_file_path"]).parent / "tests" / "benchmarks"
    for log in sorted(logs.glob("*_log.md")):
        files.append(File.generated(config, f"benchmarks/{log.name}", abs_src_path=str(log)))
    return files


if __name__ == "__main__":
    print(render())
