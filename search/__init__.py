"""losstune's search side: Optuna studies, MLflow tracking and the final model, on top of :mod:`objectives`.

Packages, each importing only those listed before it (and :mod:`objectives`), never one after it:

- :mod:`search.formats`: text in and out (validation errors as one line, strict JSON, URLs without secrets,
  exit statuses);
- :mod:`search.study`: the study definition (study files, the phased plan) and what its stored trials say;
- :mod:`search.tracking`: MLflow (the experiment, parent and child runs, report files, params, locations);
- :mod:`search.run`: running a study (storages, the budget ledger, workers, ``losstune search`` and ``status``);
- :mod:`search.model`: the chosen configuration and the final model (``export``, ``train``, ``predict``,
  ``evaluate``, the model directory and its pyfunc model).

:mod:`search.cli` (the ``losstune`` command, with :mod:`search.cli_args`, its arguments, and :mod:`search.commands`,
what each command runs) sits on top and may import any of them. Package ``__init__`` files
import nothing, so that a command imports only the modules it uses (``status`` never imports torch).
"""
