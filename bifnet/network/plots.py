"""Figures of network simulations (ax in, Axes out; never ``show()``)."""

from __future__ import annotations

import numpy as np


def plot_spatiotemporal(result, network, ax=None, *, variable: str | None = None, cmap: str = "viridis"):
    """Region x time heatmap of one variable.

    Parameters
    ----------
    result : SimulationResult or xarray.Dataset
    network : Network
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure is made when ``None``.
    variable : str
        Variable name (default: the model's observed variable, ``[observe] variable``).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    names = network.model.variable_names
    if variable is None:
        variable = network.model.observe or names[0]
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


_VIEWS = {"axial": (0, 1, "x (mm)", "y (mm)"), "sagittal": (1, 2, "y (mm)", "z (mm)"),
          "coronal": (0, 2, "x (mm)", "z (mm)")}


def plot_brain(values, centres, ax=None, *, view: str = "axial", cmap: str = "RdBu_r", title: str = "",
               symmetric: bool = True, size: float = 60.0):
    """Values on the brain: region centres projected on one plane, coloured by value.

    Parameters
    ----------
    values : array_like (N,)
        One value per region (e.g. a mode's eigenvector or a snapshot of v_e).
    centres : array_like (N, 3)
        Region centres in mm (``Connectome.centres``).
    ax : matplotlib.axes.Axes, optional
    view : {"axial", "sagittal", "coronal"}
    symmetric : bool
        Colour scale symmetric around 0 (eigenvectors, deviations).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    from bifnet.errors import SimulationError

    if view not in _VIEWS:
        raise SimulationError(f"view: must be one of {', '.join(_VIEWS)}, got {view!r}")
    values = np.real(np.asarray(values, dtype=complex)).astype(float)
    centres = np.asarray(centres, dtype=float)
    if centres.shape != (values.size, 3):
        raise SimulationError(f"centres: need shape ({values.size}, 3), got {centres.shape}")
    i, j, xlabel, ylabel = _VIEWS[view]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 4.5))
    limit = float(np.max(np.abs(values))) or 1.0
    order = np.argsort(centres[:, 3 - i - j])  # draw far regions first
    points = ax.scatter(centres[order, i], centres[order, j], c=values[order], s=size, cmap=cmap,
                        vmin=-limit if symmetric else None, vmax=limit if symmetric else None,
                        edgecolors="k", linewidths=0.3)
    ax.figure.colorbar(points, ax=ax, shrink=0.8)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title or view)
    return ax


def plot_brain_views(values, centres, *, title: str = "", **kwargs):
    """Axial, sagittal and coronal views side by side; returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    for ax, view in zip(axes, _VIEWS):
        plot_brain(values, centres, ax, view=view, **kwargs)
    fig.suptitle(title)
    return fig


def animate_simulation(result, network, path, *, variable: str | None = None, view: str = "axial",
                       frames: int = 200, fps: int = 20):
    """An MP4 of one variable on the brain over time (needs ffmpeg; returns None without it).

    Parameters
    ----------
    result : SimulationResult
    network : Network
        Built from a connectome with region centres.
    path : str or Path
        Output ``.mp4``.

    Returns
    -------
    Path or None
        The file, or None when ffmpeg is not installed (logged).
    """
    import logging
    import shutil
    from pathlib import Path

    import matplotlib.pyplot as plt
    from matplotlib import animation

    from bifnet.errors import SimulationError
    from bifnet.io import atomic_path

    log = logging.getLogger("bifnet")
    if shutil.which("ffmpeg") is None:
        log.info("ffmpeg not found: no animation written (apt-get install ffmpeg)")
        return None
    centres = getattr(network.connectome, "centres", None)
    if centres is None:
        raise SimulationError("animation: the network's connectome has no region centres")
    k = network.model.observed_index(variable)
    variable = network.model.variable_names[k]
    y = np.asarray(result.y)[:, :, k]
    picks = np.linspace(0, len(result.t) - 1, min(frames, len(result.t))).astype(int)
    deviation = y - y.mean(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    plot_brain(deviation[picks[0]], centres, ax, view=view)
    scatter = ax.collections[0]
    order = np.argsort(np.asarray(centres)[:, 3 - _VIEWS[view][0] - _VIEWS[view][1]])
    limit = float(np.max(np.abs(deviation))) or 1.0
    scatter.set_clim(-limit, limit)

    def update(frame):
        scatter.set_array(deviation[picks[frame]][order])
        ax.set_title(f"{variable} - network mean, t = {result.t[picks[frame]]:.1f} ms")
        return (scatter,)

    movie = animation.FuncAnimation(fig, update, frames=len(picks), blit=False)
    path = Path(path)
    with atomic_path(path) as tmp:
        movie.save(str(tmp), writer=animation.FFMpegWriter(fps=fps))
    plt.close(fig)
    return path
