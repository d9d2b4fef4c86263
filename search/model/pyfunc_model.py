"""The MLflow pyfunc model of a losstune model directory (see :mod:`search.model.model_dir`).

``mlflow.pyfunc.load_model(MODEL_DIR)`` builds it from ``losstune_pyfunc.py`` (a model from code, no pickle)
and calls :meth:`LosstunePyfunc.load_context`, which loads the directory through the same checked loader as
``losstune predict`` (:func:`search.model.model_dir_loading.load_model_dir`). ``predict`` takes a DataFrame of raw
feature columns, read as ``losstune predict`` reads a file (:func:`objectives.data.normalise_frame`: blank or
whitespace-only cells are missing); other columns (the id column excluded in training, the target) are ignored and
returns a DataFrame with ``proba`` (positive class) and ``label`` (0/1 at the saved threshold); a missing or
non-numeric column is an ``MlflowException`` (INVALID_PARAMETER_VALUE: HTTP 400 when served) that names it.
"""

# no `from __future__ import annotations`: MLflow reads predict's type hint (pd.DataFrame: no input conversion,
# and no warning asking for one)
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel, PythonModelContext

from objectives.data import normalise_frame
from objectives.errors import LosstuneError
from search.model.model_dir import MANIFEST, PackagedModel
from search.model.model_dir_loading import load_model_dir


class LosstunePyfunc(PythonModel):
    def __init__(self) -> None:
        self.model: PackagedModel | None = None

    def load_context(self, context: PythonModelContext) -> None:
        self.model = _load(context)

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.model is None:
            self.model = _load(context)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        # the same rules as `losstune predict` reading a file: blank cells missing, names and categories stripped
        frame = normalise_frame(frame.reset_index(drop=True).copy())
        try:
            return self.model.predict(frame, source="the model input")
        except LosstuneError as exc:  # bad input: MLflow's scoring server answers 400 with this message
            raise MlflowException.invalid_parameter_value(str(exc)) from None


def _load(context: PythonModelContext) -> PackagedModel:
    # MLflow hands over the artifacts' paths in the (local or downloaded) model directory:
    # MODEL_DIR/artifacts/losstune_model.json; the directory is loaded through the checked loader
    return load_model_dir(Path(context.artifacts[MANIFEST]).parent.parent)
