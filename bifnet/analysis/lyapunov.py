"""Lyapunov spectra by the QR (Benettin) method on a reusable tangent system.

Two layers (as in ChaosTools.jl): :class:`TangentSystem` holds a compiled
field ``g(y, V, args, dy, dV)`` returning ``dy/dt`` and the Jacobian applied
to ``k`` tangent vectors; :func:`lyapunov_spectrum` and
:func:`lyapunov_convergence` integrate the joint system with RK4 (fixed
steps) or Dormand–Prince 5(4) (adaptive steps, ``method="dopri5"``) and
re-orthonormalise with a QR decomposition at fixed intervals.

For a network the tangent field is the structured product of
:func:`bifnet.network.network_jvp` (never a dense ``Nn x Nn`` matrix); the
homogeneous (self-coupled) node is the one-region network ``W = [[1]]``
(:func:`bifnet.network.homogeneous_network`). A network's own tangent system
is integrated by a fused compiled RK4 step (BLAS for ``W @ V_c``, unrolled
node blocks), its tangent vectors split by columns over threads; other
tangent systems by a generic loop over their ``field``. OpenBLAS is kept on
one thread for the duration of a run (see
:func:`bifnet._blas.single_threaded_blas`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from typing import Any

import numpy as np

from bifnet.errors import SimulationError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class TangentSystem:
    """A vector field with its tangent dynamics, ready for the compiled loops.

    Attributes
    ----------
    dimension : int
        State dimension ``D``.
    field : numba dispatcher
        ``field(y, V, args, dy, dV)`` writes ``f(y)`` into ``dy`` and
        ``Df(y) V`` into ``dV`` (``V`` is ``D x k``, C-contiguous).
    args : tuple of numpy.ndarray
        Extra arguments of ``field``.
    initial_state : numpy.ndarray or None
        Default starting state.
    name : str
    network : Network or None
        The network it came from, if any (used to check firing rates).
    """

    dimension: int
    field: Any
    args: tuple
    initial_state: np.ndarray | None = None
    name: str = ""
    network: Any = None


def tangent_system(system, y0=None) -> TangentSystem:
    """The tangent system of a :class:`~bifnet.network.Network` (or pass one through).

    Parameters
    ----------
    system : Network or TangentSystem
    y0 : array_like, optional
        Default starting state; for a network ``(N, n)``, flat, or ``(n,)``
        (copied into every region). Default: the model's initial state in
        every region.

    Returns
    -------
    TangentSystem
    """
    from bifnet.network.core import Network, _flat_state

    if isinstance(system, TangentSystem):
        if y0 is None:
            return system
        return dataclasses.replace(system, initial_state=np.asarray(y0, dtype=float).reshape(-1).copy())
    if isinstance(system, Network):
        from bifnet.network._kernels import network_kernels

        _, field, _ = network_kernels(system.model)
        if y0 is None:
            y0 = np.tile(system.model.default_state(), (system.n_regions, 1))
        y0 = np.asarray(y0, dtype=float)
        if y0.shape == (system.n_variables,):
            y0 = np.tile(y0, (system.n_regions, 1))
        return TangentSystem(system.dimension, field, system.kernel_args, _flat_state(system, y0, "y0").copy(),
                             f"{system.model.name} network (N={system.n_regions})", system)
    raise SimulationError(f"system: expected a Network or a TangentSystem, got {type(system).__name__}")


@functools.lru_cache(maxsize=None)
def _linear_field():
    import numba

    @numba.njit(nogil=True)
    def field(y, V, args, dy, dV):
        A = args[0]
        dy[:] = np.dot(A, y)
        dV[:, :] = np.dot(A, V)

    return field


def linear_tangent_system(A, y0=None) -> TangentSystem:
    """Tangent system of ``x' = A x`` (exponents: real parts of ``eig(A)``); for tests and examples."""
    A = np.ascontiguousarray(A, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise SimulationError(f"A: expected a square matrix, got shape {A.shape}")
    y0 = np.ones(A.shape[0]) if y0 is None else np.asarray(y0, dtype=float)
    return TangentSystem(A.shape[0], _linear_field(), (A,), y0, "linear")


def _network_stepper(ts: TangentSystem, precision: str = "double", method: str = "rk4"):
    """The fused network stepper for ``ts`` (``None`` if ``ts`` is not a network's own tangent system)."""
    if ts.network is None:
        return None
    from bifnet.network._kernels import dopri5_lyapunov_kernels, lyapunov_kernels, network_kernels

    if ts.field is not network_kernels(ts.network.model)[1]:
        return None
    if method == "dopri5":
        return dopri5_lyapunov_kernels(ts.network.model, precision)
    return lyapunov_kernels(ts.network.model, precision)


def _thread_count(threads, k: int) -> int:
    if threads is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        return max(1, min(cpus, k // _MIN_COLUMNS_PER_THREAD))
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise SimulationError(f"threads: expected a positive integer or None, got {threads!r}")
    return int(min(threads, k))


# below this many tangent vectors per thread the threads' fixed costs dominate
_MIN_COLUMNS_PER_THREAD = 16
# column blocks are padded to a multiple of this (the SIMD loops' remainders are scalar):
# one AVX2 register of the tangent dtype
_PAD = {"double": 4, "single": 8}
PRECISIONS = ("double", "single")
#: integrators of the joint (state, tangent) system: fixed-step RK4 or adaptive Dormand–Prince 5(4)
METHODS = ("rk4", "dopri5")
# step budget (accepted + rejected) of the adaptive integrator per re-orthonormalisation interval
_MAX_STEPS_PER_BLOCK = 200_000
_STATUS_MESSAGES = {1: "the state became non-finite", 2: "the required step size became too small",
                    3: "the step budget was spent (a stiff or diverging system?)"}


@dataclasses.dataclass
class _Adaptive:
    """Settings and running statistics of the adaptive integrator (one per block of columns)."""

    rtol: float
    atol: float
    tangent_error: bool
    h: float
    # nfev, accepted, rejected, largest tangent error norm, accepted steps with a tangent error norm > 1,
    # steps where the tangent error norm was evaluated
    stats: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(6))


class _GenericBlocks:
    """``(y, V)`` advanced by the generic compiled RK4 or dopri5 loop over ``ts.field`` (any tangent system)."""

    def __init__(self, ts, y, V, adaptive=None):
        from bifnet.network._kernels import integrators

        self._advance = integrators()["rk4_tangent_steps"]
        self._adaptive_step = integrators()["dopri5_tangent_block"]
        self._ts = ts
        self.y = y
        self.V = V
        self.adaptive = adaptive

    def advance(self, dt, nsteps):
        return self._advance(self._ts.field, self._ts.args, self.y, self.V, dt, nsteps)

    def advance_to(self, t0, t1):
        """Adaptive steps from ``t0`` to ``t1``: the status code (0 = success)."""
        from bifnet.network._kernels import DP_A, DP_B, DP_E

        a = self.adaptive
        status, a.h = self._adaptive_step(self._ts.field, self._ts.args, self.y, self.V, t0, t1, a.h, a.rtol,
                                          a.atol, a.tangent_error, a.stats[1] + a.stats[2] + _MAX_STEPS_PER_BLOCK,
                                          a.stats, DP_A, DP_B, DP_E)
        return int(status)

    def tangent(self):
        return self.V

    def set_tangent(self, Q):
        self.V[:] = Q

    def close(self):
        pass


class _NetworkBlocks:
    """A network's state and tangent vectors, split by columns over threads.

    Each thread advances its own copy of the state with its block of tangent
    vectors (the state costs little next to the tangent vectors), so the
    threads meet only at re-orthonormalisations.
    """

    def __init__(self, ts, stepper, y, V, threads, precision="double", adaptive=None):
        from bifnet.network._kernels import TANGENT_DTYPES, dopri5_lyapunov_workspace, lyapunov_workspace

        N, n = ts.network.state_shape
        self._stepper = stepper
        self._p, self._W = ts.args
        dtype = TANGENT_DTYPES[precision]
        self._Wg = self._W if dtype == self._W.dtype else np.ascontiguousarray(self._W, dtype=dtype)
        # blocks of a multiple of pad columns (zero columns pad the last block: they stay zero)
        # so that the compiled loops over a block's columns run fully vectorised
        pad = _PAD[precision]
        k = V.shape[1]
        width = -(-k // threads)
        width = -(-width // pad) * pad
        self._columns = [np.arange(a, min(a + width, k)) for a in range(0, k, width)]
        self._V = []
        for c in self._columns:
            block = np.zeros((V.shape[0], -(-c.size // pad) * pad), dtype)
            block[:, :c.size] = V[:, c]
            self._V.append(block)
        self._y = [y] + [y.copy() for _ in self._columns[1:]]
        m = len(ts.network.model.channels)
        workspace = lyapunov_workspace if adaptive is None else dopri5_lyapunov_workspace
        self._work = [workspace(N, n, block.shape[1], precision, m) for block in self._V]
        # with the state's error norm the blocks take identical steps (the same arithmetic in each); with
        # tangent_error each block of columns controls its own steps
        self._adaptive = None if adaptive is None else [dataclasses.replace(adaptive, stats=np.zeros(6))
                                                        for _ in self._V]
        self._pool = None
        if len(self._columns) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(len(self._columns) - 1, thread_name_prefix="bifnet-lyapunov")

    @property
    def y(self):
        return self._y[0]

    def _run(self, b, dt, nsteps):
        return self._stepper(self._y[b], self._V[b], self._p, self._W, self._Wg, dt, nsteps, *self._work[b])

    @property
    def adaptive(self):
        """The first block's settings, with the statistics of all blocks (steps: the first block's)."""
        if self._adaptive is None:
            return None
        stats = self._adaptive[0].stats.copy()
        stats[3:5] = np.max([a.stats[3:5] for a in self._adaptive], axis=0)
        return dataclasses.replace(self._adaptive[0], stats=stats)

    def _run_to(self, b, t0, t1):
        a = self._adaptive[b]
        status, a.h = self._stepper(self._y[b], self._V[b], self._p, self._W, self._Wg, t0, t1, a.h, a.rtol,
                                    a.atol, a.tangent_error, a.stats[1] + a.stats[2] + _MAX_STEPS_PER_BLOCK,
                                    a.stats, *self._work[b])
        return int(status)

    def _parallel(self, run, *args):
        if self._pool is None:
            return [run(0, *args)]
        # the calling thread takes the first block itself: one thread fewer to wake per block
        futures = [self._pool.submit(run, b, *args) for b in range(1, len(self._V))]
        first = run(0, *args)
        results = [first] + [f.result() for f in futures]
        for other in self._y[1:]:  # keep one state (identical, unless each block chose its own steps)
            other[:] = self._y[0]
        return results

    def advance(self, dt, nsteps):
        return all(self._parallel(self._run, dt, nsteps))

    def advance_to(self, t0, t1):
        """Adaptive steps from ``t0`` to ``t1``: the status code (0 = success)."""
        return max(self._parallel(self._run_to, t0, t1))

    def tangent(self):
        # float64 for the QR step whatever the blocks' dtype
        return np.hstack([block[:, :c.size] for c, block in zip(self._columns, self._V)]).astype(float, copy=False)

    def set_tangent(self, Q):
        for c, block in zip(self._columns, self._V):
            block[:, :c.size] = Q[:, c]

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()


# CholeskyQR2 is used while its second pass finds the first one's Q this close to orthonormal
# (the first pass's error is about cond(V)^2 eps; the second squares it)
_CHOLQR_TOLERANCE = 1e-4


def _positive_qr(V):
    """``V = Q R`` with ``R``'s diagonal positive: ``(Q, log(diag(R)))``.

    CholeskyQR2 (Fukaya et al. 2014: ``R1 = chol(V^T V)``, ``Q1 = V R1^-1``,
    the same again on ``Q1``): three BLAS-3 calls per pass instead of the
    Householder QR's panel updates, about 3x faster at ``576 x 90``, and the
    same ``Q`` and ``R`` to rounding (the positive-diagonal QR is unique).
    Falls back to :func:`numpy.linalg.qr` when ``V`` is too ill-conditioned
    for it (Cholesky fails or the second pass corrects more than
    ``_CHOLQR_TOLERANCE``).
    """
    import scipy.linalg
    from scipy.linalg.blas import dsyrk, dtrsm

    # work on V^T (Fortran order, no copy for a C-contiguous V): V^T V = (V^T)(V^T)^T
    # and Q^T = R^-T V^T
    Vt = np.asarray(V, dtype=float).T
    try:
        R1 = scipy.linalg.cholesky(dsyrk(1.0, Vt), lower=False, overwrite_a=True, check_finite=False)
        Q1t = dtrsm(1.0, R1, Vt, side=0, lower=0, trans_a=1)
        R2 = scipy.linalg.cholesky(dsyrk(1.0, Q1t), lower=False, overwrite_a=True, check_finite=False)
        d2 = np.diag(R2)
        if np.all(np.abs(d2 - 1.0) < _CHOLQR_TOLERANCE) and np.all(np.isfinite(R1)):
            Qt = dtrsm(1.0, R2, Q1t, side=0, lower=0, trans_a=1, overwrite_b=1)
            # diag(R2 R1) = diag(R2) diag(R1) (both upper triangular)
            return Qt.T, np.log(d2) + np.log(np.diag(R1))
    except np.linalg.LinAlgError:
        pass
    Q, R = np.linalg.qr(V)
    d = np.diag(R)
    return Q * np.where(d < 0, -1.0, 1.0), np.log(np.abs(d))


def _positive_number(name, value):
    if isinstance(value, bool) or not (isinstance(value, (int, float, np.number)) and math.isfinite(value)
                                       and value > 0):
        raise SimulationError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


def _benettin_logs(system, k, t_max, transient, dt, renormalise_every, y0, rng, threads=None, generic=False,
                   precision="double", method="rk4", rtol=1e-6, atol=1e-9, tangent_error=False):
    """``(logs, block, final state, stats)``: ``logs[b]`` are the ``log R_ii`` of averaging block ``b``
    (``block`` ms long)."""
    from bifnet._blas import single_threaded_blas
    from bifnet.network.core import as_generator, check_rates

    ts = tangent_system(system, y0)
    D = ts.dimension
    if k is None:
        k = D
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= D:
        raise SimulationError(f"k: expected an integer in 1..{D}, got {k!r}")
    for name, value in (("t_max", t_max), ("dt", dt), ("renormalise_every", renormalise_every)):
        _positive_number(name, value)
    if not (isinstance(transient, (int, float, np.number)) and math.isfinite(transient) and transient >= 0):
        raise SimulationError(f"transient: expected a number >= 0, got {transient!r}")
    if method not in METHODS:
        raise SimulationError(f"method: expected one of {', '.join(map(repr, METHODS))}, got {method!r}")
    adaptive = None
    if method == "dopri5":
        if not isinstance(tangent_error, (bool, np.bool_)):
            raise SimulationError(f"tangent_error: expected true or false, got {tangent_error!r}")
        adaptive = _Adaptive(_positive_number("rtol", rtol), _positive_number("atol", atol), bool(tangent_error),
                             min(float(dt), float(renormalise_every)))
    n_threads = _thread_count(threads, k)
    y = np.array(ts.initial_state, dtype=float)
    if y.shape != (D,):
        raise SimulationError(f"y0: expected {D} components, got shape {y.shape}")
    if ts.network is not None:
        check_rates(ts.network, y, "y0")
    gen = as_generator(rng)
    V0 = gen.standard_normal((D, k))
    if precision not in PRECISIONS:
        raise SimulationError(f"precision: expected one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    stepper = None if generic else _network_stepper(ts, precision, method)
    if stepper is None and precision != "double":
        raise SimulationError(f"precision {precision!r} is available for networks only (this is {ts.name or 'a tangent system'})")
    if adaptive is None:
        steps_per_block = max(1, int(round(renormalise_every / dt)))
        block = dt * steps_per_block
    else:  # adaptive steps land on the re-orthonormalisation times exactly
        block = float(renormalise_every)

    def run_blocks(n_blocks, logs, b_start):
        for b in range(n_blocks):
            t0, t1 = (b_start + b) * block, (b_start + b + 1) * block
            if adaptive is None:
                if not state.advance(dt, steps_per_block):
                    raise SimulationError(f"the state became non-finite at t = {t1:.6g} ms")
            else:
                status = state.advance_to(t0, t1)
                if status:
                    raise SimulationError(f"dopri5 (rtol {adaptive.rtol:g}, atol {adaptive.atol:g}): "
                                          f"{_STATUS_MESSAGES.get(status, 'failed')} between t = {t0:.6g} and "
                                          f"{t1:.6g} ms")
            Q, log_d = _positive_qr(state.tangent())
            if logs is not None:
                logs[b] = log_d
            state.set_tangent(Q)

    # the transient aligns the tangent vectors too (their logs are discarded)
    n_transient = int(round(transient / block))
    n_blocks = max(1, int(round(t_max / block)))
    logs = np.zeros((n_blocks, k))
    with single_threaded_blas():
        V = np.ascontiguousarray(np.linalg.qr(V0)[0])
        state = (_GenericBlocks(ts, y, V, adaptive) if stepper is None
                 else _NetworkBlocks(ts, stepper, y, V, n_threads, precision, adaptive))
        try:
            run_blocks(n_transient, None, 0)
            run_blocks(n_blocks, logs, n_transient)
        finally:
            state.close()
    stats = {"method": method, "blocks": n_transient + n_blocks, "block_ms": block,
             "threads": n_threads if stepper is not None else 1}
    if adaptive is None:
        stats.update(n_steps=(n_transient + n_blocks) * steps_per_block, dt=dt)
    else:
        nfev, nacc, nrej, worst, over, checked = state.adaptive.stats
        stats.update(n_steps=int(nacc), n_rejected=int(nrej), nfev=int(nfev), rtol=adaptive.rtol,
                     atol=adaptive.atol, tangent_error=adaptive.tangent_error,
                     mean_step_ms=float((n_transient + n_blocks) * block / max(nacc, 1)),
                     tangent_error_norm_max=float(worst), steps_tangent_error_over_1=int(over),
                     steps_tangent_error_checked=int(checked))

    logger.debug("Lyapunov: %s, k = %d, D = %d, %s, %s", method, k, D,
                 "generic tangent loop" if stepper is None else f"fused network stepper on {n_threads} thread(s)",
                 stats)
    return logs, block, state.y, stats


def lyapunov_spectrum(system, k: int | None = None, *, t_max: float, transient: float = 0.0, dt: float = 0.01,
                      renormalise_every: float = 1.0, y0=None, rng=None, threads: int | None = None,
                      precision: str = "double", method: str = "rk4", rtol: float = 1e-6, atol: float = 1e-9,
                      tangent_error: bool = False) -> np.ndarray:
    """The ``k`` largest Lyapunov exponents (1/ms), sorted descending.

    Parameters
    ----------
    system : Network or TangentSystem
        What to analyse (a one-region network is the homogeneous system).
    k : int, optional
        Number of exponents (default: all).
    t_max : float
        Averaging time after the transient (ms).
    transient : float
        Time integrated first without averaging (ms); the tangent vectors are
        evolved and re-orthonormalised during it too, so the averaging starts
        from aligned vectors.
    dt : float
        RK4 step (ms); with ``method="dopri5"`` the first trial step only.
    renormalise_every : float
        Interval between QR re-orthonormalisations (ms; with RK4 rounded to
        whole steps, the adaptive steps land on it exactly). The exponents do not depend on it beyond rounding (the
        product of the ``R`` factors is the same) as long as the tangent
        vectors stay numerically independent over one interval; 1 ms, as
        ChaosTools' default ``Δt = 1``, is safe for millisecond-scale models
        (an ill-conditioned block falls back to Householder QR). Each QR
        step costs about as much as five RK4 steps of 90 vectors.
    y0 : array_like, optional
        Initial state (default: the system's).
    rng : numpy.random.Generator or int or None
        For the random initial tangent vectors.
    threads : int, optional
        Threads sharing the tangent vectors of a network (default: the
        available cores, at most one per 16 vectors). The result does not
        depend on it.
    precision : {"double", "single"}
        Arithmetic of the tangent vectors of a network. ``"single"`` keeps
        them, the node Jacobians and the coupling product in float32 (the
        state, the QR steps and the sums of logarithms stay float64): about
        1.3-1.5x faster at 90 vectors, and on the reference model the exponents
        move by far less than their statistical error (see the docs). Other
        tangent systems are double only.
    method : {"rk4", "dopri5"}
        Integrator of the joint (state, tangent) system: classical RK4 with
        the fixed step ``dt``, or Dormand–Prince 5(4) on adaptive steps (the
        names :func:`~bifnet.network.simulate` uses). With ``"dopri5"`` the
        tangent vectors are advanced on the state's steps (the same stages),
        each interval ends exactly on a re-orthonormalisation time, and the
        step size carries over from one interval to the next.
    rtol, atol : float
        Tolerances of ``"dopri5"`` (scipy's RMS error norm with the scale
        ``atol + rtol |y|``); ignored by RK4.
    tangent_error : bool
        With ``"dopri5"``, include the tangent vectors in the error norm (the
        larger of the state's and the tangent vectors' norms decides a
        step) instead of the state alone. Slower (the tangent stages are
        computed for rejected steps too, and on one thread); a check that
        the state's steps resolve the tangent dynamics.

    Returns
    -------
    numpy.ndarray
        ``(k,)`` exponents in 1/ms, descending.

    Raises
    ------
    SimulationError
        Bad arguments, or a state that becomes non-finite.

    Notes
    -----
    Benettin et al. (1980), Shimada & Nagashima (1979): the state and ``k``
    tangent vectors ``V`` obey ``y' = f(y)``, ``V' = Df(y) V`` (integrated
    jointly by RK4 or Dormand–Prince 5(4)); every ``renormalise_every`` ms
    ``V = Q R`` and ``V <- Q``; ``lambda_i = sum log|R_ii| / t_max``.

    With ``"dopri5"`` (Dormand & Prince 1980, scipy's step control) and the
    default error norm a step is accepted from the six state stages alone
    and the tangent stages are then computed once, with the node Jacobians
    kept from the state stages: a rejected step costs right-hand sides only
    (:func:`bifnet.network._kernels.dopri5_lyapunov_kernels`). The tangent
    dynamics is linear along the same trajectory, so the state's steps
    resolve it to the same order; ``tangent_error=True`` checks that.

    For a network the joint RK4 step is one compiled loop
    (:func:`bifnet.network._kernels.lyapunov_kernels`): per stage the
    coupling of the ``k`` vectors, ``W @ V_c``, is a BLAS matrix product and
    the node blocks an unrolled loop over the Jacobian's non-zeros. The
    vectors are split by columns over ``threads`` threads, each advancing its
    own copy of the state, which meet at every QR step. Other tangent systems
    use a generic loop over their ``field``.

    Examples
    --------
    >>> lyapunov_spectrum(homogeneous_network(model, {"eps": 15, "Iext_e": 6}), 6,
    ...                   t_max=2000, transient=500)          # doctest: +SKIP
    """
    logs, block, _, _ = _benettin_logs(system, k, t_max, transient, dt, renormalise_every, y0, rng, threads,
                                       precision=precision, method=method, rtol=rtol, atol=atol,
                                       tangent_error=tangent_error)
    return np.sort(logs.sum(axis=0) / (logs.shape[0] * block))[::-1]


def _lyapunov_spectrum_reference(system, k=None, *, t_max, transient=0.0, dt=0.01, renormalise_every=1.0,
                                 y0=None, rng=None, method="rk4", rtol=1e-6, atol=1e-9, tangent_error=False):
    """:func:`lyapunov_spectrum` through the generic tangent loops (``rk4_tangent_steps`` or
    ``dopri5_tangent_block`` over the network's ``tangent`` field, one thread): the
    implementation without the fused network steppers, kept for tests and benchmarks."""
    logs, block, _, _ = _benettin_logs(system, k, t_max, transient, dt, renormalise_every, y0, rng, 1,
                                       generic=True, method=method, rtol=rtol, atol=atol,
                                       tangent_error=tangent_error)
    return np.sort(logs.sum(axis=0) / (logs.shape[0] * block))[::-1]


def lyapunov_convergence(system, k: int | None = None, *, t_max: float, transient: float = 0.0, dt: float = 0.01,
                         renormalise_every: float = 1.0, y0=None, rng=None, threads: int | None = None,
                         precision: str = "double", method: str = "rk4", rtol: float = 1e-6, atol: float = 1e-9,
                         tangent_error: bool = False):
    """Running estimates of the Lyapunov exponents, for convergence plots.

    Same parameters as :func:`lyapunov_spectrum`.

    Returns
    -------
    t : numpy.ndarray
        ``(B,)`` averaging times (ms since the end of the transient).
    estimates : numpy.ndarray
        ``(B, k)``: column ``i`` is the running estimate of the exponent that
        ends ``i``-th largest (1/ms).
    """
    logs, block, _, _ = _benettin_logs(system, k, t_max, transient, dt, renormalise_every, y0, rng, threads,
                                       precision=precision, method=method, rtol=rtol, atol=atol,
                                       tangent_error=tangent_error)
    t = block * np.arange(1, logs.shape[0] + 1)
    estimates = np.cumsum(logs, axis=0) / t[:, None]
    order = np.argsort(estimates[-1])[::-1]
    return t, estimates[:, order]


def kaplan_yorke_dimension(exponents) -> float:
    """Kaplan–Yorke (Lyapunov) dimension ``j + sum_{i<=j} lambda_i / |lambda_{j+1}|``.

    ``j`` is the largest index with a non-negative partial sum. Returns 0 when
    the largest exponent is negative and ``len(exponents)`` when every partial
    sum is non-negative.
    """
    lam = np.sort(np.asarray(exponents, dtype=float))[::-1]
    if lam.size == 0 or lam[0] < 0:
        return 0.0
    sums = np.cumsum(lam)
    j = int(np.max(np.flatnonzero(sums >= 0))) + 1
    if j == lam.size:
        return float(lam.size)
    return float(j + sums[j - 1] / abs(lam[j]))


def plot_convergence(t, estimates, ax=None, *, max_lines: int = 10):
    """Running Lyapunov estimates against averaging time (ax in, Axes out)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for i in range(min(max_lines, estimates.shape[1])):
        ax.plot(t, estimates[:, i], lw=1, label=f"λ{i + 1}")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("averaging time (ms)")
    ax.set_ylabel("exponent (1/ms)")
    ax.legend(fontsize="small", ncol=2)
    return ax
