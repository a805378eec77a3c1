"""Verification of LPC, PD and NS points of oscillatory pattern branches (full-network periodic orbits).

A point detected between two orbits ``z_a``, ``z_b`` (``z = (X0, T, p)``) of a branch continued by
:mod:`bifnet.patterns.cycles` is solved again on the same shooting system (``S`` RK4 steps of the
full network, exact monodromy ``M``) with the multiplier condition added:

* equations ``Phi(X0, T, p) - X0 = 0``, the phase condition ``f(X_a) . (X0 - X_a) = 0`` (the section
  the continuation used for ``z_b``) and ``g(X0, T, p) = 0``;
* ``g``: for NS and PD, ``|mu| - 1`` of the multiplier that crosses the unit circle between the rows
  (a complex pair, ``mu = exp(i theta)`` at the point; a real negative one, ``mu = -1``), followed
  from row to row by matching all multipliers (an assignment on ``|mu_a - mu_b|``); for LPC the
  ``p`` component of the unit null vector of the bordered shooting Jacobian
  ``[[M - I, dPhi/dT, dPhi/dp], [f(X_a)^T, 0, 0]]`` (zero exactly where ``[[M - I, dPhi/dT], [f^T, 0]]``
  is singular: a double multiplier 1, the fold). A fold of cycles is a turning point of the parameter:
  it is detected at a row where ``p`` turns, and accepted where ``g`` changes sign inside the bracket, the
  system converges, and ``p`` there lies beyond both rows' values (:func:`_turns`: an extremum of ``p``
  along the branch, not a zero of ``g`` on a stretch where ``p`` goes one way). The count of real
  multipliers above 1 (the trivial one left out; ``details["above_one"]`` at the two rows) supports it but
  is no condition: it changes by an odd number where the fold's multiplier passes through 1 alone, by 2
  where another real multiplier passes through 1 between the same rows (the 2-node Bautin pair at
  ``beta = 1.2``: a symmetry-breaking branch point at ``mu = -0.45`` and the fold at ``-0.46`` between rows
  at ``-0.4438`` and ``-0.4596``, multipliers 4.53 and 1.29 above 1 at the first row, none at the second).
  That other crossing is a BP of its own (:func:`detect_points`: a fold takes one crossing of +1 next to
  its row, no more). A crossing of +1 where ``p`` does not turn is a BP, never an LPC.

The derivative of ``g`` in ``X0`` would need second derivatives of the flow map (one monodromy per
direction), so the system is solved in its reduced form: the orbit is parametrised by ``s``, the
distance along the chord ``u = (z_b - z_a) / |z_b - z_a|`` (``u . (z - z_a) = s``, regular at a fold),
the orbit at each ``s`` is corrected by the continuation's own Newton iteration (Broyden updates of the
nearest evaluation's bordered Jacobian, interpolated initial guess), and ``g(s) = 0`` is solved by
regula falsi (Illinois) inside the bracket ``[0, |z_b - z_a|]``, starting from the rows' own values of
``g``. Every evaluation costs one monodromy at the corrected orbit (plus one when the corrector has
to linearise again); all crossings of one bracket share the evaluations. A point is ``located`` when
``|g|`` and the orbit residual (max-norm of ``Phi - X0``) are below :data:`RESIDUAL_TOLERANCE` within
:data:`MAX_EVALUATIONS` evaluations, at ``0 < s < |z_b - z_a|`` (inside the bracket by construction).
Monodromies are budgeted per branch (``CycleSettings.verification_budget``); points past the budget
are ``not verified``.

On a branch whose orbits are already unstable (tvb68: 134 multipliers outside the circle) most NS
points are pairs crossing while others stay outside: they change the unstable count and are NS points
of the branch all the same; ``unstable_others`` gives the number of other multipliers outside the
circle at the point and ``direction`` whether the pair leaves (``out``) or enters (``in``) the disc.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np

from bifnet.continuation.branch import SpecialKind, SpecialPoint
from bifnet.errors import BifnetError
from bifnet.patterns.cycles import MULTIPLIER_MARGIN

log = logging.getLogger("bifnet.patterns")

#: Largest max-norm of the orbit residual and of ``|g|`` at a located point.
RESIDUAL_TOLERANCE = 1e-9
#: Evaluations (orbit correction + monodromy) per point, the bracket's own rows not counted.
MAX_EVALUATIONS = 8
#: ``|Im mu|`` (relative) below which a multiplier counts as real.
_REAL = 1e-8


@dataclasses.dataclass(frozen=True)
class Crossing:
    """A multiplier crossing the unit circle between two rows (``kind``: NS, PD or BP)."""

    kind: SpecialKind
    mu_a: complex
    mu_b: complex

    @property
    def direction(self) -> str:
        return "out" if abs(self.mu_b) > abs(self.mu_a) else "in"


def _nontrivial(mu):
    mu = np.asarray(mu, dtype=complex)
    if mu.size == 0:
        return mu
    return np.delete(mu, int(np.argmin(np.abs(mu - 1.0))))


def _is_real(mu) -> bool:
    return abs(mu.imag) <= _REAL * max(1.0, abs(mu))


def _match(mu_a, mu_b):
    """Indices ``(i, j)`` pairing ``mu_a[i]`` with ``mu_b[j]`` (least total distance)."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(np.abs(np.asarray(mu_a)[:, None] - np.asarray(mu_b)[None, :]))


def multiplier_crossings(mu_a, mu_b, *, margin: float = 0.0) -> list[Crossing]:
    """Multipliers (the trivial one, closest to 1, left out) that cross the unit circle from ``mu_a`` to
    ``mu_b``, the Floquet multipliers of two neighbouring orbits: complex pairs (``NS``, one entry per pair,
    the member with ``Im mu > 0``), real negative (``PD``) and real positive (``BP``) ones.

    The multipliers are paired by an assignment on ``|mu_a - mu_b|``; a multiplier is real when
    ``|Im mu| <= 1e-8 max(1, |mu|)``, judged at the row closer to the circle. A multiplier crosses when
    ``|mu| > 1 + margin`` at one row and not at the other (the branch's unstable count uses the same margin).
    """
    a, b = _nontrivial(mu_a), _nontrivial(mu_b)
    if a.size == 0 or b.size == 0:
        return []
    i, j = _match(a, b)
    out = []
    for x, y in zip(a[i], b[j]):
        if (abs(x) > 1.0 + margin) == (abs(y) > 1.0 + margin):
            continue
        near = x if abs(abs(x) - 1) <= abs(abs(y) - 1) else y
        if _is_real(near):
            out.append(Crossing(SpecialKind.PD if near.real < 0 else SpecialKind.BP, complex(x), complex(y)))
        elif near.imag > 0:
            out.append(Crossing(SpecialKind.NS, complex(x), complex(y)))
    return out


def net_change(crossings) -> int:
    """Change of the unstable count the crossings explain (a complex pair counts twice)."""
    return sum((2 if c.kind is SpecialKind.NS else 1) * (1 if c.direction == "out" else -1) for c in crossings)


@dataclasses.dataclass(frozen=True)
class CycleVerification:
    """Outcome of solving one LPC / PD / NS point of an oscillatory pattern."""

    ok: bool
    residual: float            #: max(orbit residual, |g|)
    method: str
    z: np.ndarray              #: (X0, T, p) at the point (the best evaluation when not ok)
    multipliers: np.ndarray    #: all of them there, largest modulus first
    critical: complex          #: the crossing multiplier there (NS, PD; 1 for LPC)
    evaluations: int           #: new orbit evaluations spent on this point
    reason: str = ""


@dataclasses.dataclass
class _Evaluation:
    s: float
    z: np.ndarray
    residual: float
    mu: np.ndarray
    lin: object = None
    tracked: dict = dataclasses.field(default_factory=dict)   # crossing index -> multiplier
    lpc: float = math.nan


class _Bracket:
    """The orbits between two rows along their chord, with their multipliers; shared by the crossings."""

    def __init__(self, problem, z_a, z_b, S, settings, budget):
        from bifnet.patterns.cycles import CycleSettings

        D = problem.D
        self.problem, self.D, self.S = problem, D, int(S)
        self.z_a = np.asarray(z_a, dtype=float)
        chord = np.asarray(z_b, dtype=float) - self.z_a
        self.length = float(np.linalg.norm(chord))
        if not self.length > 0:
            raise BifnetError("the bracketing orbits coincide")
        self.u = chord / self.length
        f = problem.field(self.z_a[:D], self.z_a[D + 1])
        self.phase = f / np.linalg.norm(f)
        self.settings = dataclasses.replace(settings or CycleSettings(), method="monodromy")
        self.budget = budget if budget is not None else [math.inf]
        self.points: list[_Evaluation] = []
        self.monodromies = 0

    def spend(self, columns_before):
        used = (self.problem.tangent_columns - columns_before) / self.D
        self.monodromies += used
        self.budget[0] -= used

    def evaluate(self, s, z_guess, *, lin=None, need_lpc=False):
        """Correct the orbit at chord coordinate ``s`` from ``z_guess``; ``None`` if it does not converge."""
        from bifnet.patterns.cycles import _correct, _linearise, _tangent

        problem, D = self.problem, self.D
        before = problem.tangent_columns
        try:
            z, res, ok, lin_used = _correct(problem, np.asarray(z_guess, dtype=float), self.u, self.z_a[:D],
                                            self.phase, self.S, lin, self.settings)
            if not ok or not z[D] > 0:
                return None
            if lin_used is not None and lin_used.M is not None and np.array_equal(lin_used.z, z):
                new = lin_used
            else:
                new = _linearise(problem, z, self.S, True)
            mu = np.linalg.eigvals(new.M)
            mu = mu[np.argsort(-np.abs(mu), kind="stable")]
            point = _Evaluation(s=float(s), z=z, residual=float(res), mu=mu, lin=new)
            if need_lpc:
                t = _tangent(problem, new, self.phase, self.u, "monodromy")
                point.lpc = float(t[D + 1])
        except (BifnetError, np.linalg.LinAlgError, FloatingPointError, ValueError) as error:
            log.debug("    orbit at s = %.6g failed: %s", s, error)
            return None
        finally:
            self.spend(before)
        return point

    def nearest(self, s):
        return min(self.points, key=lambda e: abs(e.s - s))

    def neighbours(self, s):
        left = [e for e in self.points if e.s <= s]
        right = [e for e in self.points if e.s >= s]
        return max(left, key=lambda e: e.s), min(right, key=lambda e: e.s)

    def add(self, point, crossings):
        """Keep ``point``, following every crossing's multiplier from the nearest evaluation."""
        if self.points:
            ref = self.nearest(point.s)
            cand = _nontrivial(point.mu)
            own = _nontrivial(ref.mu)
            i, j = _match(own, cand)
            mapping = dict(zip(i, j))
            for k, value in ref.tracked.items():
                hit = int(np.argmin(np.abs(own - value)))
                target = cand[mapping[hit]] if hit in mapping else cand[int(np.argmin(np.abs(cand - value)))]
                if crossings[k].kind is SpecialKind.NS and target.imag < 0:
                    target = np.conj(target)
                point.tracked[k] = complex(target)
        self.points.append(point)
        self.points.sort(key=lambda e: e.s)


def _above_one(mu) -> np.ndarray:
    """The real multipliers above 1, the trivial one (the closest to 1) left out, in increasing order."""
    others = _nontrivial(mu)
    return np.sort(np.array([m.real for m in others if _is_real(m) and m.real > 1.0]))


def passes_through_one(mu_a, mu_b) -> bool:
    """Whether a real multiplier passes through +1 between two orbits with Floquet multipliers ``mu_a`` and
    ``mu_b`` (the trivial one, closest to 1, left out): the numbers of real multipliers above 1 differ by an
    odd number, i.e. ``prod (mu - 1)`` over the other multipliers changes sign (a complex pair contributes
    ``|mu - 1|^2 > 0``) -- the sign of ``det(M - I)`` off the trivial direction, which a fold of cycles
    changes. No multiplier is paired or picked: the one that passes through 1 at a fold may be far from 1
    at the rows (Stuart-Landau, 6 nodes: 2.177 and 0.575, while another one stays at 0.025). Support for a
    fold, not a condition: a branch point of cycles between the same rows makes the difference even."""
    return (_above_one(mu_a).size - _above_one(mu_b).size) % 2 == 1


def _turns(bracket, e):
    """``(ok, reason)``: whether the parameter turns at the evaluation ``e`` where the fold condition holds, i.e.
    ``p(e)`` lies beyond the parameters of both bracketing rows (a fold is an extremum of ``p`` along the branch;
    the sign change of the tangent's ``p`` component inside the bracket is the other half, from the regula falsi).
    No count of multipliers is asked: at a fold the fold's multiplier passes through 1, but another real one may
    pass through 1 between the same rows (a branch point of cycles next to the fold) and make the count change
    by 2; that crossing is reported on its own (:func:`detect_points`)."""
    D = bracket.D
    p, p_a, p_b = float(e.z[D + 1]), float(bracket.points[0].z[D + 1]), float(bracket.points[-1].z[D + 1])
    # the rows and the point are solved to residuals of 1e-9, so their parameters to about that: a fold
    # next to a row (Stuart-Landau, 20 nodes: 2.4e-11 from it) must not read as lying between the rows
    slack = min(1e-8 * max(1.0, abs(p)), 0.01 * abs(p_a - p_b))
    if p >= max(p_a, p_b) - slack or p <= min(p_a, p_b) + slack:
        return True, ""
    return False, (f"the fold condition holds at {p:.10g}, between the rows' {p_a:.10g} and {p_b:.10g}: the parameter "
                   f"does not turn there, so it is not a fold of cycles")


def multipliers_above_one(mu) -> int:
    """Number of real multipliers above 1, the trivial one (the closest to 1) left out."""
    return int(_above_one(mu).size)


def _condition(kind, point, k):
    return point.lpc if kind is SpecialKind.LPC else abs(point.tracked[k]) - 1.0


def _solve(bracket: _Bracket, k: int, kind: SpecialKind, crossings) -> CycleVerification:
    """Regula falsi (Illinois) on ``g`` of crossing ``k`` over the bracket's evaluations."""
    D = bracket.D
    spent = 0
    tol = RESIDUAL_TOLERANCE

    def g(e):
        return _condition(kind, e, k)

    def result(e, ok, reason=""):
        crit = complex(e.tracked.get(k, 1.0)) if kind is not SpecialKind.LPC else 1.0 + 0j
        if ok and kind is SpecialKind.LPC:
            ok, reason = _turns(bracket, e)
        return CycleVerification(ok=ok, residual=float(max(e.residual, abs(g(e)))), method=_method(kind, bracket),
                                 z=e.z.copy(), multipliers=e.mu, critical=crit, evaluations=spent, reason=reason)

    # the tightest bracket of evaluations with a sign change of g
    pairs = [(x, y) for x, y in zip(bracket.points[:-1], bracket.points[1:]) if g(x) * g(y) <= 0]
    best = min(bracket.points, key=lambda e: abs(g(e)))
    if not pairs:
        return result(best, False, f"no sign change of the multiplier condition between the rows "
                                   f"(g = {g(bracket.points[0]):.3g} and {g(bracket.points[-1]):.3g})")
    lo, hi = min(pairs, key=lambda pair: pair[1].s - pair[0].s)
    for e in (lo, hi):
        if abs(g(e)) < tol and e.residual < tol and 0 < e.s < bracket.length:
            return result(e, True)
    g_lo, g_hi = g(lo), g(hi)
    side = 0
    while spent < MAX_EVALUATIONS:
        if bracket.budget[0] <= 0:
            return result(best, False, "the branch's verification budget (monodromies) was spent")
        s = lo.s - g_lo * (hi.s - lo.s) / (g_hi - g_lo) if g_hi != g_lo else 0.5 * (lo.s + hi.s)
        width = hi.s - lo.s
        s = min(max(s, lo.s + 1e-3 * width), hi.s - 1e-3 * width)
        w = (s - lo.s) / width
        guess = (1 - w) * lo.z + w * hi.z
        near = lo if w <= 0.5 else hi
        spent += 1
        point = bracket.evaluate(s, guess, lin=near.lin if near.lin is not None else None,
                                 need_lpc=kind is SpecialKind.LPC)
        if point is None:   # try the middle of the bracket once more from its own guess
            s = 0.5 * (lo.s + hi.s)
            spent += 1
            point = bracket.evaluate(s, 0.5 * (lo.z + hi.z), need_lpc=kind is SpecialKind.LPC)
            if point is None:
                return result(best, False, f"the orbit correction did not converge inside the bracket "
                                           f"(s = {s:.4g} of {bracket.length:.4g})")
        bracket.add(point, crossings)
        value = g(point)
        if abs(value) < abs(g(best)):
            best = point
        if abs(value) < tol and point.residual < tol:
            return result(point, True)
        if value * g(lo) > 0:
            lo, g_lo = point, value
            if side == -1:
                g_hi /= 2
            side = -1
        else:
            hi, g_hi = point, value
            if side == 1:
                g_lo /= 2
            side = 1
        if hi.s - lo.s <= 1e-13 * bracket.length:
            break
    return result(best, False, f"regula falsi stopped after {spent} evaluations at |g| = {abs(g(best)):.2g}, "
                               f"orbit residual {best.residual:.2g} (tolerance {tol:g})")


def _method(kind, bracket):
    what = {SpecialKind.LPC: "p-component of the null vector of [[M - I, dPhi/dT, dPhi/dp], [f^T, 0, 0]] = 0",
            SpecialKind.PD: "|mu| = 1 of the real negative multiplier crossing -1",
            SpecialKind.NS: "|mu| = 1 of the complex pair crossing the unit circle"}[kind]
    return (f"shooting (full network, {bracket.S} RK4 steps, exact monodromy): orbit, phase, {what}; "
            f"regula falsi along the chord between the rows")


def verify_bracket(problem, kind_list, rows, S, settings=None, budget=None, *, crossings=None):
    """Solve the points of one bracket: ``rows`` = two ``(z, multipliers or None)`` (the orbits ``z = (X0, T, p)``
    between which the points were detected; multipliers ``None`` to compute them), ``kind_list`` the
    kind of each point (``crossings`` gives the crossing multipliers of the NS / PD ones, in order).

    Returns one :class:`CycleVerification` per point and the monodromies spent.
    """
    (z_a, mu_a), (z_b, mu_b) = rows
    bracket = _Bracket(problem, z_a, z_b, S, settings, budget)
    crossings = list(crossings or [])
    need_lpc = SpecialKind.LPC in kind_list
    ends = []
    for s, z, mu in ((0.0, bracket.z_a, mu_a), (bracket.length, np.asarray(z_b, dtype=float), mu_b)):
        if mu is None or need_lpc:
            e = bracket.evaluate(s, z, need_lpc=need_lpc)
            if e is None:
                raise BifnetError("the bracketing orbit did not converge again with the verification's section")
        else:
            e = _Evaluation(s=s, z=z.copy(), residual=0.0, mu=np.asarray(mu, dtype=complex))
            e.residual = _orbit_residual(problem, z, S)
        ends.append(e)
    a, b = ends
    for k, c in enumerate(crossings):
        own_a, own_b = _nontrivial(a.mu), _nontrivial(b.mu)
        a.tracked[k] = complex(own_a[int(np.argmin(np.abs(own_a - c.mu_a)))])
        b.tracked[k] = complex(own_b[int(np.argmin(np.abs(own_b - c.mu_b)))])
        if c.kind is SpecialKind.NS:
            a.tracked[k] = complex(np.conj(a.tracked[k])) if a.tracked[k].imag < 0 else a.tracked[k]
            b.tracked[k] = complex(np.conj(b.tracked[k])) if b.tracked[k].imag < 0 else b.tracked[k]
    bracket.points = [a, b]
    out = []
    k = 0
    for kind in kind_list:
        if kind is SpecialKind.LPC:
            out.append(_solve(bracket, -1, kind, crossings))
        else:
            out.append(_solve(bracket, k, kind, crossings))
            k += 1
    return out, bracket.monodromies


def _orbit_residual(problem, z, S):
    D = problem.D
    end = problem.flow(z[:D], z[D], z[D + 1], S)
    return math.inf if end is None else float(np.max(np.abs(end - z[:D])))


# --------------------------------------------------------------------------- #
# Detection and verification of a branch's points
# --------------------------------------------------------------------------- #


def detect_points(p, period, counts, unstable, multipliers, free, s=None):
    """Turning points (LPC) and multipliers crossing the unit circle between rows (BP, PD, NS; matched
    from row to row by :func:`bifnet.patterns.verify_cycles.multiplier_crossings`), ``located = False``.

    Returns ``[(point, crossing or None)]``. Where the crossings do not explain the change of the unstable
    count (multipliers that could not be paired), the count changes are reported as before, with a reason.

    A fold's own multiplier passes through +1 next to its turning row: each fold takes one real crossing of +1
    in the row intervals next to it (the nearest first) and no more. Any other crossing of +1 is a branch
    point of cycles (``BP``), also where it lies in the same row interval as the fold (the count of real
    multipliers above 1 then changes by 2 there). Only a turn of the parameter makes an LPC: a crossing of +1
    without one is a BP. Nearest: where ``|mu| - 1`` interpolates to 0 between the rows, against the vertex of
    the parameter's parabola over the arclength ``s`` of the rows
    (:func:`bifnet.continuation.accounting.turn_position`).
    """
    from bifnet.continuation.accounting import turn_position

    out = []
    tally: dict = {}

    def add(kind, i, value, found_by, crossing=None, **details):
        tally[kind] = tally.get(kind, 0) + 1
        point = SpecialPoint(kind=kind, index=int(i), parameters={free: float(value)}, located=False,
                             period=float(period[i]), name=f"{kind.value}{tally[kind] + (kind is SpecialKind.BP)}",
                             verification="not verified", details={"found_by": found_by, **details})
        out.append((point, crossing))

    dp = np.diff(p)
    folds = []
    for i in range(2, len(p) - 1):
        if dp[i - 1] * dp[i] < 0:
            add(SpecialKind.LPC, i, p[i], "turning point of the free parameter")
            folds.append(i)
    words = {SpecialKind.NS: "a complex pair crosses the unit circle",
             SpecialKind.PD: "a real multiplier crosses -1", SpecialKind.BP: "a real multiplier crosses +1"}
    unpaired = "the multipliers of the rows could not be paired to explain the change of the unstable count"
    found = []   # (row, kind, crossing or None, units of the count): in row order
    for i in range(1, len(p) - 1):
        crossings = multiplier_crossings(multipliers[i], multipliers[i + 1], margin=MULTIPLIER_MARGIN)
        if net_change(crossings) == unstable[i + 1] - unstable[i]:
            found += [(i, c.kind, c, 1) for c in crossings]
            continue
        a, b = counts[i], counts[i + 1]
        for kind, k in ((SpecialKind.BP, 0), (SpecialKind.PD, 1), (SpecialKind.NS, 2)):
            if a[k] != b[k]:
                found.append((i, kind, None, abs(int(a[k]) - int(b[k]))))
    # each fold explains one crossing of +1 next to its row, the nearest first
    units = [u for *_, u in found]
    near = {}       # crossing -> the fold next to it
    turn = {f: turn_position(p, f, s) for f in folds}
    pairs = sorted((abs(_crossing_position(i, c) - turn[f]), j, f) for j, (i, kind, c, _) in enumerate(found)
                   if kind is SpecialKind.BP for f in folds if f - 2 <= i <= f + 1)
    spare = set(folds)
    for _, j, f in pairs:
        near.setdefault(j, f)
        if f in spare and units[j] > 0:
            spare.discard(f)
            units[j] -= 1
    for j, (i, kind, c, _) in enumerate(found):
        if units[j] <= 0:
            continue   # the fold's multiplier through +1
        details = {}
        if c is None:
            value, found_by, details["reason"] = 0.5 * (p[i] + p[i + 1]), words[kind], unpaired
        else:
            # where |mu| - 1 interpolates to zero between the rows
            ga, gb = abs(c.mu_a) - 1.0, abs(c.mu_b) - 1.0
            value = p[i] + (p[i + 1] - p[i]) * ga / (ga - gb)
            found_by = words[kind] + " (multipliers paired between rows)"
            details["direction"] = c.direction
        if j in near:
            details["reason"] = (f"a real multiplier passes through +1 between rows {i} and {i + 1}, next to the "
                                 f"fold at row {near[j]}, besides the fold's own: a branch point of cycles, not "
                                 f"re-solved (which crossing is the fold's is not told at the rows: {free} = "
                                 f"{value:.6g} is a rough estimate)")
        add(kind, i, value, found_by, c, **details)
    return sorted(out, key=lambda item: item[0].index)


def _crossing_position(i, crossing) -> float:
    """Where ``|mu| - 1`` interpolates to 0 between rows ``i`` and ``i + 1`` (fractional row units; the
    interval's middle when the multipliers were not paired)."""
    if crossing is None:
        return i + 0.5
    ga, gb = abs(crossing.mu_a) - 1.0, abs(crossing.mu_b) - 1.0
    return i + ga / (ga - gb)


def verify_points(problem, rows, detected, free, settings, n):
    """Solve the detected LPC, PD and NS points again (:mod:`bifnet.patterns.verify_cycles`); BP points and
    points past the budget are ``not verified``. ``rows[r]`` is branch row ``r + 1``."""
    D = problem.D
    started = time.perf_counter()
    budget = [float(settings.verification_budget)]
    out = {id(sp): sp for sp, _ in detected}
    groups: dict = {}
    for sp, crossing in detected:
        if sp.kind is SpecialKind.LPC:
            groups[("LPC", sp.index)] = [(sp, None)]
        elif sp.kind in (SpecialKind.PD, SpecialKind.NS) and crossing is not None:
            groups.setdefault(("X", sp.index), []).append((sp, crossing))
        elif sp.kind is SpecialKind.BP:
            out[id(sp)] = dataclasses.replace(sp, details={**sp.details, "reason": sp.details.get(
                "reason", "branch points of oscillatory patterns are not re-solved")})
    spent = 0.0
    orbits = {}
    for (what, i), members in groups.items():
        if budget[0] <= 0:
            for sp, _ in members:
                why = ("not verified (verification_budget = 0)" if not settings.verification_budget else
                       f"not verified: the branch's verification budget ({settings.verification_budget} "
                       f"monodromies) was spent")
                out[id(sp)] = dataclasses.replace(sp, details={**sp.details, "reason": why})
            continue
        # a crossing lies between rows i and i + 1; a fold next to row i, in (i - 1, i) or (i, i + 1). Row b
        # lies on the section through row a's point (the continuation's phase condition)
        halves = [(i - 1, i), (i, i + 1)] if what == "LPC" else [(i, i + 1)]
        try:
            tried = []
            for a, b in halves:
                ra, rb = rows[a - 1], rows[b - 1]
                S = max(ra["S"], rb["S"])
                ends = [(ra["z"], ra["mu"] if ra["S"] == S else None), (rb["z"], rb["mu"] if rb["S"] == S else None)]
                results, cost = verify_bracket(problem, [sp.kind for sp, _ in members], ends, S, settings, budget,
                                               crossings=[c for _, c in members if c is not None])
                spent += cost
                tried.append(results)
                if what != "LPC" or results[0].ok or budget[0] <= 0:
                    break
            if what == "LPC" and not results[0].ok:   # the more telling of the two halves' reasons
                telling = [r for r in tried if not r[0].reason.startswith("no sign change")]
                results = telling[0] if telling else [dataclasses.replace(
                    results[0], reason="no sign change of the fold condition on either side of the turning row "
                                       "(no fold: the continuation turned back?)")]
        except BifnetError as error:
            for sp, _ in members:
                out[id(sp)] = dataclasses.replace(sp, verification="failed", details={**sp.details,
                                                                                      "reason": str(error)})
            continue
        found = []
        for (sp, crossing), result in zip(members, results):
            twin = next((name for name, z in found if result.ok and np.allclose(z, result.z, rtol=0, atol=1e-7)),
                        None)
            if twin is not None:
                result = dataclasses.replace(result, ok=False, reason=f"converged to the point already verified as "
                                                                      f"{twin}")
            details = dict(sp.details)
            details["evaluations"] = result.evaluations
            if not result.ok:
                details["reason"] = result.reason
                out[id(sp)] = dataclasses.replace(sp, residual=result.residual, verification=result.method,
                                                  details=details)
                continue
            found.append((sp.name, result.z))
            z = result.z
            orbits[sp.name] = z.copy()
            mu = result.multipliers
            closest = mu[np.argsort(np.abs(np.abs(mu) - 1.0), kind="stable")[:10]]
            if sp.kind is SpecialKind.LPC:    # the trivial multiplier and the fold's, both at 1
                others = mu[np.argsort(np.abs(mu - 1.0), kind="stable")[2:]]
            else:
                others = _nontrivial_sorted(mu)
                others = others[np.minimum(np.abs(others - result.critical),
                                           np.abs(others - np.conj(result.critical))) > 1e-6]
            details["engine_value"] = float(sp.parameters[free])
            if sp.kind is SpecialKind.LPC:   # support, not a condition: odd where the fold's multiplier is alone
                details["above_one"] = [multipliers_above_one(rows[r - 1]["mu"]) for r in (a, b)]
            details["steps_per_period"] = int(S)     # the shooting map it was solved on (a locus starts there)
            details["unstable_others"] = int(np.sum(np.abs(others) > 1 + MULTIPLIER_MARGIN))
            if sp.kind is not SpecialKind.LPC:
                details["multiplier_angle"] = float(abs(np.angle(result.critical)))
            out[id(sp)] = dataclasses.replace(
                sp, parameters={free: float(z[D + 1])}, period=float(z[D]), located=True,
                state=tuple(float(v) for v in z[:D].reshape(-1, n).mean(axis=0)),
                eigenvalues=tuple(complex(e) for e in closest), residual=result.residual,
                verification=result.method, details=details)
    points = [out[id(sp)] for sp, _ in detected]
    points = _retraced(points, orbits, free)
    verified = [sp for sp in points if sp.kind in (SpecialKind.LPC, SpecialKind.PD, SpecialKind.NS)]
    if verified:
        log.info("  verification: %d of %d LPC/PD/NS points located, %.0f monodromies, %.1f s",
                 sum(sp.located for sp in verified), len(verified), spent, time.perf_counter() - started)
    for sp in verified:
        if not sp.located:
            log.warning("  oscillatory pattern %s near %s = %.8g not located: %s", sp.name, free,
                        sp.parameters[free], sp.details.get("reason", ""))
    return points, orbits


def _retraced(points, orbits, free):
    """A located point equal to an earlier one of its kind (parameter, period and multiplier angle to 1e-7)
    is the same point met again: the branch retraced itself (``located = False``, with the reason)."""
    out = []
    for sp in points:
        twin = None
        if sp.located:
            twin = next((o.name for o in out if o.located and o.kind is sp.kind
                         and abs(o.parameters[free] - sp.parameters[free]) <= 1e-7 * max(1.0, abs(sp.parameters[free]))
                         and abs(o.period - sp.period) <= 1e-7 * sp.period
                         and abs(o.details.get("multiplier_angle", 0.0) - sp.details.get("multiplier_angle", 0.0))
                         <= 1e-7), None)
        if twin is not None:
            orbits.pop(sp.name, None)
            sp = dataclasses.replace(sp, located=False, details={
                **sp.details, "reason": f"the same point as {twin} ({free}, period and multiplier agree to 1e-7): "
                                        f"the branch retraced itself"})
        out.append(sp)
    return out


def _nontrivial_sorted(mu):
    mu = np.asarray(mu)
    return np.delete(mu, int(np.argmin(np.abs(mu - 1.0)))) if mu.size else mu
