"""Trials, measured: stratified K-fold CV (repeated ``cv.repeats`` times) of the MLP under a loss configuration,
then the threshold.

``evaluate(dataset, config)`` is the whole objective: split, fit preprocessing inside each fold, train the fold
models together, collect out-of-fold (OOF) probabilities, pick the metric-optimal threshold on them exactly, and
report both the optimistic OOF score at that threshold and the honest cross-fitted one.
``evaluate_many(dataset, configs)`` does the same for several loss configurations as one job: every
(configuration, repeat, fold) model is a row of one stacked training, and each configuration's result is bit for
bit what ``evaluate`` gives it alone (fp32, no dropout).

With ``cv.repeats`` R > 1, repeat r uses its own stratified split and init seeds (:func:`repeat_seed`; repeat 0
is exactly the single K-fold of ``cv.seed``), the same for every configuration. The threshold is chosen on the
pooled OOF predictions of all repeats; ``repeat_scores[r]`` is repeat r's OOF score at that threshold and
``oof_score`` their mean. ``oof_proba`` and ``fold_of_row`` stay repeat 0's (``[n_rows]``, what reports and
``--oof-out`` read); ``oof_proba_by_repeat`` and ``fold_of_row_by_repeat`` are ``[R, n_rows]``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from objectives.config import STANDARD_NUMERIC, CVConfig, NumericEncoding, TrialConfig
from objectives.data import Dataset, check_folds
from objectives.engine import FoldTraining, train_folds
from objectives.epochs import choose_epochs
from objectives.errors import TrainingDiverged
from objectives.memory import check_trial_memory
from objectives.preprocess import fit_fold_preprocessors
from objectives.scoring import OofScores, score_oof

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult(OofScores):
    """Everything one trial measured: its scores (:class:`~objectives.scoring.OofScores`, every field of which comes
    first, under the same names) and what its training measured. ``to_dict()`` is the JSON the CLI prints (curves
    and arrays left out)."""

    n_rows: int
    positive_rate: float
    fingerprint: str
    seconds: float
    train_loss: np.ndarray = field(repr=False)  # [repeats * folds, epochs], repeat-major
    val_loss: np.ndarray = field(repr=False)  # [repeats * folds, epochs]
    # the epoch count the trial's scores are of: train.epochs, or the checkpoint chosen (objectives.epochs)
    chosen_epochs: int = 0
    epoch_curve: list[tuple[int, float]] = field(default_factory=list)  # (epochs, mean fold score) per checkpoint

    ARRAYS = (
        "oof_proba",
        "fold_of_row",
        "y_true",
        "oof_proba_by_repeat",
        "fold_of_row_by_repeat",
        "train_loss",
        "val_loss",
    )

    @classmethod
    def of(cls, scores: OofScores, **measured: Any) -> EvaluationResult:
        """The result of a trial scored as ``scores`` (:func:`~objectives.scoring.score_oof`), with what else it
        ``measured`` (rows, fingerprint, time, learning curves)."""
        return cls(**scores.by_name(), **measured)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in self.ARRAYS:
            d.pop(key)
        return d


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) per fold; shuffled, stratified, deterministic in ``seed``."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(tr.astype(np.int64), va.astype(np.int64)) for tr, va in splitter.split(np.zeros(len(y)), y)]


def fold_seeds(seed: int, folds: int) -> list[int]:
    """Independent seeds for each fold's init, batch order and dropout, derived from the CV seed."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(folds)]


def repeat_seed(seed: int, repeat: int) -> int:
    """The split seed of repeat ``repeat`` (its fold seeds are ``fold_seeds(repeat_seed(...), folds)``): repeat 0
    is ``seed`` itself, so one repeat is plain K-fold; the others are derived from ``seed`` and the repeat."""
    return seed if repeat == 0 else int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # exact sigmoid without overflow for large |z|


@dataclass(frozen=True)
class PreparedFolds:
    """The CV splits of every repeat and each split's preprocessed rows, repeat-major (split ``r * folds + k``).
    They depend only on the data and ``cv``, not on the loss, so a search prepares them once and every trial
    reuses them."""

    fingerprint: str
    cv: CVConfig
    numeric: NumericEncoding  # the model's numeric preprocessing (scaling, embedding), fitted in each fold
    train_rows: list[np.ndarray]
    val_rows: list[np.ndarray]
    x: np.ndarray  # [repeats * folds, rows, features], split s's preprocessing of every row
    seeds: list[int]  # each split's model seed (init, batch order)


def cv_splits(y: np.ndarray, cv: CVConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, validation rows) of every split of ``cv``, repeat-major (split ``r * folds + k``): the one
    definition of a study's folds (the trials and the yardstick, :mod:`objectives.baseline`, both use it)."""
    return [split for r in range(cv.repeats) for split in stratified_folds(y, cv.folds, repeat_seed(cv.seed, r))]


def prepare_folds(dataset: Dataset, cv: CVConfig, numeric: NumericEncoding = STANDARD_NUMERIC) -> PreparedFolds:
    check_folds(dataset, cv.folds)
    splits = cv_splits(dataset.y, cv)
    seeds = [s for r in range(cv.repeats) for s in fold_seeds(repeat_seed(cv.seed, r), cv.folds)]
    train_rows = [tr for tr, _ in splits]
    _, x = fit_fold_preprocessors(
        dataset.features, dataset.numeric_columns, dataset.categorical_columns, train_rows, numeric, dataset.y
    )
    return PreparedFolds(dataset.fingerprint, cv, numeric, train_rows, [va for _, va in splits], x, seeds)


def evaluate(dataset: Dataset, config: TrialConfig, prepared: PreparedFolds | None = None) -> EvaluationResult:
    """Cross-validate ``config`` on ``dataset``; ``prepared`` (from :func:`prepare_folds`) skips re-splitting
    and re-fitting the preprocessing when several configurations share the data and the CV settings.
    Raises :class:`TrainingDiverged` when the loss becomes NaN/inf."""
    (outcome,) = evaluate_batch(dataset, [config], prepared)
    if isinstance(outcome, TrainingDiverged):
        raise outcome
    return outcome


def evaluate_many(
    dataset: Dataset, configs: list[TrialConfig], prepared: PreparedFolds | None = None
) -> list[EvaluationResult]:
    """:func:`evaluate` of several configurations that differ only in their loss, trained as one job; raises
    the first configuration's :class:`TrainingDiverged` if any diverges (see :func:`evaluate_batch`, which
    returns it instead, so that the others' results are kept)."""
    results: list[EvaluationResult] = []
    for outcome in evaluate_batch(dataset, configs, prepared):
        if isinstance(outcome, TrainingDiverged):
            raise outcome
        results.append(outcome)
    return results


def evaluate_batch(
    dataset: Dataset, configs: list[TrialConfig], prepared: PreparedFolds | None = None
) -> list[EvaluationResult | TrainingDiverged]:
    """Each configuration's result, or the :class:`TrainingDiverged` that ended it: the models of all
    configurations are trained together (the rows of one stacked job), and a configuration whose loss becomes
    NaN/inf fails alone. ``seconds`` of each result is the whole job's time (they ran at once).

    The configurations must agree on everything but the loss (data, ``cv``, model, training, metric):
    otherwise ``ValueError``, naming the setting."""
    start = time.perf_counter()
    base = _common_settings(configs)
    # a network that cannot fit is one line, not a failed allocation
    check_trial_memory(dataset, base, configs=len(configs))
    if prepared is None:
        prepared = prepare_folds(dataset, base.cv, base.model.numeric_encoding)
    elif (
        prepared.fingerprint != dataset.fingerprint
        or prepared.cv != base.cv
        or prepared.numeric != base.model.numeric_encoding
    ):
        raise ValueError("prepared folds were made for other data or other CV settings")
    n_splits = len(prepared.train_rows)
    trained = _train_together(dataset, configs, base, prepared)
    seconds = time.perf_counter() - start
    outcomes: list[EvaluationResult | TrainingDiverged] = []
    for i, config in enumerate(configs):
        if i in trained.diverged:
            outcomes.append(trained.diverged[i])
            continue
        models = slice(i * n_splits, (i + 1) * n_splits)
        epochs, curve, logits = _chosen_logits(dataset, config, prepared, trained, models)
        oof, fold_of_row = _oof(dataset.n_rows, config.cv, prepared.val_rows, logits)
        scores = score_oof(dataset.y, oof, fold_of_row, config.metric)
        log.info("evaluated %s: oof %s=%.4f", config.loss, config.metric.label, scores.oof_score)
        outcomes.append(
            EvaluationResult.of(
                scores,
                n_rows=dataset.n_rows,
                positive_rate=dataset.positive_rate,
                fingerprint=dataset.fingerprint,
                seconds=seconds,
                train_loss=trained.train_loss[models],
                val_loss=trained.val_loss[models],
                chosen_epochs=epochs,
                epoch_curve=curve,
            )
        )
    log.info("trained %d configuration(s) x %d split(s) in %.2fs", len(configs), n_splits, seconds)
    return outcomes


def _chosen_logits(
    dataset: Dataset, config: TrialConfig, prepared: PreparedFolds, trained: FoldTraining, models: slice
) -> tuple[int, list[tuple[int, float]], list[np.ndarray]]:
    """The epoch count, the learning curve and the validation logits a configuration is scored on: the last
    epoch's without checkpoints, else those of the ONE checkpoint best on the mean fold score
    (:func:`objectives.epochs.choose_epochs`)."""
    if not trained.checkpoint_logits:
        return config.train.epochs, [], trained.val_logits[models]
    by_epoch = {
        e: _oof(dataset.n_rows, config.cv, prepared.val_rows, logits[models])
        for e, logits in trained.checkpoint_logits.items()
    }
    choice = choose_epochs(dataset.y, by_epoch, config.metric)
    return choice.epochs, choice.curve, trained.checkpoint_logits[choice.epochs][models]


def _train_together(
    dataset: Dataset, configs: list[TrialConfig], base: TrialConfig, prepared: PreparedFolds
) -> FoldTraining:
    """Every (configuration, split) pair as one model of one training, configuration-major: model
    ``i * n_splits + s`` is configuration i (group i, with its loss) on split s (block s of ``prepared.x``)."""
    n_splits = len(prepared.train_rows)
    return train_folds(
        prepared.x,
        dataset.y,
        prepared.train_rows * len(configs),
        prepared.val_rows * len(configs),
        [c.loss for c in configs for _ in range(n_splits)],
        base.model,
        base.train,
        prepared.seeds * len(configs),
        blocks=list(range(n_splits)) * len(configs),
        groups=[i for i in range(len(configs)) for _ in range(n_splits)],
    )


def _common_settings(configs: list[TrialConfig]) -> TrialConfig:
    """The first configuration, once every other agrees with it on everything but the loss."""
    if not configs:
        raise ValueError("no configurations to evaluate")
    first = configs[0]
    for i, other in enumerate(configs[1:], start=1):
        for name in ("cv", "model", "train", "metric"):
            if getattr(other, name) != getattr(first, name):
                raise ValueError(
                    f"configurations trained together must differ only in their loss: configuration {i} has "
                    f"{name} {getattr(other, name)!r}, configuration 0 has {getattr(first, name)!r}; "
                    "evaluate them in separate calls"
                )
    return first


def _oof(
    n_rows: int, cv: CVConfig, val_rows: list[np.ndarray], logits: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """OOF probabilities and fold numbers ``[repeats, n_rows]`` from each split's validation logits."""
    oof = np.empty((cv.repeats, n_rows), dtype=np.float64)
    fold_of_row = np.empty((cv.repeats, n_rows), dtype=np.int64)
    for s, (rows, z) in enumerate(zip(val_rows, logits)):
        r, k = divmod(s, cv.folds)
        oof[r, rows] = sigmoid(z)
        fold_of_row[r, rows] = k
    return oof, fold_of_row
