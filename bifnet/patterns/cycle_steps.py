"""The ``pattern`` step from a transverse Hopf point: the oscillatory pattern of the full network.

Called by :func:`bifnet.patterns.steps.pattern_step` when its start is a
transverse Hopf curve or a mode whose ``J(Lambda)`` has a complex pair there.
"""

from __future__ import annotations

import logging
import types

import numpy as np

from bifnet.continuation.branch import Branch, SpecialKind
from bifnet.errors import BifnetError, RunFileError

log = logging.getLogger("bifnet")

#: keys of the step's ``shooting`` table (fields of :class:`bifnet.patterns.cycles.CycleSettings`)
SHOOTING_KEYS = ("dt", "method", "first_amplitude", "check_return", "return_tolerance", "multipliers",
                 "newton_iterations", "tolerance", "verification_budget")


def cycle_settings(context, step, spec, bounds):
    """:class:`CycleSettings` from the run's and the step's ``settings`` (those of ``ds``, ``ds_min``,
    ``ds_max``, ``max_steps`` given; the rest keep the defaults of :class:`CycleSettings`) and ``shooting``."""
    from bifnet.patterns.cycles import CycleSettings

    shooting = dict(spec.get("shooting") or {})
    unknown = sorted(set(shooting) - set(SHOOTING_KEYS))
    if unknown:
        raise RunFileError(f"step {step!r}: shooting: unknown key(s) {', '.join(unknown)} "
                           f"(known: {', '.join(SHOOTING_KEYS)})")
    given = dict(context.results["__run__"].get("settings", {}) or {})
    given.update(spec.get("settings") or {})
    table = {"bounds": bounds}
    for key in ("ds", "ds_min", "ds_max", "max_steps"):
        if key in given:
            table[key] = abs(float(given[key])) if key != "max_steps" else int(given[key])
    table.update(shooting)
    try:
        return CycleSettings(**table)
    except (BifnetError, TypeError) as error:
        raise RunFileError(f"step {step!r}: {error}") from None


def oscillatory_pattern_step(context, spec, free, params, mode, value, x, settings) -> dict:
    """Locate the transverse Hopf point of ``mode`` near ``value``, continue its periodic orbits, write outputs."""
    from bifnet.continuation.steps import _append_tables
    from bifnet.patterns.cycles import oscillatory_pattern_branch
    from bifnet.patterns.steps import _bracket

    step = spec["name"]
    model = context.model
    operator = context.require_connectome(step)
    Lambda = complex(operator.spectrum().eigenvalues[mode - 1])
    value, x = _bracket(model, params, free, Lambda if Lambda.imag else Lambda.real, value, x)
    params[free] = value
    cycle = cycle_settings(context, step, spec, settings.bounds[free])
    try:
        branch = oscillatory_pattern_branch(model, operator, params, free, x, mode, cycle,
                                            name=f"pattern[mode{mode}]", observe=spec.get("observe"))
    except BifnetError as error:
        raise RunFileError(f"step {step!r}: {error}") from None
    branch.engine["problem"] = types.SimpleNamespace(system=types.SimpleNamespace(model=model, kind="network"))
    _append_tables(context, step, [branch])
    write_cycle_profiles(context, step, branch, operator)
    plot_cycle_pattern(context, step, branch, params, x)
    brain = plot_cycle_brain(context, step, spec, branch, operator)
    context.results[step] = [branch]
    nf = branch.engine["normal_form"]
    rows = slice(1, None)
    return {"mode": mode, "Lambda": float(Lambda.real), "hopf_point": {free: value}, "criticality": nf.criticality,
            "l1": nf.l1, "frequency_hz_at_hopf": nf.omega / (2 * np.pi) * 1000.0, "points": len(branch),
            "status": branch.status, "method": branch.engine["method"],
            "max_residual": float(np.nanmax(branch["residual"][rows])),
            "max_return_error": float(np.nanmax(branch["return_error"][rows]))
            if np.any(np.isfinite(branch["return_error"][rows])) else None,
            "max_trivial_error": float(np.nanmax(branch["trivial_error"][rows])),
            "stable_points": int(np.sum(branch["stable"] == 1)), "brain_points": brain,
            "special_points": [{"name": sp.name, "located": bool(sp.located),
                                **{k: float(v) for k, v in sp.parameters.items()}} for sp in branch.special_points]}


def write_cycle_profiles(context, step, branch: Branch, operator) -> None:
    """``pattern_<step>.nc``: time mean, half range, first-harmonic amplitude and phase of every region and
    variable at every point (row 0, the Hopf point: the equilibrium, amplitude 0, phase undefined)."""
    import xarray as xr

    from bifnet import io

    mean = branch.engine["mean"]
    harmonic = branch.engine["harmonic"]
    free = branch.free[0]
    obs = branch.engine["observe"]
    oi = list(branch.variables).index(obs)
    N = mean.shape[1]
    labels = list(operator.labels) if len(operator.labels) == N else [str(i) for i in range(N)]
    # phases relative to the region with the largest first harmonic of the observed variable
    ref = np.argmax(np.abs(harmonic[:, :, oi]), axis=1)
    rel = harmonic * np.conj(harmonic[np.arange(len(ref)), ref, oi])[:, None, None]
    phase = np.where(np.abs(harmonic) > 0, np.angle(rel), np.nan)
    ds = xr.Dataset(
        {
            "mean": (("point", "region", "variable"), mean, {"description": "time mean over one period"}),
            "amplitude": (("point", "region", "variable"), branch.engine["half_range"],
                          {"description": "(max - min) / 2 over one period"}),
            "harmonic_amplitude": (("point", "region", "variable"), np.abs(harmonic),
                                   {"description": "|c1|: modulus of the first Fourier coefficient"}),
            "phase": (("point", "region", "variable"), phase,
                      {"units": "rad", "description": f"phase of the first harmonic relative to the region with "
                                                      f"the largest first harmonic of {obs} (undefined at the Hopf "
                                                      f"point)"}),
            "state0": (("point", "region", "variable"), branch.engine["states"],
                       {"description": "the state at time 0 (on the Poincare section)"}),
            "period": (("point",), np.asarray(branch["period"], dtype=float), {"units": "ms"}),
            "stable": (("point",), np.asarray(branch["stable"], dtype=np.int64),
                       {"units": "1", "description": "1 stable, 0 unstable, -1 not evaluated (the Hopf point)"}),
            "max_multiplier": (("point",), np.asarray(branch["max_multiplier"], dtype=float), {"units": "1"}),
        },
        coords={"point": np.arange(mean.shape[0]), free: ("point", np.asarray(branch[free], dtype=float)),
                "region": labels, "variable": list(branch.variables)},
        attrs={"step": step, "model": context.model.name, "mode": int(branch.mode),
               "Lambda": float(np.real(branch.Lambda)), "operator": operator.symbol, "solution": "LC",
               "criticality": branch.engine["normal_form"].criticality, "time_unit": "ms",
               "l1": float(branch.engine["normal_form"].l1)},
    )
    io.write_netcdf(context.out_dir / f"pattern_{step}.nc", ds)


def plot_cycle_pattern(context, step, branch: Branch, params, x_hopf) -> None:
    """Diagram: first-harmonic amplitude against the free parameter, with the normal form's prediction and
    the homogeneous branch at zero (solid where stable to every mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from bifnet import io
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.transverse.dispersion import equilibrium_dispersion

    free = branch.free[0]
    p = np.asarray(branch[free], dtype=float)
    amp = np.asarray(branch["amplitude"], dtype=float)
    stable = np.asarray(branch["stable"])
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    lam = context.connectome.spectrum().eigenvalues
    pad = 0.05 * max(float(np.ptp(p)), 1e-3 * max(1.0, abs(float(params[free]))))
    grid = np.linspace(p.min() - pad, p.max() + pad, 81)
    hom = np.full(grid.size, np.nan)
    p0 = float(params[free])
    for direction in (1, -1):
        x = np.asarray(x_hopf, dtype=float)
        order = np.flatnonzero(grid >= p0) if direction == 1 else np.flatnonzero(grid < p0)[::-1]
        for k in order:
            try:
                x = find_equilibrium(context.model, {**params, free: float(grid[k])}, x, settle_time=0.0)
            except BifnetError:
                break
            rates = equilibrium_dispersion(context.model, {**params, free: float(grid[k])}, x, lam).growth_rate
            hom[k] = float(np.all(rates < 0))
    for flag, style in ((1.0, "-"), (0.0, ":")):
        ax.plot(grid, np.where(hom == flag, 0.0, np.nan), style, color="k", lw=1.4)
    for flag, style in ((1, "-"), (0, "--")):
        y = np.where((stable == flag) | (stable == -1), amp, np.nan)
        ax.plot(p, y, style, color="tab:red", lw=1.6)
    ax.plot(p, branch["predicted_amplitude"], color="0.5", lw=0.8)
    ax.plot(p[0], 0.0, "o", color="k", mfc="w", ms=8, zorder=6)
    marks = {SpecialKind.LPC: ("s", "tab:blue"), SpecialKind.PD: ("v", "tab:purple"),
             SpecialKind.NS: ("^", "tab:green"), SpecialKind.BP: ("D", "tab:orange")}
    counts = {}
    end = branch.engine.get("end_hopf_index")
    if end is not None:    # the Hopf point where the amplitude vanished
        ax.plot(p[end], 0.0, "o", color="k", mfc="0.6", ms=8, zorder=6)
    for sp in branch.special_points:
        if sp.index == 0 or sp.index == end:
            continue
        m, c = marks.get(sp.kind, ("x", "0.3"))
        ax.plot(sp.parameters[free], amp[sp.index], m, color=c, ms=5, zorder=5)
        counts[sp.kind] = counts.get(sp.kind, 0) + 1
    handles = [Line2D([], [], color="k", lw=1.4, label="homogeneous, stable"),
               Line2D([], [], color="k", ls=":", lw=1.4, label="homogeneous, unstable"),
               Line2D([], [], color="tab:red", lw=1.6, label=f"oscillatory pattern of mode {branch.mode}, stable"),
               Line2D([], [], color="tab:red", ls="--", lw=1.6, label="pattern, unstable"),
               Line2D([], [], color="0.5", lw=0.8, label="normal form sqrt(-mu' dp / (omega l1))"),
               Line2D([], [], marker="o", ls="none", color="k", mfc="w", ms=8, label="transverse Hopf point (origin)")]
    if end is not None:
        hopf = next(sp for sp in branch.special_points if sp.index == end)
        handles.append(Line2D([], [], marker="o", ls="none", color="k", mfc="0.6", ms=8,
                              label=f"Hopf point of mode {hopf.details.get('mode')} (end)"))
    handles += [Line2D([], [], marker=marks.get(k, ("x", "0.3"))[0], ls="none", color=marks.get(k, ("x", "0.3"))[1],
                       ms=5, label=f"{k.value} x {v} (multipliers, between rows)") for k, v in counts.items()]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_xlabel(free)
    ax.set_ylabel("first-harmonic amplitude |c1| (all regions and variables)")
    nf = branch.engine["normal_form"]
    ax.set_title(f"{context.model.name}: oscillatory pattern of mode {branch.mode} (Lambda = "
                 f"{np.real(branch.Lambda):.4g}), {nf.criticality} Hopf at {free} = {p0:.7g}, "
                 f"{nf.omega / (2 * np.pi) * 1000:.3g} Hz", fontsize=9)
    io.save_figure(context.out_dir / f"pattern_{step}.png", fig)


def plot_cycle_brain(context, step, spec, branch: Branch, operator) -> list[int]:
    """``pattern_<step>_brain.png``: amplitude ((max - min) / 2) and phase of the observed variable per region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bifnet import io
    from bifnet.network.plots import plot_brain

    centres = getattr(operator, "centres", None)
    if centres is None:
        return []
    n_points = len(branch)
    orbits = n_points - (branch.engine.get("end_hopf_index") is not None)   # a last row at a Hopf point
    obs = branch.engine["observe"]
    chosen = spec.get("brain_points")
    if chosen is None:
        stable = np.flatnonzero(np.asarray(branch["stable"]) == 1)
        chosen = [int(stable[-1])] if stable.size else [orbits - 1]
    bad = [k for k in chosen if not (isinstance(k, int) and 0 < k < orbits)]
    if bad:
        last = "" if orbits == n_points else f", row {n_points - 1} the Hopf point where it ends"
        raise RunFileError(f"step {step!r}: brain_points: no orbit at row {bad[0]} (the orbits are rows "
                           f"1..{orbits - 1}; row 0 is the Hopf point{last})")
    oi = list(branch.variables).index(obs)
    half = branch.engine["half_range"][:, :, oi]
    c1 = branch.engine["harmonic"][:, :, oi]
    free = branch.free[0]
    fig, axes = plt.subplots(2 * len(chosen), 3, figsize=(14, 8.6 * len(chosen)), squeeze=False)
    for r, k in enumerate(chosen):
        ref = int(np.argmax(np.abs(c1[k])))
        phase = np.angle(c1[k] * np.conj(c1[k, ref]))
        for ax, view in zip(axes[2 * r], ("axial", "sagittal", "coronal")):
            plot_brain(half[k], centres, ax, view=view, cmap="viridis", symmetric=False,
                       title=f"{view}: amplitude, row {k}")
        for ax, view in zip(axes[2 * r + 1], ("axial", "sagittal", "coronal")):
            plot_brain(phase, centres, ax, view=view, cmap="twilight_shifted",
                       title=f"{view}: phase (rad), row {k}")
    rows = "; ".join(f"row {k}: {free} = {branch[free][k]:.6g}, period {branch['period'][k]:.4g} ms "
                     f"({'stable' if branch['stable'][k] == 1 else 'unstable'})" for k in chosen)
    fig.suptitle(f"{context.model.name}: oscillatory pattern of mode {branch.mode}, {obs}\n{rows}")
    io.save_figure(context.out_dir / f"pattern_{step}_brain.png", fig)
    return [int(k) for k in chosen]
