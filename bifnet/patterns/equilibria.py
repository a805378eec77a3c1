"""Stationary patterns: equilibria of the full network continued from a transverse branch point.

The full network (``N n`` dimensions, ``N <= 96`` in practice) is small
enough for dense linear algebra: each Newton step solves one bordered
``(N n + 1)``-square system with the exact network Jacobian
(:func:`bifnet.network.core.network_jacobian_dense`, the compiled node
Jacobians and the coupling matrix) and the parameter derivative by central
differences. Continuation is pseudo-arclength with a secant-free tangent
(the null vector of ``[D_X F, D_p F]`` from the bordered system), and the
stability of every point comes from the eigenvalues of the dense Jacobian
(numpy's LAPACK). See ``docs/engine.md`` for the measurements behind this choice.

Branch switching uses the normal form of :mod:`bifnet.patterns.criticality`:
on the centre manifold ``y' = nu' (p - p_c) y + a2 y^2 + a3 y^3``, the
pattern branch leaves the branch point along ``X = X*(p) + y Q`` with
``p - p_c = -a2 y / nu'`` (transcritical) or ``-a3 y^2 / nu'`` (pitchfork).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Mapping

import numpy as np

from bifnet._blas import single_threaded_blas
from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
from bifnet.errors import BifnetError, ContinuationError
from bifnet.model import NodeModel

log = logging.getLogger("bifnet.patterns")

#: Largest max-norm residual of the network field at an accepted point.
RESIDUAL_TOLERANCE = 1e-10




@dataclasses.dataclass(frozen=True)
class PatternSettings:
    """Numerics of a pattern continuation (our own words).

    ``ds`` initial step (in the Euclidean norm of ``(X, p)``), ``ds_min``, ``ds_max``,
    ``max_steps`` per direction, ``bounds`` of the free parameter, ``newton_iterations``.
    """

    ds: float = 0.01
    ds_min: float = 1e-6
    ds_max: float = 0.1
    max_steps: int = 200
    bounds: tuple[float, float] = (-np.inf, np.inf)
    newton_iterations: int = 8

    def __post_init__(self):
        if not (0 < self.ds_min <= self.ds <= self.ds_max):
            raise BifnetError(f"pattern settings need 0 < ds_min <= ds <= ds_max (got {self.ds_min}, {self.ds}, "
                              f"{self.ds_max})")
        if self.max_steps < 1:
            raise BifnetError(f"max_steps must be positive, got {self.max_steps}")


class NetworkProblem:
    """``F(X, p) = 0`` for the full network with one free parameter ``p``."""

    def __init__(self, model: NodeModel, operator, parameters: Mapping[str, float], free: str):
        from bifnet.network import build_network

        model.check_parameter_names([free])
        self.model, self.operator, self.free = model, operator, free
        self.base = build_network(model, operator, dict(parameters))
        self._nets = {}

    def network(self, p: float):
        net = self._nets.get(p)
        if net is None:
            if len(self._nets) > 8:
                self._nets.clear()
            net = self._nets[p] = self.base.with_parameters(**{self.free: float(p)})
        return net

    def F(self, X, p):
        from bifnet.network.core import network_rhs

        return network_rhs(self.network(p), X)

    def DX(self, X, p):
        from bifnet.network.core import network_jacobian_dense

        return network_jacobian_dense(self.network(p), X)

    def Dp(self, X, p):
        h = 1e-6 * max(1.0, abs(p))
        return (self.F(X, p + h) - self.F(X, p - h)) / (2 * h)


def _tangent(DX, Dp, previous):
    """Unit null vector of ``[DX, Dp]``, oriented along ``previous``."""
    n = DX.shape[0]
    M = np.zeros((n + 1, n + 1))
    M[:n, :n], M[:n, n], M[n] = DX, Dp, previous
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    t = np.linalg.solve(M, rhs)
    t /= np.linalg.norm(t)
    return t if t @ previous >= 0 else -t


def _correct(problem, z_pred, t, iterations):
    """Newton's method on ``F = 0``, ``t . (z - z_pred) = 0``; returns ``(z, residual, converged, its)``."""
    z = z_pred.copy()
    n = z.size - 1
    for it in range(1, iterations + 1):
        X, p = z[:n], z[n]
        r = problem.F(X, p)
        res = float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else np.inf
        if not np.isfinite(res):
            return z, res, False, it
        M = np.zeros((n + 1, n + 1))
        M[:n, :n], M[:n, n], M[n] = problem.DX(X, p), problem.Dp(X, p), t
        try:
            dz = np.linalg.solve(M, -np.concatenate([r, [t @ (z - z_pred)]]))
        except np.linalg.LinAlgError:
            return z, res, False, it
        z = z + dz
        if np.max(np.abs(dz)) < 1e-12 * (1 + np.max(np.abs(z))):
            r = problem.F(z[:n], z[n])
            res = float(np.max(np.abs(r)))
            return z, res, res < RESIDUAL_TOLERANCE, it
    r = problem.F(z[:n], z[n])
    res = float(np.max(np.abs(r))) if np.all(np.isfinite(r)) else np.inf
    return z, res, res < RESIDUAL_TOLERANCE, iterations


#: A corrected point whose non-uniform part is below this fraction of its prediction's fell onto the
#: homogeneous branch (:func:`continue_network_equilibria`).
COLLAPSE = 1e-3


def _nonuniform(z, N: int, n: int) -> float:
    """Euclidean norm of the state's departure from its regional mean (0 on the homogeneous branch)."""
    X = np.asarray(z[:N * n]).reshape(N, n)
    return float(np.linalg.norm(X - X.mean(axis=0)))


def continue_network_equilibria(problem: NetworkProblem, z0, t0, settings: PatternSettings):
    """Pseudo-arclength continuation of full-network equilibria from ``z0 = (X, p)`` along ``t0``.

    Returns ``(points (k, N n + 1), residuals (k,), status)``; ``z0`` itself is not included.
    A corrected point that is homogeneous where its prediction was not is refused (the step is halved):
    the homogeneous branch crosses every pattern branch at its branch points.
    """
    n = z0.size - 1
    z, t = np.asarray(z0, dtype=float), np.asarray(t0, dtype=float) / np.linalg.norm(t0)
    ds = settings.ds
    lo, hi = settings.bounds
    N, nv = problem.base.state_shape
    out, residuals, status = [], [], "max_steps"
    travelled = 0.0
    while len(out) < settings.max_steps:
        z_new, res, ok, its = _correct(problem, z + ds * t, t, settings.newton_iterations)
        predicted = _nonuniform(z + ds * t, N, nv) if ok else 0.0
        if predicted > 1e-12 and _nonuniform(z_new, N, nv) < COLLAPSE * predicted:
            # the corrector fell onto the homogeneous branch, which passes through every branch point: on
            # tvb96 the Brusselator's mode-96 pattern folds 0.006 from its branch point, and the first step
            # (0.01) landed on the homogeneous state, continued as "the pattern" with 56 special points
            log.debug("  the point corrected at %s = %.8g is homogeneous (the prediction was not): step %.3g "
                      "halved", problem.free, z_new[n], ds)
            ok = False
            if ds / 2 < settings.ds_min:
                status = (f"reached the homogeneous state at {problem.free} = {z_new[n]:.8g} (every step down to "
                          f"ds_min fell onto it)")
                break
        if not ok:
            ds /= 2
            if ds < settings.ds_min:
                status = "no convergence"
                break
            continue
        t = _tangent(problem.DX(z_new[:n], z_new[n]), problem.Dp(z_new[:n], z_new[n]), t)
        travelled += float(np.linalg.norm(z_new - z))
        z = z_new
        out.append(z.copy())
        residuals.append(res)
        if not lo <= z[n] <= hi:
            status = "bound"
            break
        back = float(np.linalg.norm(z - z0))
        if travelled > 5 * ds and back < 1.5 * ds:
            # an isola through the start: going on would go round it again (Wilson-Cowan on 20 nodes went
            # round twice in each direction, and every fold and Hopf point appeared four times)
            status = f"closed (back at the start after {len(out)} points)"
            break
        if its <= 3:
            ds = min(ds * 1.5, settings.ds_max)
    return np.array(out).reshape(-1, n + 1), np.array(residuals), status


def _eigen_speed(model, parameters, free, x, Lambda, kind):
    """``d Re(mu) / dp`` of the critical eigenvalue of ``J(Lambda)`` along the homogeneous branch."""
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.patterns.criticality import _mode_matrices

    p0 = float(parameters[free])
    h = 1e-5 * max(1.0, abs(p0))
    values = []
    for p in (p0 - h, p0 + h):
        params = {**parameters, free: p}
        xp = find_equilibrium(model, params, x, settle_time=0.0)
        A, B = _mode_matrices(model, xp, params)
        ev = np.linalg.eigvals(A + Lambda * B)
        if kind == "BP":
            ev = ev[np.abs(ev.imag) <= 1e-9 * max(1.0, np.max(np.abs(ev)))]
        values.append(ev[np.argmin(np.abs(ev.real))].real)
    return (values[1] - values[0]) / (2 * h)


def _homogeneous_slope(model, parameters, free, x):
    """``dx*/dp`` of the homogeneous equilibrium."""
    from bifnet.continuation.equilibria import find_equilibrium

    p0 = float(parameters[free])
    h = 1e-5 * max(1.0, abs(p0))
    a = find_equilibrium(model, {**parameters, free: p0 - h}, x, settle_time=0.0)
    b = find_equilibrium(model, {**parameters, free: p0 + h}, x, settle_time=0.0)
    return (b - a) / (2 * h)


def stationary_pattern_branch(model: NodeModel, operator, parameters: Mapping[str, float], free: str, x,
                              mode: int, settings: PatternSettings, *, name: str = "pattern",
                              observe: str | None = None) -> Branch:
    """The stationary pattern born at a transverse branch point, continued in ``free``.

    Parameters
    ----------
    model, operator
        The node model and its coupling operator on the connectome.
    parameters : mapping
        Every model parameter, ``free`` at the branch point (e.g. ``Iext_e_located`` of
        ``transverse_points.csv``).
    free : str
    x : array_like
        The homogeneous equilibrium at the branch point.
    mode : int
        The mode (1-based) whose real eigenvalue of ``J(Lambda)`` is zero there.
    settings : PatternSettings

    Returns
    -------
    Branch
        Kind ``EQUILIBRIA``, ``mode`` and ``Lambda`` of the mode of origin, passing
        through the branch point (row ``engine["bp_index"]``); columns: ``free``, the
        regional mean of every variable, ``pattern_amplitude`` (the mode coordinate
        ``y = Pi (X - X*(p))``), ``<observe>_spread`` (max - min over regions), ``residual``
        (max-norm of F), ``n_unstable``, ``stable``, ``code``, ``label``. The full states are in
        ``engine["states"]`` (``(points, N, n)``), the eigenvalues in ``engine["eigenvalues"]``.

    Raises
    ------
    ContinuationError
        If no pattern point converges next to the branch point.
    """
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.patterns.criticality import transverse_normal_form

    with single_threaded_blas():
        return _stationary_pattern_branch(model, operator, parameters, free, x, mode, settings, name, observe)


def _stationary_pattern_branch(model, operator, parameters, free, x, mode, settings, name, observe):
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.patterns.criticality import transverse_normal_form

    started = time.perf_counter()
    x = np.asarray(x, dtype=float)
    nf = transverse_normal_form(model, operator, parameters, x, mode, "BP")
    if nf.criticality.startswith("degenerate"):
        raise ContinuationError(f"mode {mode}: the branch point is degenerate (a repeated eigenvalue); "
                                f"no single pattern branch to switch to")
    problem = NetworkProblem(model, operator, parameters, free)
    N, n = problem.base.state_shape
    u, q = np.real(nf.u), np.real(nf.q)
    Q = np.kron(u, q)
    speed = _eigen_speed(model, dict(parameters), free, x, nf.Lambda.real, "BP")
    if not abs(speed) > 0:
        raise ContinuationError(f"mode {mode}: the critical eigenvalue does not cross zero with non-zero speed")
    slope = np.tile(_homogeneous_slope(model, dict(parameters), free, x), N)
    p_c = float(parameters[free])
    X_c = np.tile(x, N)
    transcritical = nf.criticality == "transcritical"
    dp = -nf.quadratic / speed if transcritical else 0.0
    t0 = np.concatenate([Q + dp * slope, [dp]])
    z0 = np.concatenate([X_c, [p_c]])
    halves = []
    for sign in (1.0, -1.0):
        pts, res, status = continue_network_equilibria(problem, z0, sign * t0, settings)
        halves.append((pts, res, status))
        if status.startswith("closed"):   # the other direction is the same loop backwards
            halves.append((np.empty((0, z0.size)), np.empty(0), "not run (the + direction closed the loop)"))
            break
    (pa, ra, sa), (pb, rb, sb) = halves
    if len(pa) + len(pb) == 0:
        raise ContinuationError(f"mode {mode}: no pattern point converged next to the branch point at "
                                f"{free} = {p_c:.8g}")
    points = np.vstack([pb[::-1], z0[None], pa])
    residuals = np.concatenate([rb[::-1], [float(np.max(np.abs(problem.F(X_c, p_c))))], ra])
    bp_index = len(pb)
    states = points[:, :-1].reshape(-1, N, n)
    p = points[:, -1]
    # mode coordinate y = Pi (X - X*(p)), with the homogeneous equilibrium at the same p
    from bifnet.connectome import Connectome  # noqa: F401  (operator spectrum already computed)
    L = np.linalg.inv(np.asarray(operator.spectrum().eigenvectors).astype(complex))
    ell = np.real(L[mode - 1]) / float(np.real(L[mode - 1]) @ u)
    from bifnet.patterns.criticality import _mode_matrices

    A, B = _mode_matrices(model, x, parameters)
    wl, Wl = np.linalg.eig((A + nf.Lambda.real * B).T)
    pi = np.real(Wl[:, np.argmin(np.abs(wl))])
    pi = pi / (pi @ q)
    amplitude = np.empty(len(p))
    guess = x.copy()
    order = np.argsort(np.abs(np.arange(len(p)) - bp_index))
    for k in order:
        try:
            xh = find_equilibrium(model, {**parameters, free: float(p[k])}, guess if abs(k - bp_index) > 0 else x,
                                  settle_time=0.0)
        except BifnetError:
            amplitude[k] = np.nan
            continue
        amplitude[k] = float(ell @ ((states[k] - xh[None, :]) @ pi))
    eigenvalues = []
    for k in range(len(p)):
        eigenvalues.append(np.linalg.eigvals(problem.DX(points[k, :-1], p[k])))
    eigenvalues = np.array(eigenvalues)
    scale = np.maximum(1.0, np.max(np.abs(eigenvalues), axis=1))
    unstable = np.sum(eigenvalues.real > 1e-9 * scale[:, None], axis=1)
    unstable_complex = np.sum((eigenvalues.real > 1e-9 * scale[:, None]) & (eigenvalues.imag > 0), axis=1)
    obs = observe or model.observe or model.variable_names[0]
    oi = model.observed_index(obs)
    columns = {free: p}
    for j, v in enumerate(model.variable_names):
        columns[v] = states[:, :, j].mean(axis=1)
    columns.update({
        "pattern_amplitude": amplitude,
        f"{obs}_spread": states[:, :, oi].max(axis=1) - states[:, :, oi].min(axis=1),
        "residual": residuals, "n_unstable": unstable.astype(int),
        "stable": (unstable == 0).astype(int), "code": np.zeros(len(p), dtype=int),
        "label": np.zeros(len(p), dtype=int),
    })
    special = [SpecialPoint(kind=SpecialKind.BP, index=bp_index, parameters={free: p_c},
                            state=tuple(columns[v][bp_index] for v in model.variable_names), located=True,
                            name="BP1", verification="transverse branch point (located on the mode Jacobian)",
                            residual=float(residuals[bp_index]),
                            details={"mode": int(mode), "criticality": nf.criticality,
                                     "nf_quadratic": nf.quadratic, "nf_cubic": nf.cubic})]
    from bifnet.continuation.accounting import row_arclength

    special += _detected_points(p, unstable, unstable_complex, eigenvalues, free, bp_index,
                                row_arclength(states, p))
    from bifnet.patterns.verify import NetworkDerivatives, verify_pattern_points

    special, solutions = verify_pattern_points(NetworkDerivatives(model, operator, parameters), points, special, free,
                                               skip=("BP1",))
    status = f"+: {sa}, -: {sb}"
    log.info("  %s: %d points of the mode-%d pattern (%s), %.1f s", name, len(p), mode, status,
             time.perf_counter() - started)
    return Branch(kind=BranchKind.EQUILIBRIA, name=name, free=(free,), columns=columns,
                  special_points=tuple(special), parameters=dict(parameters), origin=(f"mode{mode}", "BP"),
                  mode=int(mode), Lambda=float(nf.Lambda.real), status=status,
                  variables=tuple(model.variable_names),
                  engine={"states": states, "eigenvalues": eigenvalues, "bp_index": bp_index,
                          "normal_form": nf, "speed": speed, "observe": obs, "points": {},
                          "solutions": solutions})


def _hopf_crossings(p, eigenvalues, unstable_complex, i):
    """``[(value, omega or None)]``: the complex pairs that cross the imaginary axis between rows ``i`` and
    ``i + 1``, one entry each, where the real part interpolates to 0.

    The pairs (the members with ``Im > 0``) are matched from row to row by an assignment on their distance;
    when the matched crossings do not add up to the change of the unstable pair count, each unit of that
    change is one entry at the interval's middle (``omega`` None). Two pairs crossing between the same rows
    (Wilson-Cowan on 20 nodes: 4 -> 8 unstable eigenvalues) are two Hopf points, not one."""
    change = int(unstable_complex[i + 1]) - int(unstable_complex[i])
    middle = [(0.5 * (p[i] + p[i + 1]), None)] * abs(change)
    if eigenvalues is None:
        return middle
    from scipy.optimize import linear_sum_assignment

    a, b = np.asarray(eigenvalues[i]), np.asarray(eigenvalues[i + 1])
    scale = [max(1.0, float(np.max(np.abs(e)))) for e in (a, b)]
    a, b = a[a.imag > 1e-9 * scale[0]], b[b.imag > 1e-9 * scale[1]]
    if a.size == 0 or b.size == 0 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return middle
    ia, ib = linear_sum_assignment(np.abs(a[:, None] - b[None, :]))
    out, net = [], 0
    for x, y in zip(a[ia], b[ib]):
        out_a, out_b = x.real > 1e-9 * scale[0], y.real > 1e-9 * scale[1]
        if out_a == out_b:
            continue
        net += 1 if out_b else -1
        w = x.real / (x.real - y.real)
        out.append((float(p[i] + w * (p[i + 1] - p[i])), float(x.imag + w * (y.imag - x.imag))))
    return sorted(out) if net == change else middle


def _detected_points(p, unstable, unstable_complex, eigenvalues, free, bp_index, s=None):
    """Folds (turning points of ``p``) and changes of the unstable count (BP/LP: a real
    eigenvalue, HB: a complex pair) between rows, interpolated (``located = False`` until
    :func:`bifnet.patterns.verify.verify_pattern_points` solves them).

    A fold's own eigenvalue crosses 0 next to its turning row: each LP takes one unit of the change of the
    real count in the row intervals next to it (the nearest first), no more; what is left is a BP, also
    where it lies between the same rows as the fold (the real count then changes by 2 there). A change of
    the real count where ``p`` does not turn is a BP, never an LP. Nearest: to the vertex of the parameter's
    parabola over the arclength ``s`` of the rows (:func:`bifnet.continuation.accounting.turn_position`)."""
    from bifnet.continuation.accounting import turn_position

    out = []
    counts = {}

    def add(kind, i, value, **details):
        counts[kind] = counts.get(kind, 0) + 1
        out.append(SpecialPoint(kind=kind, index=int(i), parameters={free: float(value)}, located=False,
                                name=f"{kind.value}{counts[kind] + (1 if kind is SpecialKind.BP else 0)}",
                                verification="not verified", details={"found_by": "eigenvalue count", **details}))

    dp = np.diff(p)
    folds = []
    for i in range(1, len(p) - 1):
        if dp[i - 1] * dp[i] < 0 and i != bp_index:   # a pitchfork's two halves meet at the BP
            add(SpecialKind.LP, i, p[i])
            folds.append(i)
    real = unstable - 2 * unstable_complex
    units = {i: abs(int(real[i + 1]) - int(real[i])) for i in range(len(p) - 1) if bp_index not in (i, i + 1)}
    near, spare = {}, set(folds)     # interval -> the fold next to it; folds still to take their unit
    turn = {f: turn_position(p, f, s) for f in folds}
    for _, i, f in sorted((abs(i + 0.5 - turn[f]), i, f) for i in units for f in folds if abs(f - i) <= 1):
        near.setdefault(i, f)
        if f in spare and units[i] > 0:
            spare.discard(f)
            units[i] -= 1
    for i in range(len(p) - 1):
        if bp_index in (i, i + 1):
            continue
        for value, omega in _hopf_crossings(p, eigenvalues, unstable_complex, i):
            add(SpecialKind.HB, i, value, **({} if omega is None else {"omega_guess": omega}))
        if units[i] > 0:
            details = {}
            if i in near:
                details["note"] = (f"next to LP at row {near[i]}: the real count changes by more than the fold's "
                                   f"own eigenvalue explains")
            add(SpecialKind.BP, i, 0.5 * (p[i] + p[i + 1]), **details)
    return sorted(out, key=lambda sp: sp.index)
