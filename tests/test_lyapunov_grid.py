"""The vectorised homogeneous Lyapunov kernel against independent computations: the per-point
Benettin path, Liouville's formula (sum = mean trace), Jacobian eigenvalues at a stable
equilibrium, Floquet exponents of a stable cycle; and the sweep/run-file path around it."""

import numpy as np
import pytest
import sympy

from bifnet.analysis.lyapunov import lyapunov_spectrum
from bifnet.analysis.lyapunov_grid import homogeneous_lyapunov_spectra, sweep_chunk
from bifnet.errors import BifnetError, SimulationError
from bifnet.model import load_model
from bifnet.network import homogeneous_network, simulate
from bifnet.systems import homogeneous_system


@pytest.fixture(scope="module")
def model():
    return load_model("ngnmm_ping")


# an equilibrium, the gamma cycle, a point inside the study's window, and a fast cycle
POINTS = {"eps": np.array([15.0, 15.0, 10.0, 12.0]), "Iext_e": np.array([0.0, 6.0, 9.0, 11.0])}


def test_batch_equals_per_point_lyapunov_spectrum(model):
    """Same RK4 steps, blocks and initial tangent vectors: the exponents agree to rounding."""
    kwargs = dict(t_max=60.0, transient=20.0, dt=0.01, rng=3)
    batch = homogeneous_lyapunov_spectra(model, POINTS, **kwargs)
    assert batch.shape == (4, 6)
    for i in range(4):
        net = homogeneous_network(model, {"eps": POINTS["eps"][i], "Iext_e": POINTS["Iext_e"][i]})
        np.testing.assert_allclose(batch[i], lyapunov_spectrum(net, 6, **kwargs), rtol=0, atol=1e-10)
    # threads share the chunks without changing a bit (9 points: two chunks of 8 lanes, the second
    # padded with copies of the last point)
    many = {"eps": np.linspace(9.0, 15.0, 9), "Iext_e": np.full(9, 9.0)}
    one = homogeneous_lyapunov_spectra(model, many, **kwargs)
    np.testing.assert_array_equal(homogeneous_lyapunov_spectra(model, many, threads=2, **kwargs), one)
    net = homogeneous_network(model, {"eps": many["eps"][-1], "Iext_e": 9.0})
    np.testing.assert_allclose(one[-1], lyapunov_spectrum(net, 6, **kwargs), rtol=0, atol=1e-10)


@pytest.mark.slow
def test_fewer_exponents_than_variables(model):
    """k < n (a kernel of its own, compiled once): the leading exponents of the per-point path."""
    kwargs = dict(t_max=60.0, transient=20.0, dt=0.01, rng=3)
    le = homogeneous_lyapunov_spectra(model, POINTS, 2, **kwargs)
    for i in range(4):
        net = homogeneous_network(model, {"eps": POINTS["eps"][i], "Iext_e": POINTS["Iext_e"][i]})
        np.testing.assert_allclose(le[i], lyapunov_spectrum(net, 2, **kwargs), rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["brusselator", "mpr", "wilson_cowan"])
def test_every_model_gets_a_kernel_that_matches_the_per_point_path(name):
    """The kernel is generated from any model file (ngnmm_ping above): two points near the defaults."""
    other = load_model(name)
    defaults = other.resolve_parameters({})
    first, second = other.parameter_names[:2]
    points = {first: np.array([defaults[first], 1.05 * defaults[first] + 0.01]),
              second: np.array([defaults[second], 1.05 * defaults[second] + 0.01])}
    kwargs = dict(t_max=50.0, transient=10.0, dt=0.01, rng=0)
    le = homogeneous_lyapunov_spectra(other, points, **kwargs)
    for i in range(2):
        net = homogeneous_network(other, {first: points[first][i], second: points[second][i]})
        np.testing.assert_allclose(le[i], lyapunov_spectrum(net, other.n_variables, **kwargs), rtol=0, atol=1e-10)


def test_sum_of_exponents_is_the_mean_trace_of_the_jacobian(model):
    """Liouville: sum(lambda) = (1/T) int tr J(x(t)) dt along the same trajectory (computed from the
    sympy Jacobian on an independent simulation)."""
    dt, transient, t_max = 0.01, 100.0, 400.0
    sums = homogeneous_lyapunov_spectra(model, POINTS, t_max=t_max, transient=transient, dt=dt, rng=0).sum(axis=1)
    system = homogeneous_system(model)
    for i in range(4):
        net = homogeneous_network(model, {"eps": POINTS["eps"][i], "Iext_e": POINTS["Iext_e"][i]})
        pvals = dict(zip(system.parameters, net.parameter_vector))
        trace = sympy.lambdify([system.state], system.jacobian.trace().subs(pvals), "numpy")
        run = simulate(net, (0.0, transient + t_max), model.default_state()[None, :], dt=dt, stride=1)
        values = trace(run.y[int(round(transient / dt)):, 0, :].T)
        mean_trace = np.trapezoid(values, dx=dt) / t_max
        assert abs(mean_trace) > 0.5  # a non-trivial check
        np.testing.assert_allclose(sums[i], mean_trace, rtol=0, atol=1e-6)


def test_stable_equilibria_exponents_are_real_parts_of_eigenvalues(model):
    from bifnet.codegen import jacobian_function
    from bifnet.network import find_homogeneous_equilibrium

    points = {"eps": np.array([15.0, 10.0, 12.0]), "Iext_e": np.array([0.0, 1.0, 2.0])}
    le = homogeneous_lyapunov_spectra(model, points, t_max=1000.0, transient=300.0, rng=0)
    jac = jacobian_function(homogeneous_system(model))
    for i in range(3):
        params = model.resolve_parameters({"eps": points["eps"][i], "Iext_e": points["Iext_e"][i]})
        x = find_homogeneous_equilibrium(model, params)
        p = np.array([params[name] for name in model.parameter_names])
        real_parts = np.sort(np.linalg.eigvals(jac(x, p)).real)[::-1]
        assert real_parts[0] < -0.1
        # complex pairs: both exponents of a pair converge to its real part like 1/t_max
        np.testing.assert_allclose(le[i], real_parts, rtol=0, atol=5e-3)


def test_stable_cycle_exponents_are_floquet_exponents(model):
    """At the stable gamma cycle: the top exponent is 0 (the flow direction) and all six match
    log|mu| / T of the Floquet multipliers of the homogeneous mode (Lambda = 1)."""
    from bifnet.transverse.floquet import find_cycle, homogeneous_floquet

    cycle = find_cycle(model, {"eps": 15.0, "Iext_e": 6.0})
    floquet = np.sort(np.log(np.abs(homogeneous_floquet(model, cycle))) / cycle.period)[::-1]
    le = homogeneous_lyapunov_spectra(model, {"eps": 15.0, "Iext_e": [6.0]}, t_max=2000.0, transient=500.0,
                                      rng=0)[0]
    assert abs(le[0]) < 5e-3 and le[1] < -0.1
    np.testing.assert_allclose(le, floquet, rtol=0, atol=5e-3)


def test_a_diverging_point_fails_alone(model):
    """A point whose state becomes non-finite gives NaN (a SimulationError in a sweep chunk);
    its neighbours in the same chunk are unaffected."""
    points = {"eps": np.array([15.0, 15.0]), "Iext_e": np.array([6.0, 1e12])}
    le = homogeneous_lyapunov_spectra(model, points, t_max=20.0, rng=0)
    assert np.all(np.isnan(le[1])) and np.all(np.isfinite(le[0]))
    alone = homogeneous_lyapunov_spectra(model, {"eps": 15.0, "Iext_e": [6.0]}, t_max=20.0, rng=0)
    np.testing.assert_array_equal(le[0], alone[0])
    out = sweep_chunk([{"eps": 15.0, "Iext_e": 6.0}, {"eps": 15.0, "Iext_e": 1e12}], model_source=model.source,
                      base={}, options={"t_max": 20.0, "transient": 0.0, "dt": 0.01, "seed": 0})
    assert out[0]["lyapunov_1"] == pytest.approx(alone[0, 0], abs=1e-12)
    assert out[0]["lyapunov_sum"] == pytest.approx(alone[0].sum(), abs=1e-12)
    assert isinstance(out[1], SimulationError) and "non-finite" in str(out[1])


def test_bad_arguments(model):
    with pytest.raises(SimulationError, match="k"):
        homogeneous_lyapunov_spectra(model, {"eps": [1.0]}, 7, t_max=1.0)
    with pytest.raises(SimulationError, match="t_max"):
        homogeneous_lyapunov_spectra(model, {"eps": [1.0]}, t_max=0.0)
    with pytest.raises(SimulationError, match="different lengths"):
        homogeneous_lyapunov_spectra(model, {"eps": [1.0, 2.0], "Iext_e": [1.0]}, t_max=1.0)
    with pytest.raises(BifnetError, match="nope"):
        homogeneous_lyapunov_spectra(model, {"nope": [1.0]}, t_max=1.0)
    with pytest.raises(SimulationError, match="y0"):
        homogeneous_lyapunov_spectra(model, {"eps": [1.0]}, t_max=1.0, y0=[1.0, 2.0])


def _run(tmp_path, name, step_keys):
    from bifnet.runs import execute_run_file

    lines = ['model = "ngnmm_ping"', "seed = 2", "", "[[steps]]", 'name = "map"', 'kind = "sweep"',
             "grid = { Iext_e = [6.0, 9.0, 11.0], eps = [10.0, 15.0] }", "t_max = 40.0", "transient = 10.0",
             'scheduler = "serial"', "progress = false"] + step_keys
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    execute_run_file(path, out=tmp_path / name)
    import xarray as xr

    with xr.open_dataset(tmp_path / name / "sweep_map.nc") as ds:
        return ds.load()


def test_sweep_step_vectorised_equals_one_task_per_point(tmp_path):
    """The run-file sweep: the vectorised chunks (default for homogeneous Lyapunov) and one task per
    point write the same map; lyapunov[Iext_e, eps, exponent] and max_lyapunov carry units."""
    fast = _run(tmp_path, "fast", ["batch_size = 4"])
    slow = _run(tmp_path, "slow", ["vectorise = false"])
    assert fast["lyapunov"].dims == ("Iext_e", "eps", "exponent")
    assert list(fast["exponent"].values) == [1, 2, 3, 4, 5, 6]
    assert fast["lyapunov"].attrs["units"] == "1/ms" and fast["max_lyapunov"].attrs["units"] == "1/ms"
    assert "chunks of 4" in fast.attrs["method"] and "one task per point" in slow.attrs["method"]
    np.testing.assert_allclose(fast["lyapunov"], slow["lyapunov"], rtol=0, atol=1e-10)
    np.testing.assert_array_equal(fast["max_lyapunov"], fast["lyapunov"].sel(exponent=1))
    assert np.all(np.diff(fast["lyapunov"].values, axis=-1) <= 0)
    np.testing.assert_allclose(fast["lyapunov_sum"], fast["lyapunov"].sum("exponent"), rtol=0, atol=1e-12)
    model = load_model("ngnmm_ping")
    net = homogeneous_network(model, {"eps": 15.0, "Iext_e": 9.0})
    np.testing.assert_allclose(fast["lyapunov"].sel(Iext_e=9.0, eps=15.0),
                               lyapunov_spectrum(net, 6, t_max=40.0, transient=10.0, rng=2), rtol=0, atol=1e-10)
    assert (tmp_path / "fast" / "sweep_map.png").stat().st_size > 10_000


@pytest.mark.parametrize("keys, message", [
    (["network = true", "vectorise = true"], "homogeneous system"),
    (['analysis = "dispersion"', "batch_size = 8"], "batch_size"),
    (['precision = "single"', "vectorise = true"], "double precision"),
])
def test_run_file_refuses_vectorise_where_it_does_not_apply(tmp_path, keys, message):
    from bifnet.errors import RunFileError

    with pytest.raises(RunFileError, match=message):
        _run(tmp_path, "bad", keys)
