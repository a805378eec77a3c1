"""Safe runs: nothing the user had is lost, no stale resume, no orphans or temporary folders after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bifnet.cli import main

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
model = "ngnmm_ping"
[parameters]
eps = 15.0
[[steps]]
name = "eq"
kind = "equilibria"
free = ["Iext_e"]
range = { Iext_e = [0.0, 40.0] }
"""
# valid up front, fails when it runs: an equilibrium branch has no PD point
FAILING = GOOD + """
[[steps]]
name = "pd"
kind = "curve"
start = "eq:PD"
free = ["Iext_e", "eps"]
range = { Iext_e = [0.0, 40.0], eps = [0.0, 30.0] }
"""
SLOW = """
model = "ngnmm_ping"
connectome = "tvb68"
[[steps]]
name = "sim"
kind = "simulate"
t_max = 200000.0
stride = 1000
"""


def _cli(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _env(tmp: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    return env


def test_force_on_the_current_folder_deletes_nothing(tmp_path, capsys, monkeypatch):
    """Scenario 1: ``bifnet run good.toml --out . --force`` in a folder with the user's files."""
    (tmp_path / "good.toml").write_text(GOOD)
    (tmp_path / "thesis.tex").write_text("three years of work")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "subject01.csv").write_text("1,2,3")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    code, err = _cli(["-q", "run", "good.toml", "--out", ".", "--force"], capsys)
    assert code == 2 and "current folder" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_force_on_the_run_files_folder_deletes_nothing(tmp_path, capsys, monkeypatch):
    """Scenario 2: ``--out <folder of the run file> --force`` from elsewhere."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "good.toml").write_text(GOOD)
    (project / "draft.tex").write_text("a thesis draft")
    monkeypatch.chdir(tmp_path)
    before = _snapshot(project)
    code, err = _cli(["-q", "run", str(project / "good.toml"), "--out", str(project), "--force"], capsys)
    assert code == 2 and "run file" in err
    assert _snapshot(project) == before


def test_force_then_failure_keeps_the_old_result(tmp_path, capsys):
    """Scenario 3: ``--force`` onto a good result with a run that then fails."""
    run = tmp_path / "r.toml"
    run.write_text(GOOD)
    out = tmp_path / "out"
    assert _cli(["-q", "run", str(run), "--out", str(out)], capsys)[0] == 0
    before = _snapshot(out)
    run.write_text(FAILING)
    code, err = _cli(["-q", "run", str(run), "--out", str(out), "--force"], capsys)
    assert code != 0 and "earlier result" in err and "Traceback" not in err
    assert _snapshot(out) == before  # untouched
    partial = sorted(tmp_path.glob("out.partial-*"))
    assert len(partial) == 1 and str(partial[0]) in err
    manifest = json.loads((partial[0] / "run.json").read_text())
    assert [s["status"] for s in manifest["steps"]] == ["ok", "failed"]
    # and a good run afterwards replaces the old result (the partial folder is the user's to delete)
    run.write_text(GOOD.replace("eps = 15.0", "eps = 12.0"))
    assert _cli(["-q", "run", str(run), "--out", str(out), "--force"], capsys)[0] == 0
    assert json.loads((out / "run.json").read_text())["parameters"]["eps"] == 12.0
    assert not list(tmp_path.glob(".out.old-*"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_force_then_kill_keeps_the_old_result(tmp_path, capsys, sig):
    """Scenario 4: ``--force`` onto a good result with a run that is killed."""
    run = tmp_path / "r.toml"
    run.write_text(GOOD)
    out = tmp_path / "out"
    assert _cli(["-q", "run", str(run), "--out", str(out)], capsys)[0] == 0
    before = _snapshot(out)
    run.write_text(SLOW)
    process = subprocess.Popen([sys.executable, "-m", "bifnet.cli", "-q", "run", str(run), "--out", str(out),
                                "--force"], env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("out.partial-*/run.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # inside the simulation
        process.send_signal(sig)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # the test failed: do not leave the run behind
            process.kill()
            process.wait()
    assert _snapshot(out) == before
    assert len(list(tmp_path.glob("out.partial-*"))) == 1
    if sig == signal.SIGTERM:
        assert process.returncode == 143
        assert err.strip().splitlines()[-1].startswith("bifnet: terminated") and "Traceback" not in err


def test_resume_refuses_stale_points(tmp_path, capsys):
    """``--resume --set J_ei=8 --set connectome=tvb96`` must not take points computed at J_ei = 13 on tvb68."""
    run = tmp_path / "s.toml"
    run.write_text("""
model = "ngnmm_ping"
connectome = "tvb68"
seed = 1
[[steps]]
name = "sw"
kind = "sweep"
analysis = "dispersion"
grid = { Iext_e = [0.0, 1.0], eps = [2.0] }
scheduler = "serial"
progress = false
""")
    out = tmp_path / "out"
    assert _cli(["-q", "run", str(run), "--out", str(out)], capsys)[0] == 0
    before = _snapshot(out)
    for extra, word in ((["--set", "J_ei=8", "--set", "connectome=tvb96"], "J_ei 13.0 -> 8.0"),
                        (["--set", "connectome=tvb96"], "connectome"),
                        (["--set", "connectome_options.drop_self_loops=true"], "connectome")):
        code, err = _cli(["-q", "run", str(run), "--out", str(out), "--resume", *extra], capsys)
        assert code == 2 and word in err and len(err.strip().splitlines()) == 1, err
        assert _snapshot(out) == before
    # the step spec itself: another analysis option
    run.write_text(run.read_text().replace('progress = false', 'progress = false\nparameters = { J_ee = 10.0 }'))
    code, err = _cli(["-q", "run", str(run), "--out", str(out), "--resume"], capsys)
    assert code == 2 and "parameters" in err, err
    assert _snapshot(out) == before
    assert not list(tmp_path.glob("out.partial-*"))


def _processes_mentioning(text: str, program: str = "") -> list[int]:
    """Live processes whose command line mentions ``text`` (and whose program's name is ``program``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            cmdline = " ".join(argv)
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and (not program or Path(argv[0]).name == program) and state != "Z":
            found.append(int(entry.name))
    return found


AUTO_FOREVER = """
import sys
from bifnet.continuation.equilibria import continue_equilibria
from bifnet.continuation.settings import ContinuationSettings
from bifnet.model import load_model
model = load_model("ngnmm_ping")
settings = ContinuationSettings(bounds={"Iext_e": (0.0, 40.0)})
object.__setattr__(settings, "ds", float("nan"))  # past the settings' own check: an engine that never ends
continue_equilibria(model, model.resolve_parameters({"eps": 15.0}), "Iext_e", settings=settings)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killed_auto_leaves_no_orphan_and_no_folder(tmp_path, sig):
    """AUTO writing without end (ds = nan), the Python process killed: no model_exe, no bifpy-* folder."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**_env(tmp), "BIFNET_AUTO_MAX_OUTPUT_MB": "100000"}
    process = subprocess.Popen([sys.executable, "-c",
                                "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                                + AUTO_FOREVER], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # the AUTO executable itself (gfortran's compile and link commands name the folder too)
        while not _processes_mentioning(f"{tmp}/bifpy-", "model_exe") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_mentioning(f"{tmp}/bifpy-", "model_exe"), "AUTO did not start"
        time.sleep(0.5)
        process.send_signal(sig)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:  # the test failed: do not leave the run behind
            process.kill()
            process.wait()
    deadline = time.monotonic() + 10
    while (_processes_mentioning(f"{tmp}/bifpy-") or list(tmp.glob("bifpy-*"))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(f"{tmp}/bifpy-") == [], err
    assert list(tmp.glob("bifpy-*")) == [], err
    deadline = time.monotonic() + 10
    while list(tmp.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp.iterdir()) == [], err  # bifnet's gfortran cache folder too


def test_auto_output_limit_stops_a_runaway(tmp_path):
    """The watchdog's output limit ends the ds = nan run with a ContinuationError."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**_env(tmp), "BIFNET_AUTO_MAX_OUTPUT_MB": "20"}
    code = ("from bifnet.errors import ContinuationError\ntry:\n" + "".join(
        "    " + line + "\n" for line in AUTO_FOREVER.strip().splitlines()) + "except ContinuationError as e:\n"
        "    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "BIFNET_AUTO_MAX_OUTPUT_MB" in result.stdout, result.stderr
    assert list(tmp.glob("bifpy-*")) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_die_with_their_parent(tmp_path):
    run = tmp_path / "s.toml"
    run.write_text("""
model = "ngnmm_ping"
[[steps]]
name = "sw"
kind = "sweep"
grid = { Iext_e = [0.0, 1.0, 2.0, 3.0], eps = [2.0, 4.0] }
t_max = 200000.0
transient = 0.0
workers = 2
progress = false
""")
    process = subprocess.Popen([sys.executable, "-m", "bifnet.cli", "-q", "run", str(run), "--out",
                                str(tmp_path / "out")], env=_env(), stderr=subprocess.DEVNULL)

    def children():
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    try:
        deadline = time.monotonic() + 120
        while len(children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children()
        assert len(workers) >= 2
        time.sleep(1.0)
    finally:
        process.kill()
        process.wait(timeout=30)
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in workers if Path(f"/proc/{p}").exists()
                 and Path(f"/proc/{p}/stat").read_text().split(")")[-1].split()[0] != "Z"]
    assert alive == []


def test_files_respect_the_umask(tmp_path, capsys):
    run = tmp_path / "r.toml"
    run.write_text(GOOD)
    old = os.umask(0o022)
    try:
        assert _cli(["-q", "run", str(run), "--out", str(tmp_path / "out")], capsys)[0] == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "out").iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path


SWEEP = """
model = "ngnmm_ping"
[[steps]]
name = "sw"
kind = "sweep"
grid = { Iext_e = [0.0, 1.0] }
t_max = 10.0
transient = 0.0
progress = false
"""


def test_unreachable_scheduler_stops_the_run(tmp_path, capsys):
    pytest.importorskip("dask.distributed")
    run = tmp_path / "s.toml"
    run.write_text(SWEEP)
    code, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9"],
                     capsys)
    assert code == 7 and "cannot reach the Dask scheduler" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # not recorded as a result with failed points


def test_full_disk_keeps_the_old_result(tmp_path, capsys, monkeypatch):
    """ENOSPC while a step writes: exit 7 in one line, the earlier result untouched."""
    import errno

    import bifnet.io

    run = tmp_path / "r.toml"
    run.write_text(GOOD)
    out = tmp_path / "out"
    assert _cli(["-q", "run", str(run), "--out", str(out)], capsys)[0] == 0
    before = _snapshot(out)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bifnet.io, "write_csv", full)
    code, err = _cli(["-q", "run", str(run), "--out", str(out), "--force"], capsys)
    assert code == 7 and "No space left on device" in err and len(err.strip().splitlines()) == 1, err
    assert "partial output kept" in err
    assert _snapshot(out) == before


def test_resume_continues_an_interrupted_first_run(tmp_path, capsys, monkeypatch):
    """Ctrl-C during the first run of a sweep: ``--resume`` continues from its partial folder."""
    import bifnet.sweep

    run = tmp_path / "s.toml"
    run.write_text(SWEEP.replace("progress = false",
                                 'progress = false\nscheduler = "serial"\nseed = 2\nvectorise = false'))
    real = bifnet.sweep._call
    calls = []

    def interrupted(function, point):
        calls.append(point)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(function, point)

    monkeypatch.setattr(bifnet.sweep, "_call", interrupted)
    code, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out")], capsys)
    assert code == 130 and "partial output kept" in err
    (partial,) = tmp_path.glob("out.partial-*")
    assert len((partial / "sweep_sw.nc.checkpoint.jsonl").read_text().splitlines()) == 2  # header + 1 point
    calls.clear()
    monkeypatch.setattr(bifnet.sweep, "_call", lambda function, point: calls.append(point) or real(function, point))
    code, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out"), "--resume"], capsys)
    assert code == 0, err
    assert len(calls) == 1  # only the point the first run did not finish
    assert not list(tmp_path.glob("out.partial-*"))  # the partial folder became the result
    assert json.loads((tmp_path / "out" / "run.json").read_text())["resumed"] == str(partial)


def test_resume_continues_an_interrupted_vectorised_sweep(tmp_path, capsys, monkeypatch):
    """The same with the vectorised homogeneous Lyapunov chunks (one point per chunk here): the
    finished chunk's point is kept, ``--resume`` computes only the other one."""
    import bifnet.sweep

    run = tmp_path / "s.toml"
    run.write_text(SWEEP.replace("progress = false",
                                 'progress = false\nscheduler = "serial"\nseed = 2\nbatch_size = 1'))
    real = bifnet.sweep._call_batch
    calls = []

    def interrupted(function, points):
        calls.append(points)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(function, points)

    monkeypatch.setattr(bifnet.sweep, "_call_batch", interrupted)
    code, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out")], capsys)
    assert code == 130 and "partial output kept" in err
    (partial,) = tmp_path.glob("out.partial-*")
    assert len((partial / "sweep_sw.nc.checkpoint.jsonl").read_text().splitlines()) == 2  # header + 1 point
    calls.clear()
    monkeypatch.setattr(bifnet.sweep, "_call_batch", lambda function, points: calls.append(points)
                        or real(function, points))
    code, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out"), "--resume"], capsys)
    assert code == 0, err
    assert calls == [[{"Iext_e": 1.0}]]  # only the point the first run did not finish


def test_force_replaces_a_result_of_an_older_bifnet_but_not_foreign_files(tmp_path, capsys):
    """A run.json without the marker (bifnet before it): replaced when it holds only output-like files."""
    run = tmp_path / "r.toml"
    run.write_text(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"versions": {"bifnet": "0.1"}, "steps": []}))
    (out / "branches.csv").write_text("step\n")
    (out / "diagram_eq.png").write_bytes(b"\x89PNG")
    (out / "notes.md").write_text("mine")
    code, err = _cli(["-q", "run", str(run), "--out", str(out), "--force"], capsys)
    assert code == 2 and "notes.md" in err
    (out / "notes.md").unlink()
    assert _cli(["-q", "run", str(run), "--out", str(out), "--force"], capsys)[0] == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["bifnet"]["marker"] == "bifnet run folder"
    assert set(manifest["bifnet"]["files"]) == {p.name for p in out.iterdir()} - {"run.json"}


def test_non_finite_simulation_fails_its_step(tmp_path, capsys):
    """A simulation that blows up is a failed step (exit 6), its states up to the failure kept."""
    run = tmp_path / "blow.toml"
    run.write_text('model = "ngnmm_ping"\nconnectome = "tvb68"\n[parameters]\neps = 1e4\n'
                   '[[steps]]\nname = "sim"\nkind = "simulate"\nt_max = 2.0\nstride = 1\ninitial = "default"\n')
    code, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out")], capsys)
    assert code == 6 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("bifnet: error: 1 step(s) failed: sim")
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["steps"][0]["status"] == "failed" and manifest["steps"][0]["error_kind"] == "SimulationError"
    assert "non-finite" in manifest["steps"][0]["error"]
    assert (tmp_path / "out" / "simulation_partial.nc").exists()
