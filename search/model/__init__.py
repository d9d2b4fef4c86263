"""The chosen configuration and the final model: the exported configuration file (``losstune export``), training
it on all rows into an MLflow model directory (``losstune train``), loading that directory back (its pyfunc
model, ``losstune predict``), and ``losstune evaluate``. May import :mod:`search.formats`, :mod:`search.study`,
:mod:`search.tracking` and :mod:`search.run`; a model directory bundles the part of it that its pyfunc model
imports (:mod:`search.model.bundled_code`)."""
