"""Transverse stability checked independently: the full network Jacobian against the
mode Jacobians, transverse curves against brentq roots of the growth rate."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from bifnet.connectome import load_connectome
from bifnet.continuation.equilibria import find_equilibrium
from bifnet.continuation.settings import ContinuationSettings
from bifnet.network import build_network
from bifnet.network.core import network_jacobian_dense
from bifnet.transverse.curves import distinct_modes, trace_transverse_curves
from bifnet.transverse.dispersion import equilibrium_dispersion


def _match(a, b):
    """Largest distance from each eigenvalue of a to its nearest unused one in b."""
    b = list(b)
    worst = 0.0
    for z in sorted(a, key=lambda z: (z.real, z.imag)):
        k = int(np.argmin([abs(z - w) for w in b]))
        worst = max(worst, abs(z - b.pop(k)))
    return worst


@pytest.mark.parametrize("name", ["tvb68", "tvb96"])
def test_network_spectrum_is_union_of_mode_spectra(ping, name):
    connectome = load_connectome(name).row_normalised()
    params = ping.resolve_parameters({"eps": 8.0, "Iext_e": 2.0})
    x = find_equilibrium(ping, params)
    network = build_network(ping, connectome, params)
    N, n = connectome.n_regions, ping.n_variables
    full = np.linalg.eigvals(network_jacobian_dense(network, np.tile(x, N)))
    lam = connectome.spectrum().eigenvalues
    assert np.iscomplexobj(lam) == (name == "tvb96")
    modes = equilibrium_dispersion(ping, params, x, lam).eigenvalues.ravel()
    assert full.size == modes.size == N * n
    assert _match(full, modes) < 1e-8


@pytest.fixture(scope="module")
def curves_tvb68(ping):
    spectrum = load_connectome("tvb68").row_normalised().spectrum()
    modes = [m for m in distinct_modes(spectrum.eigenvalues) if m.mode in (2, 68)]
    params = ping.resolve_parameters({"Iext_e": 0.0})
    settings = ContinuationSettings(bounds={"Iext_e": (0.0, 16.0), "eps": (0.0, 30.0)}, ds=0.05, ds_max=0.25)
    curves, crossings, _ = trace_transverse_curves(ping, params, modes, ("Iext_e", "eps"), [8.0], settings)
    return curves, crossings, params


def _growth(ping, params, Lambda, I, eps, guess):
    p = {**params, "Iext_e": I, "eps": eps}
    x = find_equilibrium(ping, p, guess, settle_time=0.0)
    return equilibrium_dispersion(ping, p, x, [Lambda]).growth_rate[0]


def test_transverse_curves_match_growth_rate_roots(ping, curves_tvb68):
    curves, crossings, params = curves_tvb68
    by_mode = {c.mode for c in curves}
    assert {2, 68} <= by_mode
    # every sign change found on the level lies on a continued curve of its mode
    assert {c.Lambda for c in crossings} == {float(np.real(c.Lambda)) for c in curves}
    for curve in curves:
        rows = np.linspace(5, len(curve) - 6, 4).astype(int)
        for k in rows:
            I, eps = curve["Iext_e"][k], curve["eps"][k]
            guess = np.array([curve[v][k] for v in ping.variable_names])
            lam = float(np.real(curve.Lambda))
            root = brentq(lambda i: _growth(ping, params, lam, i, eps, guess), I - 0.02, I + 0.02, xtol=1e-12)
            assert abs(root - I) < 1e-4, (curve.name, eps, root, I)


def test_mode_68_curve_values_of_the_engine_notes(ping, curves_tvb68):
    """Lambda = -0.730518, eps = 8: 4.7670668 (brentq on eigenvalues)."""
    curves, _, params = curves_tvb68
    (c68,) = [c for c in curves if c.mode == 68]
    order = np.argsort(c68["eps"])
    assert np.interp(8.0, c68["eps"][order], c68["Iext_e"][order]) == pytest.approx(4.7670668, abs=1e-4)
    # its frequency is that of the critical pair of J(Lambda)
    k = int(np.argmin(np.abs(c68["eps"] - 8.0)))
    x = np.array([c68[v][k] for v in ping.variable_names])
    p = {**params, "Iext_e": c68["Iext_e"][k], "eps": c68["eps"][k]}
    rel = equilibrium_dispersion(ping, p, x, [c68.Lambda])
    assert abs(rel.growth_rate[0]) < 1e-7
    assert 2 * np.pi / c68["period"][k] == pytest.approx(2 * np.pi * rel.frequency_hz[0] / 1000.0, rel=1e-8)


def test_transverse_step_outputs(tmp_path):
    from bifnet.runs import execute_run_file

    run = tmp_path / "t.toml"
    run.write_text("""
model = "ngnmm_ping"
connectome = "tvb68"
[[steps]]
name = "disp"
kind = "dispersion"
parameters = { Iext_e = 4.9, eps = 8.0 }
solution = "EP"
[[steps]]
name = "tr"
kind = "transverse"
free = ["Iext_e", "eps"]
range = { Iext_e = [0.0, 16.0], eps = [0.0, 30.0] }
modes = [68]
levels = [8.0]
cycles = false
settings = { ds = 0.05, ds_max = 0.25 }
""")
    out = execute_run_file(run, out=tmp_path / "out")
    disp = pd.read_csv(out / "dispersion.csv")
    assert list(disp["mode"]) == list(range(1, 69))
    assert disp["Lambda"].iloc[0] == pytest.approx(1.0)
    assert np.all(np.diff(disp["Lambda"]) <= 1e-12)
    # at Iext_e = 4.9 > 4.767 mode 68 grows, and the homogeneous state itself is unstable there
    assert disp["growth_rate"].iloc[-1] > 0
    curves = pd.read_csv(out / "transverse_curves.csv")
    assert set(curves["mode"]) == {68} and set(curves["kind"]) == {"HB"}
    assert {"Lambda", "Lambda_imag", "curve", "point", "Iext_e", "eps", "frequency_hz"} <= set(curves.columns)
    import xarray as xr

    ds = xr.open_dataset(out / "instability_map_tr.nc")
    assert ds["n_unstable_modes"].shape == (1, 201)
    ds.close()


def test_complex_mode_curve_matches_growth_rate_roots(ping):
    """tvb96 has complex eigenvalues: their curves come from the realified augmented system."""
    spectrum = load_connectome("tvb96").row_normalised().spectrum()
    pair = [m for m in distinct_modes(spectrum.eigenvalues) if not m.is_real][:2]
    assert abs(complex(pair[0].Lambda) - np.conj(complex(pair[1].Lambda))) < 1e-12
    params = ping.resolve_parameters({"Iext_e": 0.0})
    settings = ContinuationSettings(bounds={"Iext_e": (0.0, 16.0), "eps": (0.0, 30.0)}, ds=0.05, ds_max=0.25)
    curves, crossings, _ = trace_transverse_curves(ping, params, pair, ("Iext_e", "eps"), [8.0], settings)
    assert len(crossings) == 2 and len(curves) == 1  # the conjugate shares the curve
    (curve,) = curves
    lam = complex(curve.Lambda)
    assert abs(lam.imag) > 1e-3
    for k in np.linspace(5, len(curve) - 6, 3).astype(int):
        I, eps = curve["Iext_e"][k], curve["eps"][k]
        guess = np.array([curve[v][k] for v in ping.variable_names])
        root = brentq(lambda i: _growth(ping, params, lam, i, eps, guess), I - 0.02, I + 0.02, xtol=1e-12)
        assert abs(root - I) < 1e-4


@pytest.mark.slow
def test_cycle_period_doubling_curve_has_multiplier_minus_one(ping, tmp_path):
    """A transverse PD curve of cycles (mode 68, tvb68): along it the mode's Floquet
    multiplier is -1, computed independently by shooting + variational integration."""
    from bifnet.errors import BifnetError
    from bifnet.runs import execute_run_file
    from bifnet.transverse.floquet import find_cycle, floquet_dispersion

    run = tmp_path / "lc.toml"
    run.write_text("""
model = "ngnmm_ping"
connectome = "tvb68"
[settings]
ds = 0.05
ds_max = 0.25
[[steps]]
name = "tr"
kind = "transverse"
free = ["Iext_e", "eps"]
range = { Iext_e = [0.0, 16.0], eps = [0.0, 30.0] }
modes = [68]
levels = [10.0]
cycle_curves = [68]
""")
    out = execute_run_file(run, out=tmp_path / "out")
    curves = pd.read_csv(out / "transverse_curves.csv")
    pd_curve = curves[curves["kind"] == "PD"]
    assert len(pd_curve) > 20
    lam = float(pd_curve["Lambda"].iloc[0])
    checked = 0
    for _, row in pd_curve.iloc[::8].iterrows():
        params = ping.resolve_parameters({"Iext_e": row["Iext_e"], "eps": row["eps"]})
        try:
            cycle = find_cycle(ping, params)
        except BifnetError:
            continue  # the homogeneous cycle does not attract from the default state here
        mu = floquet_dispersion(ping, cycle, [lam]).multipliers[0]
        assert np.min(np.abs(mu + 1)) < 1e-3
        checked += 1
    assert checked >= 2


def test_grid_map_equilibria_match_direct_eigenvalues(ping, tmp_path):
    """The map on a grid (key grid): at every grid point with a stable equilibrium, the count and
    the largest growth rate equal those of eigenvalues of J(Lambda) at an equilibrium found
    independently (Newton after integration); where that equilibrium is unstable and cycles are
    off, the map says none; the grid's coordinates are the requested steps."""
    import xarray as xr

    from bifnet.errors import ContinuationError
    from bifnet.runs import execute_run_file
    from bifnet.transverse.dispersion import settle

    run = tmp_path / "g.toml"
    run.write_text("""
model = "ngnmm_ping"
connectome = "tvb68"
[[steps]]
name = "tr"
kind = "transverse"
free = ["Iext_e", "eps"]
range = { Iext_e = [0.0, 6.0], eps = [4.0, 12.0] }
modes = [68]
levels = [8.0]
cycles = false
grid = { Iext_e = 0.5, eps = 4.0 }
settings = { ds = 0.05, ds_max = 0.25 }
""")
    out = execute_run_file(run, out=tmp_path / "out")
    with xr.open_dataset(out / "instability_map_tr.nc") as ds:
        assert list(ds["Iext_e"].values) == pytest.approx(np.arange(0, 6.01, 0.5))
        assert list(ds["eps"].values) == pytest.approx([4.0, 8.0, 12.0])
        assert ds.attrs["grid_step_Iext_e"] == 0.5 and ds["max_transverse_growth_rate"].attrs["units"] == "1/ms"
        solution = ds["homogeneous_solution"].values
        counts = ds["n_unstable_modes"].values
        rate = ds["max_transverse_growth_rate"].values
    lam = load_connectome("tvb68").row_normalised().spectrum().eigenvalues[[0, -1]]  # modes 1, 68
    assert (solution == 1).sum() >= 15 and set(np.unique(solution)) <= {0, 1}
    checked = 0
    for r, eps in enumerate([4.0, 8.0, 12.0]):
        for c, I in enumerate(np.arange(0, 6.01, 0.5)):
            p = ping.resolve_parameters({"Iext_e": I, "eps": eps})
            at_rest, x = settle(ping, p)  # compiled integration from the model's initial state
            try:
                x = find_equilibrium(ping, p, x, settle_time=0.0)
            except ContinuationError:  # it oscillates from the initial state
                continue
            rel = equilibrium_dispersion(ping, p, x, lam)
            if rel.growth_rate[0] < -1e-6:
                assert solution[r, c] == 1, (I, eps)
                assert rate[r, c] == pytest.approx(rel.growth_rate[1:].max(), abs=1e-9)
                assert counts[r, c] == int(np.sum(rel.growth_rate[1:] > 0))
                checked += 1
            elif rel.growth_rate[0] > 1e-6:
                assert solution[r, c] == 0 and counts[r, c] == -1
    assert checked >= 15


def test_grid_map_rejects_bad_grid(tmp_path):
    from bifnet.errors import RunFileError
    from bifnet.runs import execute_run_file

    run = tmp_path / "g.toml"
    run.write_text("""
model = "ngnmm_ping"
connectome = "tvb68"
[[steps]]
name = "tr"
kind = "transverse"
free = ["Iext_e", "eps"]
range = { Iext_e = [0.0, 6.0], eps = [4.0, 12.0] }
levels = [8.0]
grid = { Iext_e = 0.7, eps = 2.0 }
""")
    with pytest.raises(RunFileError, match="does not divide"):  # up front, before any step runs
        execute_run_file(run, out=tmp_path / "out")


@pytest.mark.slow
def test_grid_map_agrees_with_brute_force(ping):
    """Unstable-mode counts of the grid map (equilibria and cycles, every tvb68 mode) against an
    independent brute-force solve with the same definition of the state (a stable equilibrium where
    one exists, else the attracting cycle: simulation, multi-start Newton / shooting, direct
    eigenvalues / Floquet exponents) at 400 random grid points: every stable-equilibrium point
    agrees (growth rates to 1e-8 /ms), and at least 99.5 % of all points."""
    from bifnet.continuation.restarts import continue_cycles, ends_at_hopf
    from bifnet.continuation.branch import SpecialKind
    from bifnet.continuation.equilibria import continue_equilibria
    from bifnet.transverse.maps import EP, brute_force_point, grid_axis, instability_map

    groups = distinct_modes(load_connectome("tvb68").row_normalised().spectrum().eigenvalues)
    lams = np.array([g.Lambda for g in groups])
    mult = np.array([len(g.modes) for g in groups])
    settings = ContinuationSettings(bounds={"Iext_e": (0.0, 16.0), "eps": (0.0, 30.0)}, ds=0.05, ds_max=0.25)
    params = ping.resolve_parameters({"Iext_e": 0.0})
    # the study's window on a coarser grid (the study's step is 0.05; benchmarks/bench_transverse.py --grid)
    x1, x2 = grid_axis((0.0, 16.0), 0.2, "Iext_e"), grid_axis((0.0, 30.0), 0.2, "eps")
    eqs, cycles = {}, {}
    for level in (3.0, 9.0, 15.0, 21.0, 27.0):
        eq = continue_equilibria(ping, {**params, "eps": level}, "Iext_e",
                                 settings=settings.replace(bounds={"Iext_e": (0.0, 16.0)}))
        eqs[level], cycles[level] = eq, []
        for hb in eq.points_of_kind(SpecialKind.HB):
            if not any(ends_at_hopf(c, hb) for c in cycles[level]):
                cycles[level].append(continue_cycles(eq, hb.name, settings=settings.replace(max_steps=600)))
    result = instability_map(ping, params, ("Iext_e", "eps"), x1, x2, lams, eqs, cycles, workers=2)
    rng = np.random.default_rng(11)
    agree, total, ep_points, misses = 0, 0, 0, []
    for k in rng.choice(result.solution.size, 400, replace=False):
        r, c = divmod(int(k), x1.size)
        solution, rates = brute_force_point(ping, {**params, "Iext_e": x1[c], "eps": x2[r]}, lams)
        count = lambda g: int(((g[1:] > 0) * mult[1:]).sum())  # noqa: E731
        same = solution == result.solution[r, c] and (solution == 0 or count(rates) == count(result.growth_rate[r, c]))
        if solution == EP:
            assert same, (x1[c], x2[r])
            assert np.max(np.abs(rates - result.growth_rate[r, c])) < 1e-8
            ep_points += 1
        agree += same
        total += 1
        if not same:
            misses.append((x1[c], x2[r], int(result.solution[r, c]), int(solution)))
    assert ep_points >= 80
    assert agree / total >= 0.995, f"{agree} of {total} agree; misses (Iext_e, eps, map, brute force): {misses}"


def test_parallel_curves_equal_serial_curves(ping):
    """Curves traced by mode groups on two processes are the serial curves (same points)."""
    from bifnet.transverse.curves import mode_chunks, trace_curves_parallel

    spectrum = load_connectome("tvb68").row_normalised().spectrum()
    modes = [m for m in distinct_modes(spectrum.eigenvalues) if m.mode in (1, 2, 68)]
    assert mode_chunks(modes, 4) == [[2], [68]]
    params = ping.resolve_parameters({"Iext_e": 0.0})
    settings = ContinuationSettings(bounds={"Iext_e": (0.0, 16.0), "eps": (0.0, 30.0)}, ds=0.05, ds_max=0.25)
    serial, crossings, _ = trace_transverse_curves(ping, params, modes, ("Iext_e", "eps"), [8.0], settings)
    parallel, crossings_p, _ = trace_curves_parallel(ping, params, modes, ("Iext_e", "eps"), [8.0], settings,
                                                     workers=2)
    assert crossings_p == crossings
    assert sorted(c.name for c in serial) == [c.name for c in parallel]
    for c in parallel:
        (twin,) = [s for s in serial if s.name == c.name]
        assert np.array_equal(c["Iext_e"], twin["Iext_e"]) and np.array_equal(c["eps"], twin["eps"])
        assert c.engine["problem"].system.name == twin.engine["problem"].system.name


def test_mode_chunks_keep_conjugates_together():
    from bifnet.transverse.curves import Mode, mode_chunks

    modes = [Mode(1.0, (1,)), Mode(0.5 + 0.1j, (2,)), Mode(0.5 - 0.1j, (3,)), Mode(0.2, (4,)), Mode(-0.3, (5, 6))]
    assert mode_chunks(modes, 2) == [[2, 3, 5], [4]]
    assert mode_chunks(modes, 1) == [[2, 3, 4, 5]]


def test_complex_augmented_system_of_a_sigmoid_model_is_split_exactly():
    """Wilson-Cowan's sigmoid of a complex input: the real and imaginary parts of the complex augmented
    system contain no re() or im() (they did: exp of a sum was expanded into a product of exponentials
    first, AUTO-07p could not compile it, and every complex mode's curve failed), and on a = x, b = 0 the
    (a, b) block of its Jacobian has the eigenvalues of J(Lambda) = A + Lambda B and their conjugates."""
    import sympy

    from bifnet.codegen import jacobian_function, mode_jacobian_functions
    from bifnet.model import load_model
    from bifnet.systems import complex_augmented_system

    model = load_model("wilson_cowan")
    system = complex_augmented_system(model)
    assert not any(e.has(sympy.re, sympy.im) for e in system.rhs)
    n = model.n_variables
    values = model.resolve_parameters({"eps": -2.0, "Iext_e": 0.9})
    x = np.array([0.13, 0.31])
    lam = 0.0496 + 0.3768j
    p = np.array([values.get(s, {"Lambda": lam.real, "Lambda_imag": lam.imag}.get(s)) for s in
                  system.parameter_names], dtype=float)
    J = jacobian_function(system)(np.concatenate([x, x, np.zeros(n)]), p)[n:, n:]
    A, B = mode_jacobian_functions(model)
    q = np.array([values[k] for k in model.parameter_names])
    expected = np.linalg.eigvals(A(x, q) + lam * B(x, q))
    got = np.sort_complex(np.linalg.eigvals(J))
    assert np.allclose(got, np.sort_complex(np.concatenate([expected, expected.conj()])), rtol=0, atol=1e-12)


def test_engine_gh_on_a_transverse_hopf_curve_is_not_a_located_point():
    """The engine's GH label on a Hopf curve of the augmented system (one mode; its Lyapunov coefficient is
    not the network's) is kept with located = False, 'not verified' and the reason, and is left out of the
    codim2 column of transverse_curves.csv; the same label on a homogeneous Hopf locus is still solved."""
    from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
    from bifnet.continuation.verify import verify_branch
    from bifnet.model import load_model
    from bifnet.systems import augmented_system
    from bifnet.transverse.steps import _curves_frame

    model = load_model("ngnmm_ping")
    system = augmented_system(model, "gradient")
    gh = SpecialPoint(kind=SpecialKind.GH, index=1, parameters={"Iext_e": 1.0, "eps": 5.0}, located=True, name="GH1")
    columns = {"Iext_e": np.array([0.9, 1.0, 1.1]), "eps": np.array([4.0, 5.0, 6.0]), "period": np.full(3, 20.0)}
    curve = Branch(kind=BranchKind.LOCUS, name="HB[mode68]#1", free=("Iext_e", "eps"), columns=columns,
                   special_points=(gh,), locus_of=SpecialKind.HB, mode=68, Lambda=-0.3, engine={})
    checked = verify_branch(curve, system)
    (point,) = checked.special_points
    assert not point.located and point.verification == "not verified"
    assert "augmented system" in point.details["reason"]
    assert list(_curves_frame([checked], ("Iext_e", "eps"))["codim2"]) == ["", "", ""]
    assert list(_curves_frame([curve], ("Iext_e", "eps"))["codim2"]) == ["", "GH", ""]


ATAN_NODE = (Path(__file__).parent / "data" / "atanode.toml").read_text()


def _atan_node_files(folder, levels):
    """The atan node on a random directed 5-node connectome (modes 4 and 5 a complex pair)."""
    W = np.random.default_rng(1).random((5, 5))
    np.fill_diagonal(W, 0.0)
    np.savetxt(folder / "w5.csv", W, delimiter=",")
    (folder / "atanode.toml").write_text(ATAN_NODE)
    run = folder / "tr.toml"
    run.write_text(f'model = "{folder / "atanode.toml"}"\nconnectome = "{folder / "w5.csv"}"\n'
                   '[[steps]]\nname = "tr"\nkind = "transverse"\nfree = ["I", "eps"]\n'
                   f'range = {{ I = [-3.0, 3.0], eps = [-6.0, 6.0] }}\nmodes = "all"\nlevels = {levels}\n'
                   'cycles = false\n')
    return run


def test_a_model_without_complex_curves_keeps_its_real_ones(tmp_path):
    """atan of a complex argument does not split into real and imaginary parts, so the complex modes have no
    curves. That failure used to end the step (rebuilding the curves' systems in the parent process built
    the complex one too) and lost the real modes' curves, after one warning per crossing. Now: one line in
    run.json's `failures`, and the real modes' Hopf curves, checked against the closed form of the 2 x 2
    mode Jacobian J(L) = [[-1 + g (2 + eps L), -g], [1/2, -1/2]], g = 1 / (1 + u^2), u = (1 + eps) x + I at
    x = atan(u): trace 0 and frequency sqrt(det) / 2 pi."""
    import json

    from bifnet.runs import execute_run_file

    out = execute_run_file(_atan_node_files(tmp_path, "[1.2]"), out=tmp_path / "out")
    (step,) = json.loads((out / "run.json").read_text())["steps"]
    assert step["status"] == "ok" and step["complex_modes"] == [4, 5]
    assert len(step["failures"]) == 1 and "complex modes" in step["failures"][0]
    curves = pd.read_csv(out / "transverse_curves.csv")
    assert set(curves["mode"]) == {2, 3} and set(curves["kind"]) == {"HB"} and curves["curve"].nunique() == 3
    rows = pd.read_csv(out / "branches.csv")
    rows = rows[rows["branch"].isin(set(curves["curve"]))]       # the curves' homogeneous states (x = y)
    assert len(rows) == len(curves)
    x, I, eps, lam = (rows[c].to_numpy() for c in ("x", "I", "eps", "Lambda"))
    u = (1 + eps) * x + I
    # the CSV holds 11 significant digits, and next to the homogeneous fold (ZH) x is ill-conditioned
    assert np.max(np.abs(x - np.arctan(u))) < 1e-8 and np.max(np.abs(rows["y"] - x)) < 1e-8
    g = 1.0 / (1.0 + u ** 2)
    trace = np.abs(-1.5 + g * (2 + eps * lam))                                      # trace J(L) = 0
    assert np.median(trace) < 1e-10 and np.max(trace) < 1e-7
    frequency = 1000 * np.sqrt(0.5 * (1.0 - g * (1 + eps * lam))) / (2 * np.pi)    # sqrt(det J(L)), Hz
    assert np.max(np.abs(frequency - rows["frequency_hz"])) < 1e-5
