"""Oscillatory patterns: periodic orbits of the full network continued from a transverse Hopf point.

At a transverse Hopf point of mode ``a`` the full network (``N n`` dimensions,
408 on tvb68 with ngnmm_ping) has a pair ``+-i omega`` with eigenvector
``Q = u_a (x) q``. The periodic orbits born there are continued by **single
shooting** on bifnet's compiled network integrator:

* unknowns ``z = (X0, T, p)``: a point on the orbit, the period (ms) and the
  free parameter; the flow map ``Phi(X0, T, p)`` is ``S`` classical RK4 steps
  of size ``T / S`` (``S`` a multiple of 128, fixed during one correction), so
  that the map is smooth in all three and its derivative is *exactly* the RK4
  scheme applied to the variational equation (the fused state + tangent
  stepper of :func:`bifnet.network._kernels.lyapunov_kernels`);
* equations: ``Phi(X0, T, p) - X0 = 0``, the Poincaré phase condition
  ``f(X_prev) . (X0 - X_prev) = 0`` through the previous point, and the
  pseudo-arclength condition ``t . W (z - z_pred) = 0`` in the norm of
  :func:`arclength_weights` (``X0`` weighted ``1 / D``: its root mean square), the norm in which
  ``t`` is a unit vector, keeps the orientation of its predecessor and ``ds`` is measured;
* corrections: Newton's method on that ``(N n + 2)`` system. The
  ``d/dT`` and ``d/dp`` columns are central differences of the flow map. The
  ``X0`` block ``M - I`` (``M`` the monodromy) comes either

  - ``method = "monodromy"``: from the whole monodromy matrix, integrated as
    tangent blocks of 64 columns (the previous point's, with Broyden's rank-one
    updates after every Newton step, computed again when the residual stops
    falling); the Floquet multipliers are then all eigenvalues of ``M`` at the
    converged orbit; or
  - ``method = "krylov"``: matrix-free, GMRES on Jacobian–vector products
    (one tangent integration each), the multipliers of largest modulus by
    Arnoldi (``scipy.sparse.linalg.eigs`` on ``v -> M v``).

  Which is faster depends on how many multipliers are far from zero (GMRES
  needs about one iteration per such multiplier); the measurements on tvb68
  are in ``docs/engine.md``.

Step control: a step is halved when Newton fails, when the corrected point lies farther than
:data:`MAX_CORRECTION` steps from its prediction (a jump to another branch), and when the corrected orbit
goes back along the branch (:func:`bifnet.patterns.cycle_ends.turns_back`: a reversal, told from a fold of
cycles by a phase-independent signature of the orbits). When the amplitude falls towards a Hopf point of
the homogeneous state the branch ends there, at the located point (``status`` "Hopf point of mode ...",
a last row with amplitude 0 and special point ``HB2``), rather than passing through amplitude 0 onto the
same orbits shifted by half a period (:mod:`bifnet.patterns.cycle_ends`).

The first point comes from the Hopf normal form (:mod:`bifnet.patterns.criticality`):
``X(t) = X*(p) + 2 Re(z Q e^{i omega t})`` with ``|z|^2 = -Re(mu'(p_c)) (p - p_c) / (omega l1)``
(``|Q| = 1``, ``Re c1 = omega l1``), corrected at fixed ``p``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Mapping

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
from bifnet.errors import BifnetError, ContinuationError
from bifnet.model import NodeModel
from bifnet.patterns.cycle_ends import approaching_hopf, hopf_end_point, normal_form_agrees, turns_back
from bifnet.patterns.equilibria import NetworkProblem

log = logging.getLogger("bifnet.patterns")

#: RK4 steps per period are a multiple of this (the orbit is sampled at this many points per period).
SAMPLES = 128
#: Columns of one tangent block of the monodromy (wider blocks fall out of cache: on tvb68, 408 columns at
#: once took 5-41 s per period, 64 columns 0.2 s).
TANGENT_BLOCK = 64
#: ``|mu|`` above ``1 + MULTIPLIER_MARGIN`` counts as unstable.
MULTIPLIER_MARGIN = 1e-6
#: Newton with Broyden updates linearises again (a whole monodromy) when the residual falls by less than this
#: factor (tvb68, 11 orbits: 11.3 s of CPU with 0.9, 13.5 s with 0.5).
CONTRACTION = 0.9
#: A corrected point farther than this many steps ``ds`` (in the continuation's norm) from its prediction is
#: rejected and the step halved: a jump to another branch (Stuart-Landau on 6 nodes, overshooting the fold of
#: cycles at mu = -0.2607: 2.9 steps; accepted points: at most 0.26 there, 0.13 on the ngnmm_ping 6-node branch).
MAX_CORRECTION = 1.0
#: Halvings of the RK4 step allowed at one point when its return error is too large.
REFINEMENTS = 4
_METHODS = ("monodromy", "krylov")


@dataclasses.dataclass(frozen=True)
class CycleSettings:
    """Numerics of an oscillatory pattern continuation (our own words).

    Attributes
    ----------
    ds, ds_min, ds_max : float
        Pseudo-arclength step, its bounds, in the norm ``sqrt(|dX0|^2 / D + dT^2 + dp^2)``
        (:func:`arclength_weights`).
    max_steps : int
        Points after the first one.
    bounds : (float, float)
        Of the free parameter.
    dt : float
        Largest RK4 step (ms) of the flow map.
    method : {"monodromy", "krylov"}
        Linear algebra of the Newton steps and of the multipliers (module docstring).
    newton_iterations : int
    tolerance : float
        Max-norm of ``Phi(X0) - X0`` at an accepted point.
    first_amplitude : float
        ``|z|`` of the first point (first-harmonic amplitude, Euclidean over all ``N n`` components).
    multipliers : int
        Multipliers computed by Arnoldi (``method = "krylov"``).
    check_return : bool
        Integrate every point again with adaptive DOPRI5 (rtol 1e-10) for the ``return_error`` column;
        while it exceeds ``return_tolerance`` the RK4 step is halved (at most
        :data:`REFINEMENTS` times) and the point corrected again.
    return_tolerance : float
    verification_budget : int
        Monodromies the verification of the branch's LPC, PD and NS points may spend
        (:mod:`bifnet.patterns.verify_cycles`; 0: none verified). Points past it are ``not verified``.
    """

    ds: float = 0.05
    ds_min: float = 1e-4
    ds_max: float = 0.5
    max_steps: int = 100
    bounds: tuple[float, float] = (-np.inf, np.inf)
    dt: float = 0.05
    method: str = "monodromy"
    newton_iterations: int = 8
    tolerance: float = 1e-9
    first_amplitude: float = 0.02
    multipliers: int = 10
    check_return: bool = True
    return_tolerance: float = 1e-7
    verification_budget: int = 400

    def __post_init__(self):
        if not (0 < self.ds_min <= self.ds <= self.ds_max):
            raise BifnetError(f"cycle settings need 0 < ds_min <= ds <= ds_max (got {self.ds_min}, {self.ds}, "
                              f"{self.ds_max})")
        if self.max_steps < 1:
            raise BifnetError(f"max_steps must be positive, got {self.max_steps}")
        if not self.dt > 0:
            raise BifnetError(f"dt must be positive, got {self.dt}")
        if self.method not in _METHODS:
            raise BifnetError(f"method must be one of {', '.join(_METHODS)}, got {self.method!r}")
        if not self.first_amplitude > 0:
            raise BifnetError(f"first_amplitude must be positive, got {self.first_amplitude}")
        if not (isinstance(self.verification_budget, (int, np.integer)) and self.verification_budget >= 0):
            raise BifnetError(f"verification_budget must be a non-negative integer, got {self.verification_budget!r}")


class ShootingProblem(NetworkProblem):
    """The flow map of the full network and its derivatives (fixed-step RK4, exact discrete tangent).

    Parameters
    ----------
    model, operator
        Node model and coupling operator.
    parameters : mapping
        Every model parameter (``free`` is varied).
    free : str
    dt : float
        Largest RK4 step (ms).
    """

    def __init__(self, model: NodeModel, operator, parameters: Mapping[str, float], free: str, dt: float = 0.05):
        from bifnet.network._kernels import lyapunov_kernels, network_module

        super().__init__(model, operator, parameters, free)
        self.dt = float(dt)
        self.N, self.n = self.base.state_shape
        self.D = self.N * self.n
        self.module = network_module(model)
        self.block = lyapunov_kernels(model)
        self._work: dict = {}
        self.integrations = 0        # state-only periods
        self.tangent_columns = 0     # tangent vectors carried over one period

    def steps(self, T: float) -> int:
        """RK4 steps for period ``T``: the multiple of :data:`SAMPLES` with step at most ``dt``."""
        return SAMPLES * max(1, int(math.ceil(T / (SAMPLES * self.dt))))

    def field(self, X, p):
        from bifnet.network.core import network_rhs

        return network_rhs(self.network(p), X)

    def flow(self, X, T, p, S, record=False):
        """``Phi(X, T, p)`` by ``S`` RK4 steps; with ``record``, also the ``(SAMPLES, D)`` samples over the
        period (times ``k T / SAMPLES``). ``None`` if the state became non-finite."""
        net = self.network(p)
        y = np.array(X, dtype=float)
        prev = np.empty_like(y)
        stride = S // SAMPLES if record else S + 1
        out = np.empty((SAMPLES + 1 if record else 1, self.D))
        out[0] = y
        status, _ = self.module.rk4_steps(net.kernel_args, y, prev, T / S, S, 0, stride, np.zeros(self.D),
                                          np.empty((0, self.D)), out)
        self.integrations += 1
        if status != self.module.STATUS_OK or not np.all(np.isfinite(y)):
            return None
        return (y, out[:SAMPLES]) if record else y

    def _workspace(self, kb):
        from bifnet.network._kernels import lyapunov_workspace

        ws = self._work.get(kb)
        if ws is None:
            ws = self._work[kb] = lyapunov_workspace(self.N, self.n, kb, "double", len(self.model.channels))
        return ws

    def tangent(self, X, T, p, S, V):
        """``(Phi(X), M V)``: the derivative of the RK4 flow map applied to the columns of ``V``."""
        V = np.asarray(V, dtype=float)
        vector = V.ndim == 1
        V = V.reshape(self.D, -1)
        pv, W = self.network(p).kernel_args
        out = np.empty_like(V)
        y_end = None
        for j in range(0, V.shape[1], TANGENT_BLOCK):
            cols = np.array(V[:, j:j + TANGENT_BLOCK], dtype=float, order="C")   # a copy: integrated in place
            y = np.array(X, dtype=float)
            ok = self.block(y, cols, pv, W, W, T / S, S, *self._workspace(cols.shape[1]))
            if not ok:
                raise ContinuationError("the network state became non-finite over one period")
            out[:, j:j + TANGENT_BLOCK] = cols
            y_end = y
            self.tangent_columns += cols.shape[1]
        return y_end, (out[:, 0] if vector else out)

    def monodromy(self, X, T, p, S):
        return self.tangent(X, T, p, S, np.eye(self.D))[1]

    def columns(self, X, T, p, S):
        """``(dPhi/dT, dPhi/dp)`` by central differences of the flow map (``S`` fixed)."""
        hT = 1e-6 * T
        hp = 1e-6 * max(1.0, abs(p))
        a, b = self.flow(X, T + hT, p, S), self.flow(X, T - hT, p, S)
        c, d = self.flow(X, T, p + hp, S), self.flow(X, T, p - hp, S)
        if any(v is None for v in (a, b, c, d)):
            raise ContinuationError("the network state became non-finite over one period")
        return (a - b) / (2 * hT), (c - d) / (2 * hp)


# --------------------------------------------------------------------------- #
# Newton corrections and tangents
# --------------------------------------------------------------------------- #


@dataclasses.dataclass
class _Linearisation:
    """The Jacobian pieces at a point: ``M`` (dense, or None for Krylov), ``dPhi/dT``, ``dPhi/dp``, the point."""

    z: np.ndarray
    S: int
    M: np.ndarray | None
    dT: np.ndarray
    dp: np.ndarray


def _linearise(problem: ShootingProblem, z, S, dense: bool) -> _Linearisation:
    D = problem.D
    X, T, p = z[:D], z[D], z[D + 1]
    dT, dp = problem.columns(X, T, p, S)
    M = problem.monodromy(X, T, p, S) if dense else None
    return _Linearisation(z=z.copy(), S=S, M=M, dT=dT, dp=dp)


def _bordered_dense(lin: _Linearisation, phase, last):
    D = lin.M.shape[0]
    A = np.zeros((D + 2, D + 2))
    A[:D, :D] = lin.M - np.eye(D)
    A[:D, D], A[:D, D + 1] = lin.dT, lin.dp
    A[D, :D] = phase
    A[D + 1] = last
    return A


def _krylov_operator(problem, lin: _Linearisation, phase, last):
    from scipy.sparse.linalg import LinearOperator

    D = problem.D
    X, T, p = lin.z[:D], lin.z[D], lin.z[D + 1]

    def matvec(v):
        v = np.ravel(v)
        _, Mv = problem.tangent(X, T, p, lin.S, v[:D])
        top = Mv - v[:D] + lin.dT * v[D] + lin.dp * v[D + 1]
        return np.concatenate([top, [phase @ v[:D], last @ v]])

    return LinearOperator((D + 2, D + 2), matvec=matvec, dtype=float)


def _solve(problem, lin, phase, last, rhs, method):
    if method == "monodromy":
        return np.linalg.solve(_bordered_dense(lin, phase, last), rhs)
    from scipy.sparse.linalg import gmres

    D = problem.D
    op = _krylov_operator(problem, lin, phase, last)
    x, info = gmres(op, rhs, rtol=1e-10, atol=0.0, restart=min(D + 2, 400), maxiter=2)
    if info != 0:
        log.debug("  GMRES did not reach its tolerance (info %d)", info)
    return x


def _residual(problem, z, S, phase, X_ref, last, z_pred):
    D = problem.D
    X, T, p = z[:D], z[D], z[D + 1]
    end = problem.flow(X, T, p, S)
    if end is None:
        return None
    return np.concatenate([end - X, [phase @ (X - X_ref), last @ (z - z_pred)]])


def _correct(problem, z_pred, last, X_ref, phase, S, lin, settings):
    """Newton's method on the shooting system.

    ``"monodromy"``: the bordered Jacobian of ``lin`` (the previous point's, or one computed
    here) with Broyden's rank-one updates after every step, linearised again (once) when
    the residual falls by less than :data:`CONTRACTION`; ``"krylov"``: GMRES on Jacobian–vector products at
    every iterate. Returns ``(z, residual, converged, linearisation)``."""
    D = problem.D
    z = z_pred.copy()
    previous = np.inf
    method = settings.method
    dense = method == "monodromy"
    fresh = lin is None
    if lin is None:
        lin = _linearise(problem, z, S, dense)
    A = _bordered_dense(lin, phase, last) if dense else None
    r = _residual(problem, z, S, phase, X_ref, last, z_pred)
    for _ in range(settings.newton_iterations):
        if r is None:
            return z, np.inf, False, lin
        res = float(np.max(np.abs(r[:D])))
        log.debug("    Newton (%s): residual %.3g, conditions %.2g %.2g", method, res, r[D], r[D + 1])
        if res < settings.tolerance and abs(r[D]) < 1e-9 and abs(r[D + 1]) < 1e-9:
            return z, res, True, lin
        if res > CONTRACTION * previous:   # poor contraction: linearise again here
            if fresh:
                return z, res, False, lin
            lin = _linearise(problem, z, S, dense)
            A = _bordered_dense(lin, phase, last) if dense else None
            fresh = True
        previous = res
        try:
            dz = np.linalg.solve(A, -r) if dense else _solve(problem, lin, phase, last, -r, method)
        except np.linalg.LinAlgError:
            return z, res, False, lin
        z = z + dz
        r_new = _residual(problem, z, S, phase, X_ref, last, z_pred)
        if dense and r_new is not None:    # Broyden: A dz = -r, so the secant update is r_new dz^T / |dz|^2
            A += np.outer(r_new, dz) / (dz @ dz)
        elif not dense:
            lin = _linearise(problem, z, S, False)
        r = r_new
    res = float(np.max(np.abs(r[:D]))) if r is not None else np.inf
    return z, res, res < settings.tolerance, lin


def arclength_weights(D: int) -> np.ndarray:
    """Weights ``w`` of the continuation's norm ``|z|_w^2 = sum w_i z_i^2`` on ``z = (X0, T, p)``: ``1 / D`` on
    each state component (their root mean square), 1 on the period and on the parameter.

    In the Euclidean norm the ``D`` components of ``X0`` outweigh ``T`` and ``p``, and ``X0`` also moves
    when the point slides along the orbit on the Poincaré section (no change of the orbit at all): on the
    6-node network near the mode-6 Hopf point at Iext_e = 49.15 the slide turned the Euclidean tangent by
    87 degrees from one row to the next and the continuation went back over its own orbits."""
    w = np.ones(D + 2)
    w[:D] = 1.0 / D
    return w


def _tangent(problem, lin, phase, previous, method, w=None):
    """Null vector of the shooting Jacobian with the phase row, unit in the ``w`` norm (default Euclidean),
    oriented along ``previous`` in the same norm (``previous . W t > 0``: the bordering row is ``W previous``)."""
    D = problem.D
    if w is None:
        w = np.ones(D + 2)
    rhs = np.zeros(D + 2)
    rhs[D + 1] = 1.0
    t = _solve(problem, lin, phase, w * previous, rhs, method)
    t /= math.sqrt(float((w * t) @ t))
    return t if (w * t) @ previous >= 0 else -t


def floquet_multipliers(problem: ShootingProblem, X, T, p, S, *, method="monodromy", k=10, M=None):
    """Floquet multipliers of the RK4 flow map at ``(X, T, p)``, largest modulus first.

    ``method = "monodromy"``: every eigenvalue of the monodromy matrix (``M`` if given);
    ``"krylov"``: the ``k`` of largest modulus by Arnoldi (ARPACK) on ``v -> M v``.
    """
    if method == "monodromy":
        if M is None:
            M = problem.monodromy(X, T, p, S)
        mu = np.linalg.eigvals(M)
    else:
        from scipy.sparse.linalg import LinearOperator, eigs

        D = problem.D
        op = LinearOperator((D, D), matvec=lambda v: problem.tangent(X, T, p, S, np.ravel(v))[1], dtype=float)
        rng = np.random.default_rng(0)
        mu = eigs(op, k=min(k, D - 2), which="LM", tol=1e-10, v0=rng.standard_normal(D),
                  return_eigenvectors=False, ncv=min(D - 1, max(2 * k + 1, 20)))
    return mu[np.argsort(-np.abs(mu))]


def _classify(mu):
    """``(trivial error, max |mu| of the others, unstable counts (real > 0, real < 0, complex pairs))``."""
    mu = np.asarray(mu)
    j = int(np.argmin(np.abs(mu - 1)))
    trivial = float(abs(mu[j] - 1))
    others = np.delete(mu, j)
    big = others[np.abs(others) > 1 + MULTIPLIER_MARGIN]
    real = np.abs(big.imag) <= 1e-8 * np.maximum(1.0, np.abs(big))
    counts = (int(np.sum(real & (big.real > 0))), int(np.sum(real & (big.real < 0))), int(np.sum(~real) // 2))
    worst = float(np.max(np.abs(others))) if others.size else float("nan")
    return trivial, worst, counts


def _profile(samples, T):
    """Time mean, (max - min) / 2, first-harmonic coefficient ``c1`` of each component over one period."""
    mean = samples.mean(axis=0)
    half = 0.5 * (samples.max(axis=0) - samples.min(axis=0))
    k = np.arange(samples.shape[0])
    c1 = np.exp(-2j * np.pi * k / samples.shape[0]) @ (samples - mean) / samples.shape[0]
    return mean, half, c1


def return_error(network, X, T, *, rtol=1e-10, atol=1e-12) -> float:
    """Max-norm of ``phi_T(X) - X`` with the network integrator (adaptive DOPRI5 at ``rtol``)."""
    from bifnet.network.integrate import simulate

    res = simulate(network, (0.0, float(T)), X, method="dopri5", rtol=rtol, atol=atol, dt=float(T), stride=1)
    if not res.success:
        return float("inf")
    return float(np.max(np.abs(res.y[-1].ravel() - np.ravel(X))))


# --------------------------------------------------------------------------- #
# The branch
# --------------------------------------------------------------------------- #


def oscillatory_pattern_branch(model: NodeModel, operator, parameters: Mapping[str, float], free: str, x,
                               mode: int, settings: CycleSettings | None = None, *, name: str = "pattern",
                               observe: str | None = None, direction: int = 0) -> Branch:
    """The oscillatory pattern born at a transverse Hopf point, continued in ``free`` by shooting.

    Parameters
    ----------
    model, operator
        The node model and its coupling operator on the connectome.
    parameters : mapping
        Every model parameter, ``free`` at the transverse Hopf point (located, e.g. by
        :func:`bifnet.patterns.criticality.locate_transverse_point`).
    free : str
    x : array_like
        The homogeneous equilibrium at the Hopf point.
    mode : int
        The mode (1-based) whose ``J(Lambda)`` has the pair ``+-i omega``.
    settings : CycleSettings, optional
    observe : str, optional
        Variable of the ``<observe>_amplitude`` column (default the model's).
    direction : {0, 1, -1}
        Side of the Hopf point on which the first orbit is sought: 0 (default) the side the
        normal form predicts (``sign(-l1 / Re mu')``).

    Returns
    -------
    Branch
        Kind ``CYCLES``, ``mode``/``Lambda`` of the mode of origin; row 0 is the Hopf point
        (amplitude 0, stability not evaluated); where the amplitude vanishes at another Hopf point the
        last row is that point (``engine["end_hopf_index"]``, special point ``HB2``, the same
        conventions) and ``status`` starts with "Hopf point of mode". Columns: ``free``, ``period`` (ms),
        ``amplitude`` (Euclidean norm of the first-harmonic coefficient of ``X(t)``, all
        ``N n`` components; ``|z|`` of the normal form), ``predicted_amplitude`` (normal form),
        ``<var>_mean`` (mean over regions of the time means), ``<observe>_amplitude`` (largest
        ``(max - min) / 2`` over regions), ``max_multiplier`` (largest ``|mu|`` but the trivial
        one), ``trivial_error`` (``|mu_trivial - 1|``), ``n_unstable``, ``stable``,
        ``residual`` (max-norm of ``Phi(X0) - X0`` of the RK4 map), ``return_error`` (DOPRI5 at
        rtol 1e-10; NaN unless ``settings.check_return``), ``code``, ``label``. Profiles
        (``engine["mean"]``, ``["half_range"]``, ``["harmonic"]``: ``(points, N, n)``), the
        starting states (``engine["states"]``) and the multipliers (``engine["multipliers"]``).

    Raises
    ------
    ContinuationError
        A degenerate Hopf point, or no orbit converging next to it.

    Notes
    -----
    Single shooting with pseudo-arclength continuation; the algorithm and its
    measurements are in the module docstring and ``docs/engine.md``. Special
    points: ``LPC`` (a turning point in ``free``) and the multipliers crossing the unit
    circle between rows, paired from row to row (``BP``: a real multiplier through +1;
    ``PD``: through -1; ``NS``: a complex pair). LPC, PD and NS points are re-solved by
    :mod:`bifnet.patterns.verify_cycles` (``located`` only then; the orbits in
    ``engine["verified_orbits"]``); BP points are not.

    Examples
    --------
    >>> branch = oscillatory_pattern_branch(ping, operator, params, "Iext_e", x, 68)   # doctest: +SKIP
    >>> branch["period"][1], branch["stable"][1]                                       # doctest: +SKIP
    """
    from bifnet._blas import single_threaded_blas

    settings = settings or CycleSettings()
    with single_threaded_blas():
        return _branch(model, operator, dict(parameters), free, np.asarray(x, dtype=float), int(mode), settings,
                       name, observe, direction)


def _branch(model, operator, parameters, free, x, mode, settings, name, observe, direction):
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.patterns.criticality import transverse_normal_form
    from bifnet.patterns.equilibria import _eigen_speed

    started = time.perf_counter()
    nf = transverse_normal_form(model, operator, parameters, x, mode, "HB")
    if nf.criticality.startswith("degenerate") or not np.isfinite(nf.l1):
        raise ContinuationError(f"mode {mode}: the transverse Hopf point is degenerate (l1 = {nf.l1})")
    speed = _eigen_speed(model, parameters, free, x, nf.Lambda, "HB")
    if not abs(speed) > 0:
        raise ContinuationError(f"mode {mode}: the critical pair does not cross the imaginary axis with "
                                f"non-zero speed")
    omega, l1 = nf.omega, nf.l1
    coefficient = -speed / (omega * l1)         # |z|^2 = coefficient * (p - p_c)
    side = direction or (1 if coefficient > 0 else -1)
    problem = ShootingProblem(model, operator, parameters, free, settings.dt)
    N, n, D = problem.N, problem.n, problem.D
    p_c = float(parameters[free])
    Q = np.kron(nf.u, nf.q)
    a0 = settings.first_amplitude
    dp0 = side * a0 ** 2 / abs(coefficient)
    x1 = find_equilibrium(model, {**parameters, free: p_c + dp0}, x, settle_time=0.0)
    X_guess = np.tile(x1, N) + 2 * np.real(a0 * Q)
    T0 = 2 * np.pi / omega
    z_guess = np.concatenate([X_guess, [T0, p_c + dp0]])
    phase = problem.field(X_guess, p_c + dp0)
    phase = phase / np.linalg.norm(phase)
    e_p = np.zeros(D + 2)
    e_p[D + 1] = 1.0
    rows = []
    dense = settings.method == "monodromy"

    def solve(z_pred, last, X_ref, phase, lin):
        """Correct ``z_pred``; halve the RK4 step while the return error (DOPRI5) exceeds its tolerance."""
        for attempt in range(REFINEMENTS + 1):
            S = problem.steps(z_pred[D])
            z_new, res, ok, lin_new = _correct(problem, z_pred, last, X_ref, phase, S,
                                               lin if (lin is not None and lin.S == S and dense) else None, settings)
            if not ok or z_new[D] <= 0:
                return None
            err = return_error(problem.network(z_new[D + 1]), z_new[:D], z_new[D]) if settings.check_return \
                else float("nan")
            if not err > settings.return_tolerance:
                break
            if attempt == REFINEMENTS:
                log.warning("  return error %.2g above %.2g with an RK4 step of %.3g ms", err,
                            settings.return_tolerance, z_new[D] / S)
                break
            problem.dt /= 2
            log.info("  return error %.2g > %.2g: RK4 step now at most %.3g ms", err, settings.return_tolerance,
                     problem.dt)
            z_pred, lin = z_new, None
        return z_new, res, S, lin_new, err

    first = solve(z_guess, e_p, X_guess, phase, None)
    if first is None:
        raise ContinuationError(f"mode {mode}: no periodic orbit converged next to the transverse Hopf point at "
                                f"{free} = {p_c:.8g}")
    z, res, S, lin, err = first
    lo, hi = settings.bounds

    def profile(z, S):
        _, samples = problem.flow(z[:D], z[D], z[D + 1], S, record=True)
        return _profile(samples, z[D])

    def accept(z, res, S, lin, err, shape):
        X, T, p = z[:D], z[D], z[D + 1]
        if settings.method == "monodromy" and (lin.M is None or np.max(np.abs(lin.z - z)) > 0):
            lin = _linearise(problem, z, S, True)
        mu = floquet_multipliers(problem, X, T, p, S, method=settings.method, k=settings.multipliers, M=lin.M)
        mean, half, c1 = shape
        rows.append(dict(z=z.copy(), residual=res, mu=mu, mean=mean, half=half, c1=c1, return_error=err, S=S))
        return lin

    def hopf_end():
        return hopf_end_point(model, operator, parameters, free, rows, N, n)

    lin = accept(z, res, S, lin, err, profile(z, S))
    # the first tangent: along the branch, away from the Hopf point
    f_here = problem.field(z[:D], z[D + 1])
    phase = f_here / np.linalg.norm(f_here)
    w = arclength_weights(D)
    t = _tangent(problem, lin, phase, e_p * side, settings.method, w)
    ds = settings.ds
    status = "max_steps"
    end = candidate = None      # the Hopf point the amplitude vanishes at, once located
    while len(rows) <= settings.max_steps:
        z_pred = z + ds * t
        f_here = problem.field(z[:D], z[D + 1])
        phase = f_here / np.linalg.norm(f_here)
        point = solve(z_pred, w * t, z[:D], phase, lin)
        if point is None:
            ds /= 2
            if ds < settings.ds_min:
                status = "no convergence"
                break
            continue
        z_new, res, S_new, lin_new, err = point
        correction = math.sqrt(float((w * (z_new - z_pred)) @ (z_new - z_pred)))
        if correction > MAX_CORRECTION * ds:
            # farther from the prediction than the step itself: another branch, not the next orbit of this one
            log.info("  the orbit corrected at %s = %.8g is %.2g steps from the prediction: step %.3g halved", free,
                     z_new[D + 1], correction / ds, ds)
            ds /= 2
            if ds < settings.ds_min:
                status = "no convergence"
                break
            continue
        shape = profile(z_new, S_new)
        if len(rows) >= 2 and turns_back(rows[-2], rows[-1], dict(z=z_new, mean=shape[0], c1=shape[2]), D):
            # the corrected orbit lies back along the branch (not a fold: the whole orbit goes back)
            end = candidate or hopf_end()
            if end is not None:
                break
            log.info("  the orbit corrected at %s = %.8g goes back along the branch: step %.3g halved", free,
                     z_new[D + 1], ds)
            ds /= 2
            if ds < settings.ds_min:
                status = (f"turned back at {free} = {z[D + 1]:.8g} (every corrected orbit went back over the "
                          f"branch down to ds_min)")
                break
            continue
        z, S = z_new, S_new
        lin = accept(z, res, S, lin_new, err, shape)
        f_here = problem.field(z[:D], z[D + 1])
        phase = f_here / np.linalg.norm(f_here)
        t = _tangent(problem, lin, phase, t, settings.method, w)
        if not lo <= z[D + 1] <= hi:
            status = "bound"
            break
        amplitude = float(np.linalg.norm(rows[-1]["c1"]))
        if amplitude >= float(np.linalg.norm(rows[-2]["c1"])):
            candidate = None    # the amplitude rises again: no longer heading for that Hopf point
        vanished = amplitude < 0.1 * settings.first_amplitude
        if vanished or approaching_hopf(rows, D):
            candidate = candidate or hopf_end()
            if candidate is not None and (vanished or normal_form_agrees(candidate, rows[-1], D)):
                end = candidate
                break
        if vanished:
            status = "amplitude vanished (no Hopf point of a mode found next to it)"
            break
        ds = min(ds * 1.4, settings.ds_max)
    if end is not None:
        status = (f"Hopf point of mode {end['mode']} at {free} = {end['p']:.8g} (the amplitude vanishes: the "
                  f"branch ends there)")
    log.info("  %s: %d orbits of the mode-%d pattern (%s), %.1f s, %d periods, %d tangent columns", name,
             len(rows), mode, status, time.perf_counter() - started, problem.integrations, problem.tangent_columns)
    return _assemble(model, operator, parameters, free, x, mode, nf, speed, coefficient, rows, problem, name,
                     observe, status, settings, end)


def _assemble(model, operator, parameters, free, x, mode, nf, speed, coefficient, rows, problem, name, observe,
              status, settings, end=None):
    """The branch: row 0 the Hopf point of origin, then the orbits, then (``end``) the Hopf point where the
    amplitude vanished (the homogeneous equilibrium, amplitude 0, stability not evaluated)."""
    N, n, D = problem.N, problem.n, problem.D
    p_c = float(parameters[free])
    orbit_rows = len(rows) + 1
    k = orbit_rows + (end is not None)
    z = np.array([r["z"] for r in rows])
    X_hopf = np.tile(x, N)
    ends = {"p": [p_c], "period": [2 * np.pi / nf.omega], "X": [X_hopf]}
    tail = {"p": [], "period": [], "X": np.zeros((0, D))}
    if end is not None:
        tail = {"p": [end["p"]], "period": [2 * np.pi / end["omega"]], "X": [np.tile(end["x"], N)]}
    p = np.concatenate([ends["p"], z[:, D + 1], tail["p"]])
    period = np.concatenate([ends["period"], z[:, D], tail["period"]])
    states = np.concatenate([ends["X"], z[:, :D], tail["X"]]).reshape(k, N, n)
    mean = np.concatenate([ends["X"], [r["mean"] for r in rows], tail["X"]]).reshape(k, N, n)
    flat = np.zeros((k - len(rows), D))
    half = np.concatenate([flat[:1], [r["half"] for r in rows], flat[1:]]).reshape(k, N, n)
    harmonic = np.concatenate([flat[:1], [r["c1"] for r in rows], flat[1:]]).reshape(k, N, n)
    amplitude = np.linalg.norm(harmonic.reshape(k, -1), axis=1)
    with np.errstate(invalid="ignore"):
        predicted = np.sqrt(np.maximum(coefficient * (p - p_c), 0.0))
    trivial = np.full(k, np.nan)
    worst = np.full(k, np.nan)
    unstable = np.zeros(k, dtype=int)
    counts = np.zeros((k, 3), dtype=int)
    multipliers = [np.array([])]
    for i, r in enumerate(rows, start=1):
        trivial[i], worst[i], c = _classify(r["mu"])
        counts[i] = c
        unstable[i] = c[0] + c[1] + 2 * c[2]
        multipliers.append(r["mu"])
    stable = np.where(unstable == 0, 1, 0)
    stable[0] = -1
    if end is not None:
        multipliers.append(np.array([]))
        stable[-1] = -1
    obs = observe or model.observe or model.variable_names[0]
    oi = model.observed_index(obs)
    columns = {free: p, "period": period, "amplitude": amplitude, "predicted_amplitude": predicted}
    for j, v in enumerate(model.variable_names):
        columns[f"{v}_mean"] = mean[:, :, j].mean(axis=1)
    zeros = [0.0] * (k - orbit_rows)
    columns.update({
        f"{obs}_amplitude": half[:, :, oi].max(axis=1),
        "max_multiplier": worst, "trivial_error": trivial, "n_unstable": unstable, "stable": stable,
        "residual": np.concatenate([[0.0], [r["residual"] for r in rows], zeros]),
        "return_error": np.concatenate([[0.0], [r["return_error"] for r in rows], zeros]),
        "code": np.zeros(k, dtype=int), "label": np.zeros(k, dtype=int),
    })
    special = [SpecialPoint(kind=SpecialKind.HB, index=0, parameters={free: p_c}, state=tuple(x), located=True,
                            period=float(period[0]), name="HB1",
                            eigenvalues=(complex(nf.eigenvalue), complex(np.conj(nf.eigenvalue))),
                            verification="transverse Hopf point (located on the mode Jacobian)",
                            details={"mode": int(mode), "criticality": nf.criticality, "l1": nf.l1,
                                     "omega_per_ms": nf.omega, "speed": speed})]
    from bifnet.patterns.verify_cycles import detect_points, verify_points

    o = slice(0, orbit_rows)    # the points are sought between orbits only
    from bifnet.continuation.accounting import row_arclength

    arclength = row_arclength(states.reshape(k, D)[o], np.column_stack([period, p])[o])   # arclength_weights' norm
    detected = detect_points(p[o], period[o], counts[o], unstable[o], multipliers[:orbit_rows], free, arclength)
    verified, orbits = verify_points(problem, rows, detected, free, settings, n)
    special += verified
    if end is not None:
        special.append(SpecialPoint(
            kind=SpecialKind.HB, index=k - 1, parameters={free: end["p"]}, state=tuple(end["x"]), located=True,
            period=float(period[-1]), name="HB2",
            eigenvalues=(complex(end["eigenvalue"]), complex(np.conj(end["eigenvalue"]))),
            verification="transverse Hopf point where the amplitude vanishes (located on the mode Jacobian)",
            details={"mode": end["mode"], "l1": end["l1"], "omega_per_ms": end["omega"], "speed": end["speed"],
                     "extrapolated": end["extrapolated"], "overlap": end["overlap"]}))
    return Branch(kind=BranchKind.CYCLES, name=name, free=(free,), columns=columns, special_points=tuple(special),
                  parameters=dict(parameters), origin=(f"mode{mode}", "HB"), mode=int(mode),
                  Lambda=complex(nf.Lambda) if abs(np.imag(nf.Lambda)) > 0 else float(np.real(nf.Lambda)),
                  status=status, variables=tuple(model.variable_names),
                  engine={"states": states, "mean": mean, "half_range": half, "harmonic": harmonic,
                          "multipliers": multipliers, "normal_form": nf, "speed": speed, "observe": obs,
                          "hopf_index": 0, "end_hopf_index": k - 1 if end is not None else None,
                          "amplitude_coefficient": coefficient, "method": settings.method,
                          "steps_per_period": [0] + [r["S"] for r in rows] + [0] * (k - orbit_rows), "points": {},
                          "verified_orbits": orbits})
