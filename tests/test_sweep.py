"""Parameter sweeps: local pool, serial, checkpoint/resume and Dask agree."""

import numpy as np
import pytest
import xarray as xr

from bifnet.sweep import checkpoint_path, run_sweep

CALLS = []


def leading_mode_growth(Iext_e, eps):
    """Growth rate of the uniform mode at the homogeneous equilibrium (numpy only)."""
    from bifnet.codegen import mode_jacobian_functions
    from bifnet.model import load_model
    from bifnet.network import find_homogeneous_equilibrium

    model = load_model("ngnmm_ping")
    params = model.resolve_parameters({"Iext_e": Iext_e, "eps": eps})
    x0 = np.array([0.02, -1.5, 0.02, 0.02, -1.5, 0.02])
    x = find_homogeneous_equilibrium(model, params, x0=x0, settle_time=0)
    A, B = mode_jacobian_functions(model)
    p = np.array([params[k] for k in model.parameter_names])
    ev = np.linalg.eigvals(A(x, p) + B(x, p))
    return {"growth_rate": ev.real.max(), "r_e": x[0]}


def counted(a, b):
    CALLS.append((a, b))
    if a == 2 and b == 30:
        raise RuntimeError("boom")
    return {"sum": a + b, "product": a * b}


GRID = {"Iext_e": [3.0, 3.5, 4.0], "eps": [6.0, 8.0]}


def test_local_pool_equals_serial(tmp_path):
    local = run_sweep(leading_mode_growth, GRID, out_path=tmp_path / "a.nc", workers=2, progress=False)
    serial = run_sweep(leading_mode_growth, GRID, out_path=tmp_path / "b.nc", scheduler="serial", progress=False)
    xr.testing.assert_allclose(local, serial)
    assert local["growth_rate"].dims == ("Iext_e", "eps")
    with xr.open_dataset(tmp_path / "a.nc") as back:
        xr.testing.assert_allclose(back.load(), local)


def test_checkpoint_resumes_without_recomputing(tmp_path):
    grid = {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}
    out = tmp_path / "s.nc"
    CALLS.clear()
    full = run_sweep(counted, grid, out_path=out, scheduler="serial", progress=False)
    assert len(CALLS) == 9 and full.attrs["n_failed"] == 1
    assert np.isnan(full["sum"].sel(a=2.0, b=30.0)) and full["product"].sel(a=3.0, b=20.0) == 60.0
    # simulate an interruption: keep the header and the first four points (and a torn line)
    ckpt = checkpoint_path(out)
    lines = ckpt.read_text().splitlines()
    ckpt.write_text("\n".join(lines[:5]) + "\n" + lines[5][:7])
    CALLS.clear()
    resumed = run_sweep(counted, grid, out_path=out, scheduler="serial", progress=False)
    assert len(CALLS) == 5
    xr.testing.assert_identical(resumed, full)
    CALLS.clear()
    run_sweep(counted, grid, out_path=out, scheduler="serial", progress=False)
    assert CALLS == []
    from bifnet.errors import BifnetError
    with pytest.raises(BifnetError, match="different grid"):
        run_sweep(counted, {"a": [1.0], "b": [1.0]}, out_path=out, scheduler="serial", progress=False)


def test_dask_local_cluster_equals_local(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    serial = run_sweep(leading_mode_growth, GRID, out_path=tmp_path / "s.nc", scheduler="serial", progress=False)
    with distributed.LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            on_dask = run_sweep(leading_mode_growth, GRID, out_path=tmp_path / "d.nc", scheduler=client,
                                progress=False)
    xr.testing.assert_allclose(on_dask, serial)


BATCHES = []


def counted_batch(points):
    """A batch function: one result per point, an exception instance for a point that fails."""
    BATCHES.append(len(points))
    return [RuntimeError("boom") if (p["a"], p["b"]) == (2.0, 30.0) else {"sum": p["a"] + p["b"]} for p in points]


def test_batches_checkpoint_each_point_and_resume(tmp_path):
    """batch_size: chunks are the unit of work, points the unit of the checkpoint; a resumed sweep
    regroups only the points still to compute; the result equals the one-point-per-task sweep."""
    grid = {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0]}
    out = tmp_path / "s.nc"
    BATCHES.clear()
    full = run_sweep(counted_batch, grid, out_path=out, scheduler="serial", progress=False, batch_size=4)
    assert BATCHES == [4, 4, 1] and full.attrs["n_failed"] == 1 and np.isnan(full["sum"].sel(a=2.0, b=30.0))
    CALLS.clear()
    single = run_sweep(counted, grid, out_path=tmp_path / "one.nc", scheduler="serial", progress=False)
    xr.testing.assert_identical(full["sum"], single["sum"])
    ckpt = checkpoint_path(out)
    lines = ckpt.read_text().splitlines()
    assert len(lines) == 10  # header + one line per point
    ckpt.write_text("\n".join(lines[:3]) + "\n")  # two points kept
    BATCHES.clear()
    resumed = run_sweep(counted_batch, grid, out_path=out, scheduler="serial", progress=False, batch_size=4)
    assert BATCHES == [4, 3]
    xr.testing.assert_identical(resumed, full)
    pooled = run_sweep(counted_batch, grid, out_path=tmp_path / "p.nc", workers=2, progress=False, batch_size=2)
    xr.testing.assert_identical(pooled, full)
    from bifnet.errors import BifnetError
    with pytest.raises(BifnetError, match="batch_size"):
        run_sweep(counted_batch, grid, out_path=tmp_path / "x.nc", scheduler="serial", progress=False, batch_size=0)

def _array_task(a, b):
    if a < 0:
        raise ValueError("negative")
    return np.full(3, a * b), {"pid": __import__("os").getpid()}


def test_map_tasks_returns_objects_in_order_on_every_scheduler():
    from bifnet.errors import BifnetError
    from bifnet.sweep import map_tasks

    tasks = [{"a": float(k), "b": 2.0} for k in range(5)]
    pool = map_tasks(_array_task, tasks, workers=2)
    serial = map_tasks(_array_task, tasks, scheduler="serial")
    for k, (p, s) in enumerate(zip(pool, serial)):
        assert np.array_equal(p[0], np.full(3, 2.0 * k)) and np.array_equal(s[0], p[0])
    assert {p[1]["pid"] for p in pool} != {__import__("os").getpid()}  # ran in other processes
    with pytest.raises(BifnetError, match="1 of 2 task.*negative"):
        map_tasks(_array_task, [{"a": 1.0, "b": 1.0}, {"a": -1.0, "b": 1.0}], workers=2)


def test_map_tasks_logs_each_finished_task_when_asked(caplog):
    """``progress``: one line per finished task, counting up to the number of tasks (failed ones included)."""
    import logging

    from bifnet.errors import BifnetError
    from bifnet.sweep import map_tasks

    tasks = [{"a": float(k), "b": 1.0} for k in range(3)] + [{"a": -1.0, "b": 1.0}]
    with caplog.at_level(logging.INFO, logger="bifnet.sweep"), pytest.raises(BifnetError):
        map_tasks(_array_task, tasks, scheduler="serial", progress="grid rows")
    lines = [r.getMessage() for r in caplog.records if "tasks done" in r.getMessage()]
    assert [line.split("(")[0].strip() for line in lines] == [f"grid rows: {k} of 4 tasks done" for k in (1, 2, 3, 4)]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bifnet.sweep"):
        map_tasks(_array_task, tasks[:2], scheduler="serial")
    assert not [r for r in caplog.records if "tasks done" in r.getMessage()]
