"""Simulation results as labelled data: xarray Datasets and NetCDF files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bifnet.network.core import Network


def to_xarray(result, network: Network):
    """A :class:`SimulationResult` as an :class:`xarray.Dataset`.

    Parameters
    ----------
    result : SimulationResult
    network : Network
        The network that produced it (labels, variable names, parameters).

    Returns
    -------
    xarray.Dataset
        One data variable per model variable, dims ``time x region``, plus
        ``state`` with dims ``time x region x variable``. Attributes: model,
        method, success, message, ``time_unit = "ms"`` and every parameter.

    Examples
    --------
    >>> ds = to_xarray(simulate(net, (0, 100), y0), net)   # doctest: +SKIP
    >>> ds["v_e"].mean("region")                           # doctest: +SKIP
    """
    import xarray as xr

    names = list(network.model.variable_names)
    units = {v.name: v.unit for v in network.model.variables}
    coords = {
        "time": ("time", np.asarray(result.t, dtype=float), {"units": network.model.time_unit or "ms"}),
        "region": ("region", np.arange(network.n_regions), {"units": "1", "description": "0-based region index"}),
        "variable": ("variable", names, {"units": "1"}),
        "label": ("region", list(network.labels), {"units": "1"}),
    }
    distinct = {units.get(name) or "1" for name in names}
    data = {"state": (("time", "region", "variable"), np.asarray(result.y),
                      {"units": distinct.pop() if len(distinct) == 1 else "mixed: see each variable"})}
    for k, name in enumerate(names):
        data[name] = (("time", "region"), np.asarray(result.y[:, :, k]), {"units": units.get(name) or "1"})
    attrs = {
        "model": network.model.name,
        "method": result.method,
        "success": int(bool(result.success)),
        "message": result.message,
        "nfev": int(result.nfev),
        "time_unit": network.model.time_unit or "ms",
    }
    for key, value in result.stats.items():
        if isinstance(value, (int, float, str, np.integer, np.floating)) and not isinstance(value, bool):
            attrs[f"stats_{key}"] = value
    for name, value in network.parameters.items():
        attrs[f"parameter_{name}"] = float(value)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def write_simulation(path: str | os.PathLike, result, network: Network) -> Path:
    """Write a simulation as NetCDF (atomically, via :func:`bifnet.io.write_netcdf`)."""
    from bifnet.io import write_netcdf

    return write_netcdf(path, to_xarray(result, network))
