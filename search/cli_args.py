"""The arguments of every ``losstune`` command (:func:`build_parser`), each command's own in one function; the
command each runs is in :mod:`search.commands`."""

from __future__ import annotations

import argparse
from pathlib import Path

from search import commands
from search.cli_types import OneLineParser, bounded, optional_float

DESCRIPTION = (
    "Find the best BCE + focal loss settings and decision threshold for a PyTorch classifier on tabular data, "
    "a budget of trials each week, every trial tracked in MLflow."
)


# Defaults of the trial options, as TrialConfig has them (tests/test_cli_help.py checks that they agree). The
# options default to "not given" rather than to these values, so that an exported --config's own settings stay
# unless an option overrides them.
_FROM_CONFIG = "defaults as shown, or with --config the file's settings; an option given overrides either"


def _default(value: str) -> str:
    return f"(default: {value})"


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, metavar="FILE", help="CSV file (required without --config)")
    p.add_argument("--target", metavar="COL", help="target column (required without --config)")
    p.add_argument("--positive", metavar="LABEL", help="positive label (default: the minority class)")
    p.add_argument("--sep", help="field separator (default: detected among , ; tab |)")
    p.add_argument("--encoding", help="utf-8, utf-8-sig, utf-16 or cp932 (default: detected)")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="COL",
        help="column to leave out of the features (repeatable; default: none)",
    )
    p.add_argument(
        "--na-value",
        action="append",
        default=[],
        metavar="V",
        help="string meaning missing, besides blank cells (repeatable; default: none)",
    )


def _add_trial_args(p: argparse.ArgumentParser) -> None:
    # absent unless given (not None), so that --alpha none can be told from no --alpha at all
    g = p.add_argument_group(
        "loss: bce_weight * BCE + focal_weight * Focal(alpha, gamma)", _FROM_CONFIG, argument_default=argparse.SUPPRESS
    )
    g.add_argument(
        "--alpha",
        type=optional_float,
        metavar="A",
        help="focal positive-class weight in [0, 1] (negatives get 1-A), or 'none': no class weighting "
        + _default("none"),
    )
    g.add_argument("--gamma", type=float, metavar="G", help="focal focusing parameter, >= 0 " + _default("2"))
    g.add_argument("--bce-weight", type=float, metavar="W", help="weight of the BCE term, >= 0 " + _default("0.5"))
    g.add_argument("--focal-weight", type=float, metavar="W", help="weight of the focal term, >= 0 " + _default("0.5"))
    g = p.add_argument_group(
        "model, training, cross-validation and metric", _FROM_CONFIG, argument_default=argparse.SUPPRESS
    )
    g.add_argument(
        "--hidden",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        metavar="N,N",
        help="hidden layer sizes " + _default("128,64"),
    )
    g.add_argument("--dropout", type=float, metavar="P", help="dropout after each hidden layer " + _default("0.15"))
    g.add_argument("--folds", type=int, metavar="K", help="cross-validation folds, >= 2 " + _default("5"))
    g.add_argument(
        "--repeats",
        type=int,
        metavar="R",
        help="repeated K-fold: R splits of their own, scored per repeat and pooled " + _default("1"),
    )
    g.add_argument("--epochs", type=int, metavar="N", help="training epochs per fold " + _default("20"))
    g.add_argument("--batch-size", type=int, metavar="N", help="minibatch rows " + _default("256"))
    g.add_argument("--lr", type=float, help="Adam learning rate " + _default("0.001"))
    g.add_argument("--weight-decay", type=float, metavar="WD", help="Adam weight decay " + _default("0"))
    g.add_argument("--seed", type=int, metavar="N", help="seed of the folds and the initial weights " + _default("0"))
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="auto: cuda when available " + _default("auto"))
    g.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        help="bf16: hidden-layer matmuls in bfloat16, faster where the CPU or GPU supports it " + _default("fp32"),
    )
    g.add_argument(
        "--metric", choices=["f1", "macro_f1", "fbeta"], help="score the threshold maximises " + _default("f1")
    )
    g.add_argument("--beta", type=float, help="beta of the fbeta metric " + _default("1"))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="losstune", description=DESCRIPTION, epilog="Run 'losstune COMMAND --help' for a command's options."
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging on stderr, also MLflow's (default: warnings only); before the command",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _evaluate_args(sub.add_parser("evaluate", help="cross-validate one loss configuration and pick its threshold"))
    _search_args(sub.add_parser("search", help="spend this week's trial budget on the study's phased plan"))
    _status_args(sub.add_parser("status", help="results table, best trial, current phase and budget left this week"))
    _export_args(
        sub.add_parser("export", help="write a trial's configuration (best by default) as one self-contained file")
    )
    _train_args(
        sub.add_parser("train", help="fit an exported configuration on all rows; save an MLflow (pyfunc) model")
    )
    _predict_args(sub.add_parser("predict", help="apply a model directory to a CSV and write labels"))
    _report_args(
        sub.add_parser("report", help="write the study's report: one self-contained HTML page (also on MLflow)")
    )
    for command in sub.choices.values():  # an unknown option is the command's usage error (search.cli.main)
        command.set_defaults(command_parser=command)
    return parser


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", type=Path, help="study file (YAML)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("report.html"),
        metavar="FILE",
        help="where to write the HTML page (default: report.html)",
    )
    p.set_defaults(run=commands.report)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="an exported configuration (losstune export): its settings and data; options given "
        "override (default: none: --data and --target are needed)",
    )
    _add_data_args(p)
    _add_trial_args(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of the summary (strict JSON: an undefined value is null)",
    )
    p.add_argument(
        "--oof-out",
        type=Path,
        metavar="FILE",
        help="also write the OOF probabilities (row, repeat, fold, y_true, proba; one row per data row and repeat) "
        "to this CSV (default: none)",
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also cross-validate the yardstick (scikit-learn's HistGradientBoostingClassifier, defaults) on the "
        "same splits, scored the same way, and print its score and the paired difference (default: off)",
    )
    p.set_defaults(run=commands.evaluate)


def _search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", type=Path, help="study file (YAML)")
    _add_budget_arg(p)
    p.add_argument(
        "--workers",
        type=bounded("Workers", "workers"),
        default=1,
        metavar="N",
        help="worker processes on this machine (default: 1)",
    )
    p.add_argument(
        "--timeout",
        type=bounded("Seconds", "timeout"),
        metavar="SECONDS",
        help="start no trial after this many seconds (default: none; a trial already running finishes)",
    )
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="continue although the data file changed since the study started (the new trials are "
        "tagged losstune.data_changed); default: refuse",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on stderr (default: a bar when stderr is a terminal)",
    )
    p.set_defaults(run=commands.search)


def _status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", type=Path, help="study file (YAML)")
    _add_budget_arg(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead of the table (strict JSON: a missing score is null)",
    )
    p.set_defaults(run=commands.status)


def _add_budget_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--budget",
        type=bounded("Budget", "budget"),
        metavar="N",
        help="this week's budget, instead of budget.trials_per_week (default: the study file's)",
    )


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", type=Path, help="study file (YAML)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="output file (default: best.yaml, or best.json with --format json)",
    )
    p.add_argument(
        "--by",
        choices=["auto", "mean", "honest", "confirmed", "ensemble"],
        default="auto",
        help="best by mean OOF score, by honest cross-fitted score, or the best of the "
        "confirm phase; auto (default): confirmed when a confirm phase has run, else mean; ensemble: the "
        "weighted average of trials selected on their stored OOF predictions (members, weights, threshold)",
    )
    p.add_argument(
        "--trial",
        type=bounded("TrialNumber", "trial"),
        metavar="N",
        help="export trial N instead of the best (default: the best)",
    )
    p.add_argument("--format", choices=["yaml", "json"], default="yaml", help="file format (default: yaml)")
    p.set_defaults(run=commands.export)


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="exported configuration (losstune export)")
    p.add_argument(
        "--data", type=Path, metavar="FILE", help="CSV to train on, e.g. the full set (default: the config's data file)"
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="MODEL_DIR",
        help="new (or empty) model directory (required)",
    )
    p.add_argument(
        "--register",
        metavar="NAME",
        help="also register the model in the MLflow registry as NAME (default: not registered)",
    )
    p.add_argument(
        "--no-track",
        action="store_true",
        help="do not log the model to MLflow (default: a run in the study's final-models experiment)",
    )
    p.set_defaults(run=commands.train)


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, help="model directory (losstune train)")
    p.add_argument("test", type=Path, help="CSV with the feature columns")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="output CSV (required)")
    p.add_argument(
        "--id-col",
        metavar="COL",
        help="column to copy to the output (default: the ID-like column excluded in training, when the file has it)",
    )
    p.add_argument(
        "--proba", action="store_true", help="also write the probability of the positive class (default: labels only)"
    )
    p.add_argument(
        "--labels",
        choices=["01", "original"],
        default="01",
        help="labels written as 0/1 or as the target's original values (default: 01)",
    )
    p.add_argument(
        "--encoding",
        help="the test file's encoding: utf-8, utf-8-sig, utf-16 or cp932 (default: the training data's, or detected)",
    )
    p.set_defaults(run=commands.predict)
