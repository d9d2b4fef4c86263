"""The study's plots on its parent run: Optuna's optimisation history and parameter importances, as PNGs.

Optuna draws through pyplot (unlike the trial reports, :mod:`search.tracking.reports`), so pyplot's global state
is contained here."""

from __future__ import annotations

import logging
import math
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna
    from matplotlib.axes import Axes

log = logging.getLogger(__name__)

OPTIMIZATION_HISTORY_PNG = "optimization_history.png"
PARAM_IMPORTANCES_PNG = "param_importances.png"


def write_study_plots(study: optuna.Study, directory: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances as PNGs; skipped (log.info) when not computable.

    Optuna draws through pyplot and sets the ``ggplot`` style globally; both are contained here: the Agg
    backend is chosen when pyplot was not imported yet (a headless search), the style change is undone by
    ``rc_context``, and every figure is closed.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.exceptions import ExperimentalWarning

    wanted = _wanted_plots(study)
    written = []
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", ExperimentalWarning)
        # PED-ANOVA's caveat for early, small studies; the plot is still drawn and the table says how many trials
        warnings.filterwarnings("ignore", message="Some regimes for parameter")
        warnings.filterwarnings("ignore", message="Target and region quantiles select the same set")
        for filename, plot in wanted:
            fig = plot(study).get_figure(root=True)
            if fig is None:  # Optuna draws every plot on a new figure of its own
                raise RuntimeError(f"Optuna drew {filename} on no figure")
            try:
                fig.set_size_inches(7, 4.5)
                fig.tight_layout()
                fig.savefig(directory / filename, dpi=100)
            finally:
                plt.close(fig)
            written.append(directory / filename)
    return written


def _wanted_plots(study: optuna.Study) -> list[tuple[str, Callable[[optuna.Study], Axes]]]:
    """The plots the study's trials allow (file name, Optuna's function); why another is not drawn is logged."""
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as optuna_plots

    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    varying = sorted(
        name for name in {n for t in trials for n in t.params} if len({repr(t.params.get(name)) for t in trials}) > 1
    )
    wanted: list[tuple[str, Callable[[optuna.Study], Axes]]] = []
    if trials:
        wanted.append((OPTIMIZATION_HISTORY_PNG, optuna_plots.plot_optimization_history))
    else:
        log.info("no complete trial yet: no optimisation history plot")
    if len(trials) >= 2 and len(varying) >= 2:
        wanted.append((PARAM_IMPORTANCES_PNG, optuna_plots.plot_param_importances))
    else:
        log.info(
            "parameter importances need >= 2 complete trials and >= 2 parameters that vary "
            "(have %d and %d): no importance plot",
            len(trials),
            len(varying),
        )
    return wanted
