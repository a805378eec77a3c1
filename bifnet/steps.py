"""The step interface shared by every step kind of a run file.

A step function has the signature ``step_function(context, spec) -> dict``:
``spec`` is the step's table from the run file (a plain dict, ``name`` and
``kind`` included); it writes its files into ``context.out_dir`` through
:mod:`bifnet.io` and returns a JSON-serialisable summary for ``run.json``.
It raises :class:`~bifnet.errors.RunFileError` for bad keys in ``spec``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from bifnet.errors import RunFileError
from bifnet.model import NodeModel


@dataclasses.dataclass
class StepContext:
    """What a step can see.

    Attributes
    ----------
    model : NodeModel
    parameters : dict of str to float
        Model parameters for this run (defaults updated by the run file and
        ``--set``).
    connectome : CouplingOperator or Connectome or None
        The model's coupling operator on the run's connectome
        (:class:`bifnet.connectome.CouplingOperator`: ``spectrum()`` gives the
        modes of ``P`` or ``L``, ``weights`` what
        :func:`bifnet.network.build_network` takes); the row-normalised
        connectome for a model without coupling; ``None`` when the run has none.
    out_dir : Path
        The run's output folder.
    results : dict
        Objects produced by earlier steps, by step name (e.g. lists of
        :class:`~bifnet.continuation.branch.Branch`).
    rng_seed : int or None
        Seed from the run file (``seed = ...``).
    fingerprint : dict
        Hashes of what decides the run's numbers (see
        :func:`bifnet.runs.run_fingerprint`); sweeps key their checkpoints by it.
    retry_failed : bool
        ``--retry-failed``: sweeps compute again the points that failed.
    """

    model: NodeModel
    parameters: dict[str, float]
    connectome: Any
    out_dir: Path
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    rng_seed: int | None = None
    log: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("bifnet"))
    fingerprint: dict = dataclasses.field(default_factory=dict)
    retry_failed: bool = False

    def require_connectome(self, step: str):
        if self.connectome is None:
            raise RunFileError(f"step {step!r} needs a connectome: add connectome = \"tvb68\" (or a path) to the run file")
        return self.connectome


def check_keys(spec: dict, allowed: set[str], step: str) -> None:
    """Raise :class:`RunFileError` naming any key of ``spec`` not in ``allowed``."""
    unknown = sorted(set(spec) - allowed - {"name", "kind"})
    if unknown:
        raise RunFileError(
            f"step {step!r}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )
