"""The final model: the preprocessing and one model fitted on every row with a trial's settings, and inference.

Cross-validation measures a configuration; this fits it once for use. The preprocessing is fitted on all rows
(there is no held-out fold left to leak into), and the model is trained by the same engine as the CV folds, as a
single fold (``M=1``) whose training rows are all rows and which has no validation rows. Its seed is the one
fold 0 gets in CV (``fold_seeds(cv.seed, ...)[0]``), so the final model is reproducible from the config.
The number of epochs is the trial's: with all rows an epoch has a few more steps than a CV fold's.

:func:`check_features` turns a raw table (a test CSV, a serving request) into the columns the model was fitted
on, or says in one line what is missing; unseen categories are counted, not refused (the one-hot encoder
ignores them: an all-zero block).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer

from objectives.config import ModelConfig, TrialConfig
from objectives.data import Dataset, refuse_out_of_range, rows_text
from objectives.engine import train_folds
from objectives.errors import DataError
from objectives.evaluate import fold_seeds, sigmoid
from objectives.memory import check_trial_memory
from objectives.model import build_module, row_logits
from objectives.preprocess import cap_quantiles, make_preprocessor, numeric_block_widths
from objectives.table import categories_as_trained, missing_as_na

FORWARD_ROWS = 1024


@dataclass
class FinalModel:
    """A fitted preprocessing and the model's weights, with the columns and labels they were fitted on."""

    preprocessor: ColumnTransformer
    state_dict: dict[str, torch.Tensor]
    model_config: ModelConfig
    n_inputs: int  # width of the preprocessed features
    numeric_columns: list[str]
    categorical_columns: list[str]
    positive_label: str
    negative_label: str
    train_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per epoch
    _net: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def feature_columns(self) -> list[str]:
        return [*self.numeric_columns, *self.categorical_columns]

    @property
    def categories(self) -> dict[str, list[str]]:
        """The categories seen in training, per categorical column (what the one-hot encoder knows)."""
        if not self.categorical_columns:
            return {}
        onehot = self.preprocessor.named_transformers_["categorical"].named_steps["onehot"]
        return {col: [str(c) for c in cats] for col, cats in zip(self.categorical_columns, onehot.categories_)}

    def network(self) -> torch.nn.Module:
        if self._net is None:
            self._net = build_network(self.n_inputs, self.model_config, self.state_dict)
        return self._net

    def predict_proba(self, features: pd.DataFrame, first_line: int | None = None) -> np.ndarray:
        """Probability of the positive class per row; ``features`` as returned by :func:`check_features`.

        Never a NaN: a value that standardises beyond float32 (far outside the training range) or a network
        whose output is not finite is a :class:`DataError` naming the rows, not a blank probability."""
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.asarray(self.preprocessor.transform(features), dtype=np.float32)
        if x.shape[1] != self.n_inputs:
            raise DataError(f"the preprocessing gives {x.shape[1]} inputs but the network expects {self.n_inputs}")
        finite = np.isfinite(x)
        if not finite.all():
            # the numeric columns come first in the preprocessed matrix, a block of columns each
            col = int(np.argmin(finite.all(axis=0)))
            block_ends = np.cumsum(numeric_block_widths(self.preprocessor))
            name = "a categorical column"
            if len(block_ends) and col < block_ends[-1]:
                name = self.feature_columns[int(np.searchsorted(block_ends, col, side="right"))]
            rows = features.index[~finite[:, col]]
            raise DataError(
                f"column {name!r} has value(s) too far outside the training range to be standardised in float32 at "
                f"{rows_text(rows, first_line)}: check those rows"
            )
        logits = self._logits(x)
        bad = ~np.isfinite(logits)
        if bad.any():
            raise DataError(
                f"the model's output is not a number at {rows_text(features.index[bad], first_line)}: the weights "
                "or the inputs are not finite; check those rows, or train the model again"
            )
        return sigmoid(logits)

    def _logits(self, x: np.ndarray) -> np.ndarray:
        """The network's output in blocks of :data:`FORWARD_ROWS` rows: a float32 matmul's last bits depend on
        how many rows it is given, so a row gets the same probability whether the table is scored whole, in
        chunks (a multiple of the block) or through the served model."""
        net = self.network()
        with torch.no_grad():
            blocks = [
                row_logits(net, torch.from_numpy(x[i : i + FORWARD_ROWS])).double().numpy()
                for i in range(0, len(x), FORWARD_ROWS)
            ]
        return np.concatenate(blocks) if blocks else np.zeros(0)


def build_network(n_inputs: int, cfg: ModelConfig, state_dict: dict[str, torch.Tensor]) -> torch.nn.Module:
    """``build_module(cfg, n_inputs)`` in eval mode holding ``state_dict``; a shape mismatch is a
    :class:`DataError`."""
    nonfinite = [name for name, t in state_dict.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if nonfinite:
        raise DataError(f"the weights hold NaN or infinite values ({', '.join(nonfinite[:3])}): train the model again")
    net = build_module(cfg, n_inputs)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise DataError(
            f"the weights do not fit the configured network {cfg.module or cfg.hidden}: {first[0] if first else exc}"
        ) from None
    return net.eval()


def fit_final_model(dataset: Dataset, config: TrialConfig) -> FinalModel:
    """Fit the preprocessing on all rows, then train one model on all rows with ``config``'s settings."""
    return fit_final_models(dataset, [config])[0]


def fit_final_models(dataset: Dataset, configs: list[TrialConfig]) -> list[FinalModel]:
    """One model per configuration on all rows, trained as one stacked job (an ensemble's members): the
    preprocessing is fitted once, on all rows; each model has its configuration's loss and, from its
    ``cv.seed``, its initialisation seed. The configurations must agree on everything but loss and seed."""
    first = configs[0]
    for c in configs[1:]:
        if (c.model, c.train) != (first.model, first.train):
            raise ValueError("models trained in one job must share their model and training settings")
    check_trial_memory(dataset, first, final=True, configs=len(configs))
    pre = make_preprocessor(dataset.numeric_columns, dataset.categorical_columns, first.model.numeric_encoding)
    cap_quantiles(pre, dataset.n_rows)
    pre.fit(dataset.features, dataset.y)  # the labels: target-aware bins are fitted on them
    x = np.asarray(pre.transform(dataset.features), dtype=np.float32)
    all_rows = np.arange(dataset.n_rows, dtype=np.int64)
    trained = train_folds(
        x[np.newaxis],
        dataset.y,
        [all_rows] * len(configs),
        None,
        [c.loss for c in configs],
        first.model,
        first.train,
        [fold_seeds(c.cv.seed, 1)[0] for c in configs],
        blocks=[0] * len(configs),
    )
    return [
        FinalModel(
            preprocessor=pre,
            state_dict=trained.state_dict(m),
            model_config=first.model,
            n_inputs=x.shape[1],
            numeric_columns=list(dataset.numeric_columns),
            categorical_columns=list(dataset.categorical_columns),
            positive_label=dataset.positive_label,
            negative_label=dataset.negative_label,
            train_loss=trained.train_loss[m],
        )
        for m in range(len(configs))
    ]


@dataclass
class CheckedFeatures:
    """The model's columns taken from a raw table, and what was unusual about them."""

    features: pd.DataFrame
    unseen: dict[str, int]  # categorical column -> rows with a category not seen in training
    unseen_examples: dict[str, list[str]]
    empty: list[str]  # model columns with no value at all in this table (imputed)


def check_features(
    frame: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    categories: dict[str, list[str]],
    source: str = "the input",
    first_line: int | None = None,
    na_values: tuple[str, ...] = (),
) -> CheckedFeatures:
    """The model's columns from ``frame``, read by the schema it was trained with: the study's ``na_values``
    missing (also in a frame parsed without them), numbers parsed, categories as text in the training's spelling.

    Raises :class:`DataError` naming every missing column, a numeric column holding text or numbers training
    would have refused (inf, beyond float32), with the rows: ``line i + first_line`` of a file, or ``row i`` of
    a frame when ``first_line`` is None. Other columns (an id, the target) are ignored.
    """
    missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source} lacks {len(missing)} column(s) the model needs: {', '.join(map(repr, missing))} "
            f"(it was trained on {', '.join(map(repr, [*numeric, *categorical]))})"
        )
    out = pd.DataFrame(index=frame.index)
    missing_text = set(na_values)
    for col in numeric:
        values = missing_as_na(frame[col], missing_text)
        parsed = pd.to_numeric(values, errors="coerce")
        bad = parsed.isna() & values.notna()
        if bad.any():
            shown = ", ".join(repr(v) for v in values[bad].astype(str).unique()[:3])
            raise DataError(
                f"column {col!r} of {source} must be numeric but has {int(bad.sum())} non-numeric value(s) ({shown}) "
                f"at {rows_text(values.index[bad], first_line)}; declare text meaning 'missing' with na_values in "
                "the config"
            )
        parsed = parsed.astype(np.float64)
        refuse_out_of_range(col, parsed, f" of {source}", first_line)  # the rule training applied
        out[col] = parsed
    unseen, examples = {}, {}
    for col in categorical:
        out[col] = values = categories_as_trained(frame[col], categories.get(col, []), missing_text)
        known = set(categories.get(col, []))
        new = values.notna() & ~values.isin(known)
        if new.any():
            unseen[col] = int(new.sum())
            examples[col] = [str(v) for v in values[new].unique()[:3]]
    # a whole column blank in a table (not one request row with a missing value) is worth a warning
    empty = [c for c in [*numeric, *categorical] if len(out) > 1 and out[c].isna().all()]
    return CheckedFeatures(out, unseen, examples, empty)
