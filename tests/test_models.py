"""Every model in models/: parses, exact Jacobians match finite differences,
equilibria have zero residual, the mode Jacobian reduces to the homogeneous one."""

import numpy as np
import pytest

from bifnet.codegen import jacobian_function, mode_jacobian_functions, rhs_function
from bifnet.continuation.equilibria import find_equilibrium
from bifnet.errors import ModelError
from bifnet.model import available_models, load_model, parse_model
from bifnet.systems import augmented_system, homogeneous_system, node_system

MODELS = available_models()


def test_shipped_models():
    assert {"ngnmm_ping", "wilson_cowan", "brusselator", "mpr"} <= set(MODELS)


def _point(model, rng):
    x = model.default_state() + 0.05 * rng.standard_normal(model.n_variables)
    names = sorted({str(s) for e in model.strength_expressions for s in e.free_symbols})
    p = model.resolve_parameters({name: 3.0 for name in names})
    return x, np.array([p[n] for n in model.parameter_names])


@pytest.mark.parametrize("name", MODELS)
def test_jacobian_matches_finite_differences(name):
    model = load_model(name)
    system = homogeneous_system(model)
    f, J = rhs_function(system), jacobian_function(system)
    x, p = _point(model, np.random.default_rng(1))
    h = 1e-6
    fd = np.column_stack([(f(x + h * e, p) - f(x - h * e, p)) / (2 * h) for e in np.eye(len(x))])
    np.testing.assert_allclose(J(x, p), fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", MODELS)
def test_mode_jacobian_reduces_to_homogeneous_and_node(name):
    model = load_model(name)
    x, p = _point(model, np.random.default_rng(2))
    A, B = mode_jacobian_functions(model)
    J_hom = jacobian_function(homogeneous_system(model))(x, p)
    u = model.coupling.uniform_eigenvalue  # 1 for P, 0 for L
    np.testing.assert_allclose(A(x, p) + u * B(x, p), J_hom, rtol=1e-12, atol=1e-12)
    # A is the node Jacobian at the homogeneous input (s_k c_k(x) additive, 0 diffusive)
    node = node_system(model)
    strengths = model.strengths(dict(zip(model.parameter_names, p)))
    C = [model.coupling.mode_sign * u * s * x[k] for s, k in zip(strengths, model.coupled_indices)]
    np.testing.assert_allclose(A(x, p), jacobian_function(node)(x, p, C), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_equilibrium_has_zero_residual(name):
    model = load_model(name)
    p = model.resolve_parameters()
    x = find_equilibrium(model, p)
    f = rhs_function(homogeneous_system(model))
    assert np.max(np.abs(f(x, np.array([p[n] for n in model.parameter_names])))) < 1e-10


@pytest.mark.parametrize("name", MODELS)
def test_augmented_system_is_block_triangular_on_the_diagonal(name):
    model = load_model(name)
    aug = augmented_system(model)
    x, p = _point(model, np.random.default_rng(3))
    Lam = -0.4
    J = jacobian_function(aug)(np.concatenate([x, x]), np.append(p, Lam))
    n = model.n_variables
    A, B = mode_jacobian_functions(model)
    np.testing.assert_allclose(J[:n, n:], 0.0, atol=1e-14)
    np.testing.assert_allclose(J[n:, n:], A(x, p) + Lam * B(x, p), rtol=1e-12, atol=1e-12)
    u = model.coupling.uniform_eigenvalue
    np.testing.assert_allclose(J[:n, :n], A(x, p) + u * B(x, p), rtol=1e-12, atol=1e-12)


def test_ngnmm_equations_are_the_reference_ones(ping):
    """Check the parsed right-hand side against the equations written out by hand."""
    p = ping.resolve_parameters({"eps": 7.0, "Iext_e": 3.0, "Iext_i": 0.5})
    x = np.array([0.05, -1.2, 0.04, 0.03, -0.8, 0.02])
    re, ve, se, ri, vi, si = x
    te, ti = p["tau_e"], p["tau_i"]
    C = p["eps"] * se
    expected = [
        (p["Delta_e"] / (np.pi * te) + 2 * re * ve) / te,
        (ve**2 + p["nu_e"] - (np.pi * te * re) ** 2 + p["Iext_e"] + te * p["J_ee"] * se - te * p["J_ei"] * si + te * C) / te,
        (-se + re) / p["tau_se"],
        (p["Delta_i"] / (np.pi * ti) + 2 * ri * vi) / ti,
        (vi**2 + p["nu_i"] - (np.pi * ti * ri) ** 2 + p["Iext_i"] + ti * p["J_ie"] * se - ti * p["J_ii"] * si + ti * C) / ti,
        (-si + ri) / p["tau_si"],
    ]
    got = rhs_function(homogeneous_system(ping))(x, np.array([p[n] for n in ping.parameter_names]))
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)


BASE = """
[variables]
x = {{ initial = 1.0 }}
[parameters]
a = {{ value = 1.0 }}
eps = 0.0
[equations]
{equations}
[coupling]
variable = "x"
strength = "eps"
input = "C"
"""


@pytest.mark.parametrize("equations, words", [
    ('x = "a*x + C + b"', ["spec.toml", "'x'", "unknown symbol", "b"]),
    ('y = "a + C"', ["spec.toml", "missing equation for x"]),
    ('x = "a*x + C +"', ["spec.toml", "cannot parse", "'x'"]),
    ('x = "a*x + foo(x) + C"', ["spec.toml", "unknown function", "foo"]),
])
def test_spec_errors_name_file_and_item(equations, words):
    with pytest.raises(ModelError) as info:
        parse_model(BASE.format(equations=equations), source="spec.toml")
    for word in words:
        assert word in str(info.value)


def test_bad_toml_and_unknown_model(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[variables\nx = 1")
    with pytest.raises(ModelError, match="bad.toml: not valid TOML"):
        load_model(bad)
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        load_model("nope")
    with pytest.raises(ModelError, match="has no parameter 'epsilon'"):
        load_model("ngnmm_ping").resolve_parameters({"epsilon": 1})
