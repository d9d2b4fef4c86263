"""The ``losstune`` command.

Subcommands import what they need when they run: ``losstune evaluate`` never imports Optuna or MLflow, so it
starts fast. A :class:`~objectives.errors.LosstuneError` (bad input) is printed as one line on stderr with exit
status 2, and no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from objectives.errors import LosstuneError

log = logging.getLogger("losstune")

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="CSV file")
    p.add_argument("--target", help="target column")
    p.add_argument("--positive", help="positive label (default: the minority class)")
    p.add_argument("--sep", help="field separator (default: detected)")
    p.add_argument("--encoding", help="utf-8, utf-8-sig or cp932 (default: detected)")
    p.add_argument("--drop", action="append", default=[], metavar="COL", help="column to leave out (repeatable)")
    p.add_argument("--na-value", action="append", default=[], metavar="V", help="string meaning missing (repeatable)")


def _add_trial_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("loss")
    g.add_argument("--alpha", type=_optional_float, help="positive-class weight in [0, 1], or 'none' (default)")
    g.add_argument("--gamma", type=float)
    g.add_argument("--bce-weight", type=float)
    g.add_argument("--focal-weight", type=float)
    g = p.add_argument_group("model and training")
    g.add_argument("--hidden", type=lambda s: tuple(int(v) for v in s.split(",")), help="e.g. 128,64")
    g.add_argument("--dropout", type=float)
    g.add_argument("--folds", type=int)
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--precision", choices=["fp32", "bf16"], help="bf16: faster matmuls where supported")
    g.add_argument("--metric", choices=["f1", "macro_f1", "fbeta"])
    g.add_argument("--beta", type=float, help="beta of the fbeta metric")


def _optional_float(text: str) -> float | None:
    return None if text.lower() in {"none", "null"} else float(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="losstune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("evaluate", help="cross-validate one loss configuration and pick its threshold")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="an exported configuration (losstune export): its settings and data; options given override")
    _add_data_args(p)
    _add_trial_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    p.add_argument("--oof-out", type=Path, help="write OOF probabilities (row, fold, y_true, proba) to this CSV")
    p.set_defaults(run=_cmd_evaluate)

    p = sub.add_parser("search", help="spend this week's trial budget on the study's phased plan")
    p.add_argument("study", type=Path, help="study file (YAML)")
    p.add_argument("--budget", type=_non_negative_int, help="this week's budget, instead of budget.trials_per_week")
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes on this machine (default 1)")
    p.add_argument("--timeout", type=float, help="start no trial after this many seconds")
    p.add_argument("--allow-data-change", action="store_true",
                   help="continue although the data file changed since the study started (trials are tagged)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_cmd_search)

    p = sub.add_parser("status", help="results table, best trial, current phase and budget left this week")
    p.add_argument("study", type=Path, help="study file (YAML)")
    p.add_argument("--budget", type=_non_negative_int, help="this week's budget, instead of budget.trials_per_week")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=_cmd_status)

    p = sub.add_parser("export", help="write a trial's configuration (best by default) as one self-contained file")
    p.add_argument("study", type=Path, help="study file (YAML)")
    p.add_argument("-o", "--output", type=Path, help="output file (default best.yaml, or best.json)")
    p.add_argument("--by", choices=["oof", "honest"], default="oof",
                   help="best by OOF score (the study's objective, default) or by honest cross-fitted score")
    p.add_argument("--trial", type=_non_negative_int, metavar="N", help="export trial N instead of the best")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("train", help="fit an exported configuration on all rows; save an MLflow (pyfunc) model")
    p.add_argument("config", type=Path, help="exported configuration (losstune export)")
    p.add_argument("--data", type=Path, help="CSV to train on (default: the config's data), e.g. the full set")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="MODEL_DIR", help="new model directory")
    p.add_argument("--register", metavar="NAME", help="also register the model in the MLflow registry as NAME")
    p.add_argument("--no-track", action="store_true", help="do not log the model to the study's MLflow experiment")
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("predict", help="apply a model directory to a CSV and write labels")
    p.add_argument("model_dir", type=Path, help="model directory (losstune train)")
    p.add_argument("test", type=Path, help="CSV with the feature columns")
    p.add_argument("-o", "--output", type=Path, required=True, help="output CSV")
    p.add_argument("--id-col", metavar="COL", help="column to copy to the output (default: the ID-like column)")
    p.add_argument("--proba", action="store_true", help="also write the probability of the positive class")
    p.add_argument("--labels", choices=["01", "original"], default="01", help="0/1 (default) or the original labels")
    p.set_defaults(run=_cmd_predict)
    return parser


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _trial_overrides(args: argparse.Namespace) -> dict:
    """Only the options given on the command line, as a nested dict for TrialConfig."""
    groups = {
        "loss": {"alpha": "alpha", "gamma": "gamma", "bce_weight": "bce_weight", "focal_weight": "focal_weight"},
        "model": {"hidden": "hidden", "dropout": "dropout"},
        "train": {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
                  "device": "device", "precision": "precision"},
        "cv": {"folds": "folds", "seed": "seed"},
        "metric": {"metric": "name", "beta": "beta"},
    }
    given = vars(args)
    out: dict = {}
    for section, fields in groups.items():
        values = {field: given[opt] for opt, field in fields.items() if given.get(opt) is not None}
        if section == "loss" and "alpha" in given and given["alpha"] is None and "--alpha" in sys.argv:
            values["alpha"] = None
        if values:
            out[section] = values
    return out


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from objectives.config import TrialConfig
    from objectives.data import DataSpec, load_dataset
    from objectives.evaluate import evaluate
    from search.validation import validated

    exported = None
    if args.config is not None:
        from search.exported import load_exported

        exported = load_exported(args.config)
        spec, config = _config_with_overrides(exported, args)
    else:
        if args.data is None or args.target is None:
            raise LosstuneError("evaluate needs --data FILE.csv and --target COLUMN (or --config FILE)")
        spec = validated(DataSpec, "data", dict(
            path=args.data, target=args.target, positive=args.positive, sep=args.sep, encoding=args.encoding,
            drop=tuple(args.drop), na_values=tuple(args.na_value),
        ))  # fmt: skip
        config = validated(TrialConfig, "options", _trial_overrides(args))
    if args.oof_out and not args.oof_out.parent.is_dir():  # checked before training, not after it
        raise LosstuneError(f"--oof-out directory does not exist: {args.oof_out.parent}")
    dataset = load_dataset(spec)
    result = evaluate(dataset, config)
    if args.oof_out:
        _write_oof(args.oof_out, result)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(format_summary(result, config, dataset.positive_label))
        if exported is not None:
            p = exported.provenance
            honest = "n/a" if p.honest_score is None else f"{p.honest_score:.4f}"
            data = "same data" if p.data_fingerprint == dataset.fingerprint else "OTHER data"
            print(f"exported trial {p.trial} of {p.study!r}: OOF {p.cv_score:.4f}  honest {honest}  "
                  f"threshold {exported.threshold:.4f}  ({data})")  # fmt: skip
    return 0


def _config_with_overrides(exported, args: argparse.Namespace):
    """The exported data spec and trial config, with the options given on the command line replacing theirs."""
    from objectives.config import TrialConfig
    from objectives.data import DataSpec
    from search.validation import validated

    data = exported.data.model_dump()
    given = {"path": args.data, "target": args.target, "positive": args.positive, "sep": args.sep,
             "encoding": args.encoding, "drop": tuple(args.drop) or None, "na_values": tuple(args.na_value) or None}
    data.update({k: v for k, v in given.items() if v is not None})
    trial = exported.trial_config.model_dump()
    for section, values in _trial_overrides(args).items():
        trial[section] = {**trial[section], **values}
    return validated(DataSpec, "data", data), validated(TrialConfig, "options", trial)


def _cmd_search(args: argparse.Namespace) -> int:
    from search.runner import run_search
    from search.worker import SearchOptions

    options = SearchOptions(
        budget=args.budget, workers=args.workers, timeout=args.timeout,
        allow_data_change=args.allow_data_change, progress=not args.no_progress and sys.stderr.isatty(),
    )  # fmt: skip
    return run_search(args.study, options)


def _cmd_status(args: argparse.Namespace) -> int:
    from search.status import format_status, study_status

    status = study_status(args.study, args.budget)
    print(json.dumps(status, default=str) if args.json else format_status(status))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from search.export import export_trial, format_export

    out = args.output or Path(f"best.{args.format}")
    exported, run_id = export_trial(args.study, out, by=args.by, number=args.trial, fmt=args.format)
    print(format_export(exported, out, run_id))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from search.train import format_train, train_model

    outcome = train_model(args.config, args.output, data=args.data, register=args.register, track=not args.no_track)
    print(format_train(outcome))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from search.predict import format_predict, predict_file

    outcome = predict_file(args.model_dir, args.test, args.output, id_col=args.id_col, proba=args.proba,
                           labels=args.labels)  # fmt: skip
    print(format_predict(outcome))
    return 0


def _write_oof(path: Path, result) -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {"row": range(len(result.oof_proba)), "fold": result.fold_of_row, "y_true": result.y_true,
         "proba": result.oof_proba}
    )  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)  # atomic: an interrupted write never leaves a half file under the real name


def format_summary(result, config, positive_label: str) -> str:
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # MLflow announces its database migrations at INFO on its own handler; keep the CLI's output to ours.
    # (MLflow sets its logger's level when it is imported, which happens later, from this variable)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if args.verbose else "WARNING")
    logging.getLogger("mlflow").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        return args.run(args)
    except LosstuneError as exc:
        print(f"losstune {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"losstune {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
