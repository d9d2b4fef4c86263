"""The exported configuration: one self-contained file describing the configuration chosen by a study.

Written by ``losstune export`` (YAML, or JSON with ``--format json``), read by ``losstune train`` and
``losstune evaluate --config``, and stored inside every model directory. It is plain data validated on load
(``extra='forbid'``, ``format_version`` checked first), so a file from another version of losstune or a
hand-edit gone wrong is one line saying which field is wrong. The data path is written relative to the file,
like a study file's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from objectives.bounds import Probability, Seed, TrialNumber
from objectives.config import CVConfig, LossConfig, MetricConfig, ModelConfig, StrictModel, TrainConfig, TrialConfig
from objectives.data import DataSpec
from objectives.errors import LosstuneError
from search.formats.atomic_write import write_text_atomic
from search.formats.validation import read_yaml, validated
from search.study.verdict import Confidence, FiniteFloat

FORMAT_VERSION = 1


class PreprocessingSpec(StrictModel):
    """What :func:`objectives.preprocess.make_preprocessor` does; a recipe this version does not know is refused."""

    numeric: Literal["impute_median+standardize"] = "impute_median+standardize"
    categorical: Literal["impute_most_frequent+onehot_ignore_unknown"] = "impute_most_frequent+onehot_ignore_unknown"


class Provenance(StrictModel):
    """Where the configuration comes from and what it scored; informative, not used to train."""

    study: str
    trial: int
    phase: str | None = None
    # "oof": export's former name for "mean", no longer written; still read, as saved models carry this file
    selected_by: Literal["oof", "mean", "honest", "confirmed", "later", "trial", "ensemble"]
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    metric: str
    cv_score: FiniteFloat  # OOF score at the OOF-optimal threshold (optimistic)
    honest_score: FiniteFloat | None = None  # cross-fitted threshold (honest)
    honest_score_std: FiniteFloat | None = None
    data_fingerprint: str | None = None
    week: str | None = None
    exported_at: str
    versions: dict[str, str]
    confidence: Confidence | None = None  # score ± SE, verdict against the reference, estimate for unseen data


class EnsembleMember(StrictModel):
    """One member of an exported ensemble: its trial, weight, loss and the seed its final model is trained with."""

    trial: TrialNumber
    weight: Annotated[Probability, Field(gt=0.0)]
    loss: LossConfig
    seed: Seed  # the final model's initialisation seed (cv.seed of its training)
    cv_score: FiniteFloat | None = None


class EnsembleSpec(StrictModel):
    """An exported ensemble (:mod:`search.study.study_ensemble`): the members, whose probabilities are averaged
    with their weights and compared with the file's ``threshold``; the estimates it was chosen with."""

    members: Annotated[list[EnsembleMember], Field(min_length=1, max_length=1000)]
    pool: list[int]  # the trials it was selected from
    oof_score: FiniteFloat
    oof_se: FiniteFloat | None = None
    honest_score: FiniteFloat
    honest_se: FiniteFloat | None = None
    estimate: FiniteFloat  # BBC-CV of the ensemble-selection procedure: the score to quote for unseen data
    estimate_low: FiniteFloat
    estimate_high: FiniteFloat
    estimate_basis: str
    reference_trial: int | None = None
    diff_vs_reference: FiniteFloat | None = None
    diff_vs_reference_se: FiniteFloat | None = None
    verdict_vs_reference: str | None = None  # selection-corrected (BBC-CV)


class ExportedConfig(StrictModel):
    format_version: Literal[1]
    loss: LossConfig
    threshold: Probability
    model: ModelConfig
    train: TrainConfig
    cv: CVConfig
    metric: MetricConfig
    preprocessing: PreprocessingSpec = PreprocessingSpec()
    data: DataSpec
    provenance: Provenance
    # where model.module is imported from (the study file's directory when the module was there; relative to this
    # file, like data.path); null: the installed packages
    module_dir: Path | None = None
    ensemble: EnsembleSpec | None = None  # an ensemble of trials: ``loss`` is then its first member's

    @field_validator("model", mode="before")
    @classmethod
    def _model_as_written(cls, raw: Any) -> Any:
        return ModelConfig.from_stored(raw)  # a file an earlier losstune exported means the model it trained

    @model_validator(mode="after")
    def _module_dir_with_module(self) -> ExportedConfig:
        if self.module_dir is not None and self.model.module is None:
            raise ValueError("module_dir is where model.module is imported from: give the module, or remove it")
        return self

    @classmethod
    def of_trial(
        cls, config: TrialConfig, threshold: float, data: DataSpec, provenance: Provenance, module_dir: Path | None
    ) -> ExportedConfig:
        """The file for a trial: its stored configuration's sections as they are, so that :attr:`trial_config`
        gives that configuration back (what ``train`` and ``evaluate --config`` run)."""
        sections = {name: getattr(config, name) for name in TrialConfig.model_fields}
        return cls(
            format_version=FORMAT_VERSION,
            threshold=threshold,
            data=data,
            provenance=provenance,
            module_dir=module_dir,
            **sections,
        )

    def load_model_class(self) -> None:
        """Import ``model.module``, if any, from :attr:`module_dir` (then the installed packages) and register it
        for this process (:func:`objectives.user_module.load_user_class`); one line when it cannot be."""
        if self.model.module is not None:
            from objectives.user_module import load_user_class

            load_user_class(self.model.module, [self.module_dir] if self.module_dir is not None else [])

    @property
    def trial_config(self) -> TrialConfig:
        """The exported trial's configuration, as the trial stored it (:meth:`of_trial`)."""
        return TrialConfig(**{name: getattr(self, name) for name in TrialConfig.model_fields})

    def member_configs(self) -> list[TrialConfig]:
        """Each member's configuration with its own loss and seed (the file's own alone when not an ensemble)."""
        if self.ensemble is None:
            return [self.trial_config]
        base = self.trial_config
        return [
            base.model_copy(update={"loss": m.loss, "cv": base.cv.model_copy(update={"seed": m.seed})})
            for m in self.ensemble.members
        ]

    def to_dict(self, relative_to: Path | None = None) -> dict:
        """Plain JSON-able data; the data path relative to ``relative_to`` (a directory) when given."""
        d = self.model_dump(mode="json")
        if self.module_dir is None:
            del d["module_dir"]  # an MLP's file, or an installed module's, is as it was before module_dir existed
        if relative_to is not None:
            d["data"]["path"] = _relative(self.data.path, relative_to)
            if self.module_dir is not None:
                d["module_dir"] = _relative(self.module_dir, relative_to)
        return d


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(Path(path).resolve())


def dump_exported(
    config: ExportedConfig, path: Path, fmt: Literal["yaml", "json"] = "yaml", inputs: Iterable[Path] = ()
) -> None:
    """Write with :func:`~search.formats.atomic_write.write_text_atomic` (never half a file, never over one of
    ``inputs``)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise LosstuneError(f"output directory does not exist: {path.parent}")
    data = config.to_dict(relative_to=path.parent)
    if fmt == "json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        header = (
            f"# losstune exported configuration: study {config.provenance.study!r}, trial {config.provenance.trial}\n"
            "# `losstune train THIS_FILE -o MODEL_DIR` fits it on all rows; "
            "`losstune evaluate --config THIS_FILE` re-runs its CV.\n"
        )
        text = header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    write_text_atomic(path, text, inputs=inputs)


def parse_exported(raw: object, where: str, base_dir: Path) -> ExportedConfig:
    """Validate already-parsed data; ``base_dir`` resolves a relative data path."""
    if not isinstance(raw, dict):
        raise LosstuneError(f"{where} is not a losstune exported configuration (expected a mapping)")
    if "format_version" not in raw:
        raise LosstuneError(f"{where} is not a losstune exported configuration (no format_version)")
    version = raw["format_version"]
    if version != FORMAT_VERSION:
        raise LosstuneError(
            f"{where} has format_version {version!r}; this losstune reads format_version {FORMAT_VERSION}: "
            "export it again with this version (`losstune export`)"
        )
    config = validated(ExportedConfig, where, raw)
    if not config.data.path.is_absolute():
        data = config.data.model_copy(update={"path": base_dir / config.data.path})
        config = config.model_copy(update={"data": data})
    if config.module_dir is not None and not config.module_dir.is_absolute():
        config = config.model_copy(update={"module_dir": base_dir / config.module_dir})
    return config


def load_exported(path: Path) -> ExportedConfig:
    """Read an exported YAML or JSON file (JSON is read as YAML), or raise one-line :class:`LosstuneError`."""
    path = Path(path)
    raw = read_yaml(path, "config file")
    return parse_exported(raw, path.name, path.resolve().parent)
