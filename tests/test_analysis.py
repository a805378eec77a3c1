"""Validation of linear predictions by simulation, power spectra and phase–amplitude coupling."""

import numpy as np
import pytest

from bifnet.model import load_model
from bifnet.network import build_network, find_homogeneous_equilibrium


@pytest.fixture(scope="module")
def model():
    return load_model("ngnmm_ping")


def _tvb68_or_random():
    try:
        from bifnet.connectome import load_connectome

        return load_connectome("tvb68")
    except Exception:  # connectome module or data not available
        rng = np.random.default_rng(0)
        A = rng.random((68, 68))
        return A + A.T


def test_transverse_instability_growth_rate_is_predicted(model):
    # J_ei = 8, eps = 8, Iext_e = 8: the homogeneous equilibrium is stable to the
    # uniform mode but the most negative-Lambda mode (tvb68: Lambda = -0.73)
    # undergoes a transverse Hopf instability (growth ~0.018 /ms, ~99 Hz).
    from bifnet.analysis.validation import mode_growth_rates, validate_mode

    params = {"eps": 8.0, "Iext_e": 8.0, "J_ei": 8.0}
    x = find_homogeneous_equilibrium(model, params)
    net = build_network(model, _tvb68_or_random(), params)
    rates = mode_growth_rates(net, x)
    assert rates["growth_rate"][0] < 0  # stable to mode 1
    assert rates["growth_rate"].max() > 0.005  # clearly unstable elsewhere
    result = validate_mode(net, x, amplitude=1e-7)
    assert result["mode"] != 1 and result["predicted_growth_rate"] > 0
    assert result["measured_growth_rate"] == pytest.approx(result["predicted_growth_rate"], rel=0.02)
    assert result["measured_frequency_hz"] == pytest.approx(result["predicted_frequency_hz"], rel=0.02)
    assert result["pattern_correlation"] > 0.99


def test_decaying_mode_rate_is_predicted(model):
    from bifnet.analysis.validation import validate_mode

    rng = np.random.default_rng(3)
    A = rng.random((12, 12))
    params = {"eps": 8.0, "Iext_e": 3.5}
    net = build_network(model, A + A.T, params)
    x = find_homogeneous_equilibrium(model, params)
    result = validate_mode(net, x, mode=12)
    assert result["predicted_growth_rate"] < 0
    assert result["measured_growth_rate"] == pytest.approx(result["predicted_growth_rate"], rel=0.02)


def test_dominant_frequency_of_a_known_sinusoid():
    from bifnet.analysis.spectral import dominant_frequency, power_spectrum

    dt = 0.1  # ms -> 10 kHz
    t = np.arange(0, 4000, dt)
    rng = np.random.default_rng(0)
    x = np.sin(2 * np.pi * 0.0403 * t) + 0.3 * rng.standard_normal(t.size)  # 40.3 Hz
    assert dominant_frequency(x, dt) == pytest.approx(40.3, abs=0.3)
    f, p = power_spectrum(np.column_stack([x, 2 * x]), dt)
    np.testing.assert_allclose(p[:, 1], 4 * p[:, 0])


def test_modulation_index_detects_theta_gamma_coupling():
    from bifnet.analysis.spectral import modulation_index

    dt = 1.0  # ms -> 1 kHz
    t = np.arange(0, 20000, dt)
    rng = np.random.default_rng(1)
    # 6 Hz theta with phase diffusion (coherence lost over ~1 s), so that time-shifted
    # amplitude envelopes are genuinely decoupled from the phase
    theta_phase = 2 * np.pi * 0.006 * t + np.cumsum(0.05 * rng.standard_normal(t.size))
    theta = np.sin(theta_phase)
    gamma_env = 1.0 + 0.8 * theta  # gamma strongest at theta phase pi/2 (sin peak)
    noise = 0.2 * rng.standard_normal(t.size)
    coupled = theta + 0.3 * gamma_env * np.sin(2 * np.pi * 0.05 * t) + noise
    uncoupled = theta + 0.3 * np.sin(2 * np.pi * 0.05 * t) + noise
    a = modulation_index(coupled, dt, phase_band=(4, 8), amplitude_band=(40, 60), n_surrogates=100, rng=2,
                         edge_ms=500)
    b = modulation_index(uncoupled, dt, phase_band=(4, 8), amplitude_band=(40, 60), n_surrogates=100, rng=2,
                         edge_ms=500)
    assert a["p_value"] < 0.02 and a["modulation_index"] > 10 * b["modulation_index"]
    assert b["p_value"] > 0.05
    # Hilbert phase of a sine is shifted by -pi/2: the sine's peak is at phase 0
    assert abs(np.angle(np.exp(1j * a["preferred_phase"]))) < 0.4
    c = modulation_index(coupled, dt, phase_band=(4, 8), amplitude_band=(40, 60), n_surrogates=100, rng=2,
                         edge_ms=500)
    assert c["p_value"] == a["p_value"]


def test_network_steps_write_their_files(model, tmp_path):
    import json

    import pandas as pd

    from bifnet.errors import RunFileError
    from bifnet.network.steps import lyapunov_step, simulate_step, validate_step
    from bifnet.steps import StepContext

    rng = np.random.default_rng(4)
    A = rng.random((5, 5))
    ctx = StepContext(model=model, parameters=model.resolve_parameters({"eps": 8.0, "Iext_e": 3.5}),
                      connectome=A + A.T, out_dir=tmp_path, rng_seed=1)
    summary = simulate_step(ctx, {"name": "sim", "kind": "simulate", "t_max": 20.0})
    assert summary["success"] and (tmp_path / "simulation.nc").exists() and (tmp_path / "simulation.png").exists()
    summary = validate_step(ctx, {"name": "val", "kind": "validate", "mode": 2})
    saved = json.loads((tmp_path / "validation.json").read_text())
    assert saved["measured_growth_rate"] == pytest.approx(saved["predicted_growth_rate"], rel=0.02)
    lyapunov_step(ctx, {"name": "ly", "kind": "lyapunov", "homogeneous": True, "k": 6, "t_max": 20.0,
                        "transient": 5.0})
    frame = pd.read_csv(tmp_path / "lyapunov.csv")
    assert list(frame.columns) == ["index", "exponent_per_ms"] and len(frame) == 6
    assert np.all(np.diff(frame["exponent_per_ms"]) <= 0)
    with pytest.raises(RunFileError, match="t_maxx"):
        simulate_step(ctx, {"name": "sim", "kind": "simulate", "t_maxx": 20.0})
    with pytest.raises(RunFileError, match="dt"):
        simulate_step(ctx, {"name": "sim", "kind": "simulate", "dt": -1})
