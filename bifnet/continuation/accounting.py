"""Accounting along a branch: every change of stability and every reversal of
the principal parameter must be explained by a special point.

* equilibria: the number of eigenvalues with positive real part changes by one
  at an LP or BP, by two at an HB;
* cycles: the number of Floquet multipliers outside the unit circle (the
  trivial multiplier left out) changes by one at an LPC or PD, by two at an NS;
* the principal parameter reverses only at an LP (equilibria) or LPC (cycles).

An unexplained event between two rows is refined: that stretch of the branch
is continued again from the first row with smaller steps (and, for cycles, a
finer mesh), and the new points are spliced in; at most :data:`MAX_REFINEMENTS`
rounds. What is still unexplained is located by bifnet's own Newton solve of
the defining system (:mod:`bifnet.continuation.verify`) or, failing that,
reported as a point with ``located = False`` and a reason, with one warning.

Homogeneous cycle branches are also followed in the period by bifnet's own
multiple shooting where the rows cannot show what happens between them: the
pairs of rows of unexplained events (:func:`_scan_events`) and, on snakes,
the steps long enough to pass two turns unseen (:func:`snake_pairs`).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import numpy as np

from bifnet.continuation import _auto
from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
from bifnet.continuation.verify import TRIVIAL_WARNING, warn_failed
from bifnet.errors import ContinuationError

log = logging.getLogger("bifnet.continuation")

MAX_REFINEMENTS = 2          #: rounds of refinement per branch
MAX_REFINED_STRETCHES = 8    #: stretches refined per branch at most (each is a new engine run)
GOLDEN = (1 + 5 ** 0.5) / 2

_WEIGHT = {SpecialKind.LP: 1, SpecialKind.BP: 1, SpecialKind.HB: 2,
           SpecialKind.LPC: 1, SpecialKind.PD: 1, SpecialKind.NS: 2}


@dataclasses.dataclass(frozen=True)
class Event:
    """An unexplained change between rows ``index`` and ``index + 1``
    (``"stability"``, ``before``/``after`` unstable counts) or at row ``index``
    (``"reversal"`` of the principal parameter)."""

    what: str
    index: int
    before: int = 0
    after: int = 0
    end: int = -1   #: the row after the change (``index + 1`` unless rows between were undecided)
    unexplained: int = 0   #: the part of the change no located point explains (0: all of it)

    @property
    def change(self) -> int:
        """Size of the change left to explain."""
        return self.unexplained or abs(self.after - self.before)

    @property
    def last(self) -> int:
        return self.end if self.end >= 0 else self.index + 1

    def describe(self, branch: Branch) -> str:
        name = branch.free[0]
        if self.what == "reversal":
            return f"{name} reverses at row {self.index} ({name} = {branch[name][self.index]:.8g}) with no fold"
        if self.what == "doubling":
            return (f"a real multiplier crosses -1 between rows {self.index} and {self.last} ({name} = "
                    f"{branch[name][self.index]:.8g} .. {branch[name][self.last]:.8g}; the number of real "
                    f"multipliers below -1 goes from {self.before} to {self.after}) with no period doubling")
        unit = "multipliers outside the unit circle" if branch.kind is BranchKind.CYCLES else "unstable eigenvalues"
        return (f"{unit} change from {self.before} to {self.after} between rows {self.index} and "
                f"{self.last} ({name} = {branch[name][self.index]:.8g} .. "
                f"{branch[name][self.last]:.8g}) with no special point")


# ---------------------------------------------------------------------------
# unstable counts

def equilibrium_spectra(branch: Branch, system) -> np.ndarray:
    """Eigenvalues (rows x n, complex) of the exact Jacobian at every row."""
    from bifnet.codegen import jacobian_function
    from bifnet.continuation.verify import _full_state_row

    J = jacobian_function(system)
    values = dict(branch.parameters)
    free = branch.free
    out = np.empty((len(branch), system.dimension), dtype=complex)
    for i in range(len(branch)):
        values.update({f: float(branch[f][i]) for f in free})
        p = np.array([values[n] for n in system.parameter_names], dtype=float)
        x = _full_state_row(branch, i, system)
        with np.errstate(all="ignore"):
            M = J(x, p)
        out[i] = np.linalg.eigvals(M) if np.all(np.isfinite(M)) else np.nan
    return out


def unstable_counts(spectra: np.ndarray) -> np.ndarray:
    """Number of eigenvalues with positive real part; -1 where one lies within a
    relative 1e-9 of the imaginary axis (undecided, e.g. at a special point's row)."""
    scale = np.maximum(1.0, np.nanmax(np.abs(spectra), axis=1, initial=0.0))
    counts = np.sum(spectra.real > 0.0, axis=1)
    undecided = np.any(np.abs(spectra.real) <= 1e-9 * scale[:, None], axis=1) | ~np.all(np.isfinite(spectra), axis=1)
    return np.where(undecided, -1, counts)


def point_multipliers(points) -> list[np.ndarray]:
    """AUTO's Floquet multipliers of engine points (empty where it kept none, or for None)."""
    out = []
    for raw in points:
        mu = getattr(raw, "floquet_multipliers", None) if raw is not None else None
        out.append(np.asarray(mu, dtype=complex) if mu else np.empty(0, complex))
    return out


def cycle_multipliers(branch: Branch) -> list[np.ndarray]:
    """AUTO's Floquet multipliers at every row (empty where it kept none)."""
    points = (branch.engine or {}).get("points", {})
    return point_multipliers([points.get(i) for i in range(len(branch))])


def trivial_errors(multipliers: Sequence[np.ndarray]) -> np.ndarray:
    """``|mu_trivial - 1|`` per row (the multiplier closest to 1), NaN without multipliers."""
    return np.array([float(np.min(np.abs(mu - 1.0))) if mu.size else np.nan for mu in multipliers])


def _nontrivial(mu: np.ndarray) -> np.ndarray | None:
    """The multipliers of one row without the trivial one (the closest to 1), or None where the row
    decides nothing: no multipliers, ``|mu_trivial - 1| > TRIVIAL_WARNING`` (a mesh too coarse for the
    multipliers to mean anything; counted in ``poor_mesh_points``), or a multiplier within
    ``max(1e-6, 10 |mu_trivial - 1|)`` of the unit circle (the engine's own accuracy at that row: rows
    where a multiplier hovers on the circle neither make nor hide a change)."""
    if mu.size == 0 or not np.all(np.isfinite(mu)):
        return None
    k = int(np.argmin(np.abs(mu - 1.0)))
    if abs(mu[k] - 1.0) > TRIVIAL_WARNING:
        return None
    band = max(1e-6, 10.0 * float(abs(mu[k] - 1.0)))
    rest = np.delete(mu, k)
    return None if np.any(np.abs(np.abs(rest) - 1.0) <= band) else rest


def cycle_unstable_counts(multipliers: Sequence[np.ndarray]) -> np.ndarray:
    """Multipliers with ``|mu| > 1``, the trivial one left out; -1 where unknown or
    undecided (:func:`_nontrivial`)."""
    rows = [_nontrivial(mu) for mu in multipliers]
    return np.array([-1 if rest is None else int(np.sum(np.abs(rest) > 1.0)) for rest in rows], dtype=int)


def real_negative_outside(multipliers: Sequence[np.ndarray]) -> np.ndarray:
    """Number of real multipliers below -1 per row; -1 where undecided (:func:`_nontrivial`).

    Its parity changes only where a real multiplier crosses -1, a period doubling: real multipliers
    cannot pass through 0 (the monodromy is invertible), and a collision of two real ones into a complex
    pair (or the reverse) changes the number by two. So a period doubling is seen even where another
    crossing between the same rows keeps the number of unstable multipliers (a fold and a period doubling
    one row apart on a snake: one multiplier in through +1, one out through -1)."""
    from bifnet.continuation.verify_cycles import _below_minus_one

    rows = [_nontrivial(mu) for mu in multipliers]
    return np.array([-1 if rest is None else _below_minus_one(rest) for rest in rows], dtype=int)


# ---------------------------------------------------------------------------
# events

def find_events(branch: Branch, counts: np.ndarray, tolerance: float = 0.0,
                below: np.ndarray | None = None) -> list[Event]:
    """Changes of ``counts`` and reversals of the principal parameter that no
    (located) special point explains.

    A step of the principal parameter smaller than the engine's Newton
    tolerance on it (``tolerance * (1 + |value|)``, AUTO's EPSL test) is
    not resolved and takes no part in a reversal: near a homoclinic orbit AUTO's
    parameter jitters by 4e-9 from step to step while the period grows."""
    specials = [sp for sp in branch.special_points if sp.kind in _WEIGHT and sp.located]
    weight = [_WEIGHT[sp.kind] for sp in specials]   # changes each point can still explain
    valid = np.flatnonzero(counts >= 0)
    changes = [(int(a), int(b), int(abs(counts[b] - counts[a]))) for a, b in zip(valid[:-1], valid[1:])
               if counts[b] != counts[a]]
    missing = [delta for _, _, delta in changes]
    # a point explains changes within a row of it, the nearest first: a change the engine's
    # multipliers made one row away must not take the fold that explains the real one
    candidates = []
    for c, (a, b, _) in enumerate(changes):
        for k, sp in enumerate(specials):
            if a - 1 <= sp.index <= b + 1:
                distance = 0 if a <= sp.index <= b else min(abs(sp.index - a), abs(sp.index - b))
                candidates.append((distance, c, k))
    for _, c, k in sorted(candidates):
        take = min(weight[k], missing[c])
        weight[k] -= take
        missing[c] -= take
    # the last row of a closed cycle branch lies on the bifurcation where it ends (a Hopf point, or a
    # PD point of its parent where the doubled orbits meet the double cover): a multiplier sits on the
    # unit circle there and the row's count is not defined; and doubled orbits meet their parent at
    # the vertex of a parabola in the parameter, so the engine's last step may turn back past it
    last = len(branch) - 1 if branch.status.startswith("closed") else -1
    events = [Event("stability", a, int(counts[a]), int(counts[b]), b, int(left))
              for (a, b, _), left in zip(changes, missing) if left > 0 and b != last]
    if below is not None:
        # each located PD explains one change of parity of the real multipliers below -1 next to it
        doublings = [sp for sp in branch.special_points if sp.kind is SpecialKind.PD and sp.located]
        used: set[int] = set()
        valid = np.flatnonzero(below >= 0)
        for a, b in zip(valid[:-1], valid[1:]):
            if (below[a] - below[b]) % 2 == 0 or b == last:
                continue
            near = sorted((k for k, sp in enumerate(doublings) if k not in used and a - 1 <= sp.index <= b + 1),
                          key=lambda k: 0 if a <= doublings[k].index <= b else 1)
            if near:
                used.add(near[0])
                continue
            # one real multiplier from below -1 to inside the circle (or back) between the same rows changes
            # the unstable count by one and the parity: one period doubling, reported once (the stability
            # event's own guess would call it a fold: ngnmm_ping at eps = 29.5, -4.36 to +0.44 in one step)
            events = [e for e in events if not (e.what == "stability" and e.index == a and e.last == b
                                                and e.change == 1)]
            events.append(Event("doubling", int(a), int(below[a]), int(below[b]), int(b)))
    name = branch.free[0]
    if branch.kind in (BranchKind.EQUILIBRIA, BranchKind.CYCLES) and len(branch) >= 3:
        folds = {SpecialKind.LP, SpecialKind.BP} if branch.kind is BranchKind.EQUILIBRIA else {SpecialKind.LPC}
        # likewise the first row of a branch of doubled orbits is the parent's PD point, the vertex of that
        # parabola, and the engine's first step may land on its far side (ngnmm_ping at eps = 13: row 1 lay
        # 1e-6 below row 0, and the turn at row 1 was listed as an unlocated fold of cycles)
        doubled = (branch.kind is BranchKind.CYCLES and branch.origin is not None
                   and str(branch.origin[1]).startswith(SpecialKind.PD.value))
        turns = [(a, b) for a, b in _turns(branch[name], tolerance) if b + 1 != last and not (doubled and a == 0)]
        # each located fold explains one turn, the nearest first (on a snake a fold one row away is the
        # next turn's: ngnmm_ping at eps = 30 turns at rows 35 and 36, and the fold at row 36 explained both)
        fold_points = [sp for sp in branch.special_points if sp.kind in folds]
        pairs = sorted((0 if a + 1 <= sp.index <= b else 1, t, k) for t, (a, b) in enumerate(turns)
                       for k, sp in enumerate(fold_points) if a <= sp.index <= b + 1)
        explained, used = set(), set()
        for _, t, k in pairs:
            if t not in explained and k not in used:
                explained.add(t)
                used.add(k)
        for t, (a, b) in enumerate(turns):
            if t in explained or _amplitude_zero(branch, b):
                continue
            events.append(Event("reversal", b))
    return events


def _turns(values, tolerance: float = 0.0) -> list[tuple[int, int]]:
    """Turns of a column: ``(a, b)`` with the steps before rows ``a + 1`` and ``b + 1`` in opposite directions
    and none resolved between them (the turn lies between rows ``a + 1`` and ``b``). A step smaller than
    the engine's Newton tolerance on the value (``tolerance (1 + |value|)``, AUTO's EPSL test) is not
    resolved: near a homoclinic orbit AUTO's parameter jitters by 4e-9 from step to step."""
    values = np.asarray(values, dtype=float)
    d = np.diff(values)
    scale = max(float(np.nanmax(np.abs(values))), 1.0)
    resolved = np.maximum(1e-10 * scale, tolerance * (1.0 + np.abs(values[1:])))
    idx = np.flatnonzero(np.abs(d) > resolved)
    return [(int(a), int(b)) for a, b in zip(idx[:-1], idx[1:]) if np.sign(d[a]) != np.sign(d[b])]


def row_arclength(states, others) -> np.ndarray:
    """Cumulative arclength of a branch's rows in the norm of bifnet's own continuations: the root mean square
    of the state components (``states``, rows x D) and each column of ``others`` (rows x m: the parameter,
    the period) in full."""
    states = np.asarray(states, dtype=float).reshape(len(states), -1)
    others = np.asarray(others, dtype=float).reshape(len(states), -1)
    step = np.sum(np.diff(states, axis=0) ** 2, axis=1) / states.shape[1] + np.sum(np.diff(others, axis=0) ** 2, axis=1)
    return np.concatenate([[0.0], np.cumsum(np.sqrt(step))])


def turn_position(p, f: int, s=None) -> float:
    """Where the parameter ``p`` turns near its turning row ``f``, in fractional row units (``f - 0.3``: 0.7 of
    the way from row ``f - 1`` to row ``f``): the vertex of the parabola through rows ``f - 1, f, f + 1``
    over the branch's arclength ``s`` (the row index when not given), clipped to those rows.

    A fold's own eigenvalue (multiplier) passes through 0 (+1) at the vertex, so the row interval holding
    it is the fold's; with the row's midpoint intervals ``f - 1`` and ``f`` would tie, and a branch point
    next to the fold could take the fold's crossing."""
    s = np.arange(len(p), dtype=float) if s is None else np.asarray(s, dtype=float)
    x0, x1, x2 = s[f - 1], s[f], s[f + 1]
    y0, y1, y2 = float(p[f - 1]), float(p[f]), float(p[f + 1])
    if not (x0 < x1 < x2):
        return float(f)
    # divided differences: p ~ y0 + d1 (x - x0) + d2 (x - x0)(x - x1)
    d1 = (y1 - y0) / (x1 - x0)
    d2 = ((y2 - y1) / (x2 - x1) - d1) / (x2 - x0)
    if not (np.isfinite(d2) and d2 != 0.0):
        return float(f)
    vertex = min(max((x0 + x1) / 2 - d1 / (2 * d2), x0), x2)
    if vertex <= x1:
        return float(f - 1 + (vertex - x0) / (x1 - x0))
    return float(f + (vertex - x1) / (x2 - x1))


def _amplitude_zero(branch: Branch, row: int) -> bool:
    """A cycle branch turning back at a Hopf point (amplitude zero) is not a fold."""
    if branch.kind is not BranchKind.CYCLES or not branch.variables:
        return False
    spans = [branch[f"{v}_max"] - branch[f"{v}_min"] for v in branch.variables]
    amp = np.nanmax(np.vstack(spans), axis=0)
    return bool(amp[row] < 1e-3 * max(float(np.nanmax(amp)), 1e-12))


# ---------------------------------------------------------------------------
# refinement

def _coords(point, problem, free, cycles: bool) -> np.ndarray:
    values = [_auto._param(point, problem.slots[n], n) for n in free]
    if cycles:
        orbit = point.periodic_orbit
        if orbit is None:
            return np.array(values + [_auto._param(point, _auto.PERIOD_SLOT)])
        profile = np.asarray(orbit.state, dtype=float)
        return np.array(values + [_auto._param(point, _auto.PERIOD_SLOT)]
                        + list(profile.max(axis=0)) + list(profile.min(axis=0)))
    return np.concatenate([values, _auto._full_state(point, problem.system.dimension)])


def refine_segment(problem, points: list, index: int, free: Sequence[str], settings, *, cycles: bool,
                   round_: int, end: int | None = None) -> list | None:
    """New engine points between ``points[index]`` and ``points[end]`` (``index + 1`` by default).

    The stretch is continued again from ``points[index]`` with steps
    ``4**round_`` times the golden ratio smaller than its length (cycles: a mesh of
    ``(1 + round_) * ntst`` intervals as well). Returns the points strictly between the two, or
    None when the rerun does not come back to ``points[end]``.
    """
    end = index + 1 if end is None else end
    start, target = points[index], points[end]
    if not getattr(start, "is_labeled", False):
        return None
    a, b = _coords(start, problem, free, cycles), _coords(target, problem, free, cycles)
    chord = max(float(np.linalg.norm(b - a)), 1e-12)
    length = float(np.sqrt(np.sum((b - a) ** 2) / max(len(a), 1)))
    factor = 4.0 ** round_
    # steps of the stretch over 4**round_ would put rows on the old ones again: where the engine's
    # row landed on the bifurcation itself (its test function zero there, so it reported nothing),
    # the rerun would land on it too. The golden ratio keeps the new rows off the old grid.
    ds = max(min(settings.ds_max, length) / (factor * GOLDEN), settings.ds_min * 2)
    changes = dict(ds=ds, ds_max=max(ds, settings.ds_min * 2), max_steps=int(3 * factor + 10))
    if cycles:
        changes["ntst"] = min(settings.ntst * (1 + round_), max(200, settings.ntst))
    local = settings.replace(**changes)
    ips = "LC" if cycles else "EP"
    for sign in (1.0, -1.0):
        try:
            result = _auto.restart(problem, start, free, local, ips=ips, source_ips=ips, switch="continue",
                                   ds=sign * ds, with_period=cycles)
        except ContinuationError as error:
            log.debug("refinement from row %d failed: %s", index, error)
            return None
        new = list(result.branches[0].points[1:]) if result.branches else []
        if len(new) < 2:
            continue
        first = _coords(new[0], problem, free, cycles)
        if float(np.dot(first - a, b - a)) <= 0:
            continue  # went the other way
        dist = [float(np.linalg.norm(_coords(p, problem, free, cycles) - b)) / chord for p in new]
        k = int(np.argmin(dist))
        if dist[k] > 0.3:
            log.debug("refinement from row %d did not return to row %d (closest %.3g)", index, end, dist[k])
            return None
        # the closest point may be the engine's bifurcation itself, just short of ``points[end]``
        # (that row landed within 1e-7 past it, so the first run reported nothing): keep it
        kind = _auto._point_kind(new[k], BranchKind.CYCLES if cycles else BranchKind.EQUILIBRIA)
        if kind not in (None, SpecialKind.MX) and float(
                np.dot(_coords(new[k], problem, free, cycles) - a, b - a)) < chord ** 2:
            k += 1
        return new[:k]
    return None


def account(points: list, convert: Callable[[list], Branch], problem, free: Sequence[str], settings, *,
            cycles: bool, system=None) -> Branch:
    """Convert, verify and account a branch, refining unexplained stretches.

    Parameters
    ----------
    points : list
        Raw engine points of the branch, in order.
    convert : callable
        ``convert(points) -> Branch`` (unverified).
    problem, free, settings
        The engine problem, free parameters and settings the points came from.
    cycles : bool
        Cycle branch (multipliers) or equilibria (eigenvalues).

    Returns
    -------
    Branch
        Verified, with ``accounting`` = ``{"refinements": n, "unexplained": m,
        "events_found": k}`` (cycles also ``"max_trivial_error"`` and
        ``"poor_mesh_points"``).
    """
    from bifnet.continuation.verify import verify_branch

    system = system or problem.system
    if system.kind == "augmented":
        # transverse systems: the crossings come from the growth tables of every mode
        # (bifnet.transverse), which check each mode's eigenvalues directly; verify only
        return verify_branch(convert(points), system)
    refinements = 0
    found = 0
    memo: dict = {}
    from bifnet.continuation.verify import CYCLE_BUDGET

    budget = [CYCLE_BUDGET]
    recheck: dict = {}
    for round_ in range(1, MAX_REFINEMENTS + 2):
        branch = verify_branch(convert(points), system, memo=memo, budget=budget, warn=False)
        branch = _drop_superseded(branch)
        counts, extra, columns, below, rechecked = _counts(branch, system, cycles, recheck)
        if columns is not None:
            branch = dataclasses.replace(branch, columns=columns)
        events = _events_outside_stalls(branch, counts, settings.tolerance, below)
        if round_ == 1:
            found = len(events)
        if not events or round_ > MAX_REFINEMENTS:
            break
        changed = False
        for event in sorted(events, key=lambda e: -e.index):
            if event.what == "doubling":
                continue  # left to the period scan and the Newton solves (a rerun moves the rows of a snake)
            if event.what == "stability":
                i, e = event.index, event.last
            else:
                i, e = max(event.index - 1, 0), min(event.index + 1, len(points) - 1)
            if i >= e or e >= len(points):
                continue
            if refinements >= MAX_REFINED_STRETCHES:
                break
            new = refine_segment(problem, points, i, free, settings, cycles=cycles, round_=round_, end=e)
            if new:
                points = points[: i + 1] + new + points[e:]
                changed = True
                refinements += 1
                log.info("%s: refined rows %d-%d (%s)", branch.name, i, e, event.what)
        if not changed:
            break
    scanned = 0
    if events and cycles and system.kind == "homogeneous":
        branch, scanned, recount, recount_below = _scan_events(branch, events, system, settings.tolerance)
        counts = np.array(counts, copy=True)
        for row, count in recount.items():
            counts[row] = count
        if recount and "stable" in branch.columns:
            stable = np.array(branch["stable"], copy=True)
            for row, count in recount.items():
                if count >= 0:
                    stable[row] = int(count == 0)
            branch = dataclasses.replace(branch, columns={**branch.columns, "stable": stable})
        if below is not None:
            below = np.array(below, copy=True)
            for row, value in recount_below.items():
                below[row] = value
        events = _events_outside_stalls(branch, counts, settings.tolerance, below)
    snakes = 0
    if cycles and system.kind == "homogeneous":
        before = len(branch.special_points)
        branch, snakes = _scan_snakes(branch, system, settings.tolerance)
        if len(branch.special_points) != before and events:
            events = _events_outside_stalls(branch, counts, settings.tolerance, below)
    branch, dismissed_points = _drop_unsupported(branch, counts, below, rechecked)
    branch = _report_stalls(branch, settings.tolerance)
    warn_failed(branch)
    if events:
        branch = _report_unexplained(branch, events, system, cycles, budget)
    accounting = {"refinements": refinements, "events_found": found,
                  "dismissed": (branch.accounting or {}).get("dismissed", 0) if events else 0,
                  "unexplained": sum(1 for sp in branch.special_points
                                     if sp.details.get("found_by") == "accounting" and not sp.located)}
    if scanned:
        accounting["scanned"] = scanned
    if snakes:
        accounting["snake_scans"] = snakes
    if dismissed_points:
        accounting["dismissed_points"] = dismissed_points
    accounting.update(extra)
    if extra.get("poor_mesh_points", 0) > 0.05 * len(branch) and problem.system.kind != "homogeneous":
        # (homogeneous branches: the caller checks those rows with bifnet's own orbits, mesh_symptoms)
        log.warning("%s: on %d rows the trivial multiplier is off by more than %g (worst %.2g): the mesh is "
                    "too coarse there for the stability to be trusted; raise ntst", branch.name,
                    extra["poor_mesh_points"], TRIVIAL_WARNING, extra["max_trivial_error"])
    if events and accounting["unexplained"]:
        log.warning("%s: %d stability change(s) or turn(s) could not be located; see special_points.csv "
                    "(located = False)", branch.name, accounting["unexplained"])
    return dataclasses.replace(branch, accounting=accounting)


#: Rows of a homogeneous cycle branch where the engine has a multiplier of modulus above this get
#: bifnet's own multipliers (:func:`recheck_large_multipliers`).
LARGE_MULTIPLIER = 100.0


def recheck_large_multipliers(branch: Branch, system, multipliers: Sequence[np.ndarray],
                              cache: dict | None = None) -> tuple[list[np.ndarray], list[int]]:
    """bifnet's own multipliers at the rows where the engine's largest exceeds :data:`LARGE_MULTIPLIER`
    or its trivial one is off by more than ``TRIVIAL_WARNING`` (rows whose engine multipliers decide
    nothing, :func:`_nontrivial`; their orbits are usually right, :func:`mesh_symptoms`).

    AUTO's multipliers of a strongly unstable orbit are wrong in size and sign. On ngnmm_ping at
    eps = 30, where the orbits pass close to a saddle (periods of 100-300 ms), AUTO's largest multiplier
    jumps between -1e7 and +4e6 from row to row while the true one grows smoothly from 2e5 to 3e29 and
    stays positive; at period 84 ms AUTO has 180 for 1597. Every sign change looked like a period
    doubling. At those rows the orbit is solved again by multiple shooting from the engine's profile
    (:func:`~bifnet.continuation.verify_cycles.solve_periodic_orbit`) and its multipliers come from the
    periodic QR reduction of the segment monodromies (``product_eigenvalues``); where that solve fails
    (a fold's row, where the fixed-parameter system is singular) the row decides nothing (no
    multipliers). Returns the multipliers and the rows rechecked. ``cache`` maps a row's (parameter,
    period) to its result across refinement rounds."""
    from bifnet.continuation.verify_cycles import engine_profile, solve_periodic_orbit

    if system.kind != "homogeneous" or "period" not in branch.columns:
        return list(multipliers), []
    points = (branch.engine or {}).get("points", {})
    cache = {} if cache is None else cache
    out, rows = list(multipliers), []
    for i, mu in enumerate(multipliers):
        if mu.size == 0 or not np.all(np.isfinite(mu)) or (
                float(np.max(np.abs(mu))) <= LARGE_MULTIPLIER and float(np.min(np.abs(mu - 1.0))) <= TRIVIAL_WARNING):
            continue
        profile = engine_profile(points.get(i))
        if profile is None:
            continue
        values = {**branch.parameters, **{f: float(branch[f][i]) for f in branch.free}}
        key = (tuple(values[f] for f in branch.free), float(branch["period"][i]))
        if key not in cache:
            try:
                sol = solve_periodic_orbit(system.model, values, profile[1][0], key[1], profile=profile)
                cache[key] = sol.multipliers if sol.ok else np.empty(0, complex)
            except (ContinuationError, ValueError, np.linalg.LinAlgError) as error:
                log.debug("%s: orbit at row %d not solved again: %s", branch.name, i, error)
                cache[key] = np.empty(0, complex)
        out[i] = cache[key]
        rows.append(i)
    return out, rows


#: A row of a homogeneous cycle branch lies off the true branch by more than this, relative to
#: ``1 + |parameter|``, when its mesh is too coarse (:func:`mesh_symptoms`).
MESH_OFFSET = 1e-6


def mesh_symptoms(points: Sequence, model, parameters: dict, free: str, slot: int, period_slot: int,
                  cache: dict | None = None) -> int:
    """The rows of an engine run whose mesh is too coarse: the trivial multiplier is off by more than
    ``TRIVIAL_WARNING`` *and* the engine's orbit is not the model's.

    A poor trivial multiplier alone does not say the mesh is too coarse: AUTO's multipliers lose
    accuracy where others are large or the orbit is stiff. On ngnmm_ping at eps = 30 the same 8 of the
    first 120 rows have trivial multipliers off by 2e-3 - 9e-2 with ``ntst`` = 60, 150 and 250, while
    the rows themselves lie within 3e-6, 1e-9 and 1e-11 of the branch; at eps = 26 with 60 intervals,
    57 rows off by 1e-3 - 1e-2 lie 1e-5 - 6e-4 off the branch, and with 150 none is poor. So at each
    such row the orbit is solved again at the row's parameters by bifnet's multiple shooting
    (:func:`~bifnet.continuation.verify_cycles.solve_periodic_orbit`, independent of the engine's mesh)
    and the row counts when its period differs from the engine's by more than :data:`MESH_OFFSET`
    ``(1 + |p|)`` in the parameter along the branch (``|T - T_engine| |dp/dT|``, the slope from the
    neighbouring rows), or when that solve fails. ``cache``: (parameter, period) -> counted, across
    the chunks of a run."""
    from bifnet.continuation.verify_cycles import engine_profile, solve_periodic_orbit

    cache = {} if cache is None else cache
    p = np.array([_auto._param(pt, slot) for pt in points])
    T = np.array([_auto._param(pt, period_slot) for pt in points])
    errors = trivial_errors(point_multipliers(points))
    count = 0
    for i in np.flatnonzero(errors > TRIVIAL_WARNING):
        key = (float(p[i]), float(T[i]))
        if key not in cache:
            profile = engine_profile(points[i])
            bad = True
            if profile is not None:
                lo, hi = max(i - 1, 0), min(i + 1, len(points) - 1)
                slope = abs((p[hi] - p[lo]) / (T[hi] - T[lo])) if T[hi] != T[lo] else np.inf
                try:
                    sol = solve_periodic_orbit(model, {**parameters, free: float(p[i])}, profile[1][0], float(T[i]),
                                               profile=profile)
                    offset = abs(sol.period - T[i]) * slope if abs(sol.period - T[i]) > 0 else 0.0
                    bad = not sol.ok or not offset <= MESH_OFFSET * (1.0 + abs(p[i]))
                except (ContinuationError, ValueError, np.linalg.LinAlgError):
                    pass
            cache[key] = bad
        count += cache[key]
    return count


def _counts(branch: Branch, system, cycles: bool, cache: dict | None = None):
    """``(unstable counts, accounting extras, columns or None, real multipliers below -1 or None, rows
    with bifnet's multipliers)``;
    cycles: the engine's multipliers, bifnet's where the engine's are large (:func:`recheck_large_multipliers`),
    and the ``stable`` column corrected at those rows."""
    if not cycles:
        return unstable_counts(equilibrium_spectra(branch, system)), {}, None, None, []
    mu = cycle_multipliers(branch)
    trivial = trivial_errors(mu)
    poor = int(np.sum(trivial > TRIVIAL_WARNING))
    extra = {"max_trivial_error": float(np.nanmax(trivial)) if np.any(np.isfinite(trivial)) else float("nan"),
             "poor_mesh_points": poor}
    columns = dict(branch.columns)
    columns["trivial_error"] = trivial
    mu, rechecked = recheck_large_multipliers(branch, system, mu, cache)
    counts = cycle_unstable_counts(mu)
    if rechecked:
        extra["rechecked_rows"] = len(rechecked)
        if "stable" in columns:
            stable = np.array(columns["stable"], copy=True)
            for i in rechecked:
                if counts[i] >= 0:
                    stable[i] = int(counts[i] == 0)
            columns["stable"] = stable
    return counts, extra, columns, real_negative_outside(mu), rechecked


def _same_point(a: SpecialPoint, b: SpecialPoint) -> bool:
    """Two located points of one kind at the same parameters (1e-8) and state (1e-6)."""
    return (a.kind is b.kind and a.parameters.keys() == b.parameters.keys()
            and all(abs(a.parameters[k] - b.parameters[k]) <= 1e-8 * max(1.0, abs(b.parameters[k]))
                    for k in b.parameters)
            and len(a.state) == len(b.state)
            and all(abs(x - y) <= 1e-6 * max(1.0, abs(y)) for x, y in zip(a.state, b.state)))


def _drop_superseded(branch: Branch) -> Branch:
    """Drop points that failed verification where a verified point of the same
    kind lies within ten rows or within 1 % in the principal parameter (a
    refinement located it properly; the spliced rows separate the two), and a
    located point that another located point already is (the engine's own
    point and a refinement's, polished onto the same bifurcation)."""
    good = [sp for sp in branch.special_points if sp.located]
    name = branch.free[0]
    keep = []
    for sp in branch.special_points:
        if not sp.located and sp.verification and any(
                o.kind is sp.kind and (abs(o.index - sp.index) <= 10 or abs(
                    o.parameters[name] - sp.parameters[name]) <= 1e-2 * max(1.0, abs(sp.parameters[name])))
                for o in good):
            continue
        if sp.located and any(o.located and _same_point(sp, o) for o in keep):
            continue
        keep.append(sp)
    if len(keep) == len(branch.special_points):
        return branch
    from bifnet.continuation.restarts import _renumber

    return dataclasses.replace(branch, special_points=_renumber(keep))


def _drop_unsupported(branch: Branch, counts: np.ndarray, below: np.ndarray | None = None,
                      decided: Sequence[int] | None = None) -> tuple[Branch, int]:
    """Drop the engine's points that failed verification and that nothing on the branch supports: the
    unstable count is the same on the two rows either side, and the principal parameter does not turn
    there. Equilibria (LP, HB, BP; counts from the exact Jacobian): a fold or a branch point changes
    that number by one, a Hopf point by two; the engine's test function can still change sign where no
    eigenvalue crosses (Wilson-Cowan at eps = 4.092: an "LP" at Iext_e = 0.8616 with eigenvalues -0.16
    and -0.47, bifnet's Newton solve going to the true fold 0.8452). Cycles (LPC, PD, NS, BP): only
    where every row of the window has bifnet's own multipliers (``decided``, the rows of
    :func:`recheck_large_multipliers`), which also keep the number of real multipliers below -1
    (``below``; a period doubling changes its parity). The engine found those points with its own
    multipliers, wrong there (ngnmm_ping at eps = 30: four "BP" at periods of 215-290 ms where its
    largest multiplier changes sign from row to row and bifnet's stays near +1e20). Returns the
    branch and the number of points dropped."""
    name = branch.free[0]
    values = np.asarray(branch[name], dtype=float)
    cycles = branch.kind is BranchKind.CYCLES
    kinds = ({SpecialKind.LPC, SpecialKind.PD, SpecialKind.NS, SpecialKind.BP} if cycles
             else {SpecialKind.LP, SpecialKind.HB, SpecialKind.BP})
    decided = set(decided or ())
    keep, dropped = [], 0
    for sp in branch.special_points:
        lo, hi = max(sp.index - 2, 0), min(sp.index + 2, len(branch) - 1)
        window = counts[lo:hi + 1]
        if cycles:   # every row decided by bifnet's multipliers, and nothing changes
            same = (all(r in decided for r in range(lo, hi + 1)) and window[0] >= 0
                    and np.all(window == window[0]) and (below is None or np.all(below[lo:hi + 1] == below[lo])))
        else:        # the exact Jacobian decides every row but those on the imaginary axis
            window = window[window >= 0]
            same = window.size >= 4 and np.all(window == window[0])
        steps = np.diff(values[lo:hi + 1])
        steps = steps[np.abs(steps) > 1e-10 * max(1.0, float(np.nanmax(np.abs(values))))]
        unsupported = (sp.kind in kinds and not sp.located
                       and sp.verification not in ("", "not verified")
                       and sp.details.get("found_by", "engine") == "engine"
                       and hi - lo == 4 and same
                       and (np.all(steps > 0) or np.all(steps < 0)))
        if unsupported:
            dropped += 1
            what = "no multiplier crosses the unit circle there by bifnet's own multipliers" if cycles \
                else "no eigenvalue crosses there"
            log.info("%s: the engine's %s at %s = %.8g is no bifurcation (%s and %s does not turn; %s): "
                     "dropped", branch.name, sp.kind.value, name, sp.parameters[name], what, name,
                     sp.details.get("reason", "it failed verification"))
            continue
        keep.append(sp)
    if not dropped:
        return branch, 0
    from bifnet.continuation.restarts import _renumber

    return dataclasses.replace(branch, special_points=_renumber(keep)), dropped


MAX_SCANS = 100   #: row pairs per branch followed in the period by bifnet's own shooting


def _scan_events(branch: Branch, events: Sequence[Event], system,
                 tolerance: float = 1e-8) -> tuple[Branch, int, dict, dict]:
    """Follow the branch between the rows of each unexplained event in the period, by bifnet's own
    multiple shooting (:class:`~bifnet.continuation.verify_cycles.PeriodScan`), and solve every
    fold, period doubling and torus bifurcation the scan passes (``PeriodScan.locate``).

    Near a homoclinic orbit the folds and period doublings of a snaking branch lie closer together
    than the engine's steps, also after refinement: on ngnmm_ping at eps = 30 a period doubling sits
    between a row and the fold one row later, and the engine's rows show two changes for one fold.
    Returns the branch with the points found (``found_by = accounting``), the number of row pairs
    scanned, and bifnet's own unstable counts and numbers of real multipliers below -1 at the rows
    scanned (row -> count, -1 undecided), which replace the engine's: near a homoclinic orbit the
    engine's multipliers are wrong on some rows, and the change they make moves the fold that explains
    the real one.
    """
    from bifnet.continuation.restarts import _renumber

    if "period" not in branch.columns:
        return branch, 0, {}, {}
    core, extra, later = [], [], []
    for event in events:
        if event.what == "doubling":  # after the changes of stability and the turns (MAX_SCANS)
            later += [(a, a + 1) for a in range(max(event.index, 0), min(event.last, len(branch) - 1))]
            continue
        lo, hi = (event.index, event.last) if event.what != "reversal" else (event.index - 1, event.index + 1)
        core += [(a, a + 1) for a in range(max(lo, 0), min(hi, len(branch) - 1))]
        # a located point on an end row explains one change next to it; the crossing it leaves
        # unexplained may be on its other side
        if lo >= 1 and any(sp.located and sp.index == lo for sp in branch.special_points):
            extra.append((lo - 1, lo))
        if hi + 1 < len(branch) and any(sp.located and sp.index == hi for sp in branch.special_points):
            extra.append((hi, hi + 1))
    pairs = sorted(set(core))
    pairs += sorted(set(extra) - set(pairs))  # the events' own stretches first
    pairs += sorted(set(later) - set(pairs))
    found, scanned, recount, below = [], 0, {}, {}
    for a, b in pairs:
        if scanned >= MAX_SCANS:
            break
        scan = _scan_pair(branch, a, b, system, tolerance, found)
        if scan is None:
            continue
        scanned += 1
        if scan:
            recount[a], recount[b] = scan[0].count, scan[-1].count
            below[a], below[b] = (int(real_negative_outside([np.asarray(x.multipliers, dtype=complex)])[0])
                                  for x in (scan[0], scan[-1]))
    if found:
        branch = dataclasses.replace(branch, special_points=_renumber(list(branch.special_points) + found))
    return branch, scanned, recount, below


STALL_ROWS = 12   #: rows of a window in which the engine may be found wandering (:func:`stalls`)


def stalls(branch: Branch, tolerance: float = 0.0) -> list[tuple[int, int]]:
    """Stretches of rows ``(first, last)`` where the engine wandered instead of following the branch.

    On ngnmm_ping at eps = 30 the period-doubled branch from a period doubling 1e-8 from a fold went back
    and forth within 3e-6 of Iext_e and 0.01 ms of period for 110 rows, its trivial multiplier off by up to
    10: each of its 25 turns of the parameter was reported as a fold it could not locate. A window of
    :data:`STALL_ROWS` rows of a cycle branch is a stall when both the parameter and the period turn at
    least twice in it (steps below the engine's tolerance left out) and the distance between its first and
    last rows is less than a quarter of the path through it (each column scaled by its range on the
    branch); a snake turns in the parameter only, while its period grows. Stall windows that overlap or
    lie less than a window apart are merged."""
    if branch.kind is not BranchKind.CYCLES or "period" not in branch.columns or len(branch) <= STALL_ROWS:
        return []
    name = branch.free[0]
    X = np.column_stack([np.asarray(branch[name], dtype=float), np.asarray(branch["period"], dtype=float)])
    if not np.all(np.isfinite(X)):
        return []
    scale = np.maximum(np.ptp(X, axis=0), 1e-12 * np.maximum(1.0, np.max(np.abs(X), axis=0)))
    D = np.diff(X, axis=0)
    resolved = np.maximum(tolerance, 1e-12) * (1.0 + np.abs(X[1:]))
    sign = np.where(np.abs(D) > resolved, np.sign(D), 0.0)
    step = np.linalg.norm(D / scale, axis=1)
    out: list[tuple[int, int]] = []
    for i in range(len(branch) - STALL_ROWS):
        j = i + STALL_ROWS
        turns = []
        for c in range(2):
            s = sign[i:j, c][sign[i:j, c] != 0]
            turns.append(int(np.sum(s[1:] != s[:-1])))
        path = float(step[i:j].sum())
        net = float(np.linalg.norm((X[j] - X[i]) / scale))
        if min(turns) >= 2 and path > 0 and net < 0.25 * path:
            if out and i <= out[-1][1] + STALL_ROWS:   # close together: one stall
                out[-1] = (out[-1][0], j)
            else:
                out.append((i, j))
    return out


def _events_outside_stalls(branch: Branch, counts, tolerance: float, below) -> list:
    """:func:`find_events` without the events that lie in a stall (:func:`stalls`); those are reported once,
    by :func:`_report_stalls`."""
    stretches = stalls(branch, tolerance)
    return [e for e in find_events(branch, counts, tolerance, below)
            if not any(a <= e.index <= b for a, b in stretches)]


def _report_stalls(branch: Branch, tolerance: float) -> Branch:
    """One point with ``located = False`` (kind MX) at the start of each stall, with the reason."""
    from bifnet.continuation.restarts import _renumber

    stretches = stalls(branch, tolerance)
    if not stretches:
        return branch
    name = branch.free[0]
    specials = list(branch.special_points)
    for a, b in stretches:
        p, T = np.asarray(branch[name][a:b + 1], dtype=float), np.asarray(branch["period"][a:b + 1], dtype=float)
        reason = (f"the engine wandered between rows {a} and {b} instead of following the branch: {name} went "
                  f"back and forth within {np.ptp(p):.2g} of {p[0]:.8g} and the period within {np.ptp(T):.2g} ms "
                  f"of {T[0]:.6g}; the rows after it may belong to another branch (try a smaller ds_max, or "
                  f"another start)")
        specials.append(SpecialPoint(kind=SpecialKind.MX, index=a, parameters={f: float(branch[f][a]) for f in branch.free},
                                     period=float(T[0]), located=False,
                                     details={"found_by": "accounting", "reason": reason}))
        log.warning("%s: %s", branch.name, reason)
    return dataclasses.replace(branch, special_points=_renumber(specials))


def _scan_pair(branch: Branch, a: int, b: int, system, tolerance: float, found: list, samples: int = 8):
    """Follow the branch from row ``a`` to row ``b`` in the period (``samples`` steps) and solve every
    crossing on the way that is not already a located point (appended to ``found``, ``found_by =
    accounting``). Returns the scan's samples, ``[]`` when the scan did not arrive at row ``b`` or
    failed, None when the pair cannot be scanned (no orbit, no change of period)."""
    from bifnet.continuation import verify
    from bifnet.continuation.verify_cycles import PeriodScan, crossings_in_scan, engine_profile

    points = (branch.engine or {}).get("points", {})
    name = branch.free[0]
    orbit = getattr(points.get(a), "periodic_orbit", None)
    Ta, Tb = float(branch["period"][a]), float(branch["period"][b])
    if orbit is None or not (np.isfinite(Ta) and np.isfinite(Tb)) or abs(Tb - Ta) < 1e-9 * Ta:
        return None
    values = {**branch.parameters, **{f: float(branch[f][a]) for f in branch.free}}
    try:
        scanner = PeriodScan(system.model, values, name, np.asarray(orbit.state, dtype=float)[0], Ta,
                             profile=engine_profile(points.get(a)))
        scan = scanner.run(Tb, float(branch[name][b]), samples=samples, tolerance=tolerance)
    except (ContinuationError, ValueError, np.linalg.LinAlgError) as error:
        log.debug("%s: period scan of rows %d-%d failed: %s", branch.name, a, b, error)
        return []
    if scan is None:
        log.debug("%s: period scan of rows %d-%d did not arrive at row %d", branch.name, a, b, b)
        return []
    known = [o for o in list(branch.special_points) + found if o.located and np.isfinite(o.period)]
    for kind, j in crossings_in_scan(scan):
        # a located point of this kind within the samples that bracket the crossing is this crossing
        # (in the period and the parameter: two snakes of one branch can overlap in the period)
        near = scan[max(j - 1, 0):j + 2]
        lo, hi = min(x.period for x in near), max(x.period for x in near)
        p_lo, p_hi = min(x.parameter for x in near), max(x.parameter for x in near)
        if any(o.kind is kind and lo <= o.period <= hi and p_lo <= o.parameters[name] <= p_hi for o in known):
            continue
        result = scanner.locate(kind, scan, j)
        if result is None or not result.ok:
            log.debug("%s: %s of the period scan of rows %d-%d not solved (%s)", branch.name, kind.value, a, b,
                      result.reason if result is not None else "no orbit")
            continue
        p = result.parameters[name]
        if any(o.kind is kind and abs(o.parameters[name] - p) <= 1e-7 * max(1.0, abs(p))
               and abs(o.period - result.period) <= 1e-6 * result.period for o in known):
            continue  # already on the branch
        index = a if abs(result.period - Ta) <= abs(result.period - Tb) else b
        sp = SpecialPoint(kind=kind, index=index, parameters={f: float(branch[f][index]) for f in branch.free},
                          located=False, details={"found_by": "accounting"})
        sp = verify.apply(sp, dataclasses.replace(result, method=f"rows {a}-{b}: {result.method}"), branch=branch)
        sp = dataclasses.replace(sp, details={**sp.details, "found_by": "accounting", "reason": ""})
        log.info("%s: %s located by bifnet between rows %d and %d at %s = %.10g (the engine missed it)",
                 branch.name, kind.value, a, b, name, p)
        found.append(sp)
        known.append(sp)
    return scan


MAX_SNAKE_SCANS = 300   #: row pairs per branch followed in the period to find the hidden turns of a snake
SNAKE_STEP = 0.5        #: a row pair of a snake is scanned when its period step exceeds this share of the fold spacing
SNAKE_WINDOW = 8        #: rows either side in which the neighbouring folds give the local fold spacing


def snake_pairs(branch: Branch, tolerance: float = 0.0) -> list[tuple[int, int, int]]:
    """Row pairs of a snaking cycle branch that may hide two turns: ``(a, a + 1, samples)``.

    Near a homoclinic orbit the branch snakes: the parameter turns back and forth while the period
    grows, the folds (and the period doublings next to them) ever closer together in the parameter.
    An engine step that passes two turns changes neither the direction nor the stability, so no
    accounting of the rows can see it: on ngnmm_ping at eps = 30, of the 23 folds between periods 56
    and 108 ms (a dense scan in the period), runs with ``ntst`` = 60, 150 and 250 each missed
    a different two to four. Where the branch is a graph over the period (monotone in it over the
    pair and a row either side) and the rows within :data:`SNAKE_WINDOW` hold two or more turns
    (rows where the parameter reverses, or located LPCs), a pair whose period step exceeds
    :data:`SNAKE_STEP` of the smallest period spacing of those turns is followed in the period with
    samples at most a quarter of that spacing apart."""
    if "period" not in branch.columns or len(branch) < 4:
        return []
    name = branch.free[0]
    T = np.asarray(branch["period"], dtype=float)
    turns = {b for _, b in _turns(branch[name], tolerance)}
    turns |= {sp.index for sp in branch.special_points if sp.kind is SpecialKind.LPC and sp.located}
    turns = np.array(sorted(turns), dtype=int)
    if turns.size < 2:
        return []
    dT = np.diff(T)
    out = []
    for a in range(len(branch) - 1):
        lo, hi = max(a - 1, 0), min(a + 2, len(branch) - 1)
        steps = dT[lo:hi]
        if not (np.all(steps > 0) or np.all(steps < 0)):
            continue   # not a graph over the period here
        near = turns[(turns >= a - SNAKE_WINDOW) & (turns <= a + 1 + SNAKE_WINDOW)]
        if near.size < 2:
            continue
        spacing = float(np.min(np.abs(np.diff(T[near]))))
        if not spacing > 0:
            continue
        if abs(dT[a]) > SNAKE_STEP * spacing:
            out.append((a, a + 1, int(min(64, max(8, np.ceil(4.0 * abs(dT[a]) / spacing - 1e-9))))))
    return out


def _scan_snakes(branch: Branch, system, tolerance: float = 1e-8) -> tuple[Branch, int]:
    """Follow the row pairs of :func:`snake_pairs` in the period and solve the turns and period doublings
    they hide (``found_by = accounting``). Returns the branch and the number of pairs scanned."""
    from bifnet.continuation.restarts import _renumber

    pairs = snake_pairs(branch, tolerance)
    found, scanned = [], 0
    for a, b, samples in pairs[:MAX_SNAKE_SCANS]:
        if _scan_pair(branch, a, b, system, tolerance, found, samples=samples) is not None:
            scanned += 1
    if len(pairs) > MAX_SNAKE_SCANS:
        log.warning("%s: %d row pairs of its snakes may hide turns; the first %d were followed in the period "
                    "(MAX_SNAKE_SCANS)", branch.name, len(pairs), MAX_SNAKE_SCANS)
    if found:
        branch = dataclasses.replace(branch, special_points=_renumber(list(branch.special_points) + found))
    return branch, scanned


def _report_unexplained(branch: Branch, events: Sequence[Event], system, cycles: bool, budget=None) -> Branch:
    """Locate what refinement could not, or report it with ``located = False``."""
    from bifnet.continuation import verify
    from bifnet.continuation.restarts import _renumber

    specials = list(branch.special_points)
    name = branch.free[0]
    dismissed = 0
    stable = np.array(branch["stable"], copy=True) if cycles and "stable" in branch.columns else None
    for event in events:
        i = min(event.index, len(branch) - 1)
        check = None
        if cycles and event.what in ("stability", "doubling") and system.kind == "homogeneous" and (
                budget is None or budget[0] > 0):
            if budget is not None:
                budget[0] -= 1
            check = _shooting_check(branch, event, system)
            if check is not None and check["dismissed"]:
                dismissed += 1
                if stable is not None and event.what == "stability":
                    for row, count in check["counts"].items():
                        stable[row] = int(count == 0)
                log.info("%s: %s: bifnet's own multipliers (multiple shooting) count %s at the two rows: no "
                         "crossing; the engine's were wrong there", branch.name, event.describe(branch),
                         " and ".join(str(c) for c in check["counts"].values()))
                continue
        if check is not None and check["kind"] is not None:
            kind = check["kind"]
        elif event.what == "doubling":
            kind = SpecialKind.PD
        elif event.what == "stability":
            kind = _guess_kind(branch, event, system, cycles)
        else:
            kind = SpecialKind.LPC if cycles else SpecialKind.LP
        fold = _fold_next_to(branch, event, cycles) if event.what == "stability" else None
        if fold is not None and kind in (SpecialKind.LPC, SpecialKind.LP):
            # the parameter turns once there and the fold is located: what it leaves is a second real
            # crossing (+1 for cycles, 0 for equilibria) between the same rows, a branch point
            kind = SpecialKind.BP
        reason = event.describe(branch)
        if fold is not None and kind is SpecialKind.BP:
            reason += (f"; {fold.name} between these rows explains one of the changes, the other is a "
                       f"{'real multiplier crossing +1' if cycles else 'real eigenvalue crossing 0'} with it: "
                       f"a branch point")
        if check is not None:
            (ra, ca), (rb, cb) = sorted(check["counts"].items())
            reason += (f"; bifnet's own multipliers (multiple shooting) confirm it ({ca} at row {ra}, {cb} at row "
                       f"{rb}: {_CROSSING[kind]})")
        sp = SpecialPoint(kind=kind, index=i, parameters={f: float(branch[f][i]) for f in branch.free},
                          state=tuple(float(branch[v][i]) for v in branch.variables) if not cycles else (),
                          located=False, details={"found_by": "accounting", "reason": reason})
        result = None
        if check is not None and check["start"] is not None and kind is not SpecialKind.BP:
            from bifnet.continuation.verify import _close_to_branch
            from bifnet.continuation.verify_cycles import solve_cycle_point

            row, orbit = check["start"]
            values = {**branch.parameters, **{f: float(branch[f][row]) for f in branch.free}}
            attempt = solve_cycle_point(system.model, values, name, kind, orbit.state, orbit.period,
                                        profile=orbit.profile)
            if attempt.ok and _close_to_branch(branch, i, np.array([attempt.parameters[name], attempt.period]),
                                               [name, "period"]):
                result = attempt
            elif attempt.ok:
                log.debug("%s: %s from bifnet's orbit at row %d converged away from the branch (%s = %.10g)",
                          branch.name, kind.value, row, name, attempt.parameters[name])
        if result is None and not cycles and kind in (SpecialKind.LP, SpecialKind.HB, SpecialKind.BP):
            guesses = list(range(i, event.last + 1)) if event.what == "stability" else [i - 1, i, i + 1]
            for g in guesses:
                if not 0 <= g < len(branch):
                    continue
                probe = dataclasses.replace(sp, index=g, parameters={f: float(branch[f][g]) for f in branch.free})
                attempt = verify.verify_equilibrium_point(branch, probe, system)
                if attempt.ok and not (kind is SpecialKind.BP and _on_branch(attempt, specials, kind, name)):
                    result, sp = attempt, probe
                    break
        elif result is None and cycles and kind in (SpecialKind.LPC, SpecialKind.PD, SpecialKind.NS) and (
                budget is None or budget[0] > 0):
            from bifnet.continuation.verify_cycles import verify_cycle_point

            if budget is not None:
                budget[0] -= 1
            try:
                attempt = verify_cycle_point(branch, sp, system)
                result = attempt if attempt.ok else None
            except Exception as error:  # noqa: BLE001 - reported below
                log.debug("locating %s at row %d failed: %s", kind.value, i, error)
        if result is not None and _on_branch(result, specials, kind, name):
            result = None  # Newton's method found a point already on the branch
            if cycles and "trivial_error" in branch.columns:
                worst = float(np.nanmax(branch["trivial_error"][max(i - 1, 0):i + 2]))
                if worst > TRIVIAL_WARNING:
                    sp = dataclasses.replace(sp, details={**sp.details, "reason": sp.details["reason"] + (
                        f"; the engine's trivial multiplier is off by {worst:.2g} here: its mesh is too coarse "
                        "(raise ntst)")})
        if result is not None:
            sp = verify.apply(sp, result, branch=branch)
            sp = dataclasses.replace(sp, details={**sp.details, "found_by": "accounting", "reason": ""})
            log.info("%s: %s located by bifnet at %s = %.10g (the engine missed it)", branch.name,
                     kind.value, name, sp.parameters[name])
        else:
            sp = dataclasses.replace(sp, verification="failed")
        specials.append(sp)
    branch = dataclasses.replace(branch, special_points=_renumber(specials))
    if dismissed:
        columns = dict(branch.columns)
        if stable is not None:
            columns["stable"] = stable
        branch = dataclasses.replace(branch, columns=columns,
                                     accounting={**(branch.accounting or {}), "dismissed": dismissed})
    return branch


_CROSSING = {SpecialKind.LPC: "a real multiplier crosses +1, a fold of cycles",
             SpecialKind.PD: "a real multiplier crosses -1, a period doubling",
             SpecialKind.NS: "a complex pair crosses the unit circle, a torus bifurcation",
             SpecialKind.BP: "a real multiplier crosses +1 besides the fold's, a branch point of cycles"}


def _shooting_check(branch: Branch, event: Event, system) -> dict | None:
    """bifnet's own multipliers at the two rows of a cycle stability event.

    Each row's orbit is solved again by multiple shooting at that row's
    parameters (:func:`~bifnet.continuation.verify_cycles.solve_periodic_orbit`)
    from the engine's orbit. Returns ``None`` when either solve fails;
    otherwise ``dismissed`` (both rows have the same number of multipliers
    outside the unit circle: the engine's multipliers were wrong), ``counts``
    (row -> count), and for a real change the ``kind`` of the crossing (from
    the crossing multiplier: real positive LPC, real negative PD, complex NS)
    and the ``start`` ``(row, OrbitSolution)`` closest to it.
    """
    from bifnet.continuation.verify_cycles import _critical, engine_profile, solve_periodic_orbit

    points = (branch.engine or {}).get("points", {})
    name = branch.free[0]
    solutions = {}
    for row in (event.index, event.last):
        orbit = getattr(points.get(row), "periodic_orbit", None)
        if orbit is None or "period" not in branch.columns:
            return None
        values = {**branch.parameters, **{f: float(branch[f][row]) for f in branch.free}}
        try:
            sol = solve_periodic_orbit(system.model, values, np.asarray(orbit.state, dtype=float)[0],
                                       float(branch["period"][row]), profile=engine_profile(points.get(row)))
        except (ContinuationError, ValueError, np.linalg.LinAlgError) as error:
            log.debug("%s: orbit at row %d not solved: %s", branch.name, row, error)
            return None
        if not sol.ok:
            log.debug("%s: orbit at row %d (%s = %.10g) not solved (residual %.2g)", branch.name, row, name,
                      values[name], sol.residual)
            return None
        solutions[row] = sol
    a, b = event.index, event.last
    if event.what == "doubling":
        # the parity of the real multipliers below -1: the start is the row whose real negative
        # multiplier lies closest to -1
        counts = {row: int(real_negative_outside([sol.multipliers])[0]) for row, sol in solutions.items()}
        if min(counts.values()) < 0:
            return None
        if (counts[a] - counts[b]) % 2 == 0:
            return {"dismissed": True, "counts": counts, "kind": None, "start": None}

        def gap(sol):
            mu = np.asarray(sol.multipliers, dtype=complex)
            real = mu[(np.abs(mu.imag) <= 1e-9 * np.maximum(1.0, np.abs(mu))) & (mu.real < 0)]
            return float(np.min(np.abs(real + 1.0))) if real.size else np.inf

        row = min(solutions, key=lambda r: gap(solutions[r]))
        return {"dismissed": False, "counts": counts, "kind": SpecialKind.PD, "start": (row, solutions[row])}
    counts = {row: sol.unstable_count() for row, sol in solutions.items()}
    if min(counts.values()) < 0:
        return None
    if counts[a] == counts[b]:
        return {"dismissed": True, "counts": counts, "kind": None, "start": None}
    # the crossing multiplier: the non-trivial one closest to the unit circle, at the row where it is closest
    best = None
    for row, sol in solutions.items():
        critical = _critical(sol.multipliers)
        gap = abs(abs(critical) - 1.0)
        if best is None or gap < best[0]:
            best = (gap, row, critical)
    _, row, mu = best
    if min(abs(counts[b] - counts[a]), event.change) == 2 or abs(mu.imag) > 1e-6 * max(1.0, abs(mu)):
        kind = SpecialKind.NS
    else:
        kind = SpecialKind.LPC if mu.real > 0 else SpecialKind.PD
    return {"dismissed": False, "counts": counts, "kind": kind, "start": (row, solutions[row])}


def _on_branch(result, specials, kind, name) -> bool:
    """Whether a solved point is one already located on the branch: of its kind, or for a BP (solved with the
    fold's system: a singular Jacobian, a double multiplier 1) also a fold, at the same parameter (1e-8)."""
    same = {kind} | ({SpecialKind.LP, SpecialKind.LPC} if kind is SpecialKind.BP else set())
    return any(o.kind in same and o.located and abs(o.parameters[name] - result.parameters[name])
               <= 1e-8 * max(1.0, abs(o.parameters[name])) for o in specials)


def _fold_next_to(branch, event, cycles):
    """A located fold (LPC / LP) within a row of the event's rows, or ``None``."""
    kind = SpecialKind.LPC if cycles else SpecialKind.LP
    return next((sp for sp in branch.special_points if sp.kind is kind and sp.located
                 and event.index - 1 <= sp.index <= event.last + 1), None)


def _guess_kind(branch, event, system, cycles) -> SpecialKind:
    delta = event.change
    if cycles:
        if delta == 2:
            return SpecialKind.NS
        mu = cycle_multipliers(branch)
        for row in range(event.index, event.last + 1):
            m = mu[row] if row < len(mu) else np.empty(0)
            if m.size and np.any((m.real < -0.5) & (np.abs(m.imag) < 1e-6)):
                return SpecialKind.PD
        return SpecialKind.LPC
    return SpecialKind.HB if delta == 2 else SpecialKind.LP
