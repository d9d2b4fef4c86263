"""The one exception type a user is meant to read.

Anything raised as :class:`LosstuneError` is bad input or a refused operation; the CLI prints its message as a
single line and exits non-zero. Every other exception is a bug and keeps its traceback.
"""


class LosstuneError(ValueError):
    """Bad input or a refused operation, with a message that says what is wrong and how to fix it."""


class DataError(LosstuneError):
    """The table cannot be used as given (missing file, bad target, junk in a numeric column, ...)."""


class TrainingDiverged(LosstuneError):
    """The loss became NaN or infinite during training (learning rate too high, for instance)."""
