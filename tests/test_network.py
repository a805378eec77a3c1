"""Network vector field, Jacobian products and integrators: checked against
independent numpy code, the mode decomposition and each other."""

import numpy as np
import pytest

from bifnet.codegen import mode_jacobian_functions, rhs_function
from bifnet.errors import SimulationError
from bifnet.model import load_model
from bifnet.network import (
    build_network,
    find_homogeneous_equilibrium,
    homogeneous_initial_state,
    network_jacobian_dense,
    network_jvp,
    network_rhs,
    simulate,
    to_xarray,
)
from bifnet.systems import homogeneous_system, node_system


@pytest.fixture(scope="module")
def model():
    return load_model("ngnmm_ping")


def random_symmetric(N, seed):
    rng = np.random.default_rng(seed)
    A = rng.random((N, N))
    A = A + A.T
    np.fill_diagonal(A, 0.0)
    return A


def random_state(N, seed):
    rng = np.random.default_rng(seed)
    y = np.empty((N, 6))
    y[:, [0, 2, 3, 5]] = rng.uniform(0.01, 0.2, (N, 4))
    y[:, [1, 4]] = rng.uniform(-2, 1, (N, 2))
    return y


def numpy_network_rhs(net, y):
    m = net.model
    f = rhs_function(node_system(m))
    p = np.array([net.parameters[k] for k in m.parameter_names])
    C = net.parameters["eps"] * (net.weights @ y[:, m.coupled_index])
    return np.array([f(y[i], p, [C[i]]) for i in range(y.shape[0])])


def test_numba_rhs_equals_numpy_rhs(model):
    net = build_network(model, random_symmetric(7, 1), {"eps": 8.0, "Iext_e": 4.0})
    y = random_state(7, 2)
    np.testing.assert_allclose(network_rhs(net, y), numpy_network_rhs(net, y), rtol=1e-12, atol=1e-12)


def test_rhs_at_homogeneous_state_is_homogeneous_rhs(model):
    net = build_network(model, random_symmetric(9, 3), {"eps": 12.0, "Iext_e": 5.0})
    x = random_state(1, 4)[0]
    f_hom = rhs_function(homogeneous_system(model))(x, net.parameter_vector)
    out = network_rhs(net, np.tile(x, (9, 1)))
    np.testing.assert_allclose(out, np.tile(f_hom, (9, 1)), rtol=1e-12, atol=1e-12)


def test_structured_jvp_equals_finite_difference_jacobian(model):
    N = 6
    net = build_network(model, random_symmetric(N, 5), {"eps": 10.0, "Iext_e": 3.0})
    y = random_state(N, 6).ravel()
    D = y.size
    h = 1e-6
    J_fd = np.empty((D, D))
    for j in range(D):
        e = np.zeros(D)
        e[j] = h
        J_fd[:, j] = (network_rhs(net, y + e) - network_rhs(net, y - e)) / (2 * h)
    V = np.random.default_rng(7).standard_normal((D, 4))
    jvp = network_jvp(net, y, V)
    np.testing.assert_allclose(jvp, J_fd @ V, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(network_jacobian_dense(net, y), J_fd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(network_jvp(net, y, V[:, 0]), jvp[:, 0], rtol=0, atol=1e-13)


def _mode_union(model, net, x):
    A, B = mode_jacobian_functions(model)
    a, b = A(x, net.parameter_vector), B(x, net.parameter_vector)
    return np.concatenate([np.linalg.eigvals(a + lam * b) for lam in net.spectrum.eigenvalues])


def _match(ev1, ev2, tol):
    ev1, ev2 = list(ev1), list(ev2)
    assert len(ev1) == len(ev2)
    for z in ev1:
        k = int(np.argmin(np.abs(np.asarray(ev2) - z)))
        assert abs(ev2[k] - z) < tol, (z, ev2[k])
        ev2.pop(k)


@pytest.mark.parametrize("symmetric", [True, False])
def test_network_eigenvalues_are_union_of_mode_eigenvalues(model, symmetric):
    N = 8
    params = {"eps": 8.0, "Iext_e": 4.0}
    W = random_symmetric(N, 11) if symmetric else np.random.default_rng(12).random((N, N))
    net = build_network(model, W, params)
    if not symmetric:
        assert not net.spectrum.is_real  # a genuinely complex connectome spectrum
    else:
        assert net.spectrum.is_real
    x = find_homogeneous_equilibrium(model, params)
    J = network_jacobian_dense(net, np.tile(x, (N, 1)))
    _match(np.linalg.eigvals(J), _mode_union(model, net, x), 1e-8)


def test_rk4_convergence_order_and_agreement_with_dopri5(model):
    net = build_network(model, random_symmetric(4, 21), {"eps": 8.0, "Iext_e": 5.0})
    y0 = homogeneous_initial_state(net, model.default_state(), "random", 1e-3, rng=3)
    ref = simulate(net, (0, 200), y0, "dopri5", rtol=1e-12, atol=1e-14, dt=0.02, stride=100)
    fine = simulate(net, (0, 200), y0, "rk4", dt=0.01, stride=200)
    coarse = simulate(net, (0, 200), y0, "rk4", dt=0.02, stride=100)
    loose = simulate(net, (0, 200), y0, "dopri5", rtol=1e-6, atol=1e-9, dt=0.02, stride=100)
    assert ref.success and fine.success and coarse.success and loose.success
    np.testing.assert_allclose(ref.t, fine.t)
    e_fine = np.abs(fine.y - ref.y).max()
    e_coarse = np.abs(coarse.y - ref.y).max()
    assert 12 < e_coarse / e_fine < 20, (e_coarse, e_fine)
    assert e_fine < 1e-7
    assert np.abs(loose.y - ref.y).max() < 1e-3


def test_nonfinite_state_is_reported_with_region_and_variable(model):
    # Delta_e = 0 and r_e = 0: region 3's v_e is a bare QIF, v' = v^2 / tau, which
    # blows up at t ~ tau / v0 = 0.08 ms.
    net = build_network(model, random_symmetric(5, 31), {"eps": 8.0, "Delta_e": 0.0})
    y0 = np.tile(model.default_state(), (5, 1))
    y0[3, 0] = 0.0
    y0[3, 1] = 100.0
    for method in ("rk4", "dopri5"):
        res = simulate(net, (0, 10), y0, method)
        assert not res.success
        assert "region 3" in res.message and "v_e" in res.message and "t =" in res.message, res.message
        assert np.all(np.isfinite(res.y))
        assert res.t[-1] <= 0.1


def test_negative_rate_refused(model):
    net = build_network(model, random_symmetric(4, 41), {"eps": 8.0})
    y0 = np.tile(model.default_state(), (4, 1))
    y0[2, 3] = -0.001
    with pytest.raises(SimulationError, match="r_i.*region 2"):
        simulate(net, (0, 1), y0)
    with pytest.raises(SimulationError, match="negative"):
        homogeneous_initial_state(net, model.default_state(), "mode", amplitude=1.0, mode=2)


@pytest.mark.parametrize("kwargs, name", [
    (dict(method="euler3"), "method"), (dict(dt=-0.1), "dt"), (dict(stride=0), "stride"),
    (dict(dt=0.03), "dt"), (dict(method="dopri5", noise=0.1), "noise"), (dict(noise=[1, 2]), "noise"),
])
def test_bad_arguments_name_the_argument(model, kwargs, name):
    net = build_network(model, np.ones((2, 2)), {})
    with pytest.raises(SimulationError, match=name):
        simulate(net, (0, 1), np.tile(model.default_state(), (2, 1)), **kwargs)
    with pytest.raises(SimulationError, match="t_span"):
        simulate(net, (1, 0), np.tile(model.default_state(), (2, 1)))


def test_noise_is_reproducible_and_to_xarray(model, tmp_path):
    net = build_network(model, random_symmetric(3, 51), {"eps": 8.0, "Iext_e": 5.0})
    y0 = np.tile(model.default_state(), (3, 1))
    a = simulate(net, (0, 20), y0, noise=0.01, rng=np.random.default_rng(5))
    b = simulate(net, (0, 20), y0, noise=0.01, rng=np.random.default_rng(5))
    c = simulate(net, (0, 20), y0, noise=0.01, rng=6)
    det = simulate(net, (0, 20), y0)
    np.testing.assert_array_equal(a.y, b.y)
    assert np.abs(a.y - c.y).max() > 1e-4 and np.abs(a.y - det.y).max() > 1e-4
    ds = to_xarray(a, net)
    assert ds["state"].dims == ("time", "region", "variable")
    assert ds.attrs["parameter_eps"] == 8.0 and ds["time"].attrs["units"] == "ms"
    np.testing.assert_array_equal(ds["v_e"].values, a.y[:, :, 1])
    from bifnet.network import write_simulation
    import xarray as xr
    path = write_simulation(tmp_path / "sim.nc", a, net)
    with xr.open_dataset(path) as back:
        np.testing.assert_allclose(back["state"].values, a.y)


def test_mode_perturbation_follows_eigenvector(model):
    net = build_network(model, random_symmetric(6, 61), {"eps": 8.0})
    x = model.default_state()
    y = homogeneous_initial_state(net, x, "mode", 1e-3, mode=3, direction=np.eye(6)[1])
    phi = net.spectrum.eigenvectors[:, 2]
    dev = y[:, 1] - x[1]
    np.testing.assert_allclose(dev, 1e-3 * phi / np.abs(phi).max(), atol=1e-15)
    np.testing.assert_allclose(net.weights @ phi, net.spectrum.eigenvalues[2] * phi, atol=1e-12)


_CACHE_PROBE = """
import numpy as np
from bifnet.model import load_model
from bifnet.network import build_network, network_rhs, simulate
from bifnet.network._kernels import network_module
m = load_model("wilson_cowan")
net = build_network(m, np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [3.0, 1.0, 0.0]]), {})
y0 = np.tile(m.default_state(), (3, 1)) + 0.01 * np.arange(3)[:, None]
res = simulate(net, (0.0, 5.0), y0, "dopri5")
module = network_module(m)
hits = sum(module.dopri5.stats.cache_hits.values()) + sum(module.rhs.stats.cache_hits.values())
print(hits, repr(res.y[-1].ravel().tolist()))
"""


def test_kernels_compiled_once_are_loaded_from_the_disk_cache(tmp_path):
    """A second process finds the generated module's machine code in the cache and gets the same result."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "BIFNET_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=env, capture_output=True, text=True,
                           check=True).stdout.split(maxsplit=1) for _ in range(2)]
    (hits1, y1), (hits2, y2) = runs
    assert int(hits1) == 0 and int(hits2) == 2
    assert y1 == y2
    assert len(list(tmp_path.glob("_bifnet_kernels_wilson_cowan_*.py"))) == 1


@pytest.mark.parametrize("name", ["ngnmm_ping", "wilson_cowan", "brusselator", "mpr"])
def test_node_loop_rhs_equals_node_kernels(name):
    """The network right-hand side's node loop (parameter factors hoisted out of the loop, state
    indexed directly) equals the per-node kernels ``node_rhs`` (through the tangent field) and the
    numpy right-hand side of the node system, on every shipped model."""
    from bifnet.network._kernels import network_module

    m = load_model(name)
    net = build_network(m, random_symmetric(5, 3), {})
    rng = np.random.default_rng(4)
    y = np.tile(m.default_state(), (5, 1)) * (1 + 0.1 * rng.standard_normal((5, m.n_variables)))
    y = np.abs(y) * np.sign(np.tile(m.default_state(), (5, 1)) + 1e-300)
    fast = network_rhs(net, y).reshape(-1)
    dy = np.empty(y.size)
    network_module(m).tangent(y.reshape(-1), np.zeros((y.size, 1)), net.kernel_args, dy, np.empty((y.size, 1)))
    np.testing.assert_allclose(fast, dy, rtol=1e-13, atol=1e-13 * np.abs(dy).max())
    f = rhs_function(node_system(m))
    G = np.asarray(net.weights)
    p = np.array([net.parameters[k] for k in m.parameter_names])
    s = np.empty(len(m.coupled_indices))
    network_module(m).strengths(p, s)
    C = np.stack([s[k] * (G @ y[:, ci]) for k, ci in enumerate(m.coupled_indices)], axis=1)
    reference = np.array([f(y[i], p, list(C[i])) for i in range(5)]).reshape(-1)
    np.testing.assert_allclose(fast, reference, rtol=1e-12, atol=1e-12 * np.abs(reference).max())
