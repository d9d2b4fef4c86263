"""``losstune evaluate``: one configuration's cross-validation from the command line (or an exported config).

Imports neither Optuna nor MLflow, so that it starts fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from objectives.errors import LosstuneError
from search.formats.atomic_write import atomic_file, check_output, refuse_input_as_output
from search.formats.strict_json import dumps
from search.study.loss_params import LOSS_PARAMS

if TYPE_CHECKING:
    from objectives.config import TrialConfig
    from objectives.data import Dataset
    from objectives.data_spec import DataSpec
    from objectives.evaluate import EvaluationResult
    from search.model.exported_config import ExportedConfig


def trial_overrides(args: argparse.Namespace) -> dict:
    """Only the options given on the command line, as a nested dict for TrialConfig."""
    groups = {
        "loss": {name: name for name in LOSS_PARAMS},
        "model": {"hidden": "hidden", "dropout": "dropout"},
        "train": {
            "epochs": "epochs",
            "batch_size": "batch_size",
            "lr": "lr",
            "weight_decay": "weight_decay",
            "device": "device",
            "precision": "precision",
        },
        "cv": {"folds": "folds", "repeats": "repeats", "seed": "seed"},
        "metric": {"metric": "name", "beta": "beta"},
    }
    given = vars(args)  # the trial options default to SUPPRESS: only those on the command line are here
    out: dict = {}
    for section, fields in groups.items():
        values = {field: given[opt] for opt, field in fields.items() if opt in given}
        if values:
            out[section] = values
    return out


def run_evaluate(args: argparse.Namespace) -> int:
    from objectives.data_spec import check_regular_file

    exported, spec, config = _spec_and_config(args)
    inputs = [spec.path, *([args.config] if args.config is not None else [])]
    if args.oof_out:  # checked before training, not after it
        if not args.oof_out.parent.is_dir():
            raise LosstuneError(f"--oof-out directory does not exist: {args.oof_out.parent}")
        refuse_input_as_output(args.oof_out, inputs, "--oof-out file")
        check_output(args.oof_out, inputs)
    check_regular_file(spec.path)  # a wrong path is one line at once, before pandas and scikit-learn are imported
    from objectives.data import load_dataset

    dataset = load_dataset(spec)
    from objectives.evaluate import evaluate  # torch: only once the input is known to be good

    result = evaluate(dataset, config)
    if args.oof_out:
        _write_oof(args.oof_out, result, inputs)
    baseline = _baseline(dataset, config, result) if getattr(args, "baseline", False) else None
    if args.json:
        # strict JSON: an undefined metric is null, not NaN
        print(dumps({**result.to_dict(), **({"baseline": baseline} if baseline else {})}))
        return 0
    print(format_summary(result, config, dataset.positive_label))
    if baseline is not None:
        from objectives.baseline import baseline_line
        from objectives.stats import Comparison

        print(baseline_line(baseline, Comparison(**baseline["versus"]), who="this configuration"))
    if exported is not None:
        p = exported.provenance
        honest = "n/a" if p.honest_score is None else f"{p.honest_score:.4f}"
        data = "same data" if p.data_fingerprint == dataset.fingerprint else "OTHER data"
        print(
            f"exported trial {p.trial} of {p.study!r}: OOF {p.cv_score:.4f}  honest {honest}  "
            f"threshold {exported.threshold:.4f}  ({data})"
        )
        if _reruns_the_trial(exported, spec, config, data == "same data") and (
            f"{result.oof_score:.4f}" != f"{p.cv_score:.4f}"  # as the two lines print them
        ):
            # a user comparing the two lines would otherwise suspect a broken export
            print(
                "  not the same figures: the search trained this trial in a stack with other trials, whose random "
                "draws (dropout masks) differ from a model trained alone; the scores agree within their noise, "
                "not exactly (docs/concepts/engine.md)"
            )
    return 0


def _reruns_the_trial(exported: ExportedConfig, spec: DataSpec, config: TrialConfig, same_bytes: bool) -> bool:
    """Whether this evaluation is the exported trial's own: one trial (an ensemble's score is not its lead
    member's), the same file's bytes read the same way (no data option changed it: the path may differ), and no
    trial option changed."""
    if exported.ensemble is not None or not same_bytes:
        return False
    read_as = {k: v for k, v in spec.model_dump().items() if k != "path"}
    exported_as = {k: v for k, v in exported.data.model_dump().items() if k != "path"}
    return read_as == exported_as and config == exported.trial_config


def _baseline(dataset: Dataset, config: TrialConfig, result: EvaluationResult) -> dict:
    """The yardstick on the same splits (:mod:`objectives.baseline`) and this configuration's paired difference
    from it (``versus``: this configuration minus the yardstick)."""
    from objectives.baseline import evaluate_baseline, versus_baseline

    baseline = evaluate_baseline(dataset, config.cv, config.metric)
    versus = versus_baseline(result.fold_scores, result.oof_score, baseline)
    return {**baseline.record(), "versus": versus.to_dict()}


def _spec_and_config(args: argparse.Namespace) -> tuple[ExportedConfig | None, DataSpec, TrialConfig]:
    """What to evaluate: an exported config (``--config``) with the options given replacing its settings, or the
    data and trial options of the command line alone."""
    from objectives.config import TrialConfig
    from objectives.data_spec import DataSpec
    from search.formats.validation import validated

    if args.config is not None:
        from search.model.exported_config import load_exported

        exported = load_exported(args.config)
        exported.load_model_class()  # a user's model: imported from the config's module_dir
        return (exported, *_config_with_overrides(exported, args))
    if args.data is None or args.target is None:
        raise LosstuneError("evaluate needs --data FILE.csv and --target COLUMN (or --config FILE)")
    spec = validated(
        DataSpec,
        "data",
        dict(
            path=args.data,
            target=args.target,
            positive=args.positive,
            sep=args.sep,
            encoding=args.encoding,
            drop=tuple(args.drop),
            na_values=tuple(args.na_value),
        ),
    )
    return None, spec, validated(TrialConfig, "options", trial_overrides(args))


def _config_with_overrides(exported: ExportedConfig, args: argparse.Namespace) -> tuple[DataSpec, TrialConfig]:
    """The exported data spec and trial config, with the options given on the command line replacing theirs."""
    from objectives.config import TrialConfig
    from objectives.data_spec import DataSpec
    from search.formats.validation import validated

    data = exported.data.model_dump()
    given = {
        "path": args.data,
        "target": args.target,
        "positive": args.positive,
        "sep": args.sep,
        "encoding": args.encoding,
        "drop": tuple(args.drop) or None,
        "na_values": tuple(args.na_value) or None,
    }
    data.update({k: v for k, v in given.items() if v is not None})
    trial = exported.trial_config.model_dump()
    for section, values in trial_overrides(args).items():
        trial[section] = {**trial[section], **values}
    return validated(DataSpec, "data", data), validated(TrialConfig, "options", trial)


def _write_oof(path: Path, result: EvaluationResult, inputs: list[Path]) -> None:
    """Every repeat's OOF probabilities, repeat-major: ``repeat`` r's rows are its own split's held-out
    predictions of every data row (repeat 0 alone is plain K-fold, what a stacker usually wants)."""
    import numpy as np
    import pandas as pd

    repeats, n_rows = result.oof_proba_by_repeat.shape
    frame = pd.DataFrame(
        {
            "row": np.tile(np.arange(n_rows), repeats),
            "repeat": np.repeat(np.arange(repeats), n_rows),
            "fold": result.fold_of_row_by_repeat.reshape(-1),
            "y_true": np.tile(result.y_true, repeats),
            "proba": result.oof_proba_by_repeat.reshape(-1),
        }
    )
    with atomic_file(path, inputs=inputs) as f:  # never half a file, never over an input
        frame.to_csv(f, index=False, lineterminator="\n")


def format_summary(result: EvaluationResult, config: TrialConfig, positive_label: str) -> str:
    m = result.metric
    tn, fp = result.confusion_matrix[0]
    fn, tp = result.confusion_matrix[1]
    lines = [
        f"{config.loss}",
        f"rows {result.n_rows}  positives {result.positive_rate:.2%} (label {positive_label!r})  "
        f"{config.cv.folds} folds x {config.train.epochs} epochs  {result.seconds:.1f}s",
        f"threshold        {result.threshold:.4f}",
        f"OOF {m:<12} {result.oof_score:.4f}   (threshold chosen on these rows: optimistic)",
        f"honest {m:<9} {result.honest_score_mean:.4f} +- {result.honest_score_std:.4f}   (cross-fitted threshold)",
        f"per-fold {m:<7} " + " ".join(f"{s:.4f}" for s in result.fold_scores),
        f"F1 at 0.5        {result.f1_at_0_5:.4f}",
        f"precision/recall {result.precision:.4f} / {result.recall:.4f}",
        f"ROC-AUC {result.roc_auc:.4f}  PR-AUC {result.pr_auc:.4f}  log loss {result.log_loss:.4f}",
        f"confusion        tn {tn}  fp {fp}  fn {fn}  tp {tp}",
    ]
    return "\n".join(lines)
