"""What each ``losstune`` command does once its arguments are parsed (:mod:`search.cli` parses them).

Each imports what it needs when it runs: ``losstune evaluate`` never imports Optuna or MLflow, and ``status``
never imports torch, so that they start fast."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def evaluate(args: argparse.Namespace) -> int:
    from search.model.evaluate_config import run_evaluate

    return run_evaluate(args)


def search(args: argparse.Namespace) -> int:
    print(f"losstune search {args.study}: reading the study and this week's budget...", flush=True)
    from search.run.options import SearchOptions
    from search.run.runner import run_search

    options = SearchOptions(
        budget=args.budget,
        workers=args.workers,
        timeout=args.timeout,
        allow_data_change=args.allow_data_change,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    return run_search(args.study, options)


def status(args: argparse.Namespace) -> int:
    from search.formats.strict_json import dumps
    from search.run.status import format_status, study_status

    status = study_status(args.study, args.budget)
    print(dumps(status) if args.json else format_status(status))  # strict JSON: a missing score is null, not NaN
    return 0


def export(args: argparse.Namespace) -> int:
    from search.model.export_trial import export_trial, format_export

    out = args.output or Path(f"best.{args.format}")
    exported, run_id = export_trial(args.study, out, by=args.by, number=args.trial, fmt=args.format)
    print(format_export(exported, out, run_id))
    return 0


def train(args: argparse.Namespace) -> int:
    from search.model.train_final import format_train, train_model

    outcome = train_model(args.config, args.output, data=args.data, register=args.register, track=not args.no_track)
    print(format_train(outcome))
    return 0


def predict(args: argparse.Namespace) -> int:
    from search.model.predict import format_predict, predict_file

    outcome = predict_file(
        args.model_dir,
        args.test,
        args.output,
        id_col=args.id_col,
        proba=args.proba,
        labels=args.labels,
        encoding=args.encoding,
    )
    print(format_predict(outcome))
    return 0


def report(args: argparse.Namespace) -> int:
    from search.tracking.study_report import write_report

    out = write_report(args.study, args.output)
    print(f"wrote {out}: the study's record, choices, scores with their noise, and the best and reference trials")
    return 0
