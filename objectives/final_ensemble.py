r"""An ensemble's final model: each member fitted on all rows with its own loss and seed (by
:func:`objectives.final.fit_final_model`, the one final-training entry), and inference as the weighted average
of the members' probabilities, :math:`\bar p(x) = \sum_i w_i\, p_i(x)`, compared with the ensemble's threshold
by the caller.

The members share the data, the preprocessing recipe and the network shape (they come from one study), so the
preprocessing fitted on all rows is the same for each; the ensemble keeps the first member's and one state_dict
per member. As a :class:`~objectives.final.FinalModel` it has the first member's columns and labels, and its
``state_dict`` holds every member's tensors under ``member<i>.``; :func:`split_state` undoes that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from objectives.config import TrialConfig
from objectives.data import Dataset
from objectives.final import FinalModel, fit_final_models

PREFIX = "member{}."


@dataclass
class EnsembleFinalModel(FinalModel):
    members: list[FinalModel] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def network(self) -> torch.nn.Module:
        """Every member's network built (shape and finiteness checked); the first is returned."""
        built = [m.network() for m in self.members]
        return built[0]

    def predict_proba(self, features: pd.DataFrame, first_line: int | None = None) -> np.ndarray:
        """:math:`\\sum_i w_i p_i(x)`: each member's probabilities, averaged with the weights."""
        total = np.zeros(len(features))
        for w, m in zip(self.weights, self.members):
            total += w * m.predict_proba(features, first_line)
        return total


def combined_state(members: list[FinalModel]) -> dict[str, torch.Tensor]:
    return {PREFIX.format(i) + k: v for i, m in enumerate(members) for k, v in m.state_dict.items()}


def split_state(state: dict[str, torch.Tensor], n_members: int) -> list[dict[str, torch.Tensor]]:
    """The members' state_dicts from :func:`combined_state`'s; a key of no member is a ``ValueError``."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(n_members)]
    for key, value in state.items():
        head, _, rest = key.partition(".")
        index = int(head[len("member") :]) if head.startswith("member") and head[len("member") :].isdigit() else -1
        if not 0 <= index < n_members or not rest:
            raise ValueError(f"weights key {key!r} belongs to no member of the ensemble")
        out[index][rest] = value
    return out


def of_members(members: list[FinalModel], weights: list[float]) -> EnsembleFinalModel:
    """The ensemble of fitted (or loaded) members; they share the first member's preprocessing."""
    first = members[0]
    members = [m if i == 0 else _sharing(m, first) for i, m in enumerate(members)]
    return EnsembleFinalModel(
        preprocessor=first.preprocessor,
        state_dict=combined_state(members),
        model_config=first.model_config,
        n_inputs=first.n_inputs,
        numeric_columns=first.numeric_columns,
        categorical_columns=first.categorical_columns,
        positive_label=first.positive_label,
        negative_label=first.negative_label,
        train_loss=np.mean([m.train_loss for m in members], axis=0) if len(first.train_loss) else first.train_loss,
        members=members,
        weights=[float(w) for w in weights],
    )


def _sharing(member: FinalModel, first: FinalModel) -> FinalModel:
    member.preprocessor = first.preprocessor
    return member


def fit_final_ensemble(dataset: Dataset, configs: list[TrialConfig], weights: list[float]) -> EnsembleFinalModel:
    """Each member's final model on all rows (``configs[i]``: its loss and, in ``cv.seed``, its seed), the
    members trained as one stacked job (:func:`objectives.final.fit_final_models`)."""
    if not configs or len(configs) != len(weights):
        raise ValueError("an ensemble needs one weight per member, and at least one member")
    return of_members(fit_final_models(dataset, configs), weights)
