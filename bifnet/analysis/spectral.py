"""Power spectra, spectrograms and phase–amplitude coupling of network signals.

Time is in ms throughout (as in the models); frequencies are returned in Hz.
"""

from __future__ import annotations

import math

import numpy as np

from bifnet.errors import SimulationError


def _sampling_rate_hz(t=None, dt_ms=None) -> float:
    if dt_ms is None:
        t = np.asarray(t, dtype=float)
        if t.ndim != 1 or t.size < 2:
            raise SimulationError("t: expected at least two sample times (ms)")
        steps = np.diff(t)
        dt_ms = float(np.mean(steps))
        if not np.allclose(steps, dt_ms, rtol=1e-6, atol=1e-12):
            raise SimulationError("t: samples must be equally spaced")
    if not dt_ms > 0:
        raise SimulationError(f"dt_ms: expected a positive sampling interval, got {dt_ms!r}")
    return 1000.0 / dt_ms


def power_spectrum(signal, dt_ms: float, *, nperseg: int | None = None, detrend: str = "constant"):
    """Welch power spectral density along the first axis.

    Parameters
    ----------
    signal : array_like
        ``(T,)`` or ``(T, R)`` (time × region).
    dt_ms : float
        Sampling interval (ms).
    nperseg : int, optional
        Welch segment length (default: ``min(T, 2 ** round(log2(1 s)))``, about
        1 s of data, giving ~1 Hz resolution).

    Returns
    -------
    frequency_hz : numpy.ndarray
        ``(F,)``.
    power : numpy.ndarray
        ``(F,)`` or ``(F, R)``.
    """
    from scipy.signal import welch

    x = np.asarray(signal, dtype=float)
    fs = _sampling_rate_hz(dt_ms=dt_ms)
    T = x.shape[0]
    if T < 8:
        raise SimulationError(f"signal: too short for a spectrum ({T} samples)")
    if nperseg is None:
        nperseg = min(T, 2 ** int(round(math.log2(max(8.0, fs)))))
    f, p = welch(x, fs=fs, nperseg=int(nperseg), axis=0, detrend=detrend)
    return f, p


def spectral_peak(frequency_hz, power, *, f_min: float = 0.5) -> float:
    """Frequency (Hz) of the maximum of a spectrum above ``f_min``.

    Parabolic interpolation of ``log power`` through the maximum and its two
    neighbours (on an evenly spaced frequency grid); NaN when no frequency is
    at or above ``f_min``.
    """
    f = np.asarray(frequency_hz, dtype=float)
    p = np.asarray(power, dtype=float)
    idx = np.flatnonzero((f >= f_min) & np.isfinite(p))
    if idx.size == 0:
        return float("nan")
    i = idx[int(np.argmax(p[idx]))]
    if 0 < i < f.size - 1 and p[i - 1] > 0 and p[i] > 0 and p[i + 1] > 0:
        a, b, c = np.log(p[i - 1]), np.log(p[i]), np.log(p[i + 1])
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
        return float(f[i] + shift * (f[1] - f[0]))
    return float(f[i])


def dominant_frequency(signal, dt_ms: float, *, f_min: float = 0.5, nperseg: int | None = None) -> float:
    """Frequency (Hz) of the Welch power maximum above ``f_min`` (parabolic peak interpolation).

    For a ``(T, R)`` signal the maximum of the mean over columns of their
    spectra (not the spectrum of the mean signal)."""
    f, p = power_spectrum(signal, dt_ms, nperseg=nperseg)
    if p.ndim > 1:
        p = p.mean(axis=1)
    return spectral_peak(f, p, f_min=f_min)


def spectrum_peaks(spectra, *, f_min: float = 0.5) -> dict:
    """Dominant frequencies of a :func:`network_spectra` table.

    Returns
    -------
    dict
        ``network_mean_hz`` (peak of the spectrum of the network-mean signal),
        ``region_mean_hz`` (peak of the mean over regions of the regional
        spectra), ``regional_median_hz`` (median of the regions' own peaks)
        and ``regions_hz`` (array, one peak per region, in column order).

    Notes
    -----
    The network mean and the regions can disagree: when regions oscillate at
    ``f`` with different phases, the mean signal can carry more power at a
    harmonic ``2f`` than at ``f``.
    """
    f = np.asarray(spectra["frequency_hz"], dtype=float)
    regions = [c for c in spectra.columns if c.startswith("power_")]
    per_region = np.array([spectral_peak(f, spectra[c], f_min=f_min) for c in regions])
    return {"network_mean_hz": spectral_peak(f, spectra["mean_power"], f_min=f_min),
            "region_mean_hz": spectral_peak(f, spectra["region_mean_power"], f_min=f_min),
            "regional_median_hz": float(np.median(per_region)) if per_region.size else float("nan"),
            "regions_hz": per_region}


def spectrum_axis_limit(frequencies, *, f_max: float = 200.0, margin: float = 1.25) -> float:
    """Upper limit of a spectrum's frequency axis: ``f_max``, raised (to a
    multiple of 50 Hz) until it includes ``margin`` times every finite
    frequency in ``frequencies``."""
    top = max([float(v) for v in np.ravel(frequencies) if np.isfinite(v)] or [0.0])
    need = margin * top
    return float(f_max) if need <= f_max else float(50.0 * np.ceil(need / 50.0))


def network_spectra(result, network, *, variable: str | None = None, transient: float = 0.0, nperseg=None):
    """Welch spectra of every region and of the network mean of one variable
    (default: the model's observed variable, ``[observe] variable``).

    Returns
    -------
    pandas.DataFrame
        Columns ``frequency_hz``, ``mean_power`` (spectrum of the network
        mean signal), ``region_mean_power`` (mean over regions of the regional
        spectra) and one ``power_<region>`` column per region.
    """
    import pandas as pd

    k = network.model.observed_index(variable)
    t = np.asarray(result.t)
    keep = t >= t[0] + transient
    x = np.asarray(result.y)[keep, :, k]
    dt = float(t[1] - t[0])
    f, p_regions = power_spectrum(x, dt, nperseg=nperseg)
    _, p_mean = power_spectrum(x.mean(axis=1), dt, nperseg=nperseg)
    data = {"frequency_hz": f, "mean_power": p_mean, "region_mean_power": p_regions.mean(axis=1)}
    for r in range(p_regions.shape[1]):
        data[f"power_{r}"] = p_regions[:, r]
    return pd.DataFrame(data)


def spectrogram(signal, dt_ms: float, *, nperseg: int | None = None, noverlap: int | None = None):
    """Short-time power: ``(frequency_hz, time_ms, power[F, T'])`` (scipy.signal.spectrogram)."""
    from scipy.signal import spectrogram as _spectrogram

    x = np.asarray(signal, dtype=float)
    fs = _sampling_rate_hz(dt_ms=dt_ms)
    if nperseg is None:
        nperseg = min(x.size, 2 ** int(round(math.log2(max(8.0, fs / 4)))))
    f, tt, s = _spectrogram(x, fs=fs, nperseg=nperseg, noverlap=noverlap)
    return f, tt * 1000.0, s


def _bandpass(x, band, fs, order=4):
    from scipy.signal import butter, sosfiltfilt

    low, high = band
    if not (0 < low < high < fs / 2):
        raise SimulationError(f"band: expected 0 < low < high < Nyquist ({fs / 2:g} Hz), got {band!r}")
    sos = butter(order, [low, high], btype="band", fs=fs, output="sos")
    return sosfiltfilt(sos, x)


def _tort_mi(phase, amplitude, n_bins):
    edges = np.linspace(-np.pi, np.pi, n_bins + 1)
    which = np.clip(np.digitize(phase, edges) - 1, 0, n_bins - 1)
    sums = np.bincount(which, weights=amplitude, minlength=n_bins)
    counts = np.bincount(which, minlength=n_bins)
    mean_amp = sums / np.maximum(counts, 1)
    P = mean_amp / mean_amp.sum()
    P = np.where(P > 0, P, 1e-300)
    return float((np.log(n_bins) + np.sum(P * np.log(P))) / np.log(n_bins)), mean_amp


def modulation_index(signal, dt_ms: float, *, phase_band=(4.0, 8.0), amplitude_band=(30.0, 80.0), n_bins: int = 18,
                     n_surrogates: int = 200, rng=None, edge_ms: float = 0.0) -> dict:
    """Tort modulation index of phase–amplitude coupling, with time-shift surrogates.

    Parameters
    ----------
    signal : array_like
        ``(T,)`` signal sampled every ``dt_ms`` ms.
    phase_band, amplitude_band : (float, float)
        Bands (Hz) of the modulating phase and of the modulated amplitude.
    n_bins : int
        Phase bins.
    n_surrogates : int
        Surrogates: the amplitude envelope circularly shifted by a random lag
        (at least one period of the slowest phase frequency from either end).
    rng : numpy.random.Generator or int or None
    edge_ms : float
        Samples discarded at both ends after filtering.

    Returns
    -------
    dict
        ``modulation_index``, ``p_value`` (fraction of surrogates >= the
        measured index, with the +1 correction), ``surrogate_mean``,
        ``surrogate_std``, ``z_score``, ``preferred_phase`` (rad) and
        ``mean_amplitude`` per phase bin.

    Notes
    -----
    Tort et al., J Neurophysiol 104:1195 (2010): phase of the band-passed low
    frequency and envelope of the band-passed high frequency (Hilbert
    transform); ``MI = (log K - H(P)) / log K`` for the normalised mean
    amplitude ``P`` over ``K`` phase bins.
    """
    from scipy.signal import hilbert

    from bifnet.network.core import as_generator

    x = np.asarray(signal, dtype=float)
    if x.ndim != 1:
        raise SimulationError(f"signal: expected a 1-D signal, got shape {x.shape}")
    fs = _sampling_rate_hz(dt_ms=dt_ms)
    phase = np.angle(hilbert(_bandpass(x, phase_band, fs)))
    amp = np.abs(hilbert(_bandpass(x, amplitude_band, fs)))
    edge = int(round(edge_ms / dt_ms))
    if edge:
        phase, amp = phase[edge:-edge], amp[edge:-edge]
    mi, mean_amp = _tort_mi(phase, amp, n_bins)
    gen = as_generator(rng)
    T = amp.size
    min_shift = int(round(1000.0 / phase_band[0] / dt_ms))
    if T <= 2 * min_shift + 1:
        raise SimulationError("signal: too short for time-shift surrogates (need > 2 slow periods)")
    shifts = gen.integers(min_shift, T - min_shift, size=int(n_surrogates))
    surrogates = np.array([_tort_mi(phase, np.roll(amp, int(s)), n_bins)[0] for s in shifts])
    mu, sd = float(surrogates.mean()), float(surrogates.std())
    centres = np.linspace(-np.pi, np.pi, n_bins + 1)[:-1] + np.pi / n_bins
    return {
        "modulation_index": mi,
        "p_value": float((1 + np.sum(surrogates >= mi)) / (1 + surrogates.size)),
        "surrogate_mean": mu,
        "surrogate_std": sd,
        "z_score": (mi - mu) / sd if sd > 0 else float("inf"),
        "preferred_phase": float(centres[int(np.argmax(mean_amp))]),
        "mean_amplitude": mean_amp,
        "phase_bin_centres": centres,
    }


def plot_power_spectrum(frequency_hz, power, ax=None, *, f_max: float | None = 200.0, label=None,
                        peak: float | None = None, colour=None):
    """Power spectrum on a log scale (ax in, Axes out).

    ``f_max`` is raised to include ``peak`` (see :func:`spectrum_axis_limit`);
    ``peak`` (Hz) is marked by a dashed vertical line and named in the legend.
    The axis limit is only ever widened by later calls on the same Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    f = np.asarray(frequency_hz)
    if f_max:
        f_max = spectrum_axis_limit([] if peak is None else [peak], f_max=f_max)
    mask = f <= f_max if f_max else np.ones_like(f, bool)
    (line,) = ax.semilogy(f[mask], np.asarray(power)[mask], lw=1, label=label, color=colour)
    if peak is not None and np.isfinite(peak):
        ax.axvline(peak, color=line.get_color(), ls="--", lw=0.8,
                   label=f"peak {peak:.1f} Hz" + (f" ({label})" if label else ""))
    if f_max:
        ax._bifnet_f_max = max(f_max, getattr(ax, "_bifnet_f_max", 0.0))  # widened, never narrowed, by later calls
        ax.set_xlim(0.0, ax._bifnet_f_max)
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel("power")
    if label or peak is not None:  # outside the axes: peaks reach the top corners
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def plot_phase_amplitude(pac: dict, ax=None):
    """Mean amplitude per phase bin (ax in, Axes out)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    c = pac["phase_bin_centres"]
    ax.bar(c, pac["mean_amplitude"], width=c[1] - c[0], color="0.6", edgecolor="k")
    ax.set_xlabel("phase (rad)")
    ax.set_ylabel("mean amplitude")
    ax.set_title(f"MI = {pac['modulation_index']:.3g}, p = {pac['p_value']:.3g}")
    return ax
