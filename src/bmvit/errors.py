"""The exception family of bmvit.

Every error a user can cause (a bad config key, a malformed CSV row, a missing folder) is raised
as a subclass of :class:`BmvitError` whose message names the offending file, line or key and says
what was expected. The CLI prints ``error: <message>`` and exits with status 2; ``--debug`` shows
the traceback as well.
"""

from __future__ import annotations


class BmvitError(Exception):
    """Base class of all user-facing bmvit errors."""


class ConfigError(BmvitError):
    """A configuration file or ``key=value`` override is invalid."""


class DataError(BmvitError):
    """A dataset file or folder is missing or malformed."""


class CheckpointError(BmvitError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


class TrainingError(BmvitError):
    """Training cannot go on (e.g. a non-finite loss under ``train.nan_policy=stop``)."""


class OutputError(BmvitError):
    """An output file cannot be written (missing permission, a file where a folder should be, disk full)."""


class Interrupted(BmvitError):
    """Training stopped on a signal (SIGTERM, Ctrl-C) after checkpointing; the CLI exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
