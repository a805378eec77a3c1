"""Bad inputs and faults, tried as a careless user would: each ends in one clear line and its exit code.

The table runs the real CLI entry point in-process (``bifnet.cli.main``); a
few cases run it by subprocess. Exit codes are the README's table.
"""

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

HEAD = 'model = "ngnmm_ping"\n[parameters]\neps = 15.0\n'
EQ = '[[steps]]\nname = "eq"\nkind = "equilibria"\nfree = ["Iext_e"]\nrange = { Iext_e = [0.0, 40.0] }\n'
GOOD = HEAD + EQ
NET = 'model = "ngnmm_ping"\nconnectome = "tvb68"\n'


def step(kind, body="", name="s"):
    return f'[[steps]]\nname = "{name}"\nkind = "{kind}"\n{body}\n'


SIM = NET + EQ

# (id, run file text, extra CLI arguments, expected exit code, a word the message must hold)
RUN_FILES = [
    # the file itself
    ("not-toml", "model = \n", [], 2, "not valid TOML"),
    ("no-model", EQ, [], 2, "model"),
    ("no-steps", HEAD, [], 2, "steps"),
    ("empty-steps", HEAD + "steps = []\n", [], 2, "steps"),
    ("steps-not-tables", HEAD.replace("[parameters]\neps = 15.0\n", "steps = [1, 2]\n"), [], 2, "table"),
    ("unknown-top", GOOD + "\n", ["--set", "modle=x"], 2, "modle"),
    ("unknown-top-key", "titel = 'x'\n" + GOOD, [], 2, "did you mean 'title'"),
    ("settings-number", "settings = 5\n" + GOOD, [], 2, "settings"),
    ("parameters-list", 'model = "ngnmm_ping"\nparameters = [1]\n' + EQ, [], 2, "parameters"),
    ("parameter-string", HEAD.replace("15.0", '"fifteen"') + EQ, [], 2, "eps"),
    ("parameter-nan", HEAD.replace("15.0", "nan") + EQ, [], 2, "finite"),
    ("parameter-inf", HEAD.replace("15.0", "inf") + EQ, [], 2, "finite"),
    ("parameter-neg-inf", HEAD.replace("15.0", "-inf") + EQ, [], 2, "finite"),
    ("parameter-bool", HEAD.replace("15.0", "true") + EQ, [], 2, "eps"),
    ("parameter-unknown", HEAD.replace("eps", "epsilon") + EQ, [], 3, "epsilon"),
    ("seed-string", 'seed = "abc"\n' + GOOD, [], 2, "seed"),
    ("seed-negative", "seed = -1\n" + GOOD, [], 2, "seed"),
    ("seed-float", "seed = 1.5\n" + GOOD, [], 2, "seed"),
    ("title-number", "title = 3\n" + GOOD, [], 2, "title"),
    ("model-number", GOOD.replace('"ngnmm_ping"', "3"), [], 2, "model"),
    ("model-unknown", GOOD.replace("ngnmm_ping", "ngnmm_pong"), [], 3, "unknown model"),
    ("model-missing-file", GOOD.replace("ngnmm_ping", "no/such/model.toml"), [], 3, "not found"),
    ("connectome-number", "connectome = 5\n" + GOOD, [], 2, "connectome"),
    ("connectome-unknown", 'connectome = "tvb999"\n' + GOOD, [], 4, "tvb999"),
    ("connectome-options-typo", 'connectome = "tvb68"\nconnectome_options = { drop_self_loop = true }\n' + GOOD,
     [], 2, "did you mean 'drop_self_loops'"),
    ("connectome-options-type", 'connectome = "tvb68"\nconnectome_options = { drop_self_loops = "yes" }\n' + GOOD,
     [], 2, "drop_self_loops"),
    ("dask-scheduler-bad", GOOD + '[dask]\nscheduler = "threads"\n',
     [], 2, "scheduler"),
    # steps: structure
    ("step-no-name", HEAD + step("equilibria").replace('name = "s"\n', ""), [], 2, "name"),
    ("step-empty-name", HEAD + step("equilibria", name=""), [], 2, "name"),
    ("step-no-kind", HEAD + '[[steps]]\nname = "a"\n', [], 2, "kind"),
    ("step-kind-typo", HEAD + step("equilibrum"), [], 2, "did you mean 'equilibria'"),
    ("step-kind-number", HEAD + '[[steps]]\nname = "a"\nkind = 3\n', [], 2, "kind"),
    ("step-duplicate", GOOD + EQ, [], 2, "two steps"),
    ("step-start-unknown", GOOD + step("cycles", 'start = "lc:HB"\nrange = { Iext_e = [0.0, 40.0] }'),
     [], 2, "no earlier step"),
    ("step-start-later", step("cycles", 'start = "eq:HB"\nrange = { Iext_e = [0.0, 40.0] }', name="lc")
     .join([HEAD, EQ]), [], 2, "no earlier step"),
    ("step-start-no-colon", GOOD + step("cycles", 'start = "eq"\nrange = { Iext_e = [0.0, 40.0] }'),
     [], 2, "start"),
    ("step-start-number", GOOD + step("cycles", 'start = 1\nrange = { Iext_e = [0.0, 40.0] }'), [], 2, "start"),
    ("step-cycles-no-start", GOOD + step("cycles", "range = { Iext_e = [0.0, 40.0] }"), [], 2, "start"),
    # steps: keys, types, ranges (continuation)
    ("eq-key-typo", HEAD + EQ + "setings = { ds = 0.1 }\n", [], 2, "did you mean 'settings'"),
    ("eq-no-free", HEAD + step("equilibria", "range = { Iext_e = [0.0, 40.0] }"), [], 2, "free"),
    ("eq-free-number", HEAD + step("equilibria", "free = 3"), [], 2, "free"),
    ("eq-free-unknown", HEAD + step("equilibria", 'free = ["I_ext"]\nrange = { I_ext = [0.0, 1.0] }'),
     [], 2, "did you mean"),
    ("eq-free-two", HEAD + step("equilibria", 'free = ["Iext_e", "eps"]\nrange = { Iext_e = [0.0, 1.0], '
                                            'eps = [0.0, 1.0] }'), [], 2, "one parameter"),
    ("eq-no-range", HEAD + step("equilibria", 'free = ["Iext_e"]'), [], 2, "give a range"),
    ("eq-range-string", HEAD + step("equilibria", 'free = ["Iext_e"]\nrange = { Iext_e = "0-40" }'), [], 2, "range"),
    ("eq-range-one", HEAD + step("equilibria", 'free = ["Iext_e"]\nrange = { Iext_e = [0.0] }'), [], 2, "range"),
    ("eq-range-three", HEAD + step("equilibria", 'free = ["Iext_e"]\nrange = { Iext_e = [0.0, 1.0, 2.0] }'),
     [], 2, "range"),
    ("eq-range-reversed", HEAD + step("equilibria", 'free = ["Iext_e"]\nrange = { Iext_e = [40.0, 0.0] }'),
     [], 2, "low < high"),
    ("eq-range-nan", HEAD + step("equilibria", 'free = ["Iext_e"]\nrange = { Iext_e = [nan, 1.0] }'),
     [], 2, "finite"),
    ("eq-range-inf", HEAD + step("equilibria", 'free = ["Iext_e"]\nrange = { Iext_e = [0.0, inf] }'),
     [], 2, "finite"),
    ("eq-range-unknown", HEAD + EQ.replace("range = { Iext_e = [0.0, 40.0] }",
                                           "range = { Iext_e = [0.0, 40.0], Iext = [0.0, 1.0] }"),
     [], 2, "Iext"),
    ("eq-settings-number", HEAD + EQ + "settings = 3\n", [], 2, "settings"),
    ("eq-settings-typo", HEAD + EQ + "settings = { dss = 0.1 }\n", [], 2, "did you mean 'ds'"),
    ("eq-ds-string", HEAD + EQ + 'settings = { ds = "0.1" }\n', [], 2, "ds"),
    ("eq-ds-nan", HEAD + EQ + "settings = { ds = nan }\n", [], 2, "finite"),
    ("eq-ds-inf", HEAD + EQ + "settings = { ds = inf }\n", [], 2, "finite"),
    ("eq-ds-zero", HEAD + EQ + "settings = { ds = 0.0 }\n", [], 2, "ds"),
    ("eq-ds-min-negative", HEAD + EQ + "settings = { ds_min = -1.0 }\n", [], 2, "ds_min"),
    ("eq-max-steps-float", HEAD + EQ + "settings = { max_steps = 10.5 }\n", [], 2, "max_steps"),
    ("eq-max-steps-bool", HEAD + EQ + "settings = { max_steps = true }\n", [], 2, "max_steps"),
    ("eq-max-steps-zero", HEAD + EQ + "settings = { max_steps = 0 }\n", [], 2, "max_steps"),
    ("eq-ncol-8", HEAD + EQ + "settings = { ncol = 8 }\n", [], 2, "ncol"),
    ("eq-tolerance-big", HEAD + EQ + "settings = { tolerance = 0.5 }\n", [], 2, "tolerance"),
    ("eq-bounds-unknown", HEAD + EQ + "settings = { bounds = { foo = [0.0, 1.0] } }\n", [], 2, "foo"),
    ("top-settings-typo", "settings = { ds_maxx = 1.0 }\n" + GOOD, [], 2, "did you mean 'ds_max'"),
    ("eq-parameters-unknown", HEAD + EQ + "parameters = { epsilon = 1.0 }\n", [], 2, "epsilon"),
    ("eq-parameters-string", HEAD + EQ + 'parameters = { eps = "1" }\n', [], 2, "eps"),
    ("eq-x0-short", HEAD + EQ + "x0 = [0.0, 1.0]\n", [], 2, "x0"),
    ("eq-x0-strings", HEAD + EQ + 'x0 = ["a"]\n', [], 2, "x0"),
    ("eq-x0-nan", HEAD + EQ + "x0 = [nan, 0.0, 0.0, 0.0, 0.0, 0.0]\n", [], 2, "finite"),
    # scans and grids
    ("scan-empty", HEAD + EQ + "values = { eps = [] }\n", [], 2, "empty"),
    ("scan-ambiguous", HEAD + EQ + "values = { eps = [0.0, 1.0, 1] }\n", [], 2, "ambiguous"),
    ("scan-unknown", HEAD + EQ + "values = { epss = [1.0] }\n", [], 2, "epss"),
    ("scan-string", HEAD + EQ + 'values = { eps = "1,2" }\n', [], 2, "eps"),
    ("scan-range-no-num", HEAD + EQ + "values = { eps = { start = 0.0, stop = 1.0 } }\n", [], 2, "num or step"),
    ("scan-range-both", HEAD + EQ + "values = { eps = { start = 0.0, stop = 1.0, num = 3, step = 0.5 } }\n",
     [], 2, "num or step"),
    ("scan-range-num-zero", HEAD + EQ + "values = { eps = { start = 0.0, stop = 1.0, num = 0 } }\n", [], 2, "num"),
    ("scan-range-step-negative", HEAD + EQ + "values = { eps = { start = 0.0, stop = 1.0, step = -0.5 } }\n",
     [], 2, "step"),
    ("scan-range-step-down", HEAD + EQ + "values = { eps = { start = 1.0, stop = 0.0, step = 0.5 } }\n",
     [], 2, "stop"),
    ("scan-range-typo", HEAD + EQ + "values = { eps = { start = 0.0, stop = 1.0, nums = 3 } }\n", [], 2, "nums"),
    ("scan-range-huge", HEAD + EQ + "values = { eps = { start = 0.0, stop = 1.0, num = 100000000 } }\n",
     [], 2, "million"),
    ("grid-missing", HEAD + step("sweep"), [], 2, "grid"),
    ("grid-empty-table", HEAD + step("sweep", "grid = {}"), [], 2, "grid"),
    ("grid-empty-list", HEAD + step("sweep", "grid = { eps = [] }"), [], 2, "empty"),
    ("grid-ambiguous", HEAD + step("sweep", "grid = { Iext_e = [0.0, 1.0, 1] }"), [], 2, "ambiguous"),
    ("grid-ambiguous-int", HEAD + step("sweep", "grid = { Iext_e = [0, 16, 33] }"), [], 2, "num = 33"),
    ("grid-nan", HEAD + step("sweep", "grid = { Iext_e = [0.0, nan] }"), [], 2, "finite"),
    ("grid-inf-stop", HEAD + step("sweep", "grid = { Iext_e = { start = 0.0, stop = inf, num = 3 } }"),
     [], 2, "finite"),
    ("grid-unknown", HEAD + step("sweep", "grid = { Iext = [1.0] }"), [], 2, "did you mean"),
    ("grid-string", HEAD + step("sweep", 'grid = { Iext_e = "0:16" }'), [], 2, "Iext_e"),
    ("sweep-workers-zero", HEAD + step("sweep", "grid = { Iext_e = [1.0] }\nworkers = 0"), [], 2, "workers"),
    ("sweep-workers-string", HEAD + step("sweep", 'grid = { Iext_e = [1.0] }\nworkers = "4"'), [], 2, "workers"),
    ("sweep-scheduler-threads", HEAD + step("sweep", 'grid = { Iext_e = [1.0] }\nscheduler = "threads"'),
     [], 2, "scheduler"),
    ("sweep-analysis-typo", HEAD + step("sweep", 'grid = { Iext_e = [1.0] }\nanalysis = "lyapunof"'),
     [], 2, "analysis"),
    ("sweep-dispersion-no-connectome", HEAD + step("sweep", 'grid = { Iext_e = [1.0] }\nanalysis = "dispersion"'),
     [], 2, "connectome"),
    ("sweep-dt-zero", HEAD + step("sweep", "grid = { Iext_e = [1.0] }\ndt = 0.0"), [], 2, "dt"),
    ("sweep-precision", HEAD + step("sweep", 'grid = { Iext_e = [1.0] }\nprecision = "half"'), [], 2, "precision"),
    # network steps
    ("simulate-no-connectome", HEAD + step("simulate"), [], 2, "connectome"),
    ("simulate-method", NET + step("simulate", 'method = "euler"'), [], 2, "method"),
    ("simulate-t-max-negative", NET + step("simulate", "t_max = -1.0"), [], 2, "t_max"),
    ("simulate-t-max-string", NET + step("simulate", 't_max = "1000"'), [], 2, "t_max"),
    ("simulate-dt-nan", NET + step("simulate", "dt = nan"), [], 2, "finite"),
    ("simulate-stride-zero", NET + step("simulate", "stride = 0"), [], 2, "stride"),
    ("simulate-stride-float", NET + step("simulate", "stride = 2.5"), [], 2, "stride"),
    ("simulate-stride-too-long", NET + step("simulate", "t_max = 10.0\nstride = 2000"), [], 2, "two samples"),
    ("simulate-dt-longer", NET + step("simulate", "t_max = 1.0\ndt = 2.0"), [], 2, "dt"),
    ("simulate-dt-not-whole", NET + step("simulate", "t_max = 1.0\ndt = 0.3\nstride = 1"), [], 2, "whole"),
    ("simulate-noise-dopri5", NET + step("simulate", 'method = "dopri5"\nnoise = 0.1'), [], 2, "noise"),
    ("simulate-noise-negative", NET + step("simulate", "noise = -1.0"), [], 2, "noise"),
    ("simulate-perturbation", NET + step("simulate", 'perturbation = "big"'), [], 2, "perturbation"),
    ("simulate-initial", NET + step("simulate", 'initial = "rest"'), [], 2, "initial"),
    ("simulate-mode-too-big", NET + step("simulate", 'perturbation = "mode"\nmode = 99'), [], 2, "no mode 99"),
    ("simulate-key-typo", NET + step("simulate", "tmax = 10.0"), [], 2, "did you mean 't_max'"),
    ("simulate-variable-unknown", NET + step("simulate", 'variable = "v_x"'), [], 2, "did you mean"),
    ("lyapunov-k-zero", HEAD + step("lyapunov", "k = 0\nhomogeneous = true"), [], 2, "k"),
    ("lyapunov-no-connectome", HEAD + step("lyapunov"), [], 2, "connectome"),
    ("lyapunov-k-too-many", HEAD + step("lyapunov", "k = 7\nhomogeneous = true"), [], 2, "6 dimensions"),
    ("sweep-k-too-many", HEAD + step("sweep", "grid = { Iext_e = [1.0] }\nk = 9"), [], 2, "6 dimensions"),
    ("dispersion-lambda-range", NET + step("dispersion", "Lambda_range = [1.0, -1.0]"), [], 2, "Lambda_range"),
    ("spectrum-band", NET + step("spectrum", "phase_band = [8.0, 4.0]"), [], 2, "phase_band"),
    ("spectrum-transient", NET + step("spectrum", "t_max = 100.0\ntransient = 200.0"), [], 2, "transient"),
    ("validate-mode-zero", NET + step("validate", "mode = 0"), [], 2, "mode"),
    ("dispersion-solution", NET + step("dispersion", 'solution = "XX"'), [], 2, "solution"),
    ("dispersion-no-connectome", HEAD + step("dispersion"), [], 2, "connectome"),
    ("transverse-modes-zero", NET + step("transverse", 'free = ["Iext_e", "eps"]\nrange = { Iext_e = [0.0, 1.0],'
                                                     ' eps = [0.0, 1.0] }\nmodes = [0]'), [], 2, "modes"),
    ("transverse-mode-too-big", NET + step("transverse", 'free = ["Iext_e", "eps"]\nrange = { Iext_e = [0.0, 1.0],'
                                                        ' eps = [0.0, 1.0] }\nmodes = [2, 500]'), [], 2, "no mode 500"),
    ("transverse-empty-band", 'model = "ngnmm_ping"\nconnectome = "tvb96"\n'
     + step("transverse", 'free = ["Iext_e", "eps"]\nrange = { Iext_e = [0.0, 1.0], eps = [0.0, 1.0] }\n'
                          'modes = { Lambda = [-1.0, -0.45] }\ngrid = { Iext_e = 0.5, eps = 0.5 }'),
     [], 2, "selects no mode"),
    ("transverse-one-free", NET + step("transverse", 'free = ["Iext_e"]\nrange = { Iext_e = [0.0, 1.0] }'),
     [], 2, "free"),
    ("neutral-levels-zero", HEAD + step("neutral", 'free = ["Iext_e"]\nrange = { Iext_e = [0.0, 1.0] }\nlevels = 0'),
     [], 2, "levels"),
    ("curve-one-free", GOOD + step("curve", 'start = "eq:HB"\nfree = ["Iext_e"]\nrange = { Iext_e = [0.0, 1.0] }'),
     [], 2, "free"),
    ("curve-max-per-branch", GOOD + step("curve", 'start = "eq:HB"\nfree = ["Iext_e", "eps"]\nrange = '
                                                  '{ Iext_e = [0.0, 1.0], eps = [0.0, 1.0] }\nmax_per_branch = 0'),
     [], 2, "max_per_branch"),
    # --set
    ("set-no-equals", GOOD, ["--set", "eps"], 2, "name=value"),
    ("set-seed-abc", GOOD, ["--set", "seed=abc"], 2, "seed"),
    ("set-ds-nan", GOOD, ["--set", "settings.ds=nan"], 2, "finite"),
    ("set-eps-inf", GOOD, ["--set", "eps=inf"], 2, "finite"),
    ("set-eps-word", GOOD, ["--set", "eps=lots"], 2, "eps"),
    ("set-section-not-table", "settings = 5\n" + GOOD, ["--set", "settings.ds=0.1"], 2, "not a table"),
    ("set-empty-name", GOOD, ["--set", "=3"], 2, "name=value"),
    ("set-steps", GOOD, ["--set", "steps.x=1"], 2, "section.key"),
    ("set-unknown-parameter", GOOD, ["--set", "epsilon=3"], 3, "epsilon"),
    ("set-connectome-unknown", GOOD, ["--set", "connectome=tvb999"], 4, "tvb999"),
    ("scheduler-flag-bad", GOOD, ["--scheduler", "threads"], 2, "scheduler"),
    # flags
    ("retry-without-resume", GOOD, ["--retry-failed"], 2, "--resume"),
    ("force-and-resume", GOOD, ["--force", "--resume"], 2, "exclude"),
]


def _cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.err


def _assert_one_line(code, err, expected, word):
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert code == expected, (code, err)
    assert lines[0].startswith("bifnet: "), err
    assert word in lines[0], (word, err)


@pytest.mark.parametrize("text, extra, code, word", [c[1:] for c in RUN_FILES], ids=[c[0] for c in RUN_FILES])
def test_bad_run_file(tmp_path, capsys, text, extra, code, word):
    path = tmp_path / "run.toml"
    path.write_text(text)
    out = tmp_path / "out"
    got, err = _cli(["-q", "run", str(path), "--out", str(out), *extra], capsys)
    _assert_one_line(got, err, code, word)
    assert not out.exists()  # refused before anything was written
    assert not list(tmp_path.glob("out.partial-*"))


# --- files that are not what they claim to be ----------------------------------------------------------------

GOOD_MODEL = (ROOT / "models" / "wilson_cowan.toml").read_text()

MODEL_FILES = [
    ("binary", b"\x00\xff\xfe\x00" * 64, "not a text file"),
    ("not-toml", b"name = \n", "not valid TOML"),
    ("empty", b"", "variables"),
    ("no-equations", GOOD_MODEL.split("[equations]")[0].encode(), "equations"),
    ("equation-syntax", GOOD_MODEL.replace('E = "(-E +', 'E = "(-E +* ').encode(), "E"),
    ("equation-undeclared", GOOD_MODEL.replace("Iext_e + C", "Iext_x + C").encode(), "Iext_x"),
    ("coupling-variable", GOOD_MODEL.replace('variable = "E"', 'variable = "Q"').encode(), "Q"),
    ("coupling-strength", GOOD_MODEL.replace('strength = "eps"', 'strength = "gain"').encode(), "gain"),
    ("parameter-no-value", GOOD_MODEL.replace("value = 2.5,", "").encode(), "tau_E"),
    ("parameter-string", GOOD_MODEL.replace("value = 2.5,", 'value = "2.5",').encode(), "tau_E"),
    ("parameter-nan", GOOD_MODEL.replace("value = 2.5,", "value = nan,").encode(), "tau_E"),
    ("initial-inf", GOOD_MODEL.replace("initial = 0.05, unit = \"1\", description = \"excitatory",
                                       "initial = inf, unit = \"1\", description = \"excitatory").encode(), "E"),
]


@pytest.mark.parametrize("content, word", [c[1:] for c in MODEL_FILES], ids=[c[0] for c in MODEL_FILES])
def test_bad_model_file(tmp_path, capsys, content, word):
    model = tmp_path / "m.toml"
    model.write_bytes(content)
    run = tmp_path / "run.toml"
    run.write_text(f'model = "{model}"\n' + EQ.replace("Iext_e", "eps"))
    got, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out")], capsys)
    _assert_one_line(got, err, 3, word)


CONNECTOMES = [
    ("binary", "w.csv", b"\x00\xff\xfe\x00" * 64),
    ("not-square", "w.csv", b"0,1,2\n1,0,2\n"),
    ("nan-weight", "w.csv", b"0,nan\n1,0\n"),
    ("text-weight", "w.csv", b"0,a\n1,0\n"),
    ("negative", "w.csv", b"0,-1\n1,0\n"),
    ("empty", "w.csv", b""),
    ("bad-npz", "w.npz", b"PK\x03\x04 not really a zip"),
    ("bad-npy", "w.npy", b"\x93NUMPY broken"),
    ("unknown-extension", "w.xyz", b"0,1\n1,0\n"),
    ("missing", "missing.csv", None),
    ("folder", "folder", "dir"),
]


@pytest.mark.parametrize("filename, content", [c[1:] for c in CONNECTOMES], ids=[c[0] for c in CONNECTOMES])
def test_bad_connectome(tmp_path, capsys, filename, content):
    path = tmp_path / filename
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    run = tmp_path / "run.toml"
    run.write_text(f'connectome = "{path}"\n' + GOOD)
    got, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out")], capsys)
    _assert_one_line(got, err, 4, "")
    got, err = _cli(["connectome", "info", str(path)], capsys)
    _assert_one_line(got, err, 4, "")


# --- output folders -------------------------------------------------------------------------------------------

def _finished_run(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"bifnet": {"marker": "bifnet run folder", "format": 1,
                                                            "files": ["branches.csv"]}, "steps": []}))
    (folder / "branches.csv").write_text("step\n")
    return folder


FOLDERS = [
    ("out-is-file", lambda t: (t / "f").write_text("x") and ["--out", str(t / "f")], 2, "not a folder"),
    ("out-under-file", lambda t: (t / "f").write_text("x") and ["--out", str(t / "f" / "sub")], 2, "not a folder"),
    ("exists-no-flag", lambda t: _finished_run(t / "o") and ["--out", str(t / "o")], 2, "--force"),
    ("force-foreign", lambda t: ((t / "o").mkdir(), (t / "o" / "thesis.tex").write_text("x"))
     and ["--out", str(t / "o"), "--force"], 2, "no bifnet run.json"),
    ("force-extra-file", lambda t: (_finished_run(t / "o"), (t / "o" / "thesis.tex").write_text("x"))
     and ["--out", str(t / "o"), "--force"], 2, "thesis.tex"),
    ("force-cwd", lambda t: ["--out", ".", "--force"], 2, "current folder"),
    ("empty-cwd", lambda t: [p.unlink() for p in (t / "work").iterdir()] and [] or ["--out", "."], 2,
     "current folder"),
    ("force-parent-of-cwd", lambda t: ["--out", "..", "--force"], 2, "refuses"),
    ("force-run-file-folder", lambda t: ["--out", str(t / "runs"), "--force"], 2, "run file"),
    ("force-home", lambda t: ["--out", str(Path.home()), "--force"], 2, "home"),
    ("force-root", lambda t: ["--out", "/", "--force"], 2, "root"),
    ("resume-foreign", lambda t: ((t / "o").mkdir(), (t / "o" / "notes.txt").write_text("x"))
     and ["--out", str(t / "o"), "--resume"], 2, "no bifnet run.json"),
    ("resume-no-key", lambda t: _finished_run(t / "o") and ["--out", str(t / "o"), "--resume"], 2, "content key"),
    ("force-bad-manifest", lambda t: ((t / "o").mkdir(), (t / "o" / "run.json").write_text("{not json"))
     and ["--out", str(t / "o"), "--force"], 2, "no bifnet run.json"),
    ("out-in-proc", lambda t: ["--out", "/proc/bifnet-test/out"], 7, "cannot write"),
]


@pytest.mark.parametrize("prepare, code, word", [c[1:] for c in FOLDERS], ids=[c[0] for c in FOLDERS])
def test_bad_output_folder(tmp_path, capsys, monkeypatch, prepare, code, word):
    home = tmp_path / "home"
    home.mkdir()
    (home / "precious.txt").write_text("keep me")
    monkeypatch.setenv("HOME", str(home))
    runs = tmp_path / "runs"
    runs.mkdir()
    run = runs / "good.toml"
    run.write_text(GOOD)
    (runs / "draft.tex").write_text("keep me")
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "notes.txt").write_text("keep me")
    monkeypatch.chdir(cwd)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    args = prepare(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    got, err = _cli(["-q", "run", str(run), *args], capsys)
    _assert_one_line(got, err, code, word)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written, nothing lost


# --- checkpoints ----------------------------------------------------------------------------------------------

SWEEP = "seed = 3\n" + HEAD + step("sweep", 'grid = { Iext_e = [0.0, 1.0] }\nanalysis = "lyapunov"\nscheduler = "serial"\n'
                            "progress = false\nt_max = 20.0\ntransient = 0.0\nhomogeneous = true", name="sw")
SWEEP = SWEEP.replace("homogeneous = true", "")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    from bifnet.runs import execute_run_file

    folder = tmp_path_factory.mktemp("swept")
    run = folder / "sweep.toml"
    run.write_text(SWEEP)
    execute_run_file(run, out=folder / "out")
    return run, folder / "out"


def _copy(out: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(out, to)
    return to / "sweep_sw.nc.checkpoint.jsonl"


CHECKPOINTS = [
    ("header-garbage", lambda lines: ["{not json"] + lines[1:], [], 7, "damaged"),
    ("header-list", lambda lines: ["[1, 2]"] + lines[1:], [], 7, "damaged"),
    ("header-other-grid", lambda lines: [json.dumps({**json.loads(lines[0]), "grid": {"Iext_e": [5.0, 6.0]}})]
     + lines[1:], [], 2, "different grid"),
    ("header-other-key", lambda lines: [json.dumps({**json.loads(lines[0]), "key": {
        **json.loads(lines[0])["key"], "analysis": "0" * 64}})] + lines[1:], [], 2, "analysis"),
    ("header-no-key", lambda lines: [json.dumps({"grid": json.loads(lines[0])["grid"]})] + lines[1:], [], 2,
     "content key"),
    ("parameters-changed", lambda lines: lines, ["--set", "eps=12"], 2, "eps 15.0 -> 12.0"),
    ("model-changed", lambda lines: lines, ["--set", "model=wilson_cowan"], 2, "model"),
    ("connectome-changed", lambda lines: lines, ["--set", "connectome=tvb66"], 2, "connectome"),
    ("settings-changed", lambda lines: lines, ["--set", "settings.ds=0.02"], 2, "settings"),
]


@pytest.mark.parametrize("edit, extra, code, word", [c[1:] for c in CHECKPOINTS], ids=[c[0] for c in CHECKPOINTS])
def test_bad_checkpoint(swept, tmp_path, capsys, edit, extra, code, word):
    run, out = swept
    ckpt = _copy(out, tmp_path / "out")
    ckpt.write_text("\n".join(edit(ckpt.read_text().splitlines())) + "\n")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    got, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out"), "--resume", *extra], capsys)
    _assert_one_line(got, err, code, word)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_damaged_checkpoint_lines_are_recomputed(swept, tmp_path, capsys):
    run, out = swept
    ckpt = _copy(out, tmp_path / "out")
    lines = ckpt.read_text().splitlines()
    ckpt.write_text("\n".join([lines[0], '{"index": [7], "point": {}}', "garbage", '{"index": "x"}', lines[1]])
                    + "\n")
    got, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out"), "--resume"], capsys)
    assert got == 0 and "Traceback" not in err
    assert "damaged line" in err  # one warning, then the missing point is computed again
    import xarray as xr

    with xr.open_dataset(tmp_path / "out" / "sweep_sw.nc") as a, xr.open_dataset(out / "sweep_sw.nc") as b:
        xr.testing.assert_allclose(a.load(), b.load())


def test_retry_failed(swept, tmp_path, capsys):
    run, out = swept
    ckpt = _copy(out, tmp_path / "out")
    lines = ckpt.read_text().splitlines()
    failed = json.loads(lines[1])
    failed.pop("result")
    failed["error"] = "SimulationError: made up"
    ckpt.write_text("\n".join([lines[0], json.dumps(failed), lines[2]]) + "\n")
    got, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out"), "--resume"], capsys)
    assert got == 0
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["steps"][0]["status"] == "partial" and manifest["steps"][0]["failed"] == 1
    got, err = _cli(["-q", "run", str(run), "--out", str(tmp_path / "out"), "--resume", "--retry-failed"], capsys)
    assert got == 0, err
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert manifest["steps"][0]["status"] == "ok" and manifest["steps"][0]["failed"] == 0


# --- kernel cache ---------------------------------------------------------------------------------------------

def test_damaged_kernel_cache_heals(tmp_path):
    """A truncated numba cache entry: one warning, rebuilt, then silent."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BIFNET_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("NUMBA_CACHE_DIR", None)   # numba's index files next to the kernel source, where this test looks
    code = ("import numpy as np\nfrom bifnet.model import load_model\nfrom bifnet.network.core import build_network\n"
            "from bifnet.network.integrate import simulate\nm = load_model('wilson_cowan')\n"
            "net = build_network(m, np.array([[0.0, 1.0], [1.0, 0.0]]), m.resolve_parameters({}))\n"
            "r = simulate(net, (0, 1.0), np.tile(m.default_state(), 2), dt=0.01, stride=1)\nprint(r.success)\n")

    def run():
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)

    first = run()
    assert first.returncode == 0 and first.stdout.strip() == "True", first.stderr
    entries = sorted((tmp_path / "cache" / "__pycache__").glob("*.nbc"))
    assert entries
    entries[0].write_bytes(entries[0].read_bytes()[:50])
    second = run()
    assert second.returncode == 0 and second.stdout.strip() == "True", second.stderr
    assert "Traceback" not in second.stderr and "kernel cache" in second.stderr
    assert len([l for l in second.stderr.splitlines() if "kernel cache" in l]) == 1
    third = run()
    assert third.returncode == 0 and "kernel cache" not in third.stderr


# --- a few by subprocess: the real console script path ---------------------------------------------------------

def _bifnet(*args, cwd=None, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "bifnet.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300, **kwargs)


def test_subprocess_binary_run_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 50)
    result = _bifnet("run", str(path), "--out", str(tmp_path / "o"))
    _assert_one_line(result.returncode, result.stderr, 2, "not a text file")


def test_closed_pipe_is_quiet():
    """``bifnet connectome info tvb68 | true``: no BrokenPipe traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(f"{sys.executable} -m bifnet.cli connectome info tvb68 | true;"
                            " echo ${{PIPESTATUS[0]}}".replace("{{", "{").replace("}}", "}"),
                            shell=True, executable="/bin/bash", env=env, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.stdout.strip() in ("0", "141"), result.stdout


def test_published_json_schema_is_current():
    """docs/runfile.schema.json is what ``python -m bifnet.runfile_schema`` prints."""
    from bifnet.runfile_schema import json_schema

    published = json.loads((ROOT / "docs" / "runfile.schema.json").read_text())
    assert published == json.loads(json.dumps(json_schema()))


def test_schema_knows_every_key_the_steps_accept():
    """The schema and the steps' own key lists agree (a key added to one must be added to the other)."""
    from bifnet.runfile_schema import STEP_MODELS
    from bifnet.runs import STEP_KINDS

    assert set(STEP_MODELS) == set(STEP_KINDS)
    from bifnet.network import steps as network_steps

    assert network_steps._SIM_KEYS <= set(STEP_MODELS["simulate"].model_fields)
