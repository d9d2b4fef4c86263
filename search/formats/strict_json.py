"""JSON that strict parsers accept: NaN and infinities become ``null``.

Python's ``json.dumps`` writes ``NaN``, ``Infinity`` and ``-Infinity`` by default, which is not JSON (RFC 8259):
JavaScript's ``JSON.parse``, ``jq`` and most other parsers reject the whole document. A missing score (a failed
trial, an undefined ROC-AUC) is therefore written as ``null``.
"""

from __future__ import annotations

import json
import math
from typing import Any


def strict_jsonable(value: Any) -> Any:
    """``value`` with every non-finite float (also inside dicts, lists and tuples) replaced by None, and NumPy
    scalars as Python numbers; anything else is left for ``json.dumps``'s ``default``."""
    if isinstance(value, dict):
        return {k: strict_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_jsonable(v) for v in value]
    item = getattr(value, "item", None)  # a NumPy scalar (np.float32 is not a float subclass)
    if callable(item) and type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any) -> str:
    """One strict JSON document; values JSON has no type for (paths, dates) are written as strings."""
    return json.dumps(strict_jsonable(value), allow_nan=False, default=str)
