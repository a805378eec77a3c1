"""Results of continuation: column-oriented branches and their special points."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

import numpy as np


class SpecialKind(enum.Enum):
    """Kinds of special points bifnet reports."""

    LP = "LP"      #: fold of equilibria (saddle-node)
    HB = "HB"      #: Hopf bifurcation
    BP = "BP"      #: branch point
    LPC = "LPC"    #: fold of cycles
    PD = "PD"      #: period doubling
    NS = "NS"      #: Neimark-Sacker (torus)
    BT = "BT"      #: Bogdanov-Takens
    GH = "GH"      #: generalised Hopf (Bautin)
    CP = "CP"      #: cusp
    ZH = "ZH"      #: zero-Hopf (fold-Hopf)
    HH = "HH"      #: double Hopf
    R1 = "R1"      #: 1:1 resonance
    R2 = "R2"      #: 1:2 resonance
    R3 = "R3"      #: 1:3 resonance
    R4 = "R4"      #: 1:4 resonance
    LPPD = "LPPD"  #: fold-flip
    LPNS = "LPNS"  #: fold-torus
    PDNS = "PDNS"  #: flip-torus
    NSNS = "NSNS"  #: double torus
    SNIC = "SNIC"  #: saddle-node on invariant circle (period blow-up at a fold)
    HOM = "HOM"    #: homoclinic (period blow-up at a saddle)
    EP = "EP"      #: end point of a branch
    MX = "MX"      #: abnormal termination (no convergence)


class Stability(enum.Enum):
    """Three-valued stability."""

    STABLE = "stable"
    UNSTABLE = "unstable"
    NOT_EVALUATED = "not evaluated"


class BranchKind(enum.Enum):
    """What a branch is made of."""

    EQUILIBRIA = "equilibria"
    CYCLES = "cycles"
    LOCUS = "locus"        #: two-parameter curve of special points


@dataclasses.dataclass(frozen=True)
class SpecialPoint:
    """A special point on a branch.

    Attributes
    ----------
    kind : SpecialKind
    index : int
        Row of the point on its branch.
    parameters : mapping of str to float
        The branch's free parameters at the point.
    state : tuple of float
        State (equilibria) or the state at time 0 (cycles).
    label : int
        AUTO-07p's label (0 when the point was not labelled by AUTO).
    code : int
        AUTO-07p's raw type code.
    eigenvalues : tuple of complex
        Eigenvalues (equilibria) or Floquet multipliers (cycles), if known.
    period : float
        Period of the cycle (or ``2 pi / omega`` at a Hopf point), NaN if none.
    located : bool
        True when the engine located the point precisely (by a test function
        root); False when inferred (e.g. a period blow-up classification).
    name : str
        Unique name on the branch, e.g. ``"HB1"``.
    details : mapping
        Extra information (e.g. ``mode``, ``Lambda`` for transverse points).
    residual : float
        Max-norm residual of the point's defining system, solved by bifnet
        (:mod:`bifnet.continuation.verify`); NaN when not verified.
    verification : str
        How the point was verified (the defining system), ``"not verified"``,
        or empty before verification.
    """

    kind: SpecialKind
    index: int
    parameters: Mapping[str, float]
    state: tuple[float, ...] = ()
    label: int = 0
    code: int = 0
    eigenvalues: tuple[complex, ...] = ()
    period: float = float("nan")
    located: bool = True
    name: str = ""
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    residual: float = float("nan")
    verification: str = ""

    @property
    def frequency_hz(self) -> float:
        """``1000 / period`` (time in ms), NaN without a period."""
        return 1000.0 / self.period if np.isfinite(self.period) and self.period > 0 else float("nan")


@dataclasses.dataclass(frozen=True, eq=False)
class Branch:
    """A continuation branch, one numpy array per column.

    Columns: the free parameters (model names); for equilibria the state
    variables; for cycles ``period`` and ``<var>_min`` / ``<var>_max``;
    ``stable`` (1, 0, or -1 for not evaluated); ``code`` (AUTO type code) and
    ``label`` (AUTO label, 0 if none). ``branch["Iext_e"]`` gives a column;
    :meth:`to_frame` a DataFrame.

    Attributes
    ----------
    kind : BranchKind
    name : str
        Name within its diagram, e.g. ``"eq"`` or ``"lc@HB1"``.
    free : tuple of str
        Free parameters, principal first.
    columns : mapping of str to ndarray
    special_points : tuple of SpecialPoint
    parameters : mapping of str to float
        All parameter values of the problem (free ones at the start point).
    origin : tuple (str, str) or None
        ``(branch name, special point name)`` it started from.
    locus_of : SpecialKind or None
        For loci: which special point is continued.
    mode : int
        1 for homogeneous results; the connectome mode otherwise.
    Lambda : complex
        Connectome eigenvalue of ``mode`` (1 for homogeneous results).
    status : str
        ``"ok"``, or why the engine stopped early (``"max_steps"``,
        ``"no convergence"``, ``"period blow-up (SNIC)"``...).
    accounting : mapping
        What :mod:`bifnet.continuation.accounting` did: ``refinements``,
        ``events_found``, ``unexplained`` (and for cycles
        ``max_trivial_error``, ``poor_mesh_points``, ``mesh_symptoms``,
        ``scanned``, ``snake_scans``, ``rechecked_rows``).
    """

    kind: BranchKind
    name: str
    free: tuple[str, ...]
    columns: Mapping[str, np.ndarray]
    special_points: tuple[SpecialPoint, ...] = ()
    parameters: Mapping[str, float] = dataclasses.field(default_factory=dict)
    origin: tuple[str, str] | None = None
    locus_of: SpecialKind | None = None
    mode: int = 1
    Lambda: complex = 1.0
    status: str = "ok"
    variables: tuple[str, ...] = ()
    accounting: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    engine: Any = dataclasses.field(default=None, repr=False)

    def __getitem__(self, column: str) -> np.ndarray:
        try:
            return self.columns[column]
        except KeyError:
            raise KeyError(f"branch {self.name!r} has no column {column!r} (has: {', '.join(self.columns)})") from None

    def __len__(self) -> int:
        first = next(iter(self.columns.values()), np.empty(0))
        return len(first)

    @property
    def solution(self) -> str:
        """``"EP"`` for equilibria, ``"LC"`` for cycles (loci report the point kind)."""
        if self.kind is BranchKind.CYCLES:
            return "LC"
        if self.kind is BranchKind.EQUILIBRIA:
            return "EP"
        return self.locus_of.value if self.locus_of else "locus"

    def point(self, name: str) -> SpecialPoint:
        """The special point called ``name`` (``"HB1"``, ``"LP2"``...)."""
        for sp in self.special_points:
            if sp.name == name:
                return sp
        known = ", ".join(sp.name for sp in self.special_points) or "none"
        raise KeyError(f"branch {self.name!r} has no special point {name!r} (has: {known})")

    def points_of_kind(self, kind: SpecialKind | str) -> tuple[SpecialPoint, ...]:
        kind = SpecialKind(kind) if isinstance(kind, str) else kind
        return tuple(sp for sp in self.special_points if sp.kind is kind)

    def distance_to(self, values: Mapping[str, float], scale: Mapping[str, float] | None = None) -> float:
        """Distance from a point to the branch's polyline in the plane of its free parameters.

        The largest coordinate difference (each divided by ``scale[name]``, 1
        by default) to the nearest point of any segment; inf for an empty
        branch.
        """
        names = list(self.free)
        if len(self) == 0:
            return float("inf")
        div = np.array([(scale or {}).get(n, 1.0) for n in names], dtype=float)
        xy = np.column_stack([self.columns[n] for n in names]) / div
        p = np.array([values[n] for n in names], dtype=float) / div
        if len(xy) == 1:
            return float(np.max(np.abs(xy[0] - p)))
        seg = xy[1:] - xy[:-1]
        t = np.clip(((p - xy[:-1]) * seg).sum(axis=1) / np.maximum((seg ** 2).sum(axis=1), 1e-300), 0.0, 1.0)
        nearest = xy[:-1] + t[:, None] * seg
        return float(np.nanmin(np.max(np.abs(nearest - p), axis=1)))

    def to_frame(self):
        """The branch as a pandas DataFrame (one row per computed point)."""
        import pandas as pd

        frame = pd.DataFrame({k: np.asarray(v) for k, v in self.columns.items()})
        frame.insert(0, "point", np.arange(len(frame)))
        return frame

    def special_points_frame(self):
        """Special points as a DataFrame (one row per point)."""
        import pandas as pd

        rows = []
        for sp in self.special_points:
            row = {"point": sp.index, "kind": sp.kind.value, "name": sp.name, "label": sp.label,
                   "mode": self.mode, "Lambda": float(np.real(self.Lambda)),
                   "Lambda_imag": float(np.imag(self.Lambda))}
            row.update({k: float(v) for k, v in sp.parameters.items()})
            row["period"] = sp.period
            row["frequency_hz"] = sp.frequency_hz
            row["located"] = sp.located
            for key, value in sp.details.items():
                row[key] = value
            rows.append(row)
        return pd.DataFrame(rows)
