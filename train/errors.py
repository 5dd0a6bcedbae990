"""Failures a run cannot go on from for a reason outside its config (a full disk, a process that stopped
answering). The message says what happened and what to do, so ``rlvr-train`` prints it without a
traceback and exits with status 1 (config errors, :class:`train.config.ConfigError`, exit with 2)."""


class RunError(RuntimeError):
    """The run stopped; the message names what failed, where, and how to go on."""


class DataError(ValueError):
    """A dataset, file or record that cannot be used as it is; the message names it, the row, and what to fix.
    Like a config error, ``rlvr-train`` and ``rlvr-eval`` print it without a traceback and exit with status 2."""
