"""Instability maps on a parameter grid, evaluated on the continued homogeneous states.

At every point of a grid in two parameters ``(p, q)`` the map holds the
homogeneous state (a stable equilibrium if there is one, else a stable
cycle), the growth rate of every connectome mode there, and from it the
number of unstable non-uniform modes. Nothing is interpolated: each grid
point's state is solved, and its growth rates are exact eigenvalues
(equilibria) or Floquet exponents (cycles) at that point.

Algorithm (see ``docs/science.md``, "Instability maps"):

1. **Equilibria.** The equilibrium branches that continuation computed in
   ``p`` at a few levels of ``q`` are moved row by row to every grid row of
   ``q``: each branch point is corrected by Newton's method on
   ``f(x, p; q) = 0`` plus the pseudo-arclength condition (the point stays on
   the hyperplane normal to the branch), so folds are passed like AUTO
   passes them. On each row, every grid value of ``p`` inside a segment of the
   moved branch gives a candidate (linear interpolation, then Newton at the
   grid point); the map takes the first candidate along the branch that is
   stable to mode 1, as the level maps did. All of this is vectorised over
   the branch points or candidates.
2. **Cycles** where no stable equilibrium exists: seeded from the cycle
   branches of the levels (AUTO's orbits), then solved at every grid point
   from a solved neighbour (flood fill) by shooting, Newton with the
   neighbour's monodromy (chord iterations; a fresh monodromy when they stall), with a secant
   predictor along rows and columns; beyond a homogeneous period doubling the doubled cycle
   (seeded once from the flip eigenvector) is flooded the same way.
3. **Growth rates.** Equilibria: ``max Re eig(A + Lambda B)`` of every mode,
   batched. Cycles: the Floquet exponents of every mode from the monodromies
   of :mod:`bifnet.transverse.floquet` (one cycle integration for all modes).
   Steps 2-3 run in independent chunks of rows on local processes or a Dask
   cluster (:func:`bifnet.sweep.map_tasks`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Mapping, Sequence

import numpy as np

from bifnet.errors import BifnetError, ContinuationError, RunFileError
from bifnet.model import NodeModel

log = logging.getLogger("bifnet.transverse")

#: codes of ``homogeneous_solution``
NONE, EP, LC = 0, 1, 2

_EQ_TOL = 1e-10       # max |f| of an accepted equilibrium
_CYCLE_TOL = 1e-9     # max |phi_T(x) - x| / amplitude of an accepted cycle
_FLOQUET_RTOL = 1e-7  # tolerance of the mesh the Floquet monodromies are computed on
_PERIOD_CHANGE = 0.25  # largest relative change of the period from the guess (a neighbour's cycle)
_MAX_ATTEMPTS = 3     # shooting attempts per grid point (from different solved neighbours)
_MAX_DOUBLINGS = 3   # rounds of period-doubled cycles seeded from flip instabilities (periods 2T, 4T, 8T)
_MAX_DOUBLED_PERIOD = 1000.0  # ms
_PREDICTOR_STEP = 0.2  # secant predictor only between cycles closer than this fraction of the amplitude


def grid_axis(bounds: Sequence[float], step: float, name: str) -> np.ndarray:
    """Grid values ``lo, lo + step, ..., hi`` (``hi - lo`` a multiple of ``step``, to 1e-9)."""
    lo, hi = (float(v) for v in bounds)
    if not (np.isfinite(step) and step > 0):
        raise RunFileError(f"grid: the step of {name} must be positive, got {step!r}")
    count = (hi - lo) / step
    if abs(count - round(count)) > 1e-9 * max(1.0, count):
        raise RunFileError(f"grid: the step {step:g} of {name} does not divide its range [{lo:g}, {hi:g}]")
    return np.round(lo + step * np.arange(int(round(count)) + 1), 12)


# ---------------------------------------------------------------------------
# batched model functions

def _batched(exprs, state, params):
    import sympy

    fn = sympy.lambdify([list(state), list(params)], list(exprs), modules="numpy", cse=True)

    def call(X, P):
        values = fn(list(np.asarray(X, float).T), list(np.asarray(P, float).T))
        count = X.shape[0]
        return np.stack([np.broadcast_to(np.asarray(v, dtype=float), (count,)) for v in values], axis=1)

    return call


@functools.lru_cache(maxsize=None)
def batched_functions(model: NodeModel, parameter: str):
    """Vectorised ``f``, ``D_x f``, ``d f / d parameter``, ``A``, ``B`` of the homogeneous system
    (arguments ``X`` (N, n), ``P`` (N, m); matrices come back as (N, n, n))."""
    from bifnet.systems import homogeneous_system, mode_jacobian

    hom = homogeneous_system(model)
    mj = mode_jacobian(model)
    n = model.n_variables
    psym = hom.parameters[list(model.parameter_names).index(parameter)]
    f = _batched(hom.rhs, hom.state, hom.parameters)
    jac = _batched([e for row in hom.jacobian.tolist() for e in row], hom.state, hom.parameters)
    dp = _batched([e.diff(psym) for e in hom.rhs], hom.state, hom.parameters)
    A = _batched(list(mj.A), mj.state, mj.parameters)
    B = _batched(list(mj.B), mj.state, mj.parameters)
    return {"f": f, "J": lambda X, P: jac(X, P).reshape(-1, n, n), "dp": dp,
            "A": lambda X, P: A(X, P).reshape(-1, n, n), "B": lambda X, P: B(X, P).reshape(-1, n, n)}


# ---------------------------------------------------------------------------
# equilibria on the grid

def _tangents(Z):
    T = np.empty_like(Z)
    T[1:-1] = Z[2:] - Z[:-2]
    T[0] = Z[1] - Z[0]
    T[-1] = Z[-1] - Z[-2]
    norm = np.linalg.norm(T, axis=1, keepdims=True)
    return T / np.where(norm > 0, norm, 1.0)


def _move_branch(fns, Z, pvec, i1, iq, q_value, bounds1, max_iterations=12):
    """Correct the branch points ``Z`` (K, n + 1: state, p) to ``q = q_value``."""
    n = Z.shape[1] - 1
    ok = np.all(np.isfinite(Z), axis=1)
    Z = Z.copy()
    if ok.sum() < 2:
        return np.full_like(Z, np.nan)
    T = np.full_like(Z, np.nan)
    T[ok] = _tangents(Z[ok])
    # the ends stay on the range's bounds
    ends = np.isclose(Z[:, n], bounds1[0], atol=1e-9) | np.isclose(Z[:, n], bounds1[1], atol=1e-9)
    T[ends] = 0.0
    T[ends, n] = 1.0
    Z0 = Z.copy()
    P = np.tile(pvec, (Z.shape[0], 1))
    P[:, iq] = q_value
    done = ~ok
    for _ in range(max_iterations):
        live = ~done
        if not live.any():
            break
        Zl = Z[live]
        Pl = P[live]
        Pl[:, i1] = Zl[:, n]
        F = fns["f"](Zl[:, :n], Pl)
        small = np.max(np.abs(F), axis=1) < _EQ_TOL
        M = np.zeros((Zl.shape[0], n + 1, n + 1))
        M[:, :n, :n] = fns["J"](Zl[:, :n], Pl)
        M[:, :n, n] = fns["dp"](Zl[:, :n], Pl)
        M[:, n, :] = T[live]
        r = np.concatenate([F, np.sum(T[live] * (Zl - Z0[live]), axis=1, keepdims=True)], axis=1)
        try:
            dz = np.linalg.solve(M, -r[..., None])[..., 0]
        except np.linalg.LinAlgError:
            dz = np.full_like(Zl, np.nan)
        idx = np.flatnonzero(live)
        Z[idx[~small]] = Zl[~small] + dz[~small]
        done[idx[small]] = True
    bad = ~done | ~np.all(np.isfinite(Z), axis=1)
    Z[bad] = np.nan
    return Z


def _polish_equilibria(fns, X, P, max_iterations=10):
    X = X.copy()
    done = np.zeros(X.shape[0], dtype=bool)
    for _ in range(max_iterations):
        live = np.flatnonzero(~done)
        if not live.size:
            break
        F = fns["f"](X[live], P[live])
        small = np.max(np.abs(F), axis=1) < _EQ_TOL
        done[live[small]] = True
        rest = live[~small]
        if not rest.size:
            break
        J = fns["J"](X[rest], P[rest])
        try:
            X[rest] -= np.linalg.solve(J, F[~small][..., None])[..., 0]
        except np.linalg.LinAlgError:
            for k, i in enumerate(rest):
                try:
                    X[i] -= np.linalg.solve(J[k], F[~small][k])
                except np.linalg.LinAlgError:
                    X[i] = np.nan
        X[~np.all(np.isfinite(X), axis=1)] = 0.0
    return X, done


@dataclasses.dataclass(frozen=True)
class GridEquilibria:
    """Homogeneous equilibria on a grid (arrays indexed ``[q row, p column]``).

    ``state`` (nq, np, n), NaN where ``found`` is False; ``found``: an
    equilibrium stable to mode 1 was found; ``uniform_growth_rate``: its mode-1
    growth rate (1/ms); ``unstable_only``: only equilibria unstable to mode 1
    lie on the moved branches there.
    """

    state: np.ndarray
    found: np.ndarray
    uniform_growth_rate: np.ndarray
    unstable_only: np.ndarray


def grid_equilibria(model: NodeModel, parameters: Mapping[str, float], free: tuple[str, str], values1, values2,
                    branches: Mapping[float, object]) -> GridEquilibria:
    """Stable homogeneous equilibria at every grid point, from equilibrium branches at levels of ``q``.

    Parameters
    ----------
    model : NodeModel
    parameters : mapping
        All model parameters (the free ones are overwritten).
    free : (p, q)
        The branches' continuation parameter and the level parameter.
    values1, values2 : array_like
        Grid values of ``p`` and ``q`` (increasing).
    branches : mapping of float to Branch
        Equilibrium branches in ``p`` continued at those values of ``q``.

    Returns
    -------
    GridEquilibria
    """
    p1, q = free
    x1 = np.asarray(values1, dtype=float)
    x2 = np.asarray(values2, dtype=float)
    n = model.n_variables
    names = list(model.parameter_names)
    i1, iq = names.index(p1), names.index(q)
    pvec = np.array([float(parameters[k]) for k in names])
    fns = batched_functions(model, p1)
    bounds1 = (float(x1[0]), float(x1[-1]))
    uniform = model.coupling.uniform_eigenvalue if model.coupling is not None else 1.0
    state = np.full((x2.size, x1.size, n), np.nan)
    found = np.zeros((x2.size, x1.size), dtype=bool)
    unstable_only = np.zeros_like(found)
    ugrowth = np.full((x2.size, x1.size), np.nan)
    levels = sorted(float(k) for k in branches)
    if not levels:
        return GridEquilibria(state, found, ugrowth, unstable_only)
    start = {L: np.column_stack([np.column_stack([branches[L][v] for v in model.variable_names]),
                                 branches[L][p1]]) for L in levels}
    nearest = np.array([levels[int(np.argmin([abs(v - L) for L in levels]))] for v in x2])
    rows = {}
    for L in levels:
        mine = np.flatnonzero(nearest == L)
        for direction in (mine[x2[mine] >= L], mine[x2[mine] < L][::-1]):
            Z = start[L]
            for j in direction:
                Z = _move_branch(fns, Z, pvec, i1, iq, x2[j], bounds1)
                rows[j] = Z
    for j, Z in rows.items():
        a, b = Z[:-1, n], Z[1:, n]
        seg_ok = np.isfinite(a) & np.isfinite(b) & (a != b)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        seg, col = [], []
        for k in np.flatnonzero(seg_ok):
            inside = np.flatnonzero((x1 >= lo[k] - 1e-12) & (x1 <= hi[k] + 1e-12))
            seg.append(np.full(inside.size, k))
            col.append(inside)
        if not seg:
            continue
        seg = np.concatenate(seg)
        col = np.concatenate(col)
        t = ((x1[col] - a[seg]) / (b[seg] - a[seg]))[:, None]
        X = (1 - t) * Z[seg, :n] + t * Z[seg + 1, :n]
        P = np.tile(pvec, (seg.size, 1))
        P[:, i1] = x1[col]
        P[:, iq] = x2[j]
        X, ok = _polish_equilibria(fns, X, P)
        ev = np.linalg.eigvals(fns["A"](X, P) + uniform * fns["B"](X, P))
        growth = np.where(ok, ev.real.max(axis=1), np.nan)
        stable = ok & (growth < 0)
        # first stable candidate along the branch, for each column
        for k in np.flatnonzero(ok):
            c = col[k]
            if found[j, c]:
                continue
            if stable[k]:
                found[j, c] = True
                state[j, c] = X[k]
                ugrowth[j, c] = growth[k]
            else:
                unstable_only[j, c] = True
    unstable_only &= ~found
    return GridEquilibria(state, found, ugrowth, unstable_only)


def equilibrium_growth(model: NodeModel, parameters: Mapping[str, float], free, values1, values2, states, where,
                       Lambdas, *, chunk: int = 4000) -> np.ndarray:
    """``max Re eig(A + Lambda B)`` of every ``Lambda`` at the grid points ``where`` (nq, np):
    an array (count, K) in the order of ``np.nonzero(where)``."""
    p1, q = free
    names = list(model.parameter_names)
    pvec = np.array([float(parameters[k]) for k in names])
    fns = batched_functions(model, p1)
    rows, cols = np.nonzero(where)
    lam = np.asarray(Lambdas)
    if not (np.iscomplexobj(lam) and np.any(np.imag(lam) != 0)):
        lam = np.real(lam).astype(float)
    out = np.empty((rows.size, lam.size))
    for s in range(0, rows.size, chunk):
        r, c = rows[s:s + chunk], cols[s:s + chunk]
        X = states[r, c]
        P = np.tile(pvec, (r.size, 1))
        P[:, names.index(p1)] = np.asarray(values1)[c]
        P[:, names.index(q)] = np.asarray(values2)[r]
        A, B = fns["A"](X, P), fns["B"](X, P)
        J = A[:, None] + lam[None, :, None, None] * B[:, None]
        out[s:s + chunk] = np.linalg.eigvals(J).real.max(axis=2)
    return out


# ---------------------------------------------------------------------------
# cycles on the grid

def _shoot(model, p, x, T, M, *, max_chord=10, max_newton=4):
    """Periodic orbit near ``(x, T)``: Newton on ``phi_T(x) = x`` with the phase
    condition ``(x - x_guess) . f(x_guess) = 0``, first with the monodromy ``M``
    (of a nearby cycle, chord iterations), then with fresh monodromies.
    Returns ``(x, T, amplitude)`` or None.

    The iteration runs in the compiled ``shoot`` kernel of :mod:`bifnet.transverse.floquet`
    (DOP853 at rtol 1e-11, at most 20 000 steps a period; the monodromies on the same steps)."""
    from bifnet.transverse.floquet import _dop853_errors, _kernels, _tableau

    ker = _kernels(model)
    c, a, b = _tableau("dop853")
    E3, E5 = _dop853_errors()
    n = x.size
    have = M is not None
    M = np.ascontiguousarray(M, dtype=float) if have else np.zeros((n, n))
    status, x, T, amplitude, _ = ker["shoot"](np.ascontiguousarray(x, dtype=float), float(T), M, have, p, c, a, b,
                                              E3, E5, 1e-11, _CYCLE_TOL, _PERIOD_CHANGE, max_chord, max_newton,
                                              20_000)
    # status 1: converged to a multiple of the period, or another orbit: not the continued cycle
    return (x, float(T), amplitude) if status == 0 else None


def _floquet(model, p, x, T, lams, uniform):
    """(growth rates (K,), uniform monodromy, mode-1 stable) of the cycle."""
    from bifnet.transverse.floquet import _mesh, _monodromies

    hs = _mesh(model, p, x, T, None, _FLOQUET_RTOL)
    work = np.concatenate([[uniform], lams])
    M, _ = _monodromies(model, p, x, hs, work, "dop853")
    mu = np.linalg.eigvals(M).astype(complex)  # unsorted: only maxima are taken below
    with np.errstate(divide="ignore"):
        expo = np.log(mu).real / T
    # the trivial multiplier of the homogeneous mode
    trivial = int(np.argmin(np.abs(mu[0] - 1.0)))
    rest = np.delete(expo[0], trivial)
    growth = expo[1:].max(axis=1)
    # the homogeneous mode, and modes whose perturbations obey the homogeneous variational equation
    # (no coupling, eps = 0): their trivial multiplier is not a growth rate
    scale = np.max(np.abs(M[0]))
    same = np.max(np.abs(M[1:] - M[0][None]), axis=(1, 2)) <= 1e-12 * scale
    homogeneous = (np.abs(lams - uniform) <= 1e-12) | same
    if homogeneous.any():
        growth[homogeneous] = rest.max()
    return growth, np.real(M[0]), bool(rest.max() < 0)


def _doubled_guess(model, base, i1, iq, v1, v2, x, T, Mu):
    """``(x, 2 T)`` near the period-doubled cycle born from the cycle ``(x, T)`` (uniform monodromy
    ``Mu``), or None when ``Mu`` has no real multiplier below -1: the state after 20 periods from
    ``x`` plus a small step along the flip eigenvector (the cycle repels along it, the doubled
    cycle of a supercritical doubling attracts)."""
    from bifnet.transverse.floquet import _integrate

    mu, vec = np.linalg.eig(Mu)
    flip = np.flatnonzero((np.abs(mu.imag) < 1e-9) & (mu.real < -1.0))
    if not flip.size:
        return None
    v = np.real(vec[:, flip[np.argmin(mu.real[flip])]])
    p = base.copy()
    p[i1] = v1
    p[iq] = v2
    step = 1e-3 * max(1.0, float(np.max(np.abs(x))))
    try:
        x_end, _, _ = _integrate(model, p, x + step * v / np.max(np.abs(v)), 20.0 * T, 1e-9, max_steps=200_000)
    except ContinuationError:
        return None
    return x_end, 2.0 * T


def cycles_task(*, model_source: str, parameters: dict, free, values1, values2, rows, need, seeds, Lambdas):
    """Cycles and Floquet growth rates on the grid rows ``rows`` (one task of :func:`grid_cycles`).

    ``need`` (len(rows), np): points to solve; ``seeds``: list of
    ``(row, column, x0, period)`` guesses (from continued cycle branches).
    Returns ``(found (R, np) bool, growth (R, np, K))``: ``found`` where a
    cycle stable to mode 1 was solved.
    """
    from collections import deque

    from bifnet.model import load_model
    from bifnet.transverse.floquet import _integrate

    model = load_model(model_source)
    p1, q = free
    names = list(model.parameter_names)
    i1, iq = names.index(p1), names.index(q)
    base = np.array([float(parameters[k]) for k in names])
    lams = np.asarray(Lambdas)
    if not (np.iscomplexobj(lams) and np.any(np.imag(lams) != 0)):
        lams = np.real(lams).astype(float)
    uniform = float(model.coupling.uniform_eigenvalue) if model.coupling is not None else 1.0
    R, C = need.shape
    found = np.zeros((R, C), dtype=bool)
    attempts = np.zeros((R, C), dtype=int)
    growth = np.full((R, C, lams.size), np.nan)
    cycles = {}
    scale = {}
    queue = deque()
    relaxed = [False]  # True while a guess is a predictor (the plain guess follows if it fails)

    def solve(r, c, x, T, M):
        """Shoot at grid point (r, c) from the guess; on success queue its neighbours."""
        attempts[r, c] += 1
        p = base.copy()
        p[i1] = values1[c]
        p[iq] = values2[rows[r]]
        got = _shoot(model, p, np.asarray(x, float), float(T), M)
        if got is None and attempts[r, c] == 1 and not relaxed[0]:
            # once per point: let the flow carry the neighbour's cycle towards this one (20 periods),
            # then shoot again (tiny cycles near a Hopf curve, where Newton from the neighbour's
            # larger cycle falls onto the equilibrium)
            try:
                x_end, _, _ = _integrate(model, p, np.asarray(x, float), 20.0 * float(T), 1e-9, max_steps=200_000)
                got = _shoot(model, p, x_end, float(T), None)
            except ContinuationError:
                got = None
        if got is None:
            return False
        x, T, amplitude = got
        if np.max(amplitude) < 1e-6 * max(1.0, float(np.max(np.abs(x)))):
            return False  # collapsed onto an equilibrium
        try:
            g, Mu, stable = _floquet(model, p, x, T, lams, uniform)
        except (ContinuationError, np.linalg.LinAlgError):
            return False
        if (r, c) in cycles and found[r, c] and not stable:
            return True  # keep the stable cycle found before
        cycles[(r, c)] = (x, T, Mu)
        scale[(r, c)] = float(np.max(amplitude))
        growth[r, c] = g
        found[r, c] = stable
        for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            rr, cc = r + dr, c + dc
            # into unsolved points; from a stable cycle also into points where only an unstable one was found
            if 0 <= rr < R and 0 <= cc < C and need[rr, cc] and (
                    (rr, cc) not in cycles or (stable and not found[rr, cc])):
                queue.append((rr, cc, r, c))
        return True

    def open_point(r, c, stable_source):
        if found[r, c] or attempts[r, c] >= _MAX_ATTEMPTS:
            return False
        return (r, c) not in cycles or stable_source

    def flood():
        while queue:
            rr, cc, r0, c0 = queue.popleft()
            if not open_point(rr, cc, found[r0, c0]):
                continue
            x0, T0, M0 = cycles[(r0, c0)]
            # a secant predictor from the point behind the neighbour, when that cycle was continued
            # from it (close in phase); the neighbour's own cycle otherwise
            behind = cycles.get((2 * r0 - rr, 2 * c0 - cc))
            if behind is not None and np.max(np.abs(x0 - behind[0])) < _PREDICTOR_STEP * scale[(r0, c0)]:
                relaxed[0] = True
                try:
                    if solve(rr, cc, 2 * x0 - behind[0], 2 * T0 - behind[1], M0):
                        continue
                finally:
                    relaxed[0] = False
                attempts[rr, cc] -= 1  # the predictor's miss is not an attempt
            solve(rr, cc, x0, T0, M0)

    for r, c, x, T in seeds:
        if not need[r, c] or not open_point(r, c, True):
            continue
        solve(r, c, x, T, None)
        flood()
    # period doubling: where the continued cycle lost stability through a multiplier below -1, the
    # doubled cycle is seeded once (a short integration from the cycle along the flip direction) and
    # flooded like the others; its own doublings follow in the next round
    tried = set()
    for _ in range(_MAX_DOUBLINGS):
        flips = [(key, v) for key, v in cycles.items() if key not in tried and not found[key]
                 and need[key] and v[1] * 2 <= _MAX_DOUBLED_PERIOD]
        grown = False
        for (r, c), (x, T, Mu) in flips:
            tried.add((r, c))
            if found[r, c] or attempts[r, c] >= _MAX_ATTEMPTS + 1:
                continue
            guess = _doubled_guess(model, base, i1, iq, values1[c], values2[rows[r]], x, T, Mu)
            if guess is None:
                continue
            if solve(r, c, guess[0], guess[1], None) and found[r, c]:
                grown = True
                flood()
        if not grown:
            break
    # gaps: a point left unsolved between solved stable neighbours gets one more try from each of
    # them (its attempts may have gone to unstable or farther neighbours), with the relaxation
    for _ in range(2):
        grown = False
        for r, c in zip(*np.nonzero(need & ~found)):
            sources = [(r + dr, c + dc) for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
                       if 0 <= r + dr < R and 0 <= c + dc < C and found[r + dr, c + dc]]
            if len(sources) < 2:
                continue
            for key in sources:
                attempts[r, c] = 0  # the relaxation runs on the first attempt
                x0, T0, M0 = cycles[key]
                if solve(r, c, x0, T0, M0) and found[r, c]:
                    grown = True
                    flood()
                    break
        if not grown:
            break
    return found, growth


def map_rows_task(*, model_source: str, parameters: dict, free, values1, values2, rows, states, equilibria, seeds,
                  Lambdas):
    """One task of :func:`instability_map`: growth rates on the grid rows ``rows``.

    ``states`` and ``equilibria`` (R, np): the stable equilibria found there; the other points
    get cycles from ``seeds`` (:func:`cycles_task`). Returns ``(solution (R, np), growth (R, np, K))``.
    """
    from bifnet.model import load_model

    model = load_model(model_source)
    lams = np.asarray(Lambdas)
    R, C = equilibria.shape
    solution = np.full((R, C), NONE)
    growth = np.full((R, C, lams.size), np.nan)
    if equilibria.any():
        growth[equilibria] = equilibrium_growth(model, parameters, free, values1, np.asarray(values2)[rows], states,
                                                equilibria, lams)
        solution[equilibria] = EP
    if seeds and not equilibria.all():
        found, rates = cycles_task(model_source=model_source, parameters=parameters, free=free, values1=values1,
                                   values2=values2, rows=rows, need=~equilibria, seeds=seeds, Lambdas=lams)
        solution[found] = LC
        growth[found] = rates[found]
    return solution, growth


def cycle_seeds(model: NodeModel, cycle_branches: Mapping[float, Sequence], free, values1, values2):
    """``(row, column, x0, period)`` guesses at grid points near the stable points of cycle branches."""
    from bifnet.transverse.floquet import cycle_from_branch

    p1, q = free
    out = []
    for level, branches in cycle_branches.items():
        r = int(np.argmin(np.abs(np.asarray(values2) - level)))
        for branch in branches:
            for i in np.flatnonzero(np.asarray(branch["stable"]) == 1):
                c = int(np.argmin(np.abs(np.asarray(values1) - branch[p1][i])))
                try:
                    cycle = cycle_from_branch(branch, int(i))
                except BifnetError:
                    continue
                out.append((r, c, np.asarray(cycle.x0)[: model.n_variables], cycle.period))
    return out


# ---------------------------------------------------------------------------
# the whole map

def _row_chunks(values2, seed_rows, count):
    """Consecutive rows in at most ``count`` chunks, each holding at least one seed row: the rows
    nearest each seed row stay together, neighbouring groups are merged."""
    if not seed_rows:
        return []
    seed_rows = np.asarray(seed_rows)
    nearest = np.argmin(np.abs(np.arange(len(values2))[:, None] - seed_rows[None, :]), axis=1)
    groups = [np.flatnonzero(nearest == k) for k in range(seed_rows.size)]
    groups = [g for g in groups if g.size]
    edges = np.linspace(0, len(groups), min(count, len(groups)) + 1).astype(int)
    return [np.concatenate(groups[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]


@dataclasses.dataclass(frozen=True)
class InstabilityMap:
    """The instability map on a grid (arrays indexed ``[q row, p column]``).

    Attributes
    ----------
    free : (str, str)
    values1, values2 : ndarray
        Grid of ``p`` and ``q``.
    solution : ndarray (nq, np) int
        0 no stable homogeneous state found, 1 equilibrium, 2 cycle.
    growth_rate : ndarray (nq, np, K)
        Growth rate of each ``Lambda`` (1/ms), NaN where ``solution`` is 0.
    Lambdas : ndarray (K,)
    """

    free: tuple[str, str]
    values1: np.ndarray
    values2: np.ndarray
    solution: np.ndarray
    growth_rate: np.ndarray
    Lambdas: np.ndarray


def instability_map(model: NodeModel, parameters: Mapping[str, float], free: tuple[str, str], values1, values2,
                    Lambdas, equilibrium_branches: Mapping[float, object],
                    cycle_branches: Mapping[float, Sequence] | None = None, *, scheduler=None,
                    workers: int | None = None, chunks: int | None = None, label: str = "map") -> InstabilityMap:
    """Growth rates of every ``Lambda`` at every grid point, on the continued homogeneous states.

    Parameters
    ----------
    model : NodeModel
    parameters : mapping
        All model parameters.
    free : (p, q)
    values1, values2 : array_like
        Grid values of ``p`` and ``q``.
    Lambdas : array_like (K,)
        Connectome eigenvalues (one per distinct mode).
    equilibrium_branches : mapping of float to Branch
        Equilibria continued in ``p`` at levels of ``q``.
    cycle_branches : mapping of float to list of Branch, optional
        Cycle branches continued in ``p`` at levels of ``q`` (seeds of the cycles);
        ``None``: equilibria only.
    scheduler, workers
        As in :func:`bifnet.sweep.run_sweep` (local processes by default).
    chunks : int, optional
        Independent chunks of rows (default ``2 * workers``), each computed by one task.
    label : str
        What the progress lines begin with (``"<label>: grid rows: 2 of 4 tasks done (41 s)"``).

    Returns
    -------
    InstabilityMap

    Notes
    -----
    See the module docstring. Where a stable equilibrium and a stable cycle
    coexist, the map shows the equilibrium (the reason: ``docs/engine.md``,
    "Instability maps on a grid"; :func:`brute_force_point` uses the same rule).
    """
    import time

    from bifnet.sweep import map_tasks

    x1 = np.asarray(values1, dtype=float)
    x2 = np.asarray(values2, dtype=float)
    lams = np.asarray(Lambdas)
    begin = time.perf_counter()
    eq = grid_equilibria(model, parameters, free, x1, x2, equilibrium_branches)
    log.info("  %s: %d of %d grid points on stable equilibria (%.1f s)", label, int(eq.found.sum()), eq.found.size,
             time.perf_counter() - begin)
    seeds = cycle_seeds(model, cycle_branches, free, x1, x2) if cycle_branches else []
    n_tasks = chunks or 2 * (workers or os.cpu_count() or 1)
    if seeds:
        row_sets = _row_chunks(x2, sorted({r for r, *_ in seeds}), n_tasks)
    else:
        row_sets = [r for r in np.array_split(np.arange(x2.size), min(n_tasks, x2.size)) if r.size]
    tasks = []
    for rows in row_sets:
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        tasks.append(dict(model_source=model.source, parameters=dict(parameters), free=tuple(free), values1=x1,
                          values2=x2, rows=rows, states=eq.state[lo:hi], equilibria=eq.found[lo:hi],
                          seeds=[(r - lo, c, x, T) for r, c, x, T in seeds if lo <= r < hi], Lambdas=lams))
    solution = np.full((x2.size, x1.size), NONE)
    growth = np.full((x2.size, x1.size, lams.size), np.nan)
    for task, (sol, rates) in zip(tasks, map_tasks(map_rows_task, tasks, scheduler=scheduler, workers=workers,
                                                                 progress=f"{label}: grid rows")):
        solution[task["rows"]] = sol
        growth[task["rows"]] = rates
    log.info("  %s: %d grid points on stable equilibria, %d on stable cycles, %d without (%.1f s)", label,
             int((solution == EP).sum()), int((solution == LC).sum()), int((solution == NONE).sum()),
             time.perf_counter() - begin)
    return InstabilityMap(free=tuple(free), values1=x1, values2=x2, solution=solution, growth_rate=growth,
                          Lambdas=lams)


def _recurrence_period(model, p, x, window=1000.0):
    """The first return time (ms) of the trajectory from ``x`` close to ``x`` (1e-2 of its range), or None."""
    from bifnet.transverse.floquet import _integrate

    _, hs, ys = _integrate(model, p, x, window, 1e-10, record=True, max_steps=200_000)
    t = np.concatenate([[0.0], np.cumsum(hs)])
    d = np.max(np.abs(ys - ys[0]) / np.maximum(np.ptp(ys, axis=0), 1e-12), axis=1)
    away = np.flatnonzero(d > 0.2)
    if not away.size:
        return None
    i = np.arange(away[0] + 1, d.size - 1)
    minima = i[(d[i] <= d[i - 1]) & (d[i] <= d[i + 1]) & (d[i] < 1e-2)]
    return float(t[minima[0]]) if minima.size else None


def brute_force_point(model: NodeModel, parameters: Mapping[str, float], Lambdas, *,
                      starts=(0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
                      ) -> tuple[int, np.ndarray]:
    """The map's answer at one point, computed independently of continuation (for checks).

    The same definition as the map (see ``docs/engine.md``, "Instability maps: which state"): a stable
    homogeneous equilibrium where there is one, else the attracting cycle.

    1. **Equilibria**: the homogeneous system is integrated from the model's initial state for
       2000 ms; Newton (:func:`~bifnet.continuation.equilibria.find_equilibrium`) is started from the
       states at the times ``starts`` (ms) along that trajectory, so it finds the equilibria the
       trajectory passes near, not only the one it ends at; roots outside the range of states the
       trajectory visits (widened by a tenth) are not states of the dynamics and are dropped (Newton
       finds equilibria of ngnmm_ping with negative firing rates). If one of them is stable to mode 1, the
       growth rates are the eigenvalues of ``J(Lambda)`` there (several stable ones: the one of lowest
       ``max Re`` of mode 1, i.e. the most stable).
    2. **Cycles** otherwise: the attracting cycle by simulation (4000 ms) and shooting
       (:func:`~bifnet.transverse.floquet.find_cycle`, from each variable's Poincaré section in turn
       until one converges; if none does, or the cycle it converges to is unstable to mode 1, again
       with the period guessed from the first return of the trajectory, for orbits that cross the
       section more than once a period, e.g. after a period doubling), and its Floquet
       exponents (:func:`~bifnet.transverse.floquet.floquet_dispersion`, its own adaptive mesh).

    Returns
    -------
    (solution, growth_rate)
        ``solution`` 1 (EP), 2 (LC) or 0 (neither found stable); ``growth_rate`` (K,) in 1/ms
        (NaN for 0).
    """
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.transverse.dispersion import equilibrium_dispersion
    from bifnet.transverse.floquet import _integrate, _parameter_vector, find_cycle, floquet_dispersion

    lams = np.asarray(Lambdas)
    uniform = model.coupling.uniform_eigenvalue if model.coupling is not None else 1.0
    params = model.resolve_parameters(parameters)
    p = _parameter_vector(model, params)
    work = np.concatenate([[uniform], lams])
    try:
        _, hs, ys = _integrate(model, p, model.default_state(), 2000.0, 1e-9, record=True, max_steps=400_000)
        t = np.concatenate([[0.0], np.cumsum(hs)])
        guesses = [ys[min(int(np.searchsorted(t, s)), len(t) - 1)] for s in starts]
        # only equilibria among the states the dynamics visits (the trajectory's range, widened by a
        # tenth): Newton also finds roots the flow never reaches (e.g. negative firing rates)
        widen = 0.1 * np.ptp(ys, axis=0) + 1e-9 * np.maximum(1.0, np.abs(ys).max(axis=0))
        lo, hi = ys.min(axis=0) - widen, ys.max(axis=0) + widen
    except ContinuationError:
        guesses = [model.default_state()]
        lo, hi = np.full(model.n_variables, -np.inf), np.full(model.n_variables, np.inf)
    roots, best = [], None
    for x0 in guesses:
        try:
            x = find_equilibrium(model, params, x0, settle_time=0.0)
        except BifnetError:
            continue
        if np.any(x < lo) or np.any(x > hi):
            continue
        if any(np.max(np.abs(x - r)) <= 1e-7 * max(1.0, float(np.max(np.abs(r)))) for r in roots):
            continue
        roots.append(x)
        rel = equilibrium_dispersion(model, params, x, work)
        if rel.growth_rate[0] < 0 and (best is None or rel.growth_rate[0] < best.growth_rate[0]):
            best = rel
    if best is not None:
        return EP, best.growth_rate[1:]
    # shooting on spiky orbits can fail from one Poincare section and work from another
    x_end = None
    for guess in ("sections", "recurrence"):
        period = None
        if guess == "recurrence":
            try:
                x_end, _, _ = _integrate(model, p, model.default_state(), 4000.0, 1e-10, max_steps=400_000)
                period = _recurrence_period(model, p, x_end)
            except ContinuationError:
                period = None
            if period is None:
                break
        for section in (None, *model.variable_names):
            try:
                if period is None:
                    cycle = find_cycle(model, params, section=section, transient=4000.0)
                else:
                    cycle = find_cycle(model, params, x_end, period_guess=period, section=section, transient=0.0)
                fd = floquet_dispersion(model, cycle, work)
            except BifnetError:
                continue
            if fd.growth_rate[0] < 0:
                return LC, fd.growth_rate[1:]
            # an unstable cycle is not the attractor (e.g. the cycle before a period doubling): other
            # sections, then the first-return period
    return NONE, np.full(lams.size, np.nan)
