"""Lyapunov spectra: linear systems, stable equilibria (exponents = real parts of
the Jacobian eigenvalues) and a limit cycle (sum = mean trace, top exponent 0)."""

import numpy as np
import pytest
import sympy

from bifnet.analysis.lyapunov import (
    kaplan_yorke_dimension,
    linear_tangent_system,
    lyapunov_convergence,
    lyapunov_spectrum,
)
from bifnet.errors import SimulationError
from bifnet.model import load_model
from bifnet.network import (
    build_network,
    find_homogeneous_equilibrium,
    homogeneous_network,
    network_jacobian_dense,
    simulate,
)
from bifnet.systems import homogeneous_system


@pytest.fixture(scope="module")
def model():
    return load_model("ngnmm_ping")


def test_linear_system_exponents_are_real_parts_of_eigenvalues():
    A = np.array([[-0.1, 1.0, 0.0], [-1.0, -0.1, 0.0], [0.0, 0.0, 0.3]])
    le = lyapunov_spectrum(linear_tangent_system(A), 3, t_max=200, transient=20, dt=0.01, rng=0)
    np.testing.assert_allclose(le, [0.3, -0.1, -0.1], atol=5e-3)


def test_stable_network_equilibrium_exponents_equal_jacobian_real_parts(model):
    params = {"eps": 15.0, "Iext_e": 0.0}
    x = find_homogeneous_equilibrium(model, params)
    rng = np.random.default_rng(1)
    A = rng.random((6, 6))
    A = A + A.T
    np.fill_diagonal(A, 0.0)
    net = build_network(model, A, params)
    J = network_jacobian_dense(net, np.tile(x, (6, 1)))
    real_parts = np.sort(np.linalg.eigvals(J).real)[::-1]
    assert real_parts[0] < 0  # a stable equilibrium
    le = lyapunov_spectrum(net, 6, t_max=1000, transient=300, y0=x, rng=2)
    np.testing.assert_allclose(le, real_parts[:6], atol=5e-3)
    t, running = lyapunov_convergence(net, 2, t_max=200, transient=100, y0=x, rng=2)
    assert running.shape == (t.size, 2) and np.isclose(t[-1], 200)
    assert abs(running[-1, 0] - real_parts[0]) < 2e-2


def test_limit_cycle_spectrum_sums_to_mean_trace(model):
    params = {"eps": 15.0, "Iext_e": 6.0}
    net = homogeneous_network(model, params)
    dt, transient, t_max = 0.01, 500.0, 2000.0
    le = lyapunov_spectrum(net, 6, t_max=t_max, transient=transient, dt=dt, rng=0)
    assert abs(le[0]) < 5e-3  # the cycle's neutral direction
    assert le[1] < -0.05
    # time-averaged trace of the Jacobian along the same trajectory
    system = homogeneous_system(model)
    pvals = dict(zip(system.parameters, net.parameter_vector))
    trace = sympy.lambdify([system.state], system.jacobian.trace().subs(pvals), "numpy")
    run = simulate(net, (0.0, transient + t_max), model.default_state()[None, :], dt=dt, stride=1)
    states = run.y[int(round(transient / dt)):, 0, :]
    values = trace(states.T)
    mean_trace = np.trapezoid(values, dx=dt) / t_max
    np.testing.assert_allclose(le.sum(), mean_trace, rtol=0, atol=5e-3)
    assert 1.0 < kaplan_yorke_dimension(le) < 2.0 or le[0] < 0


def test_kaplan_yorke_dimension():
    assert kaplan_yorke_dimension([0.5, 0.0, -1.0]) == pytest.approx(2.5)
    assert kaplan_yorke_dimension([-0.1, -1.0]) == 0.0
    assert kaplan_yorke_dimension([0.1, 0.2]) == 2.0


def test_bad_arguments(model):
    net = homogeneous_network(model, {"eps": 15.0})
    with pytest.raises(SimulationError, match="k"):
        lyapunov_spectrum(net, 7, t_max=1)
    with pytest.raises(SimulationError, match="t_max"):
        lyapunov_spectrum(net, 2, t_max=-1)
    with pytest.raises(SimulationError, match="system"):
        lyapunov_spectrum("net", 2, t_max=1)


@pytest.mark.parametrize("threads", [1, 3])
def test_fused_network_stepper_matches_generic_tangent_loop(model, threads):
    """The fused network stepper (BLAS coupling, unrolled node blocks, column blocks on
    threads) follows the generic RK4 loop over the network's tangent field."""
    from bifnet.analysis.lyapunov import _lyapunov_spectrum_reference
    from bifnet.network import homogeneous_initial_state

    rng = np.random.default_rng(3)
    A = rng.random((7, 7)) * (rng.random((7, 7)) < 0.6)
    A = A + A.T + np.eye(7) * 1e-3
    net = build_network(model, A, {"eps": 8.0, "Iext_e": 5.0})
    y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=0)
    kwargs = dict(t_max=40.0, transient=10.0, dt=0.01, y0=y0, rng=4)
    fast = lyapunov_spectrum(net, 20, threads=threads, **kwargs)
    slow = _lyapunov_spectrum_reference(net, 20, **kwargs)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    t, running = lyapunov_convergence(net, 20, threads=threads, **kwargs)
    np.testing.assert_allclose(running[-1], slow, rtol=0, atol=1e-9)
    with pytest.raises(SimulationError, match="threads"):
        lyapunov_spectrum(net, 2, t_max=1.0, threads=0)


def test_single_precision_tangent_vectors_stay_close_to_double(model):
    """precision="single" (float32 tangent vectors, Jacobians and sgemm) moves the exponents by
    rounding only: far less than the difference made by other initial tangent vectors."""
    from bifnet.analysis.lyapunov import _lyapunov_spectrum_reference
    from bifnet.network import homogeneous_initial_state

    rng = np.random.default_rng(3)
    A = rng.random((7, 7)) * (rng.random((7, 7)) < 0.6)
    A = A + A.T + np.eye(7) * 1e-3
    net = build_network(model, A, {"eps": 8.0, "Iext_e": 5.0})
    y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=0)
    kwargs = dict(t_max=40.0, transient=10.0, dt=0.01, y0=y0)
    double = _lyapunov_spectrum_reference(net, 20, rng=4, **kwargs)
    single = lyapunov_spectrum(net, 20, threads=2, precision="single", rng=4, **kwargs)
    other_start = _lyapunov_spectrum_reference(net, 20, rng=5, **kwargs)
    difference = np.abs(single - double).max()
    assert 0 < difference < 1e-5
    assert difference < 1e-2 * np.abs(other_start - double).max()
    with pytest.raises(SimulationError, match="precision"):
        lyapunov_spectrum(net, 2, t_max=1.0, precision="half")
    with pytest.raises(SimulationError, match="networks only"):
        lyapunov_spectrum(linear_tangent_system(np.eye(2)), 2, t_max=1.0, precision="single")


@pytest.mark.parametrize("spread", [5.0, 30.0])
def test_positive_qr_matches_householder(spread):
    """CholeskyQR2 (and its Householder fallback when V is too ill-conditioned, cond ~ e^30)
    gives the positive-diagonal QR of numpy's Householder QR to rounding."""
    from bifnet.analysis.lyapunov import _positive_qr

    rng = np.random.default_rng(5)
    U = np.linalg.qr(rng.standard_normal((120, 30)))[0]
    Vt = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    V = U @ np.diag(np.exp(-np.linspace(0.0, spread, 30))) @ Vt
    Q, log_d = _positive_qr(V)
    Qh, R = np.linalg.qr(V)
    d = np.diag(R)
    np.testing.assert_allclose(log_d, np.log(np.abs(d)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(Q, Qh * np.where(d < 0, -1.0, 1.0), rtol=0, atol=1e-6 if spread > 20 else 1e-9)
    np.testing.assert_allclose(Q.T @ Q, np.eye(30), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- #
# adaptive (Dormand–Prince 5(4)) spectra


def test_adaptive_linear_system_exponents_are_real_parts_of_eigenvalues():
    """dopri5 on x' = A x (non-normal A, known eigenvalues) with the tangent vectors in the error norm:
    the exponents are the real parts. With the state's norm alone the steps follow the fastest-growing
    direction (which the state aligns with) and under-resolve the rotating pair: the run's recorded
    tangent error estimate shows it."""
    from bifnet.analysis.lyapunov import _benettin_logs

    rng = np.random.default_rng(7)
    S = rng.standard_normal((4, 4))
    blocks = np.array([[0.2, 0.0, 0.0, 0.0], [0.0, -0.05, 2.0, 0.0], [0.0, -2.0, -0.05, 0.0],
                       [0.0, 0.0, 0.0, -0.4]])
    A = S @ blocks @ np.linalg.inv(S)
    exact = np.sort(np.linalg.eigvals(A).real)[::-1]
    np.testing.assert_allclose(exact, [0.2, -0.05, -0.05, -0.4], atol=1e-12)
    system = linear_tangent_system(A)
    le = lyapunov_spectrum(system, 4, t_max=400, transient=50, rng=0, method="dopri5", tangent_error=True)
    # the complex pair's finite-time estimates oscillate about -0.05 (amplitude ~ 1/t)
    np.testing.assert_allclose(le, exact, rtol=0, atol=5e-3)
    assert abs(le.sum() - np.trace(A)) < 1e-5  # the volume growth is exact up to the tolerances
    assert abs(le[0] - 0.2) < 1e-5 and abs(le[3] + 0.4) < 1e-5
    _, _, _, checked = _benettin_logs(system, 4, 100, 0, 0.01, 1.0, None, 0, method="dopri5", tangent_error=True)
    _, _, _, unchecked = _benettin_logs(system, 4, 100, 0, 0.01, 1.0, None, 0, method="dopri5")
    assert checked["tangent_error_norm_max"] < 1 and checked["steps_tangent_error_over_1"] == 0
    assert unchecked["tangent_error_norm_max"] > 100 and unchecked["n_steps"] < checked["n_steps"] / 2


@pytest.fixture(scope="module")
def stable_cycle_network(model):
    """A 6-region network at the homogeneous gamma cycle (eps = 15, Iext_e = 6) stable to every mode,
    with its pooled Floquet exponents (all modes, from bifnet.transverse)."""
    from bifnet.transverse.floquet import find_cycle, floquet_dispersion

    params = {"eps": 15.0, "Iext_e": 6.0}
    rng = np.random.default_rng(1)
    A = rng.random((6, 6))
    A = A + A.T
    np.fill_diagonal(A, 0.0)
    net = build_network(model, A, params)
    cycle = find_cycle(model, params)
    fd = floquet_dispersion(model, cycle, np.asarray(net.spectrum.eigenvalues))
    pooled = np.sort(fd.exponents.real.ravel())[::-1]
    y0 = np.tile(cycle.x0, (6, 1)) + 1e-4 * rng.standard_normal((6, 6))
    return net, y0, pooled


def test_adaptive_spectrum_at_stable_cycle_is_pooled_floquet_exponents(stable_cycle_network):
    """At a homogeneous cycle stable to every mode the network's 36 exponents are the Floquet exponents
    of all modes; dopri5 reaches them to the finite-time error (which shrinks like 1/t) and agrees
    with RK4 (dt = 0.01) on the same run to far less than that."""
    net, y0, pooled = stable_cycle_network
    assert pooled[0] == pytest.approx(0.0, abs=1e-9) and pooled[1] < -0.03  # stable to every mode
    adaptive = lyapunov_spectrum(net, 36, t_max=1000, transient=100, y0=y0, rng=2, method="dopri5")
    # RK4 (dt = 0.01) on this run: within 3.74e-3 at 1000 ms, 1.81e-3 at 2000 ms
    np.testing.assert_allclose(adaptive, pooled, rtol=0, atol=4.5e-3)
    assert np.abs(adaptive - pooled).mean() < 1.5e-3
    kwargs = dict(t_max=150, transient=50, y0=y0, rng=2)
    fixed = lyapunov_spectrum(net, 36, **kwargs)
    short = lyapunov_spectrum(net, 36, method="dopri5", **kwargs)
    assert np.abs(fixed - pooled).max() > 5e-3  # 150 ms: far from converged ...
    np.testing.assert_allclose(short, fixed, rtol=0, atol=2e-5)  # ... but the same finite-time estimate


@pytest.mark.parametrize("threads", [1, 3])
def test_fused_adaptive_stepper_matches_generic_loop(model, threads):
    """The fused dopri5 network stepper (column blocks on threads taking identical steps) follows the
    generic dopri5 loop over the network's tangent field, with either error norm."""
    from bifnet.analysis.lyapunov import _benettin_logs, _lyapunov_spectrum_reference
    from bifnet.network import homogeneous_initial_state

    rng = np.random.default_rng(3)
    A = rng.random((7, 7)) * (rng.random((7, 7)) < 0.6)
    A = A + A.T + np.eye(7) * 1e-3
    net = build_network(model, A, {"eps": 8.0, "Iext_e": 5.0})
    y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=0)
    kwargs = dict(t_max=40.0, transient=10.0, y0=y0, rng=4, method="dopri5")
    fast = lyapunov_spectrum(net, 20, threads=threads, **kwargs)
    slow = _lyapunov_spectrum_reference(net, 20, **kwargs)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    fast_te = lyapunov_spectrum(net, 20, threads=threads, tangent_error=True, **kwargs)
    slow_te = _lyapunov_spectrum_reference(net, 20, tangent_error=True, **kwargs)
    # with the tangent vectors in the norm each block of columns chooses its own steps
    np.testing.assert_allclose(fast_te, slow_te, rtol=0, atol=1e-9 if threads == 1 else 1e-6)
    np.testing.assert_allclose(fast_te, fast, rtol=0, atol=1e-5)
    # the steps land on the re-orthonormalisation times, whatever their interval
    t, running = lyapunov_convergence(net, 20, threads=threads, renormalise_every=0.37, **kwargs)
    np.testing.assert_allclose(t, 0.37 * np.arange(1, t.size + 1), rtol=0, atol=1e-12)
    assert t.size == 108
    stats = _benettin_logs(net, 20, 40.0, 10.0, 0.01, 1.0, y0, 4, threads, method="dopri5")[3]
    assert stats["n_steps"] < 5000 / 10  # far fewer than RK4's 5000 steps of 0.01 ms


def test_adaptive_bad_arguments(model):
    net = homogeneous_network(model, {"eps": 15.0})
    with pytest.raises(SimulationError, match="method"):
        lyapunov_spectrum(net, 2, t_max=1, method="euler")
    with pytest.raises(SimulationError, match="rtol"):
        lyapunov_spectrum(net, 2, t_max=1, method="dopri5", rtol=-1e-6)
    with pytest.raises(SimulationError, match="atol"):
        lyapunov_spectrum(net, 2, t_max=1, method="dopri5", atol=float("nan"))
    with pytest.raises(SimulationError, match="tangent_error"):
        lyapunov_spectrum(net, 2, t_max=1, method="dopri5", tangent_error="yes")


def test_run_file_lyapunov_and_sweep_steps_with_dopri5(tmp_path):
    """``method = "dopri5"`` in lyapunov and sweep steps: the same exponents as RK4 from the same seed
    (the run-file path passes the keys through), the method recorded, bad values refused up front."""
    import json

    import pandas as pd
    import xarray as xr

    from bifnet.errors import RunFileError
    from bifnet.runs import execute_run_file

    text = """model = "ngnmm_ping"
connectome = "tvb68"
seed = 3
parameters = { eps = 8.0, Iext_e = 5.0 }
[[steps]]
name = "fixed"
kind = "lyapunov"
k = 4
t_max = 20.0
transient = 5.0
[[steps]]
name = "adaptive"
kind = "lyapunov"
k = 4
t_max = 20.0
transient = 5.0
method = "dopri5"
rtol = 1e-7
[[steps]]
name = "scan"
kind = "sweep"
network = true
k = 2
t_max = 5.0
transient = 1.0
grid = { Iext_e = [4.0, 5.0] }
method = "dopri5"
scheduler = "serial"
progress = false
"""
    run_file = tmp_path / "run.toml"
    run_file.write_text(text)
    execute_run_file(run_file, out=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    steps = {s["name"]: s for s in manifest["steps"]}
    assert steps["fixed"]["method"] == "rk4"
    assert steps["adaptive"]["method"] == "dopri5" and steps["adaptive"]["rtol"] == 1e-7
    # one run folder: lyapunov.csv is the last Lyapunov step's; the summaries hold both
    adaptive = pd.read_csv(tmp_path / "out" / "lyapunov.csv")["exponent_per_ms"].to_numpy()
    assert adaptive[0] == steps["adaptive"]["largest_exponent_per_ms"]
    assert abs(steps["adaptive"]["largest_exponent_per_ms"] - steps["fixed"]["largest_exponent_per_ms"]) < 1e-5
    assert abs(steps["adaptive"]["kaplan_yorke_dimension"] - steps["fixed"]["kaplan_yorke_dimension"]) < 1e-3
    sweep = xr.open_dataset(tmp_path / "out" / "sweep_scan.nc")
    assert np.isfinite(sweep["lyapunov"]).all() and sweep["lyapunov"].attrs["units"] == "1/ms"
    sweep.close()
    run_file.write_text(text.replace('rtol = 1e-7', 'rtol = 1e-7\ntangent_error = "yes"'))
    with pytest.raises(RunFileError, match="tangent_error"):
        execute_run_file(run_file, out=tmp_path / "bad")
