"""Codimension-two points on two-parameter loci of full-network pattern points (issue 12).

Tiny networks (two nodes) of normal-form nodes where the point is known in closed form:

* **GH**: Bautin nodes ``z' = (mu - a + i w) z + (a |z|^2 - |z|^4) z``, coupled additively through
  ``x`` (``eps``). The origin has a Hopf point of the antisymmetric mode (``Lambda = -1``) on the line
  ``mu - a = eps / 2``; the only cubic term is ``a |z|^2 z`` (no quadratic terms), so ``l1`` is ``a`` times a
  constant along the line: GH at ``a = 0``, ``mu = eps / 2``, ``omega = sqrt(w^2 - eps^2 / 4)``.
* **CP**: ``x' = mu + a x - x^3``, diffusive coupling: the fold locus of the uniform state is
  ``a = 3 x^2``, ``mu = -2 x^3``, a cusp at ``mu = a = x = 0``.
* **BT**: ``x' = y``, ``y' = mu + a y + x^2 + x y``, diffusive coupling into ``y``: the fold locus is
  ``mu = 0``, ``x = y = 0`` for every ``a``, with a second zero eigenvalue (trace ``a``) at ``a = 0``; the
  Hopf locus of the uniform state is ``mu = -a^2``, ``x = -a`` (``a > 0``), ``omega^2 = 2 a``, ending at that BT.
"""

from __future__ import annotations

import numpy as np
import pytest

from bifnet.connectome import Connectome, coupling_operator
from bifnet.continuation.branch import SpecialKind
from bifnet.model import load_model

BAUTIN = """
name = "bautin_net"
[variables]
x = { initial = 0.0 }
y = { initial = 0.0 }
[parameters]
mu = { value = 0.0 }
a = { value = 0.5 }
w = { value = 1.0 }
eps = { value = 0.5 }
[equations]
x = "(mu - a)*x - w*y + (CUBIC*(x**2 + y**2) - (x**2 + y**2)**2)*x + C"
y = "w*x + (mu - a)*y + (CUBIC*(x**2 + y**2) - (x**2 + y**2)**2)*y"
[coupling]
variable = "x"
strength = "eps"
input = "C"
"""

CUSP = """
name = "cusp_net"
[variables]
x = { initial = 0.0 }
[parameters]
mu = { value = 0.0 }
a = { value = 0.75 }
eps = { value = 1.0 }
[equations]
x = "mu + a*x - x**3 + C"
[coupling]
scheme = "diffusive"
variable = "x"
strength = "eps"
input = "C"
"""

BT = """
name = "bt_net"
[variables]
x = { initial = 0.0 }
y = { initial = 0.0 }
[parameters]
mu = { value = 0.0 }
a = { value = 0.5 }
eps = { value = 1.0 }
[equations]
x = "y"
y = "mu + a*y + x**2 + x*y + C"
[coupling]
scheme = "diffusive"
variable = "x"
strength = "eps"
input = "C"
"""


def _network(tmp_path, text, name):
    from bifnet.patterns.verify import NetworkDerivatives

    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    model = load_model(path)
    con = Connectome(weights=np.array([[0.0, 1.0], [1.0, 0.0]]), labels=("0", "1"), centres=None, name="pair",
                     source="test")
    operator = coupling_operator(con, model.coupling)
    return model, NetworkDerivatives(model, operator, model.resolve_parameters({}))


def _hopf_locus(tmp_path, cubic, bounds, a0=0.5):
    from bifnet.patterns.loci import continue_pattern_locus
    from bifnet.patterns.verify import solve_pattern_hopf

    model, D = _network(tmp_path, BAUTIN.replace("CUBIC", cubic), "bautin_net")
    eps = D.parameters["eps"]
    # the antisymmetric mode's Hopf point of the origin, from a guess off in mu
    start = solve_pattern_hopf(D, np.array([0.0, 0.0, 0.0, 0.0]), {"a": a0, "mu": a0 + eps / 2 + 0.01}, "mu")
    assert start.ok and start.value == pytest.approx(a0 + eps / 2, abs=1e-12)
    return continue_pattern_locus(D, start, SpecialKind.HB, ("mu", "a"), {"mu": start.value, "a": a0}, ds=0.05,
                                  ds_max=0.1, max_steps=40, bounds={"a": bounds}, variables=model.variable_names)


def test_generalised_hopf_point_of_a_bautin_network_is_at_the_closed_form(tmp_path):
    locus = _hopf_locus(tmp_path, "a", (-0.6, 0.6))
    l1 = locus.engine["l1"]
    # l1 = a / omega along the locus: with q = (q_n, -q_n) / sqrt 2, <p, C(q, q, qb)> = 4 a / 2 for the
    # rotation-invariant cubic a |z|^2 z (no quadratic terms), and l1 = Re <p, C> / (2 omega)
    eps, w = 0.5, 1.0
    omega = np.sqrt(w ** 2 - eps ** 2 / 4)
    assert np.max(np.abs(locus["omega"] - omega)) < 1e-12
    assert np.max(np.abs(l1 - locus["a"] / omega)) < 1e-12
    gh = [p for p in locus.special_points if p.kind is SpecialKind.GH]
    assert len(gh) == 1, locus.special_points
    gh = gh[0]
    assert gh.located and gh.residual < 1e-9, gh
    assert abs(gh.parameters["a"]) < 1e-12
    assert gh.parameters["mu"] == pytest.approx(eps / 2, abs=1e-12)
    assert gh.period == pytest.approx(2 * np.pi / np.sqrt(w ** 2 - eps ** 2 / 4), rel=1e-12)
    assert gh.verification.startswith("newton") and gh.details["quantity_at_rows"][0] * \
        gh.details["quantity_at_rows"][1] < 0
    assert not [p for p in locus.special_points if p.kind in (SpecialKind.ZH, SpecialKind.CP, SpecialKind.BT)]


@pytest.mark.parametrize("cubic, bounds", [("a", (0.1, 0.9)),        # l1 < 0 nowhere on the stretch
                                           ("a**2", (-0.6, 0.6)),    # l1 touches 0 at a = 0 without a sign change
                                           ("(a**2 + 0.01)", (-0.6, 0.6))])
def test_no_generalised_hopf_point_where_l1_keeps_its_sign(tmp_path, cubic, bounds):
    locus = _hopf_locus(tmp_path, cubic, bounds)
    assert locus["a"].min() < bounds[0] + 0.1 and locus["a"].max() > bounds[1] - 0.1
    signs = np.sign(locus.engine["l1"])
    assert len(set(signs[signs != 0])) == 1
    assert not [p for p in locus.special_points if p.kind is SpecialKind.GH]


def _fold_locus(tmp_path, text, name, X, values, bounds):
    from bifnet.patterns.loci import continue_pattern_locus
    from bifnet.patterns.verify import solve_pattern_fold

    model, D = _network(tmp_path, text, name)
    start = solve_pattern_fold(D, np.asarray(X, dtype=float), values, "mu")
    assert start.ok, start.reason
    locus = continue_pattern_locus(D, start, SpecialKind.LP, ("mu", "a"), {"mu": start.value, "a": values["a"]},
                                   ds=0.05, ds_max=0.1, max_steps=60, bounds={"a": bounds},
                                   variables=model.variable_names)
    return start, locus


def test_cusp_on_the_fold_locus_of_a_cubic_network(tmp_path):
    start, locus = _fold_locus(tmp_path, CUSP, "cusp_net", [0.49, 0.49], {"mu": -0.24, "a": 0.75}, (-1.0, 1.0))
    assert start.value == pytest.approx(-0.25, abs=1e-12)
    # the locus is a = 3 x^2, mu = -2 x^3 and passes the cusp
    x = locus["x"]
    assert np.max(np.abs(locus["a"] - 3 * x ** 2)) < 1e-12 and np.max(np.abs(locus["mu"] + 2 * x ** 3)) < 1e-12
    assert x.min() < -0.3 and x.max() > 0.3
    cp = [p for p in locus.special_points if p.kind is SpecialKind.CP]
    assert len(cp) == 1
    cp = cp[0]
    assert cp.located and cp.residual < 1e-9, cp
    assert abs(cp.state[0]) < 1e-12 and abs(cp.parameters["a"]) < 1e-12 and abs(cp.parameters["mu"]) < 1e-12
    assert not [p for p in locus.special_points if p.kind in (SpecialKind.BT, SpecialKind.ZH, SpecialKind.GH)]


def test_bogdanov_takens_point_on_the_fold_locus(tmp_path):
    start, locus = _fold_locus(tmp_path, BT, "bt_net", [0.01, 0.0, 0.01, 0.0], {"mu": -1e-4, "a": 0.5},
                               (-0.5, 0.8))
    assert abs(start.value) < 1e-12
    assert np.max(np.abs(locus["mu"])) < 1e-12 and locus["a"].min() < -0.4
    bt = [p for p in locus.special_points if p.kind is SpecialKind.BT]
    assert len(bt) == 1
    bt = bt[0]
    assert bt.located and bt.residual < 1e-9, bt
    assert abs(bt.parameters["a"]) < 1e-12 and abs(bt.parameters["mu"]) < 1e-12
    # a double zero eigenvalue of the uniform mode (a Jordan block: only to sqrt(machine precision))
    assert np.sort(np.abs(np.asarray(bt.eigenvalues)))[1] < 1e-6
    assert not [p for p in locus.special_points if p.kind is SpecialKind.CP]


def test_bogdanov_takens_point_agrees_with_its_defining_system(tmp_path):
    """The BT found by Brent's method on w.v along the fold locus is a solution of the Bogdanov-Takens
    system F = 0, J v0 = 0, J v1 = v0 solved on its own from a point of the locus away from it."""
    from bifnet.patterns.loci_points import solve_pattern_bogdanov_takens

    _, D = _network(tmp_path, BT, "bt_net")
    result = solve_pattern_bogdanov_takens(D, np.array([0.02, 0.0, 0.02, 0.0]), {"mu": -1e-3, "a": 0.1},
                                           ("mu", "a"))
    assert result["ok"] and result["residual"] < 1e-12, result["reason"]
    assert abs(result["values"]["mu"]) < 1e-12 and abs(result["values"]["a"]) < 1e-12
    assert np.max(np.abs(result["X"])) < 1e-12


def test_bogdanov_takens_point_at_the_end_of_a_hopf_locus(tmp_path):
    """The Hopf locus from a = 0.5 (mu = -0.25, omega = 1) towards a = 0: omega = sqrt(2 a) falls to zero and
    the locus ends there; the BT point is solved from the last row at mu = a = 0, x = 0."""
    from bifnet.patterns.loci import continue_pattern_locus
    from bifnet.patterns.verify import solve_pattern_hopf

    model, D = _network(tmp_path, BT, "bt_net")
    start = solve_pattern_hopf(D, np.array([-0.5, 0.0, -0.5, 0.0]), {"a": 0.5, "mu": -0.26}, "mu")
    assert start.ok and start.value == pytest.approx(-0.25, abs=1e-12) and start.omega == pytest.approx(1.0)
    locus = continue_pattern_locus(D, start, SpecialKind.HB, ("mu", "a"), {"mu": start.value, "a": 0.5}, ds=0.05,
                                   ds_max=0.1, max_steps=30, bounds={"a": (-0.5, 0.8)},
                                   variables=model.variable_names)
    assert np.max(np.abs(locus["mu"] + locus["a"] ** 2)) < 1e-12
    assert np.max(np.abs(locus["omega"] ** 2 - 2 * locus["a"])) < 1e-12
    bt = [p for p in locus.special_points if p.kind is SpecialKind.BT]
    assert len(bt) == 1, locus.special_points
    bt = bt[0]
    assert bt.located and bt.residual < 1e-9, bt
    assert abs(bt.parameters["a"]) < 1e-12 and abs(bt.parameters["mu"]) < 1e-12 and abs(bt.state[0]) < 1e-12
    assert bt.index == 0 and locus["omega"][0] < 0.25
    # and no BT where omega stays away from zero: the stretch of the same locus with a in [0.3, 0.8]
    away = continue_pattern_locus(D, start, SpecialKind.HB, ("mu", "a"), {"mu": start.value, "a": 0.5}, ds=0.05,
                                  ds_max=0.1, max_steps=30, bounds={"a": (0.3, 0.8)}, variables=model.variable_names)
    assert not [p for p in away.special_points if p.kind is SpecialKind.BT]
