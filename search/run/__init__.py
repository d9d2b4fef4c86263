"""Running a study: where studies live (Optuna storages, heartbeats), the weekly budget ledger, a study opened for
work, the workers and their batch lifecycle, ``losstune search`` and ``losstune status``. May import
:mod:`search.formats`, :mod:`search.study` and :mod:`search.tracking`."""
