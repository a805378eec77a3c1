"""validate on decaying and real modes; Floquet kernels compiled once per machine; mode rules."""

import os
import subprocess
import sys

import numpy as np
import pytest

from bifnet.analysis.validation import validate_mode
from bifnet.connectome import coupling_operator, load_connectome
from bifnet.errors import RunFileError
from bifnet.model import load_model
from bifnet.network import build_network, find_homogeneous_equilibrium
from bifnet.transverse.steps import select_modes


def test_validate_measures_a_decaying_mode_within_one_percent():
    """The example of issue 10: wilson_cowan, eps = 0.5, Iext_e = 0.3, mode 68 of tvb68 (-0.25272 /ms, 17.9 Hz)."""
    model = load_model("wilson_cowan")
    network = build_network(model, load_connectome("tvb68"), {"eps": 0.5, "Iext_e": 0.3})
    x = find_homogeneous_equilibrium(model, dict(network.parameters))
    result = validate_mode(network, x, mode=68)
    assert result["predicted_growth_rate"] == pytest.approx(-0.25272, abs=1e-5)
    assert result["relative_error_growth"] < 0.01
    assert result["measured_frequency_hz"] == pytest.approx(result["predicted_frequency_hz"], rel=0.01)
    assert result["pattern_correlation"] > 0.99


def test_validate_gives_nan_frequency_for_a_real_mode():
    model = load_model("brusselator")
    operator = coupling_operator(load_connectome("tvb68"), model.coupling)
    network = build_network(model, operator, {"b": 2.0})
    result = validate_mode(network, np.array([1.5, 2.0 / 1.5]), mode=68, dt=0.02)  # J(mu) has real eigenvalues
    assert result["predicted_growth_rate"] < 0 and result["predicted_frequency_hz"] == 0.0
    assert np.isnan(result["measured_frequency_hz"])
    assert result["relative_error_growth"] < 0.01


_FLOQUET_PROBE = """
from bifnet.model import load_model
from bifnet.transverse import floquet
import sys
if sys.argv[1] == "second":
    def refuse(model):
        raise AssertionError("the Floquet module was generated again")
    floquet.floquet_module_source = refuse
ker = floquet._kernels(load_model("brusselator"))
cycle = floquet.find_cycle(load_model("brusselator"), {"b": 3.6})
hits = sum(sum(ker[k].stats.cache_hits.values()) for k in ("dop853", "step_polynomials", "monodromy_one"))
print(hits, repr(cycle.period))
"""


def test_floquet_kernels_are_generated_and_compiled_once_per_machine(tmp_path):
    env = {**os.environ, "BIFNET_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _FLOQUET_PROBE, which], env=env, capture_output=True, text=True)
            for which in ("first", "second")]
    for run in runs:
        assert run.returncode == 0, run.stderr
    (hits1, period1), (hits2, period2) = (r.stdout.split() for r in runs)
    assert int(hits1) == 0 and int(hits2) >= 2
    assert period1 == period2
    assert len(list(tmp_path.glob("_bifnet_kernels_floquet_brusselator_*.py"))) == 1


def test_modes_chosen_by_rule():
    P = coupling_operator(load_connectome("tvb68"), "additive").spectrum().eigenvalues
    L = coupling_operator(load_connectome("tvb68"), "diffusive").spectrum().eigenvalues
    assert select_modes("most_negative", P, "s") == [68]
    assert select_modes("most_positive", L, "s") == [68] and select_modes("most_negative", L, "s") == [2]
    assert select_modes("all", P, "s") == list(range(2, 69))
    window = select_modes({"Lambda": [-1.0, -0.5]}, P, "s")
    assert window and all(-1.0 <= P[m - 1] <= -0.5 for m in window)
    assert select_modes([3, 5], P, "s") == [3, 5]
    with pytest.raises(RunFileError, match="no mode 99"):
        select_modes([99], P, "s")
    with pytest.raises(RunFileError, match="most_negative"):
        select_modes("smallest", P, "s")


def test_single_threaded_blas_is_shared_by_nested_and_concurrent_users():
    """OpenBLAS's thread count is global to the process: the first block to enter saves it, the last
    to leave restores it, whatever the order in which threads leave (a naive save-and-restore per
    block put the threads back while another branch was still computing)."""
    import threading

    from bifnet import _blas

    controls = _blas._openblas_thread_controls()
    if not controls:
        pytest.skip("no OpenBLAS loaded")
    saved = _blas.blas_threads()
    for _, set_ in controls:
        set_(3)
    try:
        entered, release = threading.Barrier(2), threading.Event()
        seen = {}

        def first():
            with _blas.single_threaded_blas():
                entered.wait()
                seen["first"] = _blas.blas_threads()
            seen["after first"] = _blas.blas_threads()  # the other thread is still inside
            release.set()

        def second():
            with _blas.single_threaded_blas():
                with _blas.single_threaded_blas():
                    entered.wait()
                    release.wait(10)
                    seen["second"] = _blas.blas_threads()

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert seen["first"] == seen["after first"] == seen["second"] == [1] * len(controls)
        assert _blas.blas_threads() == [3] * len(controls)
    finally:
        for (_, set_), value in zip(controls, saved):
            set_(value)
