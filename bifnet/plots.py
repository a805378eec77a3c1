"""Bifurcation diagrams. Every function takes an Axes and returns it; none calls show()."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind

_COLOURS = {
    SpecialKind.HB: "tab:red", SpecialKind.LP: "tab:blue", SpecialKind.LPC: "tab:green",
    SpecialKind.PD: "tab:purple", SpecialKind.NS: "tab:orange", SpecialKind.BP: "tab:brown",
}
_CODIM2 = {SpecialKind.BT, SpecialKind.GH, SpecialKind.CP, SpecialKind.ZH, SpecialKind.HH,
           SpecialKind.R1, SpecialKind.R2, SpecialKind.R3, SpecialKind.R4, SpecialKind.LPPD,
           SpecialKind.LPNS, SpecialKind.PDNS, SpecialKind.NSNS}


def _runs(stable: np.ndarray):
    """Split indices into contiguous runs of equal stability."""
    if len(stable) == 0:
        return []
    edges = np.flatnonzero(np.diff(stable)) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(stable)]])
    return [(s, min(e + 1, len(stable)), stable[s]) for s, e in zip(starts, ends)]


# candidate label offsets (points), tried in order: up-right, down-right, up-left, down-left, then farther out
_OFFSETS = ((3, 3), (3, -10), (-3, 3), (-3, -10), (8, 10), (8, -16), (-8, 10), (-8, -16), (0, 16), (0, -22))


def place_labels(ax, points, texts, *, colours=None, fontsize: float = 7, offsets=_OFFSETS, pad: float = 1.0,
                 marker: float = 6.0):
    """Label points so that no two labels overlap (greedy).

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Axes whose limits are already final (placement is done in display space).
    points : sequence of (float, float)
        Data coordinates of the labelled points.
    texts : sequence of str
    colours : sequence of colours, optional
    offsets : sequence of (float, float)
        Candidate offsets (points) from each point, tried in order.
    pad : float
        Extra margin (pixels) kept between labels.
    marker : float
        Size (pixels) of the square around every point that no label may cover.

    Returns
    -------
    list
        One entry per point: the ``Annotation`` placed, or ``None`` where every
        candidate position collided with an earlier label or left the axes
        (the point's marker, drawn by the caller, stays).

    Notes
    -----
    Each label takes the first candidate offset whose bounding box does not
    overlap any label already placed or any of the points' markers, and lies
    inside the axes. Points are
    taken in the order given.
    """
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax.autoscale_view()
    frame = ax.get_window_extent(renderer)
    placed, boxes = [], []
    # the markers themselves are obstacles too (a square of ``marker`` pixels around each point)
    markers = []
    for x, y in points:
        if np.isfinite(x) and np.isfinite(y):
            px, py = ax.transData.transform((x, y))
            markers.append(Bbox.from_extents(px - marker / 2, py - marker / 2, px + marker / 2, py + marker / 2))
    colours = list(colours) if colours is not None else ["k"] * len(texts)
    for (x, y), text, colour in zip(points, texts, colours):
        kept = None
        if not (np.isfinite(x) and np.isfinite(y)):
            placed.append(None)
            continue
        for dx, dy in offsets:
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                                color=colour, ha="left" if dx >= 0 else "right", zorder=6)
            box = label.get_window_extent(renderer)
            box = Bbox.from_extents(box.x0 - pad, box.y0 - pad, box.x1 + pad, box.y1 + pad)
            inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(b) for b in boxes) and not any(box.overlaps(m) for m in markers):
                kept = label
                boxes.append(box)
                break
            label.remove()
        placed.append(kept)
    return placed


def _line(ax, x, y, stable, colour, label=None):
    first = True
    for s, e, st in _runs(stable):
        ax.plot(x[s:e], y[s:e], color=colour, lw=1.6 if st == 1 else 1.0,
                ls="-" if st == 1 else "--", label=label if first else None)
        first = False


def plot_one_parameter(branches: Sequence[Branch], parameter: str, variable: str, ax=None, *,
                       annotate: bool = True, colour: str = "k", cycle_colour: str = "tab:green"):
    """One-parameter diagram: equilibria (``variable``) and cycles (its min and max).

    Stable parts solid, unstable dashed; special points marked and labelled
    (labels that would overlap are moved or dropped, see :func:`place_labels`;
    set the axes limits before calling).
    """
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    labels = []
    for branch in branches:
        if parameter not in branch.columns:
            continue
        x = branch[parameter]
        stable = branch["stable"]
        if branch.kind is BranchKind.EQUILIBRIA:
            y = branch[variable]
            _line(ax, x, y, stable, colour)
            ys = {sp.index: y[sp.index] for sp in branch.special_points}
        elif branch.kind is BranchKind.CYCLES:
            lo, hi = branch[f"{variable}_min"], branch[f"{variable}_max"]
            _line(ax, x, hi, stable, cycle_colour)
            _line(ax, x, lo, stable, cycle_colour)
            ys = {sp.index: hi[sp.index] for sp in branch.special_points}
        else:
            continue
        if annotate:
            for sp in branch.special_points:
                if sp.kind in (SpecialKind.EP, SpecialKind.MX):
                    continue
                c = _COLOURS.get(sp.kind, "k")
                # at the located parameter; a point bifnet did not locate (verification failed, or
                # inferred) is an open circle with "?"
                px = sp.parameters.get(parameter, x[sp.index])
                ax.plot(px, ys[sp.index], "o", ms=4, color=c, zorder=5, mfc=c if sp.located else "none")
                labels.append(((px, ys[sp.index]), sp.name if sp.located else f"{sp.name}?", c))
    ax.set_xlabel(parameter)
    ax.set_ylabel(variable)
    if labels:
        place_labels(ax, [p for p, _, _ in labels], [t for _, t, _ in labels], colours=[c for _, _, c in labels])
    return ax


def plot_frequency(branches: Sequence[Branch], parameter: str, ax=None, *, colour: str = "tab:green"):
    """Frequency (Hz, ``1000 / period`` with time in ms) of cycle branches."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    for branch in branches:
        if branch.kind is not BranchKind.CYCLES or parameter not in branch.columns:
            continue
        with np.errstate(divide="ignore"):
            freq = 1000.0 / branch["period"]
        _line(ax, branch[parameter], freq, branch["stable"], colour)
    ax.set_xlabel(parameter)
    ax.set_ylabel("frequency (Hz)")
    return ax


def plot_two_parameter(loci: Iterable[Branch], x: str, y: str, ax=None, *, annotate: bool = True,
                       legend: bool = True):
    """Two-parameter diagram: loci coloured by the kind of point they follow,
    codimension-two points marked (labels placed without overlap; set the
    axes limits before calling)."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    seen = set()
    labels = []
    for locus in loci:
        if x not in locus.columns or y not in locus.columns:
            continue
        kind = locus.locus_of
        colour = _COLOURS.get(kind, "k")
        label = kind.value if kind not in seen else None
        seen.add(kind)
        ax.plot(locus[x], locus[y], color=colour, lw=1.3, label=label)
        if annotate:
            for sp in locus.special_points:
                if sp.kind in _CODIM2:
                    # at the located values (a GH point can lie 0.1 from the engine's row)
                    px = sp.parameters.get(x, locus[x][sp.index])
                    py = sp.parameters.get(y, locus[y][sp.index])
                    ax.plot(px, py, "s", ms=5, color="k", zorder=5, mfc="k" if sp.located else "none")
                    labels.append(((px, py), sp.kind.value if sp.located else f"{sp.kind.value}?"))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if labels:
        place_labels(ax, [p for p, _ in labels], [t for _, t in labels])
    if legend and seen:
        ax.legend(fontsize=8, loc="best")
    return ax


# bins of the number of unstable modes: single counts up to 3, then widening
_COUNT_BINS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, None))


def unstable_count_scale(max_count: int):
    """Discrete colour scale for numbers of unstable modes.

    Parameters
    ----------
    max_count : int
        Largest count that can occur (the number of modes analysed).

    Returns
    -------
    cmap : matplotlib.colors.ListedColormap
        One colour per bin; 0 is a pale blue, distinct from every positive
        count (yellow to dark red); values below 0 (no stable homogeneous
        state) take the ``under`` colour, grey.
    norm : matplotlib.colors.BoundaryNorm
        Integer bins 0, 1, 2, 3, 4–5, 6–10, 11–20, 21–50, 51+ (cut at
        ``max_count``).
    labels : list of str
        One label per bin, for a colour bar with ticks at the bin centres.
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    top = max(int(max_count), 1)
    bins = []
    for lo, hi in _COUNT_BINS:
        if lo > top:
            break
        hi = top if hi is None or hi > top else hi
        bins.append((lo, hi))
    edges = [lo - 0.5 for lo, _ in bins] + [bins[-1][1] + 0.5]
    labels = [str(lo) if lo == hi else f"{lo}–{hi}" for lo, hi in bins]
    warm = plt.get_cmap("YlOrRd")(np.linspace(0.15, 1.0, max(len(bins) - 1, 1)))
    cmap = ListedColormap(["#cfe2f3", *warm[: len(bins) - 1]], name="unstable_counts").with_extremes(
        under="0.7", bad="0.7")
    return cmap, BoundaryNorm(edges, cmap.N), labels


def level_edges(levels, bounds=None) -> np.ndarray:
    """Edges of the rows of a map evaluated on a few levels: midpoints between
    neighbouring levels, the outer edges at ``bounds`` (or half a spacing out)."""
    v = np.sort(np.asarray(levels, dtype=float))
    if v.size == 1:
        half = 0.5 if bounds is None else 0.5 * (bounds[1] - bounds[0])
        return np.array([v[0] - half, v[0] + half]) if bounds is None else np.array(bounds, dtype=float)
    mid = 0.5 * (v[1:] + v[:-1])
    lo = v[0] - (mid[0] - v[0]) if bounds is None else min(bounds[0], v[0])
    hi = v[-1] + (v[-1] - mid[-1]) if bounds is None else max(bounds[1], v[-1])
    return np.concatenate([[lo], mid, [hi]])


def plot_unstable_counts(samples, levels, counts, ax=None, *, bounds=None, max_count=None, alpha: float = 0.85,
                         colorbar: bool = True, label: str = "unstable non-uniform modes"):
    """Map of the number of unstable modes on levels of a second parameter.

    Parameters
    ----------
    samples : array_like
        ``(N,)`` values of the first parameter (increasing).
    levels : array_like
        ``(L,)`` values of the second parameter where the map was evaluated.
    counts : array_like
        ``(L, N)`` counts; negative or NaN where no stable homogeneous state
        was analysed (drawn grey).
    bounds : (float, float), optional
        Range of the second parameter: the outer rows reach it. Each row is
        drawn as a band from the midpoints to its neighbours, so rows touch;
        nothing is interpolated between levels.
    max_count : int, optional
        Top of the colour scale (default: the largest count).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    x = np.asarray(samples, dtype=float)
    order = np.argsort(np.asarray(levels, dtype=float))
    c = np.asarray(counts, dtype=float)[order]
    c = np.where(np.isfinite(c), c, -1.0)
    x_edges = np.concatenate([[x[0]], 0.5 * (x[1:] + x[:-1]), [x[-1]]]) if x.size > 1 else np.array([x[0] - 0.5, x[0] + 0.5])
    y_edges = level_edges(np.asarray(levels)[order], bounds)
    top = int(max_count) if max_count is not None else int(max(np.nanmax(c), 1))
    cmap, norm, labels = unstable_count_scale(top)
    mesh = ax.pcolormesh(x_edges, y_edges, c, cmap=cmap, norm=norm, alpha=alpha, shading="flat",
                         edgecolors="none", rasterized=True)
    if colorbar:
        centres = 0.5 * (np.asarray(norm.boundaries[1:]) + np.asarray(norm.boundaries[:-1]))
        bar = ax.figure.colorbar(mesh, ax=ax, spacing="uniform", pad=0.02, fraction=0.05)
        bar.set_ticks(centres, labels=labels)
        bar.minorticks_off()
        bar.ax.tick_params(length=0, labelsize=8)
        bar.set_label(label, fontsize=9)
    return ax
