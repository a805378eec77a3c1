"""Integrators of the network: a method table, results as data.

``simulate(network, t_span, y0, method="rk4", ...)`` follows the shape of
:func:`scipy.integrate.solve_ivp`. The loops are compiled with numba
(:mod:`bifnet.network._kernels`); a non-finite state stops the run and comes
back as ``success=False`` with the time, region and variable in ``message``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time as _time
from typing import Any, Callable

import numpy as np

from bifnet.errors import SimulationError
from bifnet.network.core import Network, _flat_state, as_generator, check_rates

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class SimulationResult:
    """Output of :func:`simulate`.

    Attributes
    ----------
    t : numpy.ndarray
        ``(T,)`` output times (ms).
    y : numpy.ndarray
        ``(T, N, n)`` states at ``t`` (only up to the failure when ``success``
        is ``False``).
    success : bool
        Whether the integration reached ``t_span[1]``.
    message : str
        Human-readable outcome; on failure names time, region and variable.
    nfev : int
        Evaluations of the network vector field.
    stats : dict
        Method, steps taken/rejected, wall time (s), step size(s), noise.
    method : str
        Name of the method.
    """

    t: np.ndarray
    y: np.ndarray
    success: bool
    message: str
    nfev: int
    stats: dict
    method: str


@dataclasses.dataclass(frozen=True)
class Method:
    """An entry of the method table."""

    name: str
    adaptive: bool
    order: int
    description: str
    run: Callable[..., Any]


def _nonfinite_message(network: Network, y_bad: np.ndarray, t: float, y_prev: np.ndarray | None = None) -> str:
    """Name the region and variable responsible for a non-finite state.

    With the last finite state ``y_prev`` the culprit is its largest component
    (a blow-up spreads to every region within one step through the coupling);
    otherwise the first non-finite component of ``y_bad``.
    """
    n = network.n_variables
    names = network.model.variable_names
    bad = np.flatnonzero(~np.isfinite(y_bad))
    if y_prev is not None and np.all(np.isfinite(y_prev)):
        j = int(np.argmax(np.abs(y_prev)))
        detail = f" (last finite value {y_prev[j]:.3g})"
    elif bad.size:
        j = int(bad[0])
        detail = ""
    else:
        return f"integration failed at t = {t:.6g} ms"
    i, k = divmod(j, n)
    label = network.labels[i] if network.labels else str(i)
    where = f"region {i}" + (f" ({label})" if label != str(i) else "")
    regions = len({int(b) // n for b in bad})
    return (f"state became non-finite at t = {t:.6g} ms in {where}, variable {names[k]}{detail};"
            f" {bad.size} non-finite component(s) in {regions} region(s)")


def _run_rk4(network, y, t0, t1, *, dt, stride, sigma, rng, chunk=4096, **_):
    from bifnet.network._kernels import network_module

    kernels = network_module(network.model)
    rk4_steps = kernels.rk4_steps
    nsteps = int(round((t1 - t0) / dt))
    n_out = nsteps // stride + 1
    out = np.empty((n_out, y.size))
    out[0] = y
    args = network.kernel_args
    noisy = sigma is not None
    sig = sigma if noisy else np.zeros(y.size)
    empty = np.empty((0, y.size))
    prev = np.empty_like(y)
    done = 0
    status = kernels.STATUS_OK
    while done < nsteps:
        # in chunks (also without noise), so that Ctrl-C and SIGTERM are seen between two calls
        m = min(chunk, nsteps - done)
        noise = rng.standard_normal((m, y.size)) if noisy else empty
        status, step = rk4_steps(args, y, prev, dt, m, done, stride, sig, noise, out)
        if status != kernels.STATUS_OK:
            break
        done += m
    if status != kernels.STATUS_OK:
        t_fail = t0 + step * dt
        n_rec = (step - 1) // stride + 1
        return dict(t=t0 + dt * stride * np.arange(n_rec), y=out[:n_rec], success=False,
                    message=_nonfinite_message(network, y, t_fail, prev), nfev=4 * step,
                    stats=dict(n_steps=int(step), dt=dt))
    return dict(t=t0 + dt * stride * np.arange(n_out), y=out, success=True,
                message="reached the end of the interval", nfev=4 * nsteps,
                stats=dict(n_steps=nsteps, dt=dt))


def _run_dopri5(network, y, t0, t1, *, dt, stride, rtol, atol, max_steps=1_000_000, chunk=20_000, **_):
    from bifnet.network import _kernels as K

    kernels = K.network_module(network.model)
    rhs, dopri5 = kernels.rhs, kernels.dopri5
    spacing = dt * stride
    n_out = int(math.floor((t1 - t0) / spacing + 1e-9)) + 1
    t_out = t0 + spacing * np.arange(n_out)
    out = np.full((n_out, y.size), np.nan)
    out[0] = y
    args = network.kernel_args
    # initial step as in Hairer/scipy: h0 = 0.01 * |y| / |f|
    f0 = np.empty_like(y)
    rhs(y, args, f0)
    scale = atol + rtol * np.abs(y)
    d0 = np.sqrt(np.mean((y / scale) ** 2))
    d1 = np.sqrt(np.mean((f0 / scale) ** 2))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, t1 - t0)
    # in chunks of at most `chunk` step attempts, so that Ctrl-C and SIGTERM are seen between two calls;
    # a chunk restarts with the mean accepted step of the last one (the step control adapts within a step)
    t, nfev, nacc, nrej = t0, 0, 0, 0
    while True:
        budget = min(chunk, max_steps - nacc - nrej)
        status, t_end, f_c, a_c, r_c = dopri5(args, y, t, t1, rtol, atol, h0, budget, t_out, out,
                                              K.DP_A, K.DP_B, K.DP_C, K.DP_E, K.DP_P)
        nfev, nacc, nrej = nfev + f_c, nacc + a_c, nrej + r_c
        chunk_spent = status == kernels.STATUS_STEP_TOO_SMALL and a_c + r_c >= budget
        if not chunk_spent or nacc + nrej >= max_steps or t_end >= t1:
            break
        h0 = min(max((t_end - t) / max(a_c, 1), 10 * np.finfo(float).eps * max(abs(t_end), 1.0)), t1 - t_end)
        t = t_end
    stats = dict(n_steps=int(nacc), n_rejected=int(nrej), rtol=rtol, atol=atol)
    if status == kernels.STATUS_OK:
        return dict(t=t_out, y=out, success=True, message="reached the end of the interval",
                    nfev=int(nfev) + 1, stats=stats)
    n_rec = int(np.searchsorted(t_out, t_end, side="right"))
    if status == kernels.STATUS_NONFINITE:
        message = _nonfinite_message(network, y, t_end)
    elif nacc + nrej >= max_steps:
        message = (f"step budget spent: {max_steps} steps reached t = {t_end:.6g} ms only (a stiff or diverging"
                   " system?); use rk4 with a small dt")
    else:
        if not np.all(np.isfinite(y)):
            message = _nonfinite_message(network, y, t_end)
        else:
            j = int(np.argmax(np.abs(y)))
            i, k = divmod(j, network.n_variables)
            message = (f"required step size became too small at t = {t_end:.6g} ms (solution diverging?);"
                       f" largest component: region {i}, variable {network.model.variable_names[k]}"
                       f" = {y[j]:.3g}")
    return dict(t=t_out[:n_rec], y=out[:n_rec], success=False, message=message, nfev=int(nfev) + 1, stats=stats)


METHODS: dict[str, Method] = {
    "rk4": Method("rk4", False, 4, "classical Runge–Kutta, fixed step dt (additive noise: Euler–Maruyama)",
                  _run_rk4),
    "dopri5": Method("dopri5", True, 5, "Dormand–Prince 5(4), adaptive step, quartic dense output", _run_dopri5),
}


def _positive(value, name):
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SimulationError(f"{name}: expected a positive number, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise SimulationError(f"{name}: expected a positive number, got {value!r}")
    return value


def simulate(network: Network, t_span, y0, method: str = "rk4", *, dt: float = 0.01, rtol: float = 1e-6,
             atol: float = 1e-9, stride: int = 10, noise=0.0, rng=None,
             max_steps: int = 1_000_000) -> SimulationResult:
    """Integrate the network from ``y0`` over ``t_span``.

    Parameters
    ----------
    network : Network
    t_span : (float, float)
        Start and end time (ms), ``t_span[1] > t_span[0]``.
    y0 : array_like
        Initial state ``(N, n)`` or flat ``(N * n,)``.
    method : str
        A key of :data:`METHODS`: ``"rk4"`` (fixed step ``dt``) or ``"dopri5"``
        (adaptive, error control by ``rtol``/``atol``).
    dt : float
        Step of ``"rk4"`` (ms; the study uses 0.01). For adaptive methods the
        base of the output grid only.
    max_steps : int
        Step budget of adaptive methods (accepted and rejected steps): the run
        stops with ``success=False`` when it is spent (a stiff or diverging
        system), instead of running for minutes. Compiled loops run in chunks,
        so Ctrl-C stops a simulation within a fraction of a second.
    rtol, atol : float
        Tolerances of adaptive methods.
    stride : int
        States are recorded every ``stride * dt`` ms (and at ``t_span[0]``).
    noise : float or array_like
        Additive noise intensity ``sigma`` (scalar, per variable ``(n,)`` or
        per component ``(N, n)``): each RK4 step is followed by
        ``y += sigma sqrt(dt) xi`` with ``xi`` standard normal
        (Euler–Maruyama for the noise term, strong order 1/2 overall).
        Only with fixed-step methods.
    rng : numpy.random.Generator or int or None
        Source of the noise.

    Returns
    -------
    SimulationResult
        ``success=False`` with a message naming time, region and variable if
        the state becomes non-finite.

    Raises
    ------
    SimulationError
        A bad argument (named in the message), or a negative firing rate in
        ``y0``.

    Examples
    --------
    >>> res = simulate(net, (0.0, 100.0), y0, dt=0.01, stride=10)  # doctest: +SKIP
    >>> res.y.shape                                                  # doctest: +SKIP
    (1001, 68, 6)
    """
    if not isinstance(network, Network):
        raise SimulationError(f"network: expected a Network, got {type(network).__name__}")
    if method not in METHODS:
        raise SimulationError(f"method: unknown method {method!r} (known: {', '.join(METHODS)})")
    spec = METHODS[method]
    try:
        t0, t1 = (float(v) for v in t_span)
    except (TypeError, ValueError):
        raise SimulationError(f"t_span: expected two numbers (t0, t1), got {t_span!r}") from None
    if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
        raise SimulationError(f"t_span: expected finite t0 < t1, got {t_span!r}")
    dt = _positive(dt, "dt")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise SimulationError(f"stride: expected a positive integer, got {stride!r}")
    stride = int(stride)
    if not spec.adaptive:
        nsteps = (t1 - t0) / dt
        if abs(nsteps - round(nsteps)) > 1e-6 * max(1.0, nsteps) or round(nsteps) < 1:
            raise SimulationError(f"dt: the interval {t1 - t0:g} ms is not a whole number of steps of {dt:g} ms")
    else:
        rtol = _positive(rtol, "rtol")
        atol = _positive(atol, "atol")
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise SimulationError(f"max_steps: expected a positive integer, got {max_steps!r}")
    y = _flat_state(network, y0, "y0").copy()
    check_rates(network, y, "y0")
    sigma = None
    noise_arr = np.asarray(noise, dtype=float)
    if np.any(noise_arr != 0):
        if spec.adaptive:
            raise SimulationError(f"noise: method {method!r} is adaptive; use a fixed-step method (rk4) with noise")
        N, n = network.state_shape
        if noise_arr.ndim == 0 or noise_arr.shape in ((n,), (N, n)):
            sigma = np.ascontiguousarray(np.broadcast_to(noise_arr, (N, n)).reshape(-1))
        else:
            raise SimulationError(f"noise: expected a scalar, shape ({n},) or ({N}, {n}), got {noise_arr.shape}")
        if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
            raise SimulationError("noise: intensities must be finite and >= 0")
    gen = as_generator(rng) if sigma is not None else None
    start = _time.perf_counter()
    raw = spec.run(network, y, t0, t1, dt=dt, stride=stride, rtol=rtol, atol=atol, sigma=sigma, rng=gen,
                   max_steps=int(max_steps))
    wall = _time.perf_counter() - start
    stats = {"method": method, "wall_time_s": wall, "noise": float(np.max(sigma)) if sigma is not None else 0.0,
             **raw["stats"]}
    if not raw["success"]:
        logger.warning("simulation failed: %s", raw["message"])
    N, n = network.state_shape
    return SimulationResult(t=raw["t"], y=raw["y"].reshape(-1, N, n), success=bool(raw["success"]),
                            message=raw["message"], nfev=int(raw["nfev"]), stats=stats, method=method)
