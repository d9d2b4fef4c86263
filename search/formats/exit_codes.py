"""The ``losstune`` command's exit statuses, for the command itself and for the worker processes of a search
(whose statuses the parent turns into its own)."""

EXIT_BAD_INPUT = 2  # a LosstuneError (bad input, a store that cannot be used): one line on stderr, no traceback
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: 128 + SIGINT, as a shell reports it
