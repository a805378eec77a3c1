"""Numerical settings of a continuation, in our own words.

Translated to AUTO-07p constants by exactly one function,
:func:`bifnet.continuation._auto.auto_constants`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from bifnet.errors import ContinuationError


#: Largest step, as a fraction of the width of the principal parameter's range.
MAX_STEP_FRACTION = 0.25


@dataclasses.dataclass(frozen=True)
class ContinuationSettings:
    """Frozen, validated numerics of a continuation.

    Parameters
    ----------
    ds : float
        Initial step along the branch (sign gives the direction).
    ds_min, ds_max : float
        Bounds of the adaptive step. All three must be finite and positive
        (``ds`` non-zero); when the principal parameter has a finite range,
        the engine uses at most :data:`MAX_STEP_FRACTION` of its width for
        ``ds`` and ``ds_max``.
    max_steps : int
        Maximum number of continuation steps per branch.
    ntst : int
        Mesh intervals for periodic orbits.
    ncol : int
        Collocation points per mesh interval.
    bounds : mapping of str to (float, float)
        Stop when a parameter leaves its interval.
    max_period : float
        Stop a cycle branch when the period exceeds this (ms): a period
        blow-up, classified as SNIC or homoclinic.
    tolerance : float
        Newton tolerance on the solution and parameters.
    detect_cycle_bifurcations : bool
        Detect PD and NS on cycle branches (AUTO ISP = 2; costs a little).
    save_every : int
        Store every n-th point with its full data (AUTO NPR). 1 (the default)
        is needed for the ``<var>_min``/``<var>_max`` columns of cycles and for
        state columns beyond the fifth on loci; larger values leave NaN there.
    """

    ds: float = 0.01
    ds_min: float = 1e-5
    ds_max: float = 0.25
    max_steps: int = 2000
    ntst: int = 60
    ncol: int = 4
    bounds: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    max_period: float = 1000.0
    tolerance: float = 1e-8
    detect_cycle_bifurcations: bool = True
    save_every: int = 1

    def __post_init__(self):
        def bad(name, why):
            raise ContinuationError(f"continuation setting {name!r}: {why}")

        import math

        for name in ("ds", "ds_min", "ds_max", "max_period", "tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(name, f"must be a finite number, got {value!r}")
        if not self.ds or abs(self.ds) < self.ds_min:
            bad("ds", f"must be non-zero and at least ds_min in size, got {self.ds}")
        if not 0 < self.ds_min <= self.ds_max:
            bad("ds_min", f"need 0 < ds_min <= ds_max, got {self.ds_min}, {self.ds_max}")
        for name in ("max_steps", "ntst", "ncol", "save_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                bad(name, f"must be a positive integer, got {value!r}")
        if not 2 <= self.ncol <= 7:
            bad("ncol", f"AUTO-07p supports 2..7, got {self.ncol}")
        if not self.max_period > 0:
            bad("max_period", f"must be positive, got {self.max_period}")
        if not 0 < self.tolerance < 1e-2:
            bad("tolerance", f"must be in (0, 1e-2), got {self.tolerance}")
        clean = {}
        for name, pair in dict(self.bounds).items():
            try:
                lo, hi = (float(v) for v in pair)
            except (TypeError, ValueError):
                bad("bounds", f"{name} needs [low, high], got {pair!r}")
            if not (math.isfinite(lo) or lo == -math.inf) or not (math.isfinite(hi) or hi == math.inf):
                bad("bounds", f"{name} needs finite numbers, got [{lo}, {hi}]")
            if not lo < hi:
                bad("bounds", f"{name} needs low < high, got [{lo}, {hi}]")
            clean[name] = (lo, hi)
        object.__setattr__(self, "bounds", clean)

    def replace(self, **changes) -> "ContinuationSettings":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, data: Mapping, *, where: str = "settings") -> "ContinuationSettings":
        """Build from a run-file table; unknown keys raise :class:`ContinuationError`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ContinuationError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
        try:
            return cls(**dict(data))
        except TypeError as error:
            raise ContinuationError(f"{where}: {error}") from None
