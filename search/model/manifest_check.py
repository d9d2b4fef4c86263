"""Every field of a model directory's manifest and every tensor of its weights, validated before use.

The checksums of a model directory prove that its files are those its manifest lists, not who wrote them: anyone
who can write the directory can re-sign it. So what the files hold is validated too, as untrusted input:

- :class:`Manifest`: each field typed and bounded (a threshold in [0, 1], ``n_inputs`` at most
  :data:`MAX_INPUTS`, column names non-empty, unique and printable, labels as text), unknown keys refused;
- :func:`check_tensors`: the weights against the network the configuration describes, built on PyTorch's
  ``meta`` device (shapes and dtypes, no memory): the same names, and each tensor a dense (strided), CPU,
  real floating-point tensor of the expected shape with finite values. It compares with any module's
  ``state_dict``, not with a list of today's layers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from objectives.bounds import Probability, TrialNumber
from objectives.errors import LosstuneError

MAX_INPUTS = 1 << 24  # network inputs (one-hot columns included): far above any table losstune trains on
MAX_COLUMNS = 100_000


def _printable_name(name: str) -> str:
    if not name.strip() or not name.isprintable():
        raise ValueError(f"column or label name {name[:40]!r} is empty or holds control characters")
    return name


Name = Annotated[str, Field(max_length=1000), AfterValidator(_printable_name)]
Label = Annotated[str, Field(min_length=1, max_length=1000)]


def _unique(names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        raise ValueError("column names are not unique")
    return names


Columns = Annotated[list[Name], Field(max_length=MAX_COLUMNS), AfterValidator(_unique)]


class TrainedOn(BaseModel):
    """What ``predict`` reads of ``trained_on``: the id-like columns excluded in training (the rest is record)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    excluded_columns: Columns = []


class BundledModule(BaseModel):
    """``model_module``: a user model's source bundled in the directory (:mod:`search.model.bundled_model`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    module: Annotated[str, Field(min_length=1, max_length=1000)]
    file: Annotated[str, Field(min_length=1, max_length=1000)]
    source_path: Annotated[str, Field(max_length=10_000)]  # where it was imported from for training: a record
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class EnsembleMemberEntry(BaseModel):
    """One entry of ``ensemble``: a member's trial and its weight in the average (:mod:`objectives.final_ensemble`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    trial: TrialNumber
    weight: Probability


class Manifest(BaseModel):
    """``artifacts/losstune_model.json`` (model format version 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    format_version: Literal[2]
    threshold: Probability
    target: Name
    positive_label: Label
    negative_label: Label
    numeric_columns: Columns
    categorical_columns: Columns
    n_inputs: Annotated[int, Field(ge=1, le=MAX_INPUTS)]
    sha256: dict[str, str]
    trained_on: TrainedOn
    provenance: dict[str, Any]
    files: dict[str, str]
    self_sha256: str
    model_module: BundledModule | None = None
    ensemble: Annotated[list[EnsembleMemberEntry], Field(min_length=1, max_length=1000)] | None = None


def check_tensors(state: dict[str, Any], expected: torch.nn.Module, what: str) -> None:
    """``state`` (the loaded weights) against ``expected`` (the network as configured, best built on the
    ``meta`` device): :class:`LosstuneError` at the first tensor that is not what the network holds."""
    wanted = expected.state_dict()
    names, have = sorted(wanted), sorted(state)
    if names != have:
        odd = sorted(set(have) ^ set(names))
        raise LosstuneError(f"{what} do not fit the configured network: tensor {odd[0]!r} missing or unexpected")
    for name in names:
        tensor, like = state[name], wanted[name]
        if not isinstance(tensor, torch.Tensor):
            raise LosstuneError(f"{what}: {name!r} is not a tensor")
        problem = None
        if tensor.layout != torch.strided:
            problem = f"a {str(tensor.layout).removeprefix('torch.')} tensor, not a dense one"
        elif tensor.device.type != "cpu":
            problem = f"on the {tensor.device.type!r} device, not in the file's memory"
        elif not tensor.dtype.is_floating_point or tensor.dtype != like.dtype:
            problem = (
                f"of dtype {str(tensor.dtype).removeprefix('torch.')}, not {str(like.dtype).removeprefix('torch.')}"
            )
        elif tensor.shape != like.shape:
            problem = f"of shape {list(tensor.shape)}, not {list(like.shape)}"
        elif not bool(torch.isfinite(tensor).all()):
            problem = "holding NaN or infinite values"
        if problem is not None:
            raise LosstuneError(f"{what}: tensor {name!r} is {problem}; train the model again")
