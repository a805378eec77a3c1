"""Parameter sweeps on a local process pool or a Dask cluster, checkpointed.

``run_sweep(function, grid, out_path=...)`` evaluates ``function(**point)``
on the Cartesian product of ``grid``. Each finished point is appended (and
flushed) to ``<out_path>.checkpoint.jsonl`` as it completes, so a sweep that
is interrupted resumes without recomputing; the assembled result is an
:class:`xarray.Dataset` with one dimension per grid parameter, written to
``out_path`` as NetCDF.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from bifnet.errors import BifnetError

logger = logging.getLogger(__name__)


def checkpoint_path(out_path) -> Path:
    """The checkpoint file used for ``out_path``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".checkpoint.jsonl")


def _grid_arrays(grid: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if not isinstance(grid, Mapping) or not grid:
        raise BifnetError("grid: expected a non-empty mapping of parameter name to values")
    arrays = {}
    for name, values in grid.items():
        arr = np.atleast_1d(np.asarray(values, dtype=float))
        if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
            raise BifnetError(f"grid: values of {name!r} must be a non-empty 1-D array of finite numbers")
        arrays[str(name)] = arr
    return arrays


def _normalise_output(value) -> dict[str, float]:
    if isinstance(value, Mapping):
        out = {}
        for key, v in value.items():
            try:
                out[str(key)] = float(v)
            except (TypeError, ValueError):
                raise BifnetError(f"sweep function returned a non-numeric value for {key!r}: {v!r}") from None
        return out
    try:
        return {"value": float(value)}
    except (TypeError, ValueError):
        raise BifnetError(f"sweep function must return a number or a dict of numbers, got {value!r}") from None


def _read_checkpoint(path: Path, header: dict) -> dict[tuple, dict]:
    done: dict[tuple, dict] = {}
    if not path.exists():
        return done
    with path.open() as handle:
        lines = handle.read().splitlines()
    if not lines:
        return done
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError:
        raise BifnetError(f"checkpoint {path} is corrupt (first line); delete it to start again") from None
    if first.get("grid") != header["grid"]:
        raise BifnetError(f"checkpoint {path} belongs to a different grid; delete it or choose another out_path")
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("ignoring a partial line in %s (interrupted write)", path)
            continue
        done[tuple(record["index"])] = record
    return done


class _Checkpoint:
    def __init__(self, path: Path, header: dict):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        torn = False
        if not new:
            with path.open("rb") as handle:
                handle.seek(-1, os.SEEK_END)
                torn = handle.read(1) != b"\n"
        self.handle = path.open("a")
        if new:
            self._write(header)
        elif torn:  # an interrupted write left a partial last line: end it
            self.handle.write("\n")

    def _write(self, record):
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def append(self, index, point, result=None, error=None):
        record = {"index": list(index), "point": point}
        if error is not None:
            record["error"] = error
        else:
            record["result"] = {k: (v if math.isfinite(v) else None) for k, v in result.items()}
        self._write(record)
        return record

    def close(self):
        self.handle.close()


def _call(function, point):
    return _normalise_output(function(**point))


def run_sweep(function: Callable[..., Any], grid: Mapping[str, Any], *, out_path, scheduler=None,
              workers: int | None = None, progress: bool = True):
    """Evaluate ``function`` on a parameter grid, in parallel, with checkpoints.

    Parameters
    ----------
    function : callable
        ``function(**point)`` returning a number or a dict of numbers; must be
        picklable (a module-level function) for process pools and Dask.
    grid : mapping of str to array_like
        One 1-D array of values per parameter; the sweep is their product.
    out_path : str or Path
        NetCDF file for the result; the checkpoint is
        ``<out_path>.checkpoint.jsonl`` next to it.
    scheduler : None, "serial", "processes", str or dask.distributed.Client
        ``None``/``"processes"``: a local :class:`ProcessPoolExecutor`;
        ``"serial"``: in this process; ``"tcp://host:port"``: a Dask scheduler
        address; or a connected ``Client``.
    workers : int, optional
        Processes of the local pool (default: ``os.cpu_count()``).
    progress : bool
        Show a progress bar (tqdm).

    Returns
    -------
    xarray.Dataset
        One data variable per output key, dims = grid parameter names (in
        grid order), ``NaN`` where a point failed; attribute ``n_failed``.

    Raises
    ------
    BifnetError
        Bad grid, a checkpoint from another grid, or non-numeric outputs.

    Notes
    -----
    Points already in the checkpoint are not recomputed. A point whose
    function raises is recorded with its error (and logged), not retried on
    resume; delete its line from the checkpoint to retry it.

    Examples
    --------
    >>> ds = run_sweep(growth, {"Iext_e": np.linspace(3, 8, 21), "eps": [4, 8, 12]},
    ...                out_path="sweep.nc")             # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    arrays = _grid_arrays(grid)
    names = list(arrays)
    header = {"grid": {k: v.tolist() for k, v in arrays.items()}}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_path(out_path)
    done = _read_checkpoint(ckpt_path, header)
    shape = tuple(a.size for a in arrays.values())
    todo = []
    for index in itertools.product(*(range(s) for s in shape)):
        if index not in done:
            todo.append((index, {k: float(arrays[k][i]) for k, i in zip(names, index)}))
    logger.info("sweep: %d points, %d from the checkpoint, %d to compute", int(np.prod(shape)), len(done), len(todo))
    checkpoint = _Checkpoint(ckpt_path, header)
    bar = tqdm(total=len(todo), disable=not progress, desc="sweep")

    def record(index, point, future_result=None, error=None):
        if error is not None:
            logger.warning("sweep point %s failed: %s", point, error)
        done[index] = checkpoint.append(index, point, future_result, error)
        bar.update(1)

    try:
        if todo:
            _dispatch(function, todo, scheduler, workers, record)
    finally:
        checkpoint.close()
        bar.close()
    return _assemble(arrays, done, out_path)


def _dispatch(function, todo, scheduler, workers, record):
    if scheduler == "serial":
        for index, point in todo:
            try:
                record(index, point, _call(function, point))
            except BifnetError:
                raise
            except Exception as error:  # the user's function failed at this point
                record(index, point, error=f"{type(error).__name__}: {error}")
        return
    if scheduler is None or scheduler == "processes":
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_call, function, point): (index, point) for index, point in todo}
            for future in as_completed(futures):
                index, point = futures[future]
                _collect(future, index, point, record)
        return
    from dask.distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else None
    own = client is None
    if own:
        if not isinstance(scheduler, str):
            raise BifnetError(f"scheduler: expected None, 'serial', 'processes', an address or a Client,"
                              f" got {scheduler!r}")
        client = Client(scheduler)
    try:
        futures = []
        lookup = {}
        for index, point in todo:
            fut = client.submit(_call, function, point, pure=False)
            futures.append(fut)
            lookup[fut.key] = (index, point)
        for future in as_completed(futures):
            index, point = lookup[future.key]
            _collect(future, index, point, record)
    finally:
        if own:
            client.close()


def _collect(future, index, point, record):
    try:
        result = future.result()
    except BifnetError as error:
        record(index, point, error=str(error))
        return
    except Exception as error:
        record(index, point, error=f"{type(error).__name__}: {error}")
        return
    record(index, point, result)


def _assemble(arrays, done, out_path):
    import xarray as xr

    from bifnet.io import write_netcdf

    shape = tuple(a.size for a in arrays.values())
    keys = sorted({k for r in done.values() for k in r.get("result", {})})
    data = {k: np.full(shape, np.nan) for k in keys}
    n_failed = 0
    for index, record in done.items():
        if "result" not in record:
            n_failed += 1
            continue
        for k, v in record["result"].items():
            data[k][index] = np.nan if v is None else v
    dims = list(arrays)
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords={k: v for k, v in arrays.items()},
                    attrs={"n_points": int(np.prod(shape)), "n_failed": n_failed})
    write_netcdf(out_path, ds)
    return ds
