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


def _line(ax, x, y, stable, colour, label=None):
    first = True
    for s, e, st in _runs(stable):
        ax.plot(x[s:e], y[s:e], color=colour, lw=1.6 if st == 1 else 1.0,
                ls="-" if st == 1 else "--", label=label if first else None)
        first = False


def plot_one_parameter(branches: Sequence[Branch], parameter: str, variable: str, ax=None, *,
                       annotate: bool = True, colour: str = "k", cycle_colour: str = "tab:green"):
    """One-parameter diagram: equilibria (``variable``) and cycles (its min and max).

    Stable parts solid, unstable dashed; special points marked and labelled.
    """
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
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
                ax.plot(x[sp.index], ys[sp.index], "o", ms=4, color=c, zorder=5)
                ax.annotate(sp.name, (x[sp.index], ys[sp.index]), fontsize=7, color=c,
                            xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(parameter)
    ax.set_ylabel(variable)
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
    codimension-two points marked."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    seen = set()
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
                    ax.plot(locus[x][sp.index], locus[y][sp.index], "s", ms=5, color="k", zorder=5)
                    ax.annotate(sp.kind.value, (locus[x][sp.index], locus[y][sp.index]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if legend and seen:
        ax.legend(fontsize=8, loc="best")
    return ax
