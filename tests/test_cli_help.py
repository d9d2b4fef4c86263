"""Every option of every command has help text that states its default, and the README names every option."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from objectives.config import TrialConfig
from search.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _all_actions() -> list[tuple[str, argparse.Action]]:
    parser = build_parser()
    found = [("losstune", a) for a in _options(parser)]
    for name, sub in _subparsers(parser).items():
        found += [(name, a) for a in _options(sub)]
    return found


@pytest.mark.parametrize("command, action", _all_actions(), ids=lambda v: v if isinstance(v, str) else v.dest)
def test_every_option_has_help_with_its_default(command, action):
    assert action.help and action.help is not argparse.SUPPRESS, f"{command} {action.dest}: no help text"
    # positionals are required by nature, and a flag's default is its absence; any other option says its default,
    # or that it is needed
    if action.option_strings and not isinstance(action, argparse._StoreTrueAction):
        assert re.search(r"\bdefault\b|\brequired\b", action.help), (
            f"losstune {command} {action.option_strings[0]}: the help does not state the default: {action.help!r}"
        )


def _stated_default(help_text: str) -> str:
    found = re.search(r"\(default: ([^)]*)\)", help_text)
    assert found, help_text
    return found.group(1)


# option -> (section, field) of TrialConfig
TRIAL_FIELDS = {
    "--alpha": ("loss", "alpha"),
    "--gamma": ("loss", "gamma"),
    "--bce-weight": ("loss", "bce_weight"),
    "--focal-weight": ("loss", "focal_weight"),
    "--hidden": ("model", "hidden"),
    "--dropout": ("model", "dropout"),
    "--folds": ("cv", "folds"),
    "--repeats": ("cv", "repeats"),
    "--epochs": ("train", "epochs"),
    "--batch-size": ("train", "batch_size"),
    "--lr": ("train", "lr"),
    "--weight-decay": ("train", "weight_decay"),
    "--seed": ("cv", "seed"),
    "--device": ("train", "device"),
    "--precision": ("train", "precision"),
    "--metric": ("metric", "name"),
    "--beta": ("metric", "beta"),
}


def test_the_defaults_stated_for_the_trial_options_are_trial_configs():
    evaluate = _subparsers(build_parser())["evaluate"]
    by_flag = {a.option_strings[0]: a for a in _options(evaluate) if a.option_strings}
    defaults = TrialConfig()
    for flag, (section, field) in TRIAL_FIELDS.items():
        action = by_flag[flag]
        stated = _stated_default(action.help)
        # parsed as the option itself would parse it: the stated default must mean the real default
        value = None if stated == "none" else (action.type(stated) if action.type else stated)
        assert value == getattr(getattr(defaults, section), field), f"{flag}: help says {stated!r}"
    assert set(TRIAL_FIELDS) == {
        f
        for f in by_flag
        if f.lstrip("-")
        not in {
            "config",
            "data",
            "target",
            "positive",
            "sep",
            "encoding",
            "drop",
            "na-value",
            "json",
            "oof-out",
            "baseline",
        }
    }


def test_top_level_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "losstune COMMAND --help" in out
    assert "-v, --verbose" in out


def test_the_docs_name_every_option():
    """Every option of every command appears in the README or the guide's pages (docs/)."""
    pages = [README, *sorted((README.parent / "docs").rglob("*.md"))]
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    missing = [
        f"{command} {flag}"
        for command, action in _all_actions()
        for flag in action.option_strings
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)
    ]
    assert not missing, f"options neither the README nor docs/ mention: {missing}"
