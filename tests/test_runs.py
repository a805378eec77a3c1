"""Run files and the CLI: outputs checked against the library, bad input refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bifnet.errors import RunFileError
from bifnet.runs import execute_run_file, load_run_file

ROOT = Path(__file__).resolve().parents[1]

RUN = """
model = "ngnmm_ping"
connectome = "tvb68"
[parameters]
eps = 15.0
[[steps]]
name = "eq"
kind = "equilibria"
free = ["Iext_e"]
range = {{ Iext_e = [0.0, 40.0] }}
values = {values}
[[steps]]
name = "lc"
kind = "cycles"
start = "eq:HB"
range = {{ Iext_e = [0.0, 40.0] }}
settings = {{ ds = 0.05, ds_max = 0.5, max_steps = 400 }}
"""


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "bifnet.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    run_file = folder / "run.toml"
    run_file.write_text(RUN.format(values="{ eps = [15.0, 12.0] }"))
    out = execute_run_file(run_file, out=folder / "out")
    return out


def test_run_outputs(run_folder):
    manifest = json.loads((run_folder / "run.json").read_text())
    assert [s["status"] for s in manifest["steps"]] == ["ok", "ok"]
    assert manifest["connectome"]["name"] == "tvb68"
    assert manifest["connectome"]["as_given"]["self_loops"] == 68  # kept as given
    assert any("row-normalised" in t for t in manifest["connectome"]["transformations"])
    assert manifest["units"]["frequency"] == "Hz"
    branches = pd.read_csv(run_folder / "branches.csv")
    special = pd.read_csv(run_folder / "special_points.csv")
    for column in ["step", "branch", "point", "solution", "stable", "kind", "label", "Iext_e", "eps",
                   "r_e", "period", "r_e_min", "r_e_max", "frequency_hz"]:
        assert column in branches.columns
    for column in ["step", "branch", "point", "kind", "mode", "Lambda", "Iext_e", "eps", "period"]:
        assert column in special.columns
    hb = special[(special.kind == "HB") & (special.eps == 15.0)].sort_values("Iext_e")
    np.testing.assert_allclose(hb.Iext_e, [2.87582, 11.63777], atol=1e-4)
    assert set(special["mode"]) == {1} and set(special["Lambda"]) == {1.0}
    lc = branches[branches.solution == "LC"]
    np.testing.assert_allclose(lc.frequency_hz, 1000.0 / lc.period)
    assert (run_folder / "diagram_eq_eps15.png").stat().st_size > 10_000
    # the two eps values give two equilibrium branches
    assert set(branches[branches.solution == "EP"].eps) == {12.0, 15.0}


def test_existing_output_needs_force(run_folder):
    result = _cli("run", str(run_folder.parent / "run.toml"), "--out", str(run_folder))
    assert result.returncode == 2
    assert "--force" in result.stderr and "Traceback" not in result.stderr
    assert (run_folder / "run.json").exists()  # nothing lost


@pytest.mark.parametrize("text, words", [
    ('model = "ngnmm_ping"\nbogus = 1\n[[steps]]\nname="a"\nkind="equilibria"', ["unknown key", "bogus"]),
    ('model = "ngnmm_ping"\n[[steps]]\nname="a"\nkind="spin"', ["unknown kind", "spin"]),
    ('model = "ngnmm_ping"\n[[steps]]\nname="a"\nkind="cycles"\nstart="eq:HB1"', ["no earlier step", "eq"]),
    ('model = "ngnmm_ping"\n[[steps]]\nname="a"\nkind="equilibria"\n[[steps]]\nname="a"\nkind="cycles"', ["two steps"]),
    ('model = "ngnmm_ping"\n[steps', ["not valid TOML"]),
    ('model = "ngnmm_ping"', ["no [[steps]]"]),
])
def test_bad_run_files(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RunFileError) as info:
        load_run_file(path)
    for word in words:
        assert word in str(info.value)


def test_cli_errors_are_one_line(tmp_path):
    missing = _cli("run", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2 and "run file not found" in missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    path = tmp_path / "r.toml"
    path.write_text(RUN.format(values="{}"))
    bad_param = _cli("run", str(path), "--out", str(tmp_path / "o"), "--set", "epsilon=3")
    assert bad_param.returncode == 3 and "no parameter 'epsilon'" in bad_param.stderr
    assert "Traceback" not in bad_param.stderr
    bad_model = _cli("run", str(path), "--out", str(tmp_path / "o2"), "--set", "model=nope")
    assert bad_model.returncode == 3 and "unknown model 'nope'" in bad_model.stderr
    no_range = tmp_path / "n.toml"
    no_range.write_text('model = "ngnmm_ping"\n[[steps]]\nname="eq"\nkind="equilibria"\nfree=["Iext_e"]\n')
    result = _cli("run", str(no_range), "--out", str(tmp_path / "o3"))
    # found before anything runs: exit 2, nothing written
    assert result.returncode == 2 and "give a range for Iext_e" in result.stderr
    assert not (tmp_path / "o3").exists()


def test_set_overrides_parameters_and_keys(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(RUN.format(values="{}"))
    run = load_run_file(path, ["eps=12", "connectome=tvb96", "settings.ds=0.02"])
    assert run.data["parameters"]["eps"] == 12
    assert run.data["connectome"] == "tvb96"
    assert run.data["settings"]["ds"] == 0.02


def test_sweep_step_resumes(tmp_path):
    """A dispersion sweep at resting points: the values equal a direct computation,
    and a resumed run takes every point from the checkpoint."""
    import xarray as xr

    from bifnet.connectome import load_connectome
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.model import load_model
    from bifnet.transverse.dispersion import equilibrium_dispersion

    path = tmp_path / "s.toml"
    path.write_text("""
model = "ngnmm_ping"
connectome = "tvb68"
[[steps]]
name = "sw"
kind = "sweep"
analysis = "dispersion"
grid = { Iext_e = { start = 0.0, stop = 1.0, num = 2 }, eps = [2.0, 4.0] }
scheduler = "serial"
progress = false
""")
    out = execute_run_file(path, out=tmp_path / "o")
    with xr.open_dataset(out / "sweep_sw.nc") as ds:
        value = float(ds["max_transverse_growth_rate"].sel(Iext_e=1.0, eps=4.0))
    model = load_model("ngnmm_ping")
    p = model.resolve_parameters({"Iext_e": 1.0, "eps": 4.0})
    lam = load_connectome("tvb68").row_normalised().spectrum().eigenvalues
    rel = equilibrium_dispersion(model, p, find_equilibrium(model, p), lam)
    assert value == pytest.approx(rel.growth_rate[1:].max(), abs=1e-10)
    checkpoint = (out / "sweep_sw.nc.checkpoint.jsonl").read_text().splitlines()
    assert len(checkpoint) == 1 + 4  # header + one line per point
    execute_run_file(path, out=out, resume=True)
    assert (out / "sweep_sw.nc.checkpoint.jsonl").read_text().splitlines() == checkpoint


def test_cycle_sources_with_the_widest_fold_range_start_first():
    """The cycles step's threads take the source branches likely longest first: more folds first, then the
    widest parameter range between them (ngnmm_ping eps = 30, 29.5 and 26: 1.77, 1.48 and 0.07 wide, cycle
    branches of 105, 55 and 32 s); ties keep the run file's order."""
    from bifnet.continuation.branch import Branch, BranchKind, SpecialKind, SpecialPoint
    from bifnet.continuation.steps import _expected_cost

    def source(name, folds):
        points = tuple(SpecialPoint(kind=SpecialKind.LP, index=i, parameters={"I": v}, name=f"LP{i + 1}")
                       for i, v in enumerate(folds))
        return Branch(kind=BranchKind.EQUILIBRIA, name=name, free=("I",), variables=("x",),
                      columns={"I": np.linspace(0.0, 5.0, 6)}, special_points=points)

    sources = [source("none", []), source("narrow", [4.685, 4.611]), source("one", [2.0]),
               source("wide", [4.010, 2.240]), source("middle", [4.078, 2.598]), source("none2", [])]
    order = [b.name for b in sorted(sources, key=_expected_cost)]
    assert order == ["wide", "middle", "narrow", "one", "none", "none2"]


def test_cycles_on_threads_equal_the_serial_run(tmp_path):
    """Start branches of a cycles step run on threads; the tables are those of a serial run, row for row."""
    text = """
model = "ngnmm_ping"
[settings]
ds = 0.05
ds_max = 0.25
[[steps]]
name = "eq"
kind = "equilibria"
free = ["Iext_e"]
range = { Iext_e = [0.0, 20.0] }
values = { eps = [15.0, 19.0] }
[[steps]]
name = "lc"
kind = "cycles"
start = "eq:HB"
range = { Iext_e = [0.0, 20.0] }
workers = WORKERS
settings = { ds = 0.05, ds_max = 0.5, max_steps = 300, max_period = 300.0 }
"""
    frames = []
    for workers in (1, 2):
        run = tmp_path / f"w{workers}.toml"
        run.write_text(text.replace("WORKERS", str(workers)))
        out = execute_run_file(run, out=tmp_path / f"out{workers}")
        frames.append((pd.read_csv(out / "branches.csv"), pd.read_csv(out / "special_points.csv")))
    (b1, s1), (b2, s2) = frames
    assert (b1["solution"] == "LC").sum() > 200 and b1["branch"].nunique() == 4
    pd.testing.assert_frame_equal(b1, b2)
    pd.testing.assert_frame_equal(s1, s2)
