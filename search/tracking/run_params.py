"""What a trial, the study and the final model are logged as in MLflow: params as numbers the UI can plot.

MLflow keeps params as strings and the UI plots a param as a number only when every run's value parses as one:
one ``None`` among them makes the axis categorical and drops those runs from the compare view's scatter plots.
So every loss parameter is a number for every trial, and an unweighted focal term (``alpha: null``) is logged as
the class weights it actually applies:

- ``alpha_pos``: the weight of the positives' focal terms, ``alpha``, or 1 when unweighted;
- ``alpha_neg``: the weight of the negatives' focal terms, ``1 - alpha``, or 1 when unweighted.

(``alpha: null`` is not ``alpha: 0.5``: 0.5 weighs both classes 0.5, half of the unweighted focal term.) An
unweighted trial is thus ``alpha_pos = alpha_neg = 1``; a weighted one has ``alpha_pos + alpha_neg = 1``.

Where a value is shown as text (run names, the results table, the console), an unweighted alpha is written
``none`` (:data:`UNWEIGHTED`); machine-readable JSON (``status --json``) has ``null``, as the study file does.

No param shares its name with a metric (the UI's axis pickers would list both under one name): the training
precision (fp32/bf16) is the param ``train_precision``, since ``precision`` is the metric of the trial's
classification precision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from objectives.config import TrialConfig
from search.study.loss_params import LOSS_PARAMS, UNWEIGHTED

if TYPE_CHECKING:
    from search.study.study_file import StudyFile

# params renamed so as not to share a name with a metric: config name -> MLflow param name
RENAMED = {"precision": "train_precision"}


def focal_class_weights(alpha: float | None) -> tuple[float, float]:
    """(weight of the positives' focal terms, weight of the negatives'): ``(alpha, 1 - alpha)``, or ``(1, 1)``
    for an unweighted focal term; what :func:`objectives.losses` applies."""
    if alpha is None:
        return 1.0, 1.0
    return float(alpha), round(1.0 - float(alpha), 12)  # 1 - 0.3 = 0.7, not 0.7000000000000001


def _text(value: object) -> str:
    return UNWEIGHTED if value is None else str(value)


def trial_params(config: TrialConfig) -> dict[str, str]:
    """The params of a trial's run: every loss parameter a number, then model, training, CV and metric."""
    flat = dict(config.flat_params())
    alpha_pos, alpha_neg = focal_class_weights(config.loss.alpha)
    del flat["alpha"]
    params = {"alpha_pos": alpha_pos, "alpha_neg": alpha_neg, **flat}
    return {RENAMED.get(k, k): _text(v) for k, v in params.items()}


def study_params(file: StudyFile, storage_display: str) -> dict[str, str]:
    """The study's settings, as params of its parent run: what every trial of the study shares."""
    config = file.trial_config()
    shared = {k: v for k, v in trial_params(config).items() if k not in LOSS_PARAM_NAMES}
    data = file.data
    return {
        "study": file.name,
        "data_path": str(data.path),
        "target": data.target,
        "positive": _text(data.positive) if data.positive is not None else "minority class",
        **({"drop": ",".join(data.drop)} if data.drop else {}),
        **shared,
        "trials_per_week": str(file.budget.trials_per_week),
        "plan": plan_summary(file),
        "storage": storage_display,
    }


def plan_summary(file: StudyFile) -> str:
    """``balance:grid4 gamma:grid4 alpha:grid2 confirm:confirm2 refine:tpe`` (a tpe phase shows its ``trials``)."""
    parts = []
    for phase in file.phases:
        if phase.kind == "grid":
            parts.append(f"{phase.name}:grid{len(phase.grid or [])}")
        elif phase.kind == "confirm":
            parts.append(f"{phase.name}:confirm{phase.top}")
        else:
            parts.append(f"{phase.name}:tpe" + (str(phase.trials) if phase.trials else ""))
    return " ".join(parts)


def final_params(config: TrialConfig, threshold: float) -> dict[str, str]:
    """The params of a final-model run (``losstune train``): the trial's params and the decision threshold."""
    return {**trial_params(config), "threshold": str(threshold)}


# the loss parameters as logged: alpha as the two class weights it applies (focal_class_weights)
LOSS_PARAM_NAMES = ("alpha_pos", "alpha_neg", *(name for name in LOSS_PARAMS if name != "alpha"))

__all__ = [
    "LOSS_PARAM_NAMES",
    "UNWEIGHTED",
    "final_params",
    "focal_class_weights",
    "plan_summary",
    "study_params",
    "trial_params",
]
