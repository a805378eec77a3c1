"""Two-parameter loci of the folds (LPC) and period doublings (PD) of oscillatory pattern branches.

A verified LPC or PD point of a full-network periodic orbit (:mod:`bifnet.patterns.verify_cycles`) is
continued in two parameters ``(p1, p2)`` on the shooting system the branch used (``S`` RK4 steps of the
full network, ``S`` fixed along the locus, exact monodromy ``M`` from the tangent kernels of
:class:`bifnet.patterns.cycles.ShootingProblem`). Unknowns ``z = (X0, T, p1, p2)`` (``N n + 3``),
equations (``N n + 2``):

* ``Phi(X0, T, p) - X0 = 0`` and the phase condition ``f(X_ref) . (X0 - X_ref) = 0`` (``X_ref`` the
  previous locus point: the section moves with the locus);
* a *minimally augmented* scalar condition ``g(z) = 0`` (Govaerts 2000; Kuznetsov et al., MatCont):
  ``g`` is the last component of the solution of the bordered system ``[[C, b], [c^T, 0]] (v, g) = (0, 1)``,
  zero exactly where ``C`` is singular, with

  - LPC: ``C = [[M - I, dPhi/dT], [f(X_ref)^T, 0]]`` (the orbit and period part of the branch's
    shooting Jacobian: singular at a fold of cycles, where ``M`` has a double multiplier 1);
  - PD: ``C = M + I`` (a multiplier -1).

  ``b`` and ``c`` are the left and right null vectors of ``C`` at the previous locus point.
  The gradient ``g_z = -w^T C_z v`` (``w`` from the transposed system) needs the second derivative of
  the flow map only along one direction ``u`` (``u = (v_X, v_T, 0, 0)`` for LPC, ``(v, 0, 0, 0)`` for PD):
  by the symmetry of ``D^2 Phi``, ``w^T D^2 Phi(u, .) = d/de [w^T DPhi(z + e u)]``, a central difference
  of two more linearisations ``DPhi = [M, dPhi/dT, dPhi/dp1, dPhi/dp2]``. One Jacobian of the whole
  system costs three monodromies. The residual has no second differences in it: ``g`` comes from the
  exact ``M`` (and, for LPC, ``dPhi/dT`` by a central difference of the flow map, as in the one-parameter
  branch and its verification).

The curve is followed by :func:`bifnet.patterns.loci._arclength` (pseudo-arclength, Newton's corrector,
every accepted point below :data:`bifnet.patterns.loci.RESIDUAL_TOLERANCE`) in the scaled unknowns
``(X0 / sqrt(N n), T, p1, p2)``, the norm of :func:`bifnet.patterns.cycles.arclength_weights`. Measured
cost and accuracy: ``docs/engine.md``.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind
from bifnet.errors import ContinuationError
from bifnet.patterns.cycles import ShootingProblem, _profile, return_error
from bifnet.patterns.loci import _arclength, _null_vector
from bifnet.patterns.loci_points import _at_level

log = logging.getLogger("bifnet.patterns")

#: Largest max-norm residual of the defining system at the given start before it is polished (a verified
#: point has below 1e-9; a start farther off is not the point it claims to be).
START_TOLERANCE = 1e-6
#: Relative step of the central difference along the null vector (the second derivative of the flow map).
SECOND_DIFFERENCE = 1e-5
_KINDS = (SpecialKind.LPC, SpecialKind.PD)


class TwoParameterShooting(ShootingProblem):
    """:class:`ShootingProblem` with two free parameters: ``p`` is the pair ``(p1, p2)`` everywhere."""

    def __init__(self, model, operator, parameters, free):
        model.check_parameter_names(list(free))
        super().__init__(model, operator, parameters, free[0])
        self.pair = tuple(free)
        self.linearisations = 0

    def network(self, p):
        key = (float(p[0]), float(p[1]))
        net = self._nets.get(key)
        if net is None:
            if len(self._nets) > 16:
                self._nets.clear()
            net = self._nets[key] = self.base.with_parameters(**dict(zip(self.pair, key)))
        return net

    def linearise(self, z, S):
        """``(Phi(X0), DPhi)`` at ``z = (X0, T, p1, p2)``: ``DPhi = [M, dPhi/dT, dPhi/dp1, dPhi/dp2]``
        (``D x (D + 3)``; ``M`` exact, the last three columns central differences of the flow map)."""
        D = self.D
        X, T, p = z[:D], z[D], z[D + 1:D + 3]
        end, M = self.tangent(X, T, p, S, np.eye(D))
        J = np.empty((D, D + 3))
        J[:, :D] = M
        for j in range(D, D + 3):
            h = 1e-6 * (T if j == D else max(1.0, abs(z[j])))
            up, down = z.copy(), z.copy()
            up[j] += h
            down[j] -= h
            a = self.flow(up[:D], up[D], up[D + 1:], S)
            b = self.flow(down[:D], down[D], down[D + 1:], S)
            if a is None or b is None:
                raise ContinuationError("the network state became non-finite over one period")
            J[:, j] = (a - b) / (2 * h)
        self.linearisations += 1
        return end, J


class CycleLocusSystem:
    """``G(z) = 0`` of a fold or period doubling of cycles and its Jacobian (module docstring)."""

    def __init__(self, problem: TwoParameterShooting, kind: SpecialKind, S: int, z0):
        if kind not in _KINDS:
            raise ContinuationError(f"no two-parameter locus of a {kind.value} point of an oscillatory pattern "
                                    f"(LPC or PD)")
        self.problem, self.kind, self.S = problem, kind, int(S)
        self._cache: dict = {}
        self.moved(np.asarray(z0, dtype=float), borders=None)

    # -- pieces ---------------------------------------------------------------------------------------
    def _lin(self, z):
        key = z.tobytes()
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) > 6:
                self._cache.pop(next(iter(self._cache)))
            hit = self._cache[key] = self.problem.linearise(z, self.S)
        return hit

    def core(self, J):
        """The matrix that is singular at the point: LPC ``[[M - I, Phi_T], [f_ref^T, 0]]``, PD ``M + I``."""
        D = self.problem.D
        if self.kind is SpecialKind.PD:
            return J[:, :D] + np.eye(D)
        C = np.zeros((D + 1, D + 1))
        C[:D, :D] = J[:, :D] - np.eye(D)
        C[:D, D] = J[:, D]
        C[D, :D] = self.f_ref
        return C

    def bordered(self, C):
        """``(g, v, w)``: ``[[C, b], [c^T, 0]] (v, g) = (0, 1)`` and the transposed system's ``w``."""
        m = C.shape[0]
        A = np.zeros((m + 1, m + 1))
        A[:m, :m], A[:m, m], A[m, :m] = C, self.b, self.c
        rhs = np.zeros(m + 1)
        rhs[m] = 1.0
        right = np.linalg.solve(A, rhs)
        left = np.linalg.solve(A.T, rhs)
        return float(right[m]), right[:m], left[:m]

    def moved(self, z, borders=True):
        """Put the section through ``z`` and (``borders``) the bordering vectors at ``C``'s null vectors there."""
        D = self.problem.D
        self.X_ref = z[:D].copy()
        f = self.problem.field(z[:D], z[D + 1:D + 3])
        self.f_ref = f / np.linalg.norm(f)
        C = self.core(self._lin(z)[1])
        if borders is None:     # the start: the singular vectors of the smallest singular value
            U, _, Vt = np.linalg.svd(C)
            self.b, self.c = U[:, -1].copy(), Vt[-1].copy()
        else:
            _, v, w = self.bordered(C)
            self.b, self.c = w / np.linalg.norm(w), v / np.linalg.norm(v)

    # -- the system -----------------------------------------------------------------------------------
    def G(self, z):
        D = self.problem.D
        end, J = self._lin(z)
        g = self.bordered(self.core(J))[0]
        return np.concatenate([end - z[:D], [self.f_ref @ (z[:D] - self.X_ref), g]])

    def DG(self, z):
        D = self.problem.D
        end, J = self._lin(z)
        _, v, w = self.bordered(self.core(J))
        out = np.zeros((D + 2, D + 3))
        out[:D] = J
        out[:D, :D] -= np.eye(D)
        out[D, :D] = self.f_ref
        u = np.zeros(D + 3)
        u[:v.size] = v
        e = SECOND_DIFFERENCE * (1.0 + float(np.max(np.abs(z[:D])))) / float(np.max(np.abs(u)))
        _, J_up = self._lin(z + e * u)
        _, J_down = self._lin(z - e * u)
        out[D + 1] = -(w[:D] @ (J_up - J_down)) / (2 * e)
        return out

    def multipliers(self, z):
        D = self.problem.D
        return np.linalg.eigvals(self._lin(z)[1][:, :D])


def _multiplier_error(kind, mu) -> float:
    """PD: ``min |mu + 1|``; LPC: the second smallest ``|mu - 1|`` (the trivial multiplier and the fold's)."""
    if kind is SpecialKind.PD:
        return float(np.min(np.abs(mu + 1.0)))
    return float(np.sort(np.abs(mu - 1.0))[1])


def continue_cycle_locus(model, operator, parameters, start, kind: SpecialKind, free, values, *, steps: int,
                         ds=0.01, ds_min=1e-6, ds_max=0.1, max_steps=100, bounds=None, levels=(), name="locus",
                         mode=1, Lambda=0.0, check_return=True) -> Branch:
    """Continue a verified LPC or PD point of an oscillatory pattern in two parameters.

    Parameters
    ----------
    model, operator
        The node model and its coupling operator.
    parameters : mapping
        Every model parameter (the two free ones are replaced by ``values``).
    start : array_like
        The verified orbit ``(X0, T, p1)`` (``branch.engine["verified_orbits"][name]``).
    kind : SpecialKind
        ``LPC`` or ``PD``.
    free : (str, str)
        The point's own parameter first, then the second one.
    values : mapping
        Both parameters at the start.
    steps : int
        RK4 steps per period of the shooting map (the verification's: ``details["steps_per_period"]``).
    ds, ds_min, ds_max, max_steps, bounds
        Step sizes in the norm ``sqrt(|dX0|^2 / (N n) + dT^2 + dp1^2 + dp2^2)``; steps per direction;
        ``bounds`` maps a parameter to ``(lo, hi)`` (the locus stops at the first point outside).
    levels : sequence of float
        Values of the second parameter where the locus point is solved exactly and inserted as a row.
    check_return : bool
        Integrate every row again with adaptive DOPRI5 (rtol 1e-10) for the ``return_error`` column.

    Returns
    -------
    Branch
        Kind ``LOCUS`` (``locus_of`` = ``kind``) through the start (row ``engine["start_index"]``),
        columns: both parameters, ``period``, ``amplitude`` (first harmonic, all components),
        ``<var>_mean`` (time mean over the orbit, mean over regions), ``multiplier_error`` (PD:
        ``min |mu + 1|``; LPC: the second smallest ``|mu - 1|``), ``residual`` (max-norm of the whole
        defining system), ``return_error``, ``stable`` (not evaluated), ``code``, ``label``; the orbits
        ``(X0, T, p1, p2)`` in ``engine["rows"]``, multipliers in ``engine["multipliers"]``.

    Raises
    ------
    ContinuationError
        ``kind`` not LPC or PD; a start that is not a solution (residual above :data:`START_TOLERANCE`);
        no point converging next to it.

    Examples
    --------
    >>> branch = oscillatory_pattern_branch(model, operator, params, "mu", x, 1, settings)      # doctest: +SKIP
    >>> pd = branch.point("PD1")                                                                # doctest: +SKIP
    >>> locus = continue_cycle_locus(model, operator, params, branch.engine["verified_orbits"]["PD1"],
    ...                              pd.kind, ("mu", "a"), {"mu": pd.parameters["mu"], "a": -0.5},
    ...                              steps=pd.details["steps_per_period"])                       # doctest: +SKIP
    """
    from bifnet._blas import single_threaded_blas

    if kind not in _KINDS:
        raise ContinuationError(f"{name}: two-parameter loci of {kind.value} points of oscillatory patterns are "
                                f"not supported (LPC and PD are)")
    p1, p2 = free
    with single_threaded_blas():
        return _locus(model, operator, dict(parameters), np.asarray(start, dtype=float), kind, (p1, p2),
                      {p1: float(values[p1]), p2: float(values[p2])}, int(steps), ds, ds_min, ds_max, max_steps,
                      bounds or {}, tuple(levels), name, mode, Lambda, check_return)


def _locus(model, operator, parameters, start, kind, free, values, S, ds, ds_min, ds_max, max_steps, bounds,
           levels, name, mode, Lambda, check_return):
    p1, p2 = free
    started = time.perf_counter()
    problem = TwoParameterShooting(model, operator, {**parameters, **values}, free)
    N, n, D = problem.N, problem.n, problem.D
    if start.size != D + 2:
        raise ContinuationError(f"{name}: the start orbit has {start.size} values, expected {D + 2} "
                                f"(X0, T, {p1})")
    z0 = np.concatenate([start[:D + 1], [values[p1], values[p2]]])
    system = CycleLocusSystem(problem, kind, S, z0)
    r = system.G(z0)
    r0 = float(np.max(np.abs(r)))
    if not r0 < START_TOLERANCE:
        raise ContinuationError(
            f"{name}: the start is not a solution of the {kind.value} system (residual {r0:.2g}: orbit "
            f"{float(np.max(np.abs(r[:D]))):.2g}, {kind.value} condition {abs(r[-1]):.2g}; tolerance "
            f"{START_TOLERANCE:g}); a locus starts only from a verified point")
    at = D + 2
    scale = np.ones(D + 3)
    scale[:D] = math.sqrt(D)     # unknowns y = z / scale: the continuation's norm is that of the cycles

    def G(y):
        return system.G(y * scale)

    def DG(y):
        return system.DG(y * scale) * scale[None, :]

    y0 = z0 / scale
    e = np.zeros(D + 3)
    e[at] = 1.0
    y0, res0 = _at_level(G, DG, y0, y0 + e, at, y0[at])   # polished at fixed p2 (Newton's method)
    if y0 is None:
        raise ContinuationError(f"{name}: the {kind.value} system did not converge at the start ({p1} = "
                                f"{values[p1]:.10g}, {p2} = {values[p2]:.10g}; residual {res0:.2g})")
    z0 = y0 * scale
    system.moved(z0)
    try:
        t0 = _null_vector(DG(y0), e)
    except np.linalg.LinAlgError:
        raise ContinuationError(f"{name}: the {kind.value} system is singular at the start (a codimension-two "
                                f"point?); no locus") from None

    def inside(y):
        z = y * scale
        if not z[D] > 0:
            return "period -> 0"
        for k, nm in enumerate(free):
            lo, hi = bounds.get(nm, (-np.inf, np.inf))
            if not lo <= z[D + 1 + k] <= hi:
                return "bound"
        return ""

    halves = []
    for sign in (1.0, -1.0):
        system.moved(z0)
        halves.append(_arclength(G, DG, y0, sign * t0, ds=ds, ds_min=ds_min, ds_max=ds_max, max_steps=max_steps,
                                 inside=inside, at=at, levels=levels,
                                 accepted=lambda y: system.moved(y * scale)))
    (za, ra, sa, fa), (zb, rb, sb, fb) = halves
    rows = np.array(zb[::-1] + [y0] + za) * scale[None, :]
    residuals = np.array(rb[::-1] + [res0] + ra)
    level_rows = [int(k) for k in np.flatnonzero(np.array(fb[::-1] + [False] + fa))]
    spent = time.perf_counter() - started
    linearisations = problem.linearisations
    columns, multipliers = _describe(problem, system, rows, kind, model, check_return)
    columns = {p1: rows[:, D + 1], p2: rows[:, D + 2], **columns, "residual": residuals}
    k = len(rows)
    columns.update({"stable": np.full(k, -1), "code": np.zeros(k, dtype=int), "label": np.zeros(k, dtype=int)})
    status = f"+: {sa}, -: {sb}"
    log.info("  %s: %d points of the %s locus in (%s, %s) (%s), %.1f s, %d linearisations (%d monodromy columns)",
             name, k, kind.value, p1, p2, status, spent, linearisations, problem.tangent_columns)
    return Branch(kind=BranchKind.LOCUS, name=name, free=(p1, p2), columns=columns, special_points=(),
                  parameters={**parameters, **values}, origin=None, locus_of=kind, mode=int(mode), Lambda=Lambda,
                  status=status, variables=tuple(model.variable_names),
                  engine={"rows": rows, "states": rows[:, :D].reshape(-1, N, n), "start_index": len(zb),
                          "level_rows": level_rows, "multipliers": multipliers, "steps_per_period": S,
                          "seconds": spent, "linearisations": linearisations,
                          "method": f"shooting (full network, {S} RK4 steps, exact monodromy): orbit, moving "
                                    f"phase condition, minimally augmented {kind.value} condition"})


def _describe(problem, system, rows, kind, model, check_return):
    """Per-row columns: ``period``, ``amplitude``, ``<var>_mean``, ``multiplier_error``, ``return_error``."""
    D, N, n = problem.D, problem.N, problem.n
    k = len(rows)
    amplitude, mean = np.zeros(k), np.zeros((k, n))
    error, returns = np.zeros(k), np.full(k, np.nan)
    multipliers = []
    for i, z in enumerate(rows):
        _, samples = problem.flow(z[:D], z[D], z[D + 1:], system.S, record=True)
        m, _, c1 = _profile(samples, z[D])
        amplitude[i] = float(np.linalg.norm(c1))
        mean[i] = m.reshape(N, n).mean(axis=0)
        mu = system.multipliers(z)
        multipliers.append(mu[np.argsort(-np.abs(mu))])
        error[i] = _multiplier_error(kind, mu)
        if check_return:
            returns[i] = return_error(problem.network(z[D + 1:]), z[:D], z[D])
    columns = {"period": rows[:, D], "amplitude": amplitude}
    for j, var in enumerate(model.variable_names):
        columns[f"{var}_mean"] = mean[:, j]
    columns.update({"multiplier_error": error, "return_error": returns})
    return columns, multipliers
