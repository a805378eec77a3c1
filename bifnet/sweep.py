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
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from bifnet.errors import BifnetError, InfrastructureError, OutputError, RunFileError

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


_KEY_PARTS = {"model": "another model file", "parameters": "other parameters", "connectome": "another connectome",
              "analysis": "another analysis or other options", "versions": "other package versions"}


def _read_checkpoint(path: Path, header: dict) -> dict[tuple, dict]:
    done: dict[tuple, dict] = {}
    if not path.exists():
        return done
    try:
        with path.open("rb") as handle:
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError as error:
        raise OutputError(f"cannot read the checkpoint {path}: {error.strerror or error}") from None
    if not lines:
        return done
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError:
        first = None
    if not isinstance(first, dict) or "grid" not in first:
        raise OutputError(f"checkpoint {path} is damaged (its first line); delete it to start the sweep again")
    if first.get("grid") != header["grid"]:
        raise RunFileError(f"checkpoint {path} belongs to a different grid; delete it or choose another out_path")
    key = header.get("key")
    if key is not None:
        old = first.get("key")
        if not isinstance(old, dict):
            raise RunFileError(f"checkpoint {path} has no content key (an older bifnet); delete it to start again")
        for part, value in key.items():
            if old.get(part) != value:
                what = _KEY_PARTS.get(part, f"another {part}")
                raise RunFileError(f"checkpoint {path} was computed with {what}; its points would be stale:"
                                   " delete it, or run without --resume")
    shape = tuple(len(v) for v in header["grid"].values())
    damaged = 0
    for line in lines[1:]:
        try:
            record = json.loads(line)
            index = tuple(int(i) for i in record["index"])
            if len(index) != len(shape) or not all(0 <= i < n for i, n in zip(index, shape)):
                raise ValueError(index)
            if "result" in record:
                result = record["result"]
                if not isinstance(result, dict):
                    raise ValueError(result)
                record["result"] = {str(k): (None if v is None else float(v)) for k, v in result.items()}
            elif "error" not in record:
                raise ValueError(record)
        except (ValueError, TypeError, KeyError, AttributeError, json.JSONDecodeError):
            damaged += 1
            continue
        done[index] = record
    if damaged:
        logger.warning("checkpoint %s: %d damaged line(s) ignored; those points are computed again", path, damaged)
    return done


def check_checkpoint(out_path, grid: Mapping[str, Any], *, key: Mapping[str, str] | None = None) -> int:
    """Check the checkpoint of ``out_path`` against a grid and key (as :func:`run_sweep` would);
    return how many points it holds.

    Raises
    ------
    RunFileError
        Another grid or key. :class:`OutputError`: a damaged first line.
    """
    arrays = _grid_arrays(grid)
    header = {"grid": {k: v.tolist() for k, v in arrays.items()}}
    if key is not None:
        header["key"] = dict(key)
    return len(_read_checkpoint(checkpoint_path(out_path), header))


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


def _call_batch(function, points):
    """``function(points)`` for a chunk: one ``("result", dict)`` or ``("error", message)`` per point."""
    results = function(points)
    if not isinstance(results, (list, tuple)) or len(results) != len(points):
        raise BifnetError(f"sweep batch function must return a list of {len(points)} results, got {results!r:.80}")
    out = []
    for value in results:
        if isinstance(value, BaseException):
            if _is_infrastructure(value):
                raise value
            out.append(("error", str(value) if isinstance(value, BifnetError)
                        else f"{type(value).__name__}: {value}"))
        else:
            out.append(("result", _normalise_output(value)))
    return out


def run_sweep(function: Callable[..., Any], grid: Mapping[str, Any], *, out_path, scheduler=None,
              workers: int | None = None, progress: bool = True, key: Mapping[str, str] | None = None,
              retry_failed: bool = False, batch_size: int | None = None):
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
    key : mapping of str to str, optional
        Hashes of what decides the numbers (model, parameters, connectome,
        analysis, versions), kept in the checkpoint's first line; a
        checkpoint with another key is refused, naming the part that differs.
    retry_failed : bool
        Compute again the points the checkpoint records as failed.
    batch_size : int, optional
        Give ``function`` chunks of up to this many points instead of single
        points: it is called as ``function(points)`` with a list of point
        dicts and returns one result per point (a number, a dict of numbers,
        or an exception instance for a point that failed). A chunk is the
        unit of work; its points are checkpointed as it finishes (a resumed
        sweep regroups the points still to compute).

    Returns
    -------
    xarray.Dataset
        One data variable per output key, dims = grid parameter names (in
        grid order), ``NaN`` where a point failed; attribute ``n_failed``.

    Raises
    ------
    BifnetError
        Bad grid or non-numeric outputs.
    RunFileError
        A checkpoint from another grid or with another ``key``.
    InfrastructureError
        The pool, the scheduler or the disk failed; finished points stay in
        the checkpoint and are not recomputed on resume.

    Notes
    -----
    Points already in the checkpoint are not recomputed. A point whose
    function raises an ordinary exception (a numerical failure) is recorded
    with its error (and logged); it is computed again only with
    ``retry_failed``. Infrastructure failures (a worker killed, a lost
    scheduler, ``OSError``, ``MemoryError``, ``ImportError``) stop the sweep
    instead of being recorded. Workers of the local pool exit when this
    process dies; Ctrl-C and SIGTERM cancel the pending points at once.

    Examples
    --------
    >>> ds = run_sweep(growth, {"Iext_e": np.linspace(3, 8, 21), "eps": [4, 8, 12]},
    ...                out_path="sweep.nc")             # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    arrays = _grid_arrays(grid)
    names = list(arrays)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise BifnetError(f"workers: expected a positive integer, got {workers!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise BifnetError(f"batch_size: expected a positive integer, got {batch_size!r}")
    if not (scheduler is None or isinstance(scheduler, str) or hasattr(scheduler, "submit")):
        raise BifnetError(f"scheduler: expected None, 'serial', 'processes', an address or a Client, got {scheduler!r}")
    if isinstance(scheduler, str) and scheduler not in ("serial", "processes") and "://" not in scheduler:
        raise BifnetError(f"scheduler: expected 'serial', 'processes' or an address like tcp://host:8786,"
                          f" got {scheduler!r}")
    header = {"grid": {k: v.tolist() for k, v in arrays.items()}}
    if key is not None:
        header["key"] = dict(key)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_path(out_path)
    done = _read_checkpoint(ckpt_path, header)
    shape = tuple(a.size for a in arrays.values())
    todo = []
    for index in itertools.product(*(range(s) for s in shape)):
        if index not in done or (retry_failed and "error" in done[index]):
            todo.append((index, {k: float(arrays[k][i]) for k, i in zip(names, index)}))
    logger.info("sweep: %d points, %d from the checkpoint, %d to compute", int(np.prod(shape)),
                int(np.prod(shape)) - len(todo), len(todo))
    try:
        checkpoint = _Checkpoint(ckpt_path, header)
    except OSError as error:
        raise OutputError(f"cannot write the checkpoint {ckpt_path}: {error.strerror or error}") from None
    bar = tqdm(total=len(todo), disable=not progress, desc="sweep")

    def record(index, point, future_result=None, error=None):
        if error is not None:
            logger.warning("sweep point %s failed: %s", point, error)
        try:
            done[index] = checkpoint.append(index, point, future_result, error)
        except OSError as failure:
            raise OutputError(f"cannot write the checkpoint {ckpt_path}: {failure.strerror or failure}") from None
        bar.update(1)

    try:
        if todo and batch_size is not None:
            def record_chunk(indices, points, results=None, error=None):
                for i, (index, point) in enumerate(zip(indices, points)):
                    if error is not None:
                        record(index, point, error=error)
                    elif results[i][0] == "error":
                        record(index, point, error=results[i][1])
                    else:
                        record(index, point, results[i][1])

            chunks = []
            for a in range(0, len(todo), batch_size):
                part = todo[a:a + batch_size]
                chunks.append((tuple(index for index, _ in part), [point for _, point in part]))
            _dispatch(function, chunks, scheduler, workers, record_chunk, call=_call_batch)
        elif todo:
            _dispatch(function, todo, scheduler, workers, record)
    finally:
        checkpoint.close()
        bar.close()
    return _assemble(arrays, done, out_path)


_INFRASTRUCTURE = (OSError, MemoryError, ImportError, EOFError, InfrastructureError)


def _is_infrastructure(error: BaseException) -> bool:
    from concurrent.futures.process import BrokenProcessPool

    if isinstance(error, (BrokenProcessPool, *_INFRASTRUCTURE)):
        return True
    name = type(error).__name__
    return name in ("CommClosedError", "KilledWorker", "CancelledError", "TimeoutError", "PicklingError",
                    "UnpicklingError")


def _infrastructure(error: BaseException, where: str) -> InfrastructureError:
    text = str(error).splitlines()[0] if str(error) else ""
    return InfrastructureError(f"sweep stopped: {where}: {type(error).__name__}"
                               f"{': ' + text if text else ''}; finished points are kept in the checkpoint"
                               " (continue with --resume)")


def _worker_init(parent: int) -> None:
    """Pool worker start-up: die with the parent (Linux PR_SET_PDEATHSIG); one BLAS thread."""
    import signal

    from bifnet._blas import one_blas_thread_in_this_process
    from bifnet.continuation._watchdog import die_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and cancels
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    one_blas_thread_in_this_process()


def _raw_call(function, point):
    return function(**point)


def map_tasks(function: Callable[..., Any], tasks, *, scheduler=None, workers: int | None = None,
              progress: str | None = None) -> list:
    """``[function(**task) for task in tasks]`` on the machinery of :func:`run_sweep`.

    Local processes by default (``workers``, default ``min(os.cpu_count(), len(tasks))``),
    ``"serial"`` in this process, a Dask scheduler address or ``Client``. No
    checkpoint: the results (any picklable objects) come back in task order.
    ``progress``: a label; each finished task is then logged (``"<label>: 3 of 8 tasks done (41 s)"``).

    Raises
    ------
    BifnetError
        The first task that failed (its message), after all tasks ran.
    InfrastructureError
        The pool or the scheduler failed.
    """
    tasks = list(tasks)
    if not tasks:
        return []
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise BifnetError(f"workers: expected a positive integer, got {workers!r}")
    if scheduler is None or scheduler == "processes":
        workers = min(workers or os.cpu_count() or 1, len(tasks))
        if workers == 1:
            scheduler = "serial"
    results: dict[int, Any] = {}
    errors: list[str] = []
    begin = time.perf_counter()

    def record(index, point, result=None, error=None):
        if error is not None:
            errors.append(error)
        else:
            results[index[0]] = result
        if progress and len(tasks) > 1:
            logger.info("  %s: %d of %d tasks done (%.0f s)", progress, len(results) + len(errors), len(tasks),
                        time.perf_counter() - begin)

    _dispatch(function, [((i,), task) for i, task in enumerate(tasks)], scheduler, workers, record, call=_raw_call)
    if errors:
        raise BifnetError(f"{len(errors)} of {len(tasks)} task(s) failed; first: {errors[0]}")
    return [results[i] for i in range(len(tasks))]



def _dispatch(function, todo, scheduler, workers, record, call=None):
    call = call or _call
    if scheduler == "serial":
        for index, point in todo:
            try:
                result = call(function, point)
            except BifnetError as error:
                if isinstance(error, InfrastructureError):
                    raise
                record(index, point, error=str(error))
                continue
            except Exception as error:  # the user's function failed at this point
                if _is_infrastructure(error):
                    raise _infrastructure(error, f"point {point}") from None
                record(index, point, error=f"{type(error).__name__}: {error}")
                continue
            record(index, point, result)
        return
    if scheduler is None or scheduler == "processes":
        from concurrent.futures import ProcessPoolExecutor, as_completed

        pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(os.getpid(),))
        clean = False
        try:
            futures = {pool.submit(call, function, point): (index, point) for index, point in todo}
            for future in as_completed(futures):
                index, point = futures[future]
                _collect(future, index, point, record)
            clean = True
        finally:
            if clean:
                pool.shutdown(wait=True)
            else:  # Ctrl-C, SIGTERM or an infrastructure error: stop the workers now
                processes = list(getattr(pool, "_processes", {}).values())
                pool.shutdown(wait=False, cancel_futures=True)
                for process in processes:
                    try:
                        process.kill()
                    except Exception:  # pragma: no cover - already gone
                        pass
                for process in processes:
                    process.join(timeout=5)
        return
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise RunFileError(f"scheduler {scheduler!r} needs Dask: pip install -e '.[dask]'") from None

    client = scheduler if isinstance(scheduler, Client) else None
    own = client is None
    if own:
        if not isinstance(scheduler, str):
            raise BifnetError(f"scheduler: expected None, 'serial', 'processes', an address or a Client,"
                              f" got {scheduler!r}")
        try:
            client = Client(scheduler, timeout="5s")
        except Exception as error:
            raise InfrastructureError(f"cannot reach the Dask scheduler {scheduler}: {type(error).__name__}: "
                                      f"{str(error).splitlines()[0] if str(error) else 'no answer'}") from None
    try:
        futures = []
        lookup = {}
        for index, point in todo:
            fut = client.submit(call, function, point, pure=False)
            futures.append(fut)
            lookup[fut.key] = (index, point)
        for future in as_completed(futures):
            index, point = lookup[future.key]
            _collect(future, index, point, record)
    except BaseException:
        try:
            client.cancel(futures)
        except Exception:  # pragma: no cover
            pass
        raise
    finally:
        if own:
            client.close()


def _collect(future, index, point, record):
    try:
        result = future.result()
    except InfrastructureError:
        raise
    except BifnetError as error:
        record(index, point, error=str(error))
        return
    except Exception as error:
        if _is_infrastructure(error):
            raise _infrastructure(error, f"point {point}") from None
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
    first_error = ""
    for index, record in done.items():
        if "result" not in record:
            n_failed += 1
            first_error = first_error or str(record.get("error", ""))
            continue
        for k, v in record["result"].items():
            data[k][index] = np.nan if v is None else v
    dims = list(arrays)
    ds = xr.Dataset({k: (dims, v) for k, v in data.items()}, coords={k: v for k, v in arrays.items()},
                    attrs={"n_points": int(np.prod(shape)), "n_failed": n_failed,
                           **({"first_error": first_error[:300]} if first_error else {})})
    write_netcdf(out_path, ds)
    return ds
