"""Every step kind of a run file on every shipped model (model-agnostic steps).

Each model runs one run file holding all step kinds, with parameters where its
homogeneous states are interesting; nothing in the steps knows a variable
name. ``mpr`` (one QIF population) has folds but no Hopf point, so its
``cycles`` step must fail in one clear line and write nothing.
"""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bifnet.errors import BifnetError, ContinuationError
from bifnet.model import available_models
from bifnet.runs import STEP_KINDS, execute_run_file

SETUP = {
    # model: (parameters, p1, p1 range, p2, p2 range, level of p2, start of cycles/curve, dispersion point)
    "ngnmm_ping": ({"eps": 15.0}, "Iext_e", [0.0, 16.0], "eps", [5.0, 25.0], 15.0, "HB", {"Iext_e": 2.0}),
    "wilson_cowan": ({"eps": 1.0}, "Iext_e", [0.0, 2.0], "eps", [0.5, 2.0], 1.0, "HB", {"Iext_e": 0.3}),
    "brusselator": ({"b": 1.5}, "b", [1.5, 4.0], "eps", [0.5, 2.0], 1.0, "HB", {"b": 2.0}),
    "mpr": ({"eps": 1.0, "I": -5.0}, "I", [-5.0, 5.0], "eps", [0.5, 2.0], 1.0, "LP", {"I": -3.0}),
    "stuart_landau": ({"eps": 0.5}, "mu", [-0.5, 0.5], "eps", [0.2, 1.0], 0.5, "HB", {"mu": -0.3}),
}

RUN = """
model = "{model}"
connectome = "tvb68"
seed = 3
[parameters]
{parameters}
[settings]
ds = 0.02
ds_max = 0.2
max_steps = 300
[[steps]]
name = "eq"
kind = "equilibria"
free = ["{p1}"]
range = {{ {p1} = {r1} }}
[[steps]]
name = "lc"
kind = "cycles"
start = "eq:HB"
range = {{ {p1} = {r1} }}
settings = {{ max_steps = 150 }}
[[steps]]
name = "locus"
kind = "curve"
start = "eq:{special}"
free = ["{p1}", "{p2}"]
range = {{ {p1} = {r1}, {p2} = {r2} }}
settings = {{ max_steps = 100 }}
[[steps]]
name = "disp"
kind = "dispersion"
parameters = {dispersion}
solution = "EP"
curve_points = 21
[[steps]]
name = "map"
kind = "transverse"
free = ["{p1}", "{p2}"]
range = {{ {p1} = {r1}, {p2} = {r2} }}
modes = "most_negative"
levels = [{level}]
cycles = false
map_points = 11
[[steps]]
name = "neutral"
kind = "neutral"
free = ["{p1}"]
range = {{ {p1} = {r1} }}
levels = 2
[[steps]]
name = "sim"
kind = "simulate"
t_max = 20.0
parameters = {dispersion}
[[steps]]
name = "val"
kind = "validate"
parameters = {dispersion}
t_max = 30.0
[[steps]]
name = "lyap"
kind = "lyapunov"
parameters = {dispersion}
k = 3
t_max = 10.0
transient = 2.0
[[steps]]
name = "spec"
kind = "spectrum"
parameters = {dispersion}
t_max = 1100.0
transient = 50.0
n_surrogates = 5
[[steps]]
name = "sweep"
kind = "sweep"
analysis = "dispersion"
grid = {{ {p1} = {r1_3} }}
workers = 1
progress = false
"""


def _toml(values: dict) -> str:
    return "{ " + ", ".join(f"{k} = {float(v)!r}" for k, v in values.items()) + " }"


# step kinds that need a particular point of a particular model, tested where it exists:
# "pattern" starts at a transverse point (tests/test_patterns.py: Brusselator on tvb68, a branch point;
# tests/test_pattern_cycles.py: ngnmm_ping, a Hopf point), "pattern_curve" at a fold or Hopf point of a
# pattern branch (tests/test_pattern_points.py)
NOT_HERE = {"pattern", "pattern_curve"}


def test_every_step_kind_is_in_the_run_file():
    kinds = {line.split("=")[1].strip().strip('"') for line in RUN.splitlines() if line.startswith("kind")}
    assert kinds == set(STEP_KINDS) - NOT_HERE


def test_every_shipped_model_has_a_setup():
    assert set(available_models()) == set(SETUP)


@pytest.mark.parametrize("model", sorted(SETUP))
def test_every_step_kind_on_every_shipped_model(model, tmp_path):
    parameters, p1, r1, p2, r2, level, special, dispersion = SETUP[model]
    text = RUN.format(model=model, parameters="\n".join(f"{k} = {v!r}" for k, v in parameters.items()),
                      p1=p1, r1=r1, p2=p2, r2=r2, level=level, special=special, dispersion=_toml(dispersion),
                      r1_3=f"{{ start = {r1[0]!r}, stop = {r1[1]!r}, num = 3 }}")
    run_file = tmp_path / "run.toml"
    run_file.write_text(text)
    out = tmp_path / "out"
    try:
        execute_run_file(run_file, out=out)
        failed = []
    except BifnetError as error:  # the class of the first failed step's error
        failed = str(error)
    manifest = json.loads((out / "run.json").read_text())
    status = {s["name"]: s["status"] for s in manifest["steps"]}
    errors = {s["name"]: s.get("error", "") for s in manifest["steps"]}
    if model == "mpr":
        assert failed and status.pop("lc") == "failed" and "HB" in errors["lc"]
    assert set(status.values()) == {"ok"}, errors
    # the model's coupling and operator are recorded
    coupling = manifest["model"]["coupling"]
    operator = manifest["connectome"]["operator"]
    assert operator["symbol"] == coupling["operator"] == ("L" if model == "brusselator" else "P")
    # tables name the operator, and carry the full double precision
    disp = pd.read_csv(out / "dispersion.csv")
    assert set(disp["operator"]) == {operator["symbol"]}
    assert list(disp["mode"]) == list(range(1, 69))
    ds = xr.open_dataset(out / "simulation.nc")
    observed = manifest["model"]["observe"]
    assert observed in ds and ds.sizes["region"] == 68
    ds.close()
    validation = json.loads((out / "validation.json").read_text())
    assert validation["relative_error_growth"] < 0.01
    sweep = xr.open_dataset(out / "sweep_sweep.nc")
    for name, var in sweep.data_vars.items():
        assert "units" in var.attrs, name
    assert sweep["n_unstable_modes"].dtype.kind == "i"
    sweep.close()
    curves = pd.read_csv(out / "transverse_points.csv") if (out / "transverse_points.csv").exists() else None
    if curves is not None and len(curves):
        assert set(curves["operator"]) == {operator["symbol"]}
    assert np.isfinite(pd.read_csv(out / "lyapunov.csv")["exponent_per_ms"]).all()


def test_a_single_node_model_continues_and_network_steps_say_it_has_no_coupling(tmp_path):
    model = tmp_path / "single.toml"
    model.write_text('[variables]\nx = 1.0\n[parameters]\nmu = 1.0\n[equations]\nx = "mu - x**2"\n')
    run_file = tmp_path / "run.toml"
    run_file.write_text(f'model = "{model}"\nconnectome = "tvb68"\n'
                        '[[steps]]\nname = "eq"\nkind = "equilibria"\nfree = ["mu"]\nrange = { mu = [-1.0, 2.0] }\n'
                        '[[steps]]\nname = "sim"\nkind = "simulate"\n'
                        '[[steps]]\nname = "disp"\nkind = "dispersion"\n')
    with pytest.raises(ContinuationError, match="2 step"):
        execute_run_file(run_file, out=tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    status = {s["name"]: (s["status"], s.get("error", "")) for s in manifest["steps"]}
    assert status["eq"][0] == "ok"
    for name in ("sim", "disp"):
        assert status[name][0] == "failed" and "has no [coupling]" in status[name][1]
        assert "\n" not in status[name][1]
    assert not (tmp_path / "out" / "simulation.nc").exists()
    assert manifest["model"]["coupling"] is None


def test_dispersion_tables_round_trip_at_double_precision(tmp_path):
    from bifnet.connectome import coupling_operator, load_connectome
    from bifnet.model import load_model
    from bifnet.transverse.dispersion import equilibrium_dispersion

    run_file = tmp_path / "run.toml"
    run_file.write_text('model = "brusselator"\nconnectome = "tvb68"\n'
                        '[[steps]]\nname = "d"\nkind = "dispersion"\nsolution = "EP"\nparameters = { b = 2.3 }\n')
    out = execute_run_file(run_file, out=tmp_path / "out")
    table = pd.read_csv(out / "dispersion.csv")
    model = load_model("brusselator")
    lam = coupling_operator(load_connectome("tvb68"), model.coupling).spectrum().eigenvalues
    rel = equilibrium_dispersion(model, model.resolve_parameters({"b": 2.3}), np.array([1.5, 2.3 / 1.5]), lam)
    assert np.array_equal(table["Lambda"].to_numpy(), lam)
    assert np.array_equal(table["growth_rate"].to_numpy(), rel.growth_rate)
    assert table["mode"].dtype.kind == "i" and set(table["operator"]) == {"L"}


def test_a_failed_simulation_writes_nothing_that_looks_complete(tmp_path):
    run_file = tmp_path / "run.toml"
    run_file.write_text('model = "brusselator"\nconnectome = "tvb68"\n'
                        '[[steps]]\nname = "sim"\nkind = "simulate"\nt_max = 50.0\ndt = 5.0\namplitude = 0.5\n'
                        'parameters = { eps = 50.0 }\n')
    with pytest.raises(BifnetError):
        execute_run_file(run_file, out=tmp_path / "out")
    out = tmp_path / "out"
    (step,) = json.loads((out / "run.json").read_text())["steps"]
    assert step["status"] == "failed" and "simulation_partial.nc" in step["error"]
    assert not (out / "simulation.nc").exists() and not (out / "simulation.png").exists()
    assert (out / "simulation_partial.nc").exists()
