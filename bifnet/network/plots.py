"""Figures of network simulations (ax in, Axes out; never ``show()``)."""

from __future__ import annotations

import numpy as np


def plot_spatiotemporal(result, network, ax=None, *, variable: str = "v_e", cmap: str = "viridis"):
    """Region x time heatmap of one variable.

    Parameters
    ----------
    result : SimulationResult or xarray.Dataset
    network : Network
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure is made when ``None``.
    variable : str
        Variable name (default ``v_e``).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    names = network.model.variable_names
    if variable not in names:
        from bifnet.errors import SimulationError

        raise SimulationError(f"variable: {variable!r} is not one of {', '.join(names)}")
    k = names.index(variable)
    if hasattr(result, "data_vars"):
        t = np.asarray(result["time"])
        values = np.asarray(result["state"])[:, :, k]
    else:
        t = np.asarray(result.t)
        values = np.asarray(result.y)[:, :, k]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    mesh = ax.pcolormesh(t, np.arange(values.shape[1]), values.T, shading="auto", cmap=cmap,
                         rasterized=True)
    ax.figure.colorbar(mesh, ax=ax, label=variable)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("region")
    ax.set_title(f"{network.model.name}: {variable}")
    return ax
