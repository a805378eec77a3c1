"""Validate linear (mode-by-mode) stability predictions with network simulations.

At a homogeneous equilibrium ``x`` the network linearisation decouples into
``J(Lambda_alpha) = A + Lambda_alpha B`` for the eigenvalues ``Lambda_alpha``
of the scheme's mode operator (``P`` or ``L``; :func:`bifnet.systems.mode_jacobian`). :func:`validate_mode` picks a
mode, perturbs the network along ``phi_alpha ⊗ u`` (``u`` the leading
eigenvector of ``J(Lambda_alpha)``), integrates the full nonlinear network and
measures what the prediction says: growth rate, frequency and spatial pattern.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from bifnet.errors import SimulationError

logger = logging.getLogger(__name__)


def mode_growth_rates(network, x_hom):
    """Leading eigenvalue of ``J(Lambda)`` for every mode of the network.

    Parameters
    ----------
    network : Network
    x_hom : array_like
        Homogeneous equilibrium ``(n,)``.

    Returns
    -------
    dict
        ``mode`` (1-based), ``Lambda``, ``eigenvalue`` (complex leading
        eigenvalue), ``growth_rate`` (1/ms), ``frequency_hz``.
    """
    from bifnet.codegen import mode_jacobian_functions

    A, B = mode_jacobian_functions(network.model)
    p = network.parameter_vector
    a, b = A(np.asarray(x_hom, float), p), B(np.asarray(x_hom, float), p)
    lams = network.spectrum.eigenvalues
    lead = []
    for lam in lams:
        ev = np.linalg.eigvals(a + lam * b)
        lead.append(ev[np.argmax(ev.real)])
    lead = np.array(lead)
    return {
        "mode": np.arange(1, lams.size + 1),
        "Lambda": lams,
        "eigenvalue": lead,
        "growth_rate": lead.real,
        "frequency_hz": np.abs(lead.imag) / (2 * np.pi) * 1000.0,
    }


def _zero_crossing_frequency(t, signal):
    """Frequency (Hz, ``t`` in ms) from the mean interval between upward zero crossings."""
    s = np.asarray(signal)
    idx = np.flatnonzero((s[:-1] < 0) & (s[1:] >= 0))
    if idx.size < 2:
        return 0.0
    tc = t[idx] - s[idx] * (t[idx + 1] - t[idx]) / (s[idx + 1] - s[idx])
    return float(1000.0 * (idx.size - 1) / (tc[-1] - tc[0]))


def validate_mode(network, x_hom, *, mode: int | None = None, amplitude: float = 1e-7, t_max: float | None = None,
                  dt: float = 0.01, stride: int = 10, linear_limit: float = 1e-4, method: str = "rk4",
                  return_traces: bool = False, variable: str | None = None) -> dict:
    """Compare the predicted growth of a mode with a simulation of the network.

    Parameters
    ----------
    network : Network
    x_hom : array_like
        Homogeneous equilibrium ``(n,)`` (e.g. from
        :func:`bifnet.network.find_homogeneous_equilibrium`).
    mode : int, optional
        1-based mode to test; default: the mode with the largest growth rate.
    amplitude : float
        Maximum absolute deviation of the initial perturbation.
    t_max : float, optional
        Simulated time (ms); default: long enough for the perturbation to grow
        from ``amplitude`` to ``linear_limit`` (or to decay by ``1e-3``), at
        least 100 ms and at most 5000 ms.
    dt, stride, method
        Passed to :func:`bifnet.network.simulate`.
    linear_limit : float
        Deviations larger than this (max norm) are outside the linear regime
        and excluded from the fit.
    return_traces : bool
        Also return ``t``, ``log_amplitude`` and the fit window (for plots).
    variable : str, optional
        Variable whose late regional deviation is compared with the mode's
        eigenvector (default: the model's ``[observe] variable``).

    Returns
    -------
    dict
        ``mode, Lambda, predicted_growth_rate, measured_growth_rate`` (1/ms),
        ``predicted_frequency_hz, measured_frequency_hz`` (NaN for a real mode),
        ``pattern_correlation`` (cosine between the late regional deviation of
        the coupled variable and the span of the mode's eigenvector),
        ``relative_error_growth`` and the fit window.

    Raises
    ------
    SimulationError
        Bad arguments, a perturbation that makes a rate negative, or a failed
        simulation.

    Notes
    -----
    The deviation ``delta(t) = y(t) - x`` is projected on the mode with the
    left eigenvectors of ``W`` (``a(t) = (Phi^{-1} delta)_alpha``, an ``n``
    vector obeying ``a' = J(Lambda) a``) and then on the leading eigenvector
    ``u`` with the left eigenvector ``w`` of ``J(Lambda)``: ``c(t) = w^H a(t)
    ~ c_0 exp(mu t)`` (the conjugate pair drops out: ``w`` is orthogonal
    to the conjugate eigenvector). The growth rate is the least-squares
    slope of ``log|c|`` inside the fit window, the frequency the slope of
    its unwrapped phase over ``2 pi``. The window starts after a tenth of the
    linear regime and ends where the deviation leaves the linear regime
    (``linear_limit``) or where ``|c|`` comes within a factor 1e4 of its
    round-off floor (``2.2e-16`` times the size of the state, carried through
    the two projections), whichever is first.
    """
    from bifnet.network.core import check_rates
    from bifnet.network.integrate import simulate

    N, n = network.state_shape
    x = np.asarray(x_hom, dtype=float)
    if x.shape != (n,):
        raise SimulationError(f"x_hom: expected shape ({n},), got {x.shape}")
    if not (math.isfinite(amplitude) and amplitude > 0):
        raise SimulationError(f"amplitude: expected a positive number, got {amplitude!r}")
    rates = mode_growth_rates(network, x)
    if mode is None:
        mode = int(np.argmax(rates["growth_rate"])) + 1
    if isinstance(mode, bool) or not isinstance(mode, (int, np.integer)) or not 1 <= mode <= N:
        raise SimulationError(f"mode: expected an integer in 1..{N}, got {mode!r}")
    k = mode - 1
    lam = rates["Lambda"][k]
    from bifnet.codegen import mode_jacobian_functions

    A, B = mode_jacobian_functions(network.model)
    Jl = A(x, network.parameter_vector) + lam * B(x, network.parameter_vector)
    ev, U = np.linalg.eig(Jl)
    j = int(np.argmax(ev.real))
    mu = ev[j]
    u = U[:, j]
    evl, WL = np.linalg.eig(Jl.conj().T)
    w = WL[:, int(np.argmin(np.abs(evl - np.conj(mu))))]
    w = w / np.conj(np.vdot(w, u))  # w^H u = 1
    Phi = np.asarray(network.spectrum.eigenvectors)
    phi = Phi[:, k]
    pattern = np.real(np.outer(phi, u))
    y0 = x + amplitude * pattern / np.max(np.abs(pattern))
    check_rates(network, y0, "perturbed state")
    growth = float(mu.real)
    if t_max is None:
        span = math.log(linear_limit / amplitude) if growth > 0 else math.log(1e3)
        t_max = min(5000.0, max(100.0, 1.2 * span / max(abs(growth), 1e-3)))
        t_max = dt * math.ceil(t_max / dt)
    res = simulate(network, (0.0, t_max), y0, method, dt=dt, stride=stride)
    if not res.success:
        raise SimulationError(f"validation run failed: {res.message}")
    t = res.t
    delta = res.y - x  # (T, N, n)
    # mode amplitudes a(t) = (Phi^{-1} delta)_k  (least squares if Phi is ill-conditioned)
    left = np.linalg.lstsq(Phi, np.eye(N), rcond=None)[0][k]  # row k of Phi^{-1}
    a = np.einsum("i,tiv->tv", left, delta)  # (T, n)
    c = a @ np.conj(w)
    size = np.max(np.abs(delta.reshape(delta.shape[0], -1)), axis=1)
    logc = np.log(np.abs(c) + 1e-300)
    linear = size < linear_limit
    floor = (1e4 * np.finfo(float).eps * max(1.0, float(np.max(np.abs(x))))
             * float(np.sum(np.abs(left))) * float(np.sum(np.abs(w))) * math.sqrt(n))
    usable = linear & (np.abs(c) > floor)
    usable[0] = True
    end = int(np.argmin(usable)) if not usable.all() else usable.size
    start = max(1, end // 10)
    if end - start < 5:
        raise SimulationError("too few samples in the linear regime: lower amplitude or raise linear_limit")
    window = slice(start, end)
    slope = float(np.polyfit(t[window], logc[window], 1)[0])
    ci = network.model.observed_index(variable)
    real_mode = mu.imag == 0.0
    if real_mode:
        freq = float("nan")
    else:
        phase = np.unwrap(np.angle(c[window]))
        freq = float(abs(np.polyfit(t[window], phase, 1)[0]) / (2 * np.pi) * 1000.0)
    # pattern of the late deviation of the observed variable against span(Re phi, Im phi)
    late = delta[end - 1, :, ci]
    basis = np.column_stack([phi.real, phi.imag]) if np.iscomplexobj(phi) else phi[:, None]
    basis = basis[:, np.linalg.norm(basis, axis=0) > 1e-12]
    q, _ = np.linalg.qr(basis)
    corr = float(np.linalg.norm(q.T @ late) / max(np.linalg.norm(late), 1e-300))
    out = {
        "mode": int(mode),
        "Lambda": lam,
        "predicted_growth_rate": growth,
        "measured_growth_rate": slope,
        "relative_error_growth": abs(slope - growth) / max(abs(growth), 1e-12),
        "predicted_frequency_hz": float(abs(mu.imag) / (2 * np.pi) * 1000.0),
        "measured_frequency_hz": freq,
        "pattern_correlation": corr,
        "fit_start_ms": float(t[start]),
        "fit_end_ms": float(t[end - 1]),
        "amplitude": float(amplitude),
        "t_max": float(t_max),
    }
    if return_traces:
        out["t"] = t
        out["log_amplitude"] = logc
        out["intercept"] = float(np.polyfit(t[window], logc[window], 1)[1])
    logger.info("mode %d (Lambda=%s): growth predicted %.5g, measured %.5g /ms", mode, lam, growth, slope)
    return out


def plot_validation(result: dict, ax=None):
    """``log|c(t)|`` against time with the predicted slope (needs ``return_traces=True``)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    t = result["t"]
    ax.plot(t, result["log_amplitude"], lw=1, label="simulation: log|mode amplitude|")
    t0, t1 = result["fit_start_ms"], result["fit_end_ms"]
    i0 = int(np.searchsorted(t, t0))
    y0 = result["log_amplitude"][i0]
    tt = np.array([t0, t1])
    ax.plot(tt, y0 + result["predicted_growth_rate"] * (tt - t0), "k--",
            label=f"predicted slope {result['predicted_growth_rate']:.4g}/ms")
    ax.axvspan(t0, t1, color="0.9", zorder=0)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("log amplitude")
    ax.set_title(f"mode {result['mode']}  (Λ = {np.real(result['Lambda']):.3f})")
    ax.legend(fontsize="small")
    return ax
