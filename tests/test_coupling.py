"""Coupling schemes checked against independent answers.

* every scheme: the full-network Jacobian's eigenvalues are the union of the
  mode Jacobians' eigenvalues (and the compiled Jacobian matches finite
  differences of the compiled vector field);
* diffusive coupling: homogeneous states do not depend on the coupling strength;
* the Turing threshold of the Brusselator on a connectome against its closed
  form, as a transverse fold curve and in a simulation that grows the pattern.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import linear_sum_assignment

from bifnet.connectome import Connectome, coupling_operator, load_connectome
from bifnet.continuation.equilibria import find_equilibrium
from bifnet.errors import ModelError, SimulationError
from bifnet.model import load_model, parse_model
from bifnet.network import build_network, network_jacobian_dense, network_jvp, network_rhs, simulate
from bifnet.systems import homogeneous_system
from bifnet.transverse.dispersion import equilibrium_dispersion

FHN_DIFFUSIVE = """
name = "fhn_diffusive"
[variables]
v = -1.0
w = -0.5
[parameters]
a = 0.7
b = 0.8
tau = 12.5
I = 0.2
eps = 0.3
[equations]
v = "v - v**3/3 - w + I + C"
w = "(v + a - b*w)/tau"
[coupling]
scheme = "diffusive"
laplacian = "{laplacian}"
variable = "v"
strength = "eps"
input = "C"
"""

WC_TWO_CHANNELS = """
name = "wc_two_channels"
[variables]
E = 0.1
I = 0.05
[parameters]
c_EE = 16.0
c_IE = 15.0
c_EI = 12.0
c_II = 3.0
P = 0.5
eps = 0.8
g = 0.4
[equations]
E = "(-E + 1/(1 + exp(-1.3*(c_EE*E - c_EI*I + P + CE - 4))))/2.5"
I = "(-I + 1/(1 + exp(-2.0*(c_IE*E - c_II*I + CI - 3.7))))/3.75"
[coupling]
[[coupling.channels]]
variable = "E"
input = "CE"
strength = "eps"
[[coupling.channels]]
variable = "E"
input = "CI"
strength = "g*eps"
"""


def _max_mismatch(a, b):
    """Largest distance in the best one-to-one matching of two eigenvalue sets."""
    a, b = np.asarray(a), np.asarray(b)
    cost = np.abs(a[:, None] - b[None, :])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


def _random_weights(n, seed, *, symmetric, zero_row=False):
    rng = np.random.default_rng(seed)
    W = rng.uniform(0.0, 1.0, (n, n)) * (rng.uniform(size=(n, n)) < 0.6)
    np.fill_diagonal(W, 0.0)
    if symmetric:
        W = W + W.T
    if zero_row:
        W[0] = 0.0
    return W


def _models():
    return {
        "ngnmm_ping": (load_model("ngnmm_ping"), {"eps": 8.0, "Iext_e": 2.0}),
        "wilson_cowan": (load_model("wilson_cowan"), {"eps": 1.5, "Iext_e": 0.4}),
        "brusselator": (load_model("brusselator"), {"b": 2.2, "eps": 0.7}),
        "mpr": (load_model("mpr"), {"eps": 3.0, "I": 0.5}),
        "fhn_combinatorial": (parse_model(FHN_DIFFUSIVE.format(laplacian="combinatorial")), {}),
        "fhn_random_walk": (parse_model(FHN_DIFFUSIVE.format(laplacian="random_walk")), {}),
        "wc_two_channels": (parse_model(WC_TWO_CHANNELS), {}),
    }


CASES = [
    ("ngnmm_ping", "nonsymmetric"), ("wilson_cowan", "symmetric"), ("mpr", "nonsymmetric"),
    ("brusselator", "tvb68"), ("brusselator", "nonsymmetric"), ("brusselator", "zero_row"),
    ("fhn_combinatorial", "nonsymmetric"), ("fhn_random_walk", "symmetric"), ("wc_two_channels", "nonsymmetric"),
]


def _connectome(kind):
    if kind == "tvb68":
        return load_connectome("tvb68")
    W = _random_weights(9, 3, symmetric=kind == "symmetric", zero_row=kind == "zero_row")
    return Connectome(weights=W, labels=tuple(map(str, range(9))), centres=None, name=kind, source="test")


@pytest.mark.parametrize("name, kind", CASES)
def test_network_spectrum_is_union_of_mode_spectra_for_every_scheme(name, kind):
    model, overrides = _models()[name]
    params = model.resolve_parameters(overrides)
    x = find_equilibrium(model, params)
    operator = coupling_operator(_connectome(kind), model.coupling)
    network = build_network(model, operator, params)
    N, n = operator.n_regions, model.n_variables
    full = np.linalg.eigvals(network_jacobian_dense(network, np.tile(x, N)))
    lam = operator.spectrum().eigenvalues
    modes = equilibrium_dispersion(model, params, x, lam).eigenvalues.ravel()
    assert full.size == modes.size == N * n
    scale = max(1.0, float(np.max(np.abs(full))))
    assert _max_mismatch(full, modes) < 1e-8 * scale
    # the uniform mode first: Lambda_u = 1 (P) or 0 (L)
    assert lam[0] == pytest.approx(model.coupling.uniform_eigenvalue, abs=1e-12)


@pytest.mark.parametrize("name", ["brusselator", "wc_two_channels", "fhn_combinatorial", "fhn_random_walk"])
def test_compiled_jacobian_matches_finite_differences(name):
    model, overrides = _models()[name]
    operator = coupling_operator(_connectome("nonsymmetric"), model.coupling)
    network = build_network(model, operator, overrides)
    rng = np.random.default_rng(0)
    y = np.tile(model.default_state(), operator.n_regions) + 0.1 * rng.standard_normal(network.dimension)
    J = network_jacobian_dense(network, y)
    h = 1e-6
    fd = np.column_stack([(network_rhs(network, y + h * e) - network_rhs(network, y - h * e)) / (2 * h)
                          for e in np.eye(network.dimension)])
    assert np.max(np.abs(J - fd)) < 1e-6 * max(1.0, np.max(np.abs(J)))
    V = rng.standard_normal((network.dimension, 3))
    assert np.allclose(network_jvp(network, y, V), J @ V, rtol=1e-12, atol=1e-12)
    # the vector field itself, written out: C = -s L c for diffusive coupling
    W = operator.weights if model.coupling.scheme == "diffusive" else operator.matrix
    Y = y.reshape(operator.n_regions, -1)
    from bifnet.codegen import rhs_function
    from bifnet.systems import node_system

    f = rhs_function(node_system(model))
    strengths = model.strengths(network.parameters)
    G = operator.matrix
    expected = []
    for i in range(operator.n_regions):
        C = [s * (G[i] @ Y[:, k]) for s, k in zip(strengths, model.coupled_indices)]
        expected.append(f(Y[i], network.parameter_vector, C))
    assert np.allclose(network_rhs(network, y).reshape(Y.shape), np.array(expected), rtol=1e-13, atol=1e-13)
    if model.coupling.scheme == "diffusive" and model.coupling.laplacian == "combinatorial":
        L = np.diag(W.sum(axis=1)) - W
        assert np.allclose(G, -L)


def test_diffusive_homogeneous_states_do_not_depend_on_the_coupling_strength():
    model = load_model("brusselator")
    system = homogeneous_system(model)
    assert not set(map(str, set().union(*(e.free_symbols for e in system.rhs)))) & {"eps", "Du", "Dv"}
    states = [find_equilibrium(model, model.resolve_parameters({"b": 2.2, "eps": eps, "Dv": dv}))
              for eps in (0.0, 0.5, 3.0) for dv in (2.0, 8.0)]
    for x in states:
        assert np.allclose(x, [1.5, 2.2 / 1.5], rtol=0, atol=1e-12)
    # and a homogeneous network state stays homogeneous (the Laplacian's rows sum to zero)
    network = build_network(model, load_connectome("tvb68"), {"b": 2.2, "eps": 3.0})
    y = np.tile(states[0], network.n_regions)
    assert np.max(np.abs(network_rhs(network, y))) < 1e-13


def _turing_threshold(mu, a, Du, Dv, eps):
    """det(J - mu eps D) = 0 of the Brusselator at (u, v) = (a, b/a), solved for b."""
    return 1.0 + eps * Du * mu + Du * a * a / Dv + a * a / (eps * Dv * mu)


@pytest.fixture(scope="module")
def turing():
    model = load_model("brusselator")
    operator = coupling_operator(load_connectome("tvb68"), model.coupling)
    mu = operator.spectrum().eigenvalues
    p = model.default_parameters()
    thresholds = _turing_threshold(mu[1:], p["a"], p["Du"], p["Dv"], p["eps"])
    k = int(np.argmin(thresholds)) + 1  # 0-based index of the critical mode
    return model, operator, mu, thresholds, k


def test_turing_threshold_closed_form_against_the_dispersion_relation(turing):
    model, operator, mu, thresholds, k = turing
    b_star = thresholds[k - 1]
    a = model.default_parameters()["a"]
    assert b_star < 1 + a * a  # Turing before the homogeneous Hopf point
    for b, sign in ((b_star - 1e-3, -1), (b_star, 0), (b_star + 1e-3, 1)):
        params = model.resolve_parameters({"b": b})
        rel = equilibrium_dispersion(model, params, np.array([a, b / a]), mu)
        assert int(np.argmax(rel.growth_rate)) == k
        if sign == 0:
            assert abs(rel.growth_rate[k]) < 1e-12
        else:
            assert np.sign(rel.growth_rate[k]) == sign
        assert rel.frequency_hz[k] == 0.0  # a real eigenvalue: a stationary pattern


def test_turing_threshold_as_a_transverse_fold_curve(turing):
    from bifnet.continuation.settings import ContinuationSettings
    from bifnet.transverse.curves import distinct_modes, trace_transverse_curves

    model, operator, mu, thresholds, k = turing
    p = model.default_parameters()
    modes = [g for g in distinct_modes(mu) if g.mode in (1, k + 1)]
    settings = ContinuationSettings(bounds={"b": (1.5, 3.0), "eps": (0.5, 2.0)}, ds=0.01, ds_max=0.05)
    curves, crossings, _ = trace_transverse_curves(model, model.resolve_parameters({"b": 1.5}), modes,
                                                   ("b", "eps"), [1.0], settings)
    (curve,) = [c for c in curves if c.mode == k + 1]
    assert curve.locus_of.value == "LP" and len(curve) > 20
    closed = _turing_threshold(float(curve.Lambda), p["a"], p["Du"], p["Dv"], curve["eps"])
    assert np.max(np.abs(curve["b"] - closed)) < 1e-8
    order = np.argsort(curve["eps"])
    assert np.interp(1.0, curve["eps"][order], curve["b"][order]) == pytest.approx(thresholds[k - 1], abs=1e-6)


def test_turing_pattern_grows_in_a_network_simulation(turing):
    model, operator, mu, thresholds, k = turing
    a = model.default_parameters()["a"]
    b = thresholds[k - 1] + 0.02
    assert np.sort(thresholds)[1] > b  # only the critical mode is unstable
    network = build_network(model, operator, {"b": b})
    x = np.array([a, b / a])
    rng = np.random.default_rng(1)
    y0 = x + 1e-6 * rng.standard_normal((operator.n_regions, 2))
    result = simulate(network, (0.0, 2000.0), y0, "rk4", dt=0.02, stride=500)
    assert result.success
    phi = operator.spectrum().eigenvectors[:, k]
    u = result.y[:, :, 0] - a

    def correlation(d):
        return abs(d @ phi) / (np.linalg.norm(d) * np.linalg.norm(phi))

    # linear growth: validate_mode projects on the mode and on J(mu)'s growing eigenvector
    from bifnet.analysis.validation import validate_mode

    check = validate_mode(network, x, amplitude=1e-7, dt=0.02)
    assert check["mode"] == k + 1
    assert check["relative_error_growth"] < 1e-4
    assert np.isnan(check["measured_frequency_hz"]) and check["predicted_frequency_hz"] == 0.0
    assert check["pattern_correlation"] > 0.9999
    late = np.searchsorted(result.t, 500.0)
    assert correlation(u[late]) > 0.9999
    # it saturates into a stationary pattern close to the critical eigenvector
    final = u[-1]
    assert np.max(np.abs(network_rhs(network, result.y[-1]))) < 1e-8
    assert np.ptp(final) > 0.1 and correlation(final) > 0.99
    # below the threshold the same perturbation decays
    below = build_network(model, operator, {"b": thresholds[k - 1] - 0.02})
    x_below = np.array([a, (thresholds[k - 1] - 0.02) / a])
    res = simulate(below, (0.0, 1000.0), x_below + (y0 - x), "rk4", dt=0.02, stride=500)
    assert np.max(np.abs(res.y[-1] - x_below)) < np.max(np.abs(y0 - x))


def test_floquet_dispersion_of_a_diffusive_cycle_against_direct_integration():
    from bifnet.codegen import mode_jacobian_functions, rhs_function
    from bifnet.transverse.floquet import find_cycle, floquet_dispersion

    model = load_model("brusselator")
    params = model.resolve_parameters({"b": 3.6, "a": 1.5})
    cycle = find_cycle(model, params)
    lams = np.array([0.0, 0.05, 0.39])
    fd = floquet_dispersion(model, cycle, lams)
    assert np.min(np.abs(fd.multipliers[0] - 1.0)) < 1e-8  # the trivial multiplier sits in mode 1 (mu = 0)
    f = rhs_function(homogeneous_system(model))
    A, B = mode_jacobian_functions(model)
    p = np.array([params[k] for k in model.parameter_names])
    n = model.n_variables
    for lam, mult in zip(lams, fd.multipliers):
        def joint(t, z):
            x, Phi = z[:n], z[n:].reshape(n, n)
            return np.concatenate([f(x, p), ((A(x, p) + lam * B(x, p)) @ Phi).ravel()])

        sol = solve_ivp(joint, (0, cycle.period), np.concatenate([cycle.x0, np.eye(n).ravel()]),
                        method="DOP853", rtol=1e-12, atol=1e-12)
        direct = np.linalg.eigvals(sol.y[n:, -1].reshape(n, n))
        assert _max_mismatch(direct, mult) < 1e-6 * max(1.0, np.max(np.abs(direct)))


def test_lyapunov_fused_stepper_with_two_diffusive_channels_matches_the_generic_loop():
    from bifnet.analysis.lyapunov import _lyapunov_spectrum_reference, lyapunov_spectrum

    model = load_model("brusselator")
    W = _random_weights(6, 5, symmetric=True)
    network = build_network(model, W, {"b": 3.6})
    y0 = np.tile([1.5, 2.4], 6) + 1e-3 * np.random.default_rng(2).standard_normal(12)
    kwargs = dict(t_max=40.0, transient=5.0, dt=0.01, y0=y0, rng=0)
    fused = lyapunov_spectrum(network, 4, **kwargs)
    generic = _lyapunov_spectrum_reference(network, 4, **kwargs)
    assert np.allclose(fused, generic, rtol=0, atol=1e-9)


def test_coupling_declarations_and_their_errors():
    single = load_model("wilson_cowan").coupling
    assert (single.scheme, single.variable, single.strength, single.input) == ("additive", "E", "eps", "C")
    two = load_model("brusselator").coupling
    assert two.scheme == "diffusive" and [c.strength for c in two.channels] == ["eps*Du", "eps*Dv"]
    assert load_model("brusselator").strengths({"eps": 2.0, "Du": 1.0, "Dv": 8.0, "a": 1, "b": 1}) == [2.0, 16.0]
    base = FHN_DIFFUSIVE.format(laplacian="combinatorial")
    bad = {
        base.replace('scheme = "diffusive"', 'scheme = "laplace"'): "scheme must be one of",
        base.replace('strength = "eps"', 'strength = "eps*q"'): "unknown symbol",
        base.replace('input = "C"', 'input = "a"'): "clashes",
        base + '[[coupling.channels]]\nvariable = "v"\ninput = "C2"\nstrength = "eps"\n': "not both",
        base.replace('"v - v**3/3 - w + I + C"', '"v - v^3/3 - w + I + C"'): "'**'",
        base.replace('"v - v**3/3 - w + I + C"', '"v - (v**3/3 - w + I + C"'): "column 5 is never closed",
        base.replace('"v - v**3/3 - w + I + C"', '"v - v**3/3 - ww + I + C"'): "'ww' (column 14)",
        base.replace('variable = "v"\nstrength', 'variable = "x"\nstrength'): "variable 'x' is not a declared",
    }
    for text, words in bad.items():
        with pytest.raises(ModelError) as info:
            parse_model(text)
        assert words in str(info.value), (words, str(info.value))
    assert "equation for 'v'" in _error(base.replace("v**3/3", "v^3/3"))


def _error(text):
    try:
        parse_model(text)
    except ModelError as error:
        return str(error)
    raise AssertionError("no error")


def test_a_model_without_coupling_continues_and_network_steps_say_why_not():
    from bifnet.continuation.equilibria import continue_equilibria
    from bifnet.continuation.settings import ContinuationSettings

    text = """
[variables]
x = 1.0
[parameters]
mu = 1.0
[equations]
x = "mu - x**2"
"""
    model = parse_model(text, name="fold_alone")
    assert model.coupling is None and model.observe == "x"
    branch = continue_equilibria(model, {"mu": 1.0}, "mu", settings=ContinuationSettings(bounds={"mu": (-1, 2)}))
    (lp,) = branch.points_of_kind("LP")
    assert lp.parameters["mu"] == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ModelError, match="has no \\[coupling\\]"):
        build_network(model, np.ones((3, 3)))


def test_diffusive_networks_accept_zero_rows_and_refuse_a_mismatched_operator():
    model = load_model("brusselator")
    W = _random_weights(5, 1, symmetric=False, zero_row=True)
    network = build_network(model, W, {"b": 2.0})
    assert np.allclose(network.weights.sum(axis=1), 0.0)
    assert network.spectrum.eigenvalues[0] == 0.0
    additive = coupling_operator(load_connectome("tvb68"), "additive")
    with pytest.raises(SimulationError, match="additive operator"):
        build_network(model, additive)
