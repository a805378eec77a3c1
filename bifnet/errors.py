"""The one error hierarchy of bifnet.

Every error a user can cause derives from :class:`BifnetError`; the CLI turns
each into one line on stderr and a non-zero exit code (``exit_code``).
"""

from __future__ import annotations


class BifnetError(Exception):
    """Base class of every error bifnet raises on purpose."""

    exit_code = 1


class ModelError(BifnetError):
    """A model specification is missing, malformed or inconsistent."""

    exit_code = 3


class ConnectomeError(BifnetError):
    """A connectome cannot be loaded or is not usable as given."""

    exit_code = 4


class ContinuationError(BifnetError):
    """The continuation engine failed.

    ``output_directory`` keeps AUTO-07p's raw output folder for inspection
    (``None`` when there is none).
    """

    exit_code = 5

    def __init__(self, message: str, output_directory: str | None = None):
        super().__init__(message)
        self.output_directory = output_directory


class RunFileError(BifnetError):
    """A run file (``continuation_runs/*.toml``) is malformed or asks for
    something impossible."""

    exit_code = 2


class SimulationError(BifnetError):
    """A network integration was asked for something invalid (bad initial
    state, non-positive step) or could not proceed."""

    exit_code = 6


class InfrastructureError(BifnetError):
    """Something around the computation failed: the output folder, the disk,
    a worker pool or a Dask scheduler. Not a result: a run or sweep stops on it
    (a sweep does not record it as a failed point)."""

    exit_code = 7


class OutputError(InfrastructureError):
    """The output folder cannot be written (read-only, full disk, a file in the way)."""
