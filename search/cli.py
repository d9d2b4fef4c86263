"""The ``losstune`` command: :func:`main` parses the arguments (:mod:`search.cli_args`) and runs the command
(:mod:`search.commands`).

Subcommands import what they need when they run: ``losstune evaluate`` never imports Optuna or MLflow, so it
starts fast. A :class:`~objectives.errors.LosstuneError` (bad input) is printed as one line on stderr with exit
status 2, and no traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys

from objectives.errors import LosstuneError
from search.cli_args import build_parser
from search.formats.exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from search.formats.redaction import install_log_redaction, redact_text

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "build_parser", "main"]  # what the tests and scripts import

log = logging.getLogger("losstune")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser: "losstune search: error: ...; see losstune search --help"
        if any(u in ("-v", "--verbose") for u in unknown):  # losstune's own option, written after the command
            args.command_parser.error(f"-v/--verbose goes before the command: losstune -v {args.command} ...")
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    # MLflow announces its database migrations at INFO on its own handler; keep the CLI's output to ours.
    # (MLflow sets its logger's level when it is imported, which happens later, from this variable)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if args.verbose else "WARNING")
    logging.getLogger("mlflow").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    install_log_redaction()  # no password of a storage or tracking URL in any log line
    try:
        return args.run(args)
    except LosstuneError as exc:
        print(f"losstune {args.command}: error: {printable(redact_text(str(exc)))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"losstune {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def printable(text: str) -> str:
    """``text`` as one line a terminal shows as it is: a line break, a tab, an escape sequence or any other
    control character (from a file name, a cell, a library's message) written as its escape, ``\\n``,
    ``\\x1b``."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


if __name__ == "__main__":
    sys.exit(main())
