"""The study: its file (validated into :class:`~search.study.study_file.StudyFile`), the phased plan derived from
the stored trials, the trials' noise and verdicts, and the results table. No Optuna storage, no MLflow, no
torch: may import :mod:`search.formats` only."""
