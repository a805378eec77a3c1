"""Lyapunov spectra by the QR (Benettin) method on a reusable tangent system.

Two layers (as in ChaosTools.jl): :class:`TangentSystem` holds a compiled
field ``g(y, V, args, dy, dV)`` returning ``dy/dt`` and the Jacobian applied
to ``k`` tangent vectors; :func:`lyapunov_spectrum` and
:func:`lyapunov_convergence` integrate the joint system with RK4 and
re-orthonormalise with a QR decomposition at fixed intervals.

For a network the tangent field is the structured product of
:func:`bifnet.network.network_jvp` (never a dense ``Nn x Nn`` matrix); the
homogeneous (self-coupled) node is the one-region network ``W = [[1]]``
(:func:`bifnet.network.homogeneous_network`). A network's own tangent system
is integrated by a fused compiled RK4 step (BLAS for ``W @ V_c``, unrolled
node blocks), its tangent vectors split by columns over threads; other
tangent systems by a generic loop over their ``field``. OpenBLAS is kept on
one thread for the duration of a run (see
:class:`bifnet.network._kernels.single_threaded_blas`).
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


def _network_stepper(ts: TangentSystem, precision: str = "double"):
    """The fused network stepper for ``ts`` (``None`` if ``ts`` is not a network's own tangent system)."""
    if ts.network is None:
        return None
    from bifnet.network._kernels import lyapunov_kernels, network_kernels

    if ts.field is not network_kernels(ts.network.model)[1]:
        return None
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


class _GenericBlocks:
    """``(y, V)`` advanced by the generic compiled RK4 loop over ``ts.field`` (any tangent system)."""

    def __init__(self, ts, y, V):
        from bifnet.network._kernels import integrators

        self._advance = integrators()["rk4_tangent_steps"]
        self._ts = ts
        self.y = y
        self.V = V

    def advance(self, dt, nsteps):
        return self._advance(self._ts.field, self._ts.args, self.y, self.V, dt, nsteps)

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

    def __init__(self, ts, stepper, y, V, threads, precision="double"):
        from bifnet.network._kernels import TANGENT_DTYPES, lyapunov_workspace

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
        self._work = [lyapunov_workspace(N, n, block.shape[1], precision, m) for block in self._V]
        self._pool = None
        if len(self._columns) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(len(self._columns) - 1, thread_name_prefix="bifnet-lyapunov")

    @property
    def y(self):
        return self._y[0]

    def _run(self, b, dt, nsteps):
        return self._stepper(self._y[b], self._V[b], self._p, self._W, self._Wg, dt, nsteps, *self._work[b])

    def advance(self, dt, nsteps):
        if self._pool is None:
            return self._run(0, dt, nsteps)
        # the calling thread takes the first block itself: one thread fewer to wake per block
        futures = [self._pool.submit(self._run, b, dt, nsteps) for b in range(1, len(self._V))]
        ok = self._run(0, dt, nsteps)
        ok = all([f.result() for f in futures]) and ok
        for other in self._y[1:]:  # identical arithmetic: keep one state
            other[:] = self._y[0]
        return ok

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


def _benettin_logs(system, k, t_max, transient, dt, renormalise_every, y0, rng, threads=None, generic=False,
                   precision="double"):
    from bifnet.network._kernels import single_threaded_blas
    from bifnet.network.core import as_generator, check_rates

    ts = tangent_system(system, y0)
    D = ts.dimension
    if k is None:
        k = D
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= D:
        raise SimulationError(f"k: expected an integer in 1..{D}, got {k!r}")
    for name, value in (("t_max", t_max), ("dt", dt), ("renormalise_every", renormalise_every)):
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
            raise SimulationError(f"{name}: expected a positive number, got {value!r}")
    if not (isinstance(transient, (int, float, np.number)) and math.isfinite(transient) and transient >= 0):
        raise SimulationError(f"transient: expected a number >= 0, got {transient!r}")
    n_threads = _thread_count(threads, k)
    y = np.array(ts.initial_state, dtype=float)
    if y.shape != (D,):
        raise SimulationError(f"y0: expected {D} components, got shape {y.shape}")
    if ts.network is not None:
        check_rates(ts.network, y, "y0")
    steps_per_block = max(1, int(round(renormalise_every / dt)))
    gen = as_generator(rng)
    V0 = gen.standard_normal((D, k))
    if precision not in PRECISIONS:
        raise SimulationError(f"precision: expected one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    stepper = None if generic else _network_stepper(ts, precision)
    if stepper is None and precision != "double":
        raise SimulationError(f"precision {precision!r} is available for networks only (this is {ts.name or 'a tangent system'})")

    def run_blocks(n_blocks, logs, t_start):
        for b in range(n_blocks):
            if not state.advance(dt, steps_per_block):
                raise SimulationError(
                    f"the state became non-finite at t = {t_start + (b + 1) * steps_per_block * dt:.6g} ms")
            Q, log_d = _positive_qr(state.tangent())
            if logs is not None:
                logs[b] = log_d
            state.set_tangent(Q)

    # the transient aligns the tangent vectors too (their logs are discarded)
    n_transient = int(round(transient / (dt * steps_per_block)))
    n_blocks = max(1, int(round(t_max / (dt * steps_per_block))))
    logs = np.zeros((n_blocks, k))
    with single_threaded_blas():
        V = np.ascontiguousarray(np.linalg.qr(V0)[0])
        state = (_GenericBlocks(ts, y, V) if stepper is None
                 else _NetworkBlocks(ts, stepper, y, V, n_threads, precision))
        try:
            run_blocks(n_transient, None, 0.0)
            run_blocks(n_blocks, logs, n_transient * steps_per_block * dt)
        finally:
            state.close()
    logger.debug("Lyapunov: %d blocks of %d RK4 steps, k = %d, D = %d, %s", n_blocks, steps_per_block, k, D,
                 "generic tangent loop" if stepper is None else f"fused network stepper on {n_threads} thread(s)")
    return logs, dt * steps_per_block, state.y


def lyapunov_spectrum(system, k: int | None = None, *, t_max: float, transient: float = 0.0, dt: float = 0.01,
                      renormalise_every: float = 1.0, y0=None, rng=None, threads: int | None = None,
                      precision: str = "double") -> np.ndarray:
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
        RK4 step (ms).
    renormalise_every : float
        Interval between QR re-orthonormalisations (ms; rounded to whole
        steps). The exponents do not depend on it beyond rounding (the
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
    jointly by RK4); every ``renormalise_every`` ms ``V = Q R`` and ``V <- Q``;
    ``lambda_i = sum log|R_ii| / t_max``.

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
    logs, _, _ = _benettin_logs(system, k, t_max, transient, dt, renormalise_every, y0, rng, threads,
                                precision=precision)
    duration = logs.shape[0] * _block(dt, renormalise_every)
    return np.sort(logs.sum(axis=0) / duration)[::-1]


def _lyapunov_spectrum_reference(system, k=None, *, t_max, transient=0.0, dt=0.01, renormalise_every=1.0,
                                 y0=None, rng=None):
    """:func:`lyapunov_spectrum` through the generic tangent loop (``rk4_tangent_steps`` over the
    network's ``tangent`` field, one thread): the implementation before the fused network
    stepper, kept for tests and benchmarks."""
    logs, _, _ = _benettin_logs(system, k, t_max, transient, dt, renormalise_every, y0, rng, 1, generic=True)
    duration = logs.shape[0] * _block(dt, renormalise_every)
    return np.sort(logs.sum(axis=0) / duration)[::-1]


def _block(dt, renormalise_every):
    return dt * max(1, int(round(renormalise_every / dt)))


def lyapunov_convergence(system, k: int | None = None, *, t_max: float, transient: float = 0.0, dt: float = 0.01,
                         renormalise_every: float = 1.0, y0=None, rng=None, threads: int | None = None,
                         precision: str = "double"):
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
    logs, block, _ = _benettin_logs(system, k, t_max, transient, dt, renormalise_every, y0, rng, threads,
                                    precision=precision)
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
