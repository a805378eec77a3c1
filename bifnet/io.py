"""Output files: atomic writes of CSV, JSON, NetCDF and figures.

Every file is written to a temporary name in the same folder and renamed into
place, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


def _file_mode() -> int:
    """0666 less the process umask: the mode an ordinary ``open`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Examples
    --------
    >>> with atomic_path("out.nc") as tmp:          # doctest: +SKIP
    ...     dataset.to_netcdf(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _file_mode())  # mkstemp makes 0600; give the umask's mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _jsonable(value: Any):
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (complex, np.complexfloating)):
        return {"real": _jsonable(value.real), "imag": _jsonable(value.imag)}
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and hasattr(value, "name"):  # enums
        return value.name
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (numpy values converted, NaN -> null)."""
    return write_text(path, json.dumps(_jsonable(data), indent=2) + "\n")


def write_csv(path: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index column).

    Floats are written at full double precision, in the shortest form that
    reads back to the same number (Python's ``repr``).
    """
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_step_rows(path: str | os.PathLike, step: str, frame) -> Path:
    """Write a step's rows into a CSV shared by several steps, atomically.

    Rows of ``step`` already in the file are replaced, other steps' rows kept;
    a ``step`` column is added first when ``frame`` has none.
    """
    import pandas as pd

    path = Path(path)
    if "step" not in frame.columns:
        frame = frame.copy()
        frame.insert(0, "step", step)
    if path.exists() and path.stat().st_size:
        old = pd.read_csv(path, keep_default_na=False, na_values=[""])
        frame = pd.concat([old[old["step"] != step], frame], ignore_index=True, sort=False)
    return write_csv(path, frame)


def save_figure(path: str | os.PathLike, figure) -> Path:
    """Save a matplotlib figure atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=130, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(figure)
    return path


def write_netcdf(path: str | os.PathLike, dataset) -> Path:
    """Write an xarray Dataset as NetCDF atomically."""
    with atomic_path(path) as tmp:
        dataset.to_netcdf(tmp)
    return Path(path)
