"""argparse's side of the command line: the parser class whose usage errors are one line, and the option types
that parse with the bounds of :mod:`objectives.bounds`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from objectives.errors import LosstuneError


def optional_float(text: str) -> float | None:
    return None if text.lower() in {"none", "null"} else float(text)


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line (``losstune search: error: …; see losstune search --help``), exit status 2, like
    every other refusal, not argparse's usage block above it. Sub-parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        one = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {one}; see {self.prog} --help\n")


def bounded(kind: str, what: str) -> Callable[[str], Any]:
    """An argparse ``type`` that parses with the bounded type named ``kind`` in :mod:`objectives.bounds`: the
    same range as the study file's field, said in the usage error. (Imported when an option is parsed: pydantic
    is no import of ``losstune --help``.)"""

    def parse(text: str) -> Any:
        from objectives import bounds

        try:
            return bounds.parse_bounded(getattr(bounds, kind), text, what)
        except LosstuneError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"{what}: ")) from None

    parse.__name__ = what  # argparse names the type in its messages
    return parse
