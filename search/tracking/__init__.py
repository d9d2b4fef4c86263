"""MLflow: a study's experiment, parent run and child runs (:mod:`search.tracking.tracker`), the report files of a
trial, the params a run is logged with, what the parent run shows, and where MLflow writes. May import
:mod:`search.formats` and :mod:`search.study`."""
