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
