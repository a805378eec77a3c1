"""Run-file step ``pattern``: the full-network pattern born at a transverse point."""

from __future__ import annotations

import logging
import types

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind
from bifnet.errors import BifnetError, RunFileError
from bifnet.steps import StepContext, check_keys

log = logging.getLogger("bifnet")


def _start(context: StepContext, spec: dict, free: str, params: dict):
    """``(mode, kind, p_guess, x_guess)`` from ``start``.

    ``start = "tr:LP[mode2]#1"``: a curve of a ``transverse`` step, taken at the
    step's value of the curve's other parameter; ``start = { mode = 2, b = 3.5 }``:
    a mode and a guess of the free parameter (the homogeneous state found by
    integrating and Newton's method there).
    """
    from bifnet.continuation.equilibria import find_equilibrium

    step = spec["name"]
    start = spec.get("start")
    model = context.model
    if isinstance(start, dict):
        if set(start) != {"mode", free}:
            raise RunFileError(f"step {step!r}: start must be \"<transverse step>:<curve>\" or "
                               f"{{ mode = <number>, {free} = <value> }}, got {start!r}")
        mode = start["mode"]
        if not isinstance(mode, int) or isinstance(mode, bool):
            raise RunFileError(f"step {step!r}: start.mode must be a mode number, got {mode!r}")
        value = float(start[free])
        try:
            x = find_equilibrium(model, {**params, free: value})
        except BifnetError as error:
            raise RunFileError(f"step {step!r}: no homogeneous equilibrium at {free} = {value:g}: {error}") from None
        spectrum = context.connectome.spectrum()
        lam = complex(spectrum.eigenvalues[mode - 1]) if 1 <= mode <= len(spectrum.eigenvalues) else None
        if lam is None:
            raise RunFileError(f"step {step!r}: no mode {mode} (the connectome has {len(spectrum.eigenvalues)})")
        from bifnet.patterns.criticality import _mode_matrices

        A, B = _mode_matrices(model, x, {**params, free: value})
        ev = np.linalg.eigvals(A + (lam.real if not lam.imag else lam) * B)
        kind = "HB" if abs(ev[np.argmin(np.abs(ev.real))].imag) > 1e-6 * max(1.0, np.max(np.abs(ev))) else "LP"
        return mode, kind, value, x
    curve = _curve(context, spec)
    if free not in curve.free:
        raise RunFileError(f"step {step!r}: curve {curve.name!r} is in {', '.join(curve.free)}, not {free}")
    other = next(f for f in curve.free if f != free)
    if other == "Lambda":
        raise RunFileError(f"step {step!r}: curve {curve.name!r} is a neutral curve (in Lambda); start from a "
                           f"transverse curve in two model parameters")
    target = float(params[other])
    q = np.asarray(curve[other], dtype=float)
    X = np.column_stack([curve[v] for v in model.variable_names] + [curve[free]]).astype(float)
    hits = np.flatnonzero((q[:-1] - target) * (q[1:] - target) <= 0)
    if not hits.size:
        raise RunFileError(f"step {step!r}: curve {curve.name!r} does not reach {other} = {target:g} "
                           f"(its range is {q.min():g} to {q.max():g}); set {other} in the step's parameters")
    k = int(hits[0])
    t = 0.0 if q[k + 1] == q[k] else (target - q[k]) / (q[k + 1] - q[k])
    row = (1 - t) * X[k] + t * X[k + 1]
    return int(curve.mode), curve.locus_of.value, float(row[-1]), row[:-1]


def _curve(context: StepContext, spec: dict) -> Branch:
    """The transverse curve named by ``start = "<step>:<curve>"``."""
    step = spec["name"]
    start = spec.get("start")
    if not isinstance(start, str) or ":" not in start:
        raise RunFileError(f"step {step!r}: start must look like \"tr:LP[mode2]#1\" (a curve of a transverse "
                           f"step) or {{ mode = 2, <free> = 3.5 }}")
    source, name = start.split(":", 1)
    curves = context.results.get(source)
    if not isinstance(curves, list):
        raise RunFileError(f"step {step!r}: no earlier step {source!r} with transverse curves")
    curve = next((c for c in curves if isinstance(c, Branch) and c.name == name), None)
    if curve is None:
        known = ", ".join(c.name for c in curves if isinstance(c, Branch)) or "none"
        raise RunFileError(f"step {step!r}: step {source!r} has no curve {name!r} (has: {known})")
    return curve


def _bracket(model, params, free, Lambda, value, x):
    """A bracket of ``free`` around ``value`` where the mode's growth rate changes sign."""
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.patterns.criticality import locate_transverse_point

    delta = 1e-4 * max(1.0, abs(value))
    last = None
    for _ in range(12):
        try:
            lo, hi = value - delta, value + delta
            x_lo = find_equilibrium(model, {**params, free: lo}, x, settle_time=0.0)
            x_hi = find_equilibrium(model, {**params, free: hi}, x, settle_time=0.0)
            return locate_transverse_point(model, params, free, Lambda, (lo, hi), (x_lo, x_hi), "LP")
        except BifnetError as error:
            last = error
            delta *= 3
    raise RunFileError(f"no sign change of the growth rate of Lambda = {Lambda:.6g} near {free} = {value:.6g}"
                       f" ({last})")


def pattern_step(context: StepContext, spec: dict) -> dict:
    """``kind = "pattern"``: continue the full-network pattern born at a transverse point.

    From a transverse fold / branch point (``LP`` curve, or a real zero eigenvalue
    of the mode's ``J(Lambda)``): the stationary pattern (below). From a transverse
    Hopf point (``HB`` curve, or a complex pair): the oscillatory pattern by
    shooting (:func:`bifnet.patterns.cycle_steps.oscillatory_pattern_step`; the
    ``shooting`` table sets ``dt``, ``method``, ``first_amplitude``, ``check_return``,
    ``multipliers``, ``newton_iterations``, ``tolerance``).

    Keys: ``start`` (``"<transverse step>:<curve>"`` such as ``"tr:LP[mode2]#1"``, or
    ``{ mode = 2, <free> = value }``), ``free`` (one parameter; default the curve's
    first), ``range`` (of ``free``), ``parameters``, ``settings`` (``ds``, ``ds_min``,
    ``ds_max``, ``max_steps`` per direction), ``observe`` (the variable of the
    diagram and the spread column; default the model's), ``brain_points`` (rows of
    the branch drawn on the brain; default the stable row of largest spread).

    Writes the branch to ``branches.csv`` / ``special_points.csv`` (``mode`` = the mode
    of origin), ``pattern_<step>.nc`` (per-region profiles), ``pattern_<step>.png`` and,
    when the connectome has region centres, ``pattern_<step>_brain.png``.
    """
    from bifnet.continuation.steps import _append_tables, step_settings
    from bifnet.patterns.equilibria import PatternSettings, stationary_pattern_branch

    step = spec["name"]
    check_keys(spec, {"start", "free", "range", "parameters", "settings", "observe", "brain_points", "plot",
                      "shooting"}, step)
    model = context.model
    model.require_coupling(f"step {step!r}")
    operator = context.require_connectome(step)
    free = spec.get("free")
    if isinstance(free, list):
        if len(free) != 1:
            raise RunFileError(f"step {step!r}: free must be one parameter, got {free}")
        free = free[0]
    if free is None:
        start = spec.get("start")
        if isinstance(start, dict):
            keys = [k for k in start if k != "mode"]
            if len(keys) != 1:
                raise RunFileError(f"step {step!r}: give free = \"<parameter>\" (start names {len(keys)} "
                                   f"parameters)")
            free = keys[0]
        else:
            free = _curve(context, spec).free[0]
    model.check_parameter_names([free])
    params = dict(context.parameters)
    overrides = spec.get("parameters", {})
    model.check_parameter_names(overrides)
    params.update({k: float(v) for k, v in overrides.items()})
    observe = spec.get("observe")
    if observe is not None:
        model.observed_index(observe)
    settings = step_settings(context, spec, (free,))
    mode, kind, value, x = _start(context, spec, free, params)
    lo, hi = settings.bounds[free]
    if not lo <= value <= hi:
        raise RunFileError(f"step {step!r}: the start ({kind} of mode {mode} at {free} = {value:.8g}) lies outside "
                           f"the step's range [{lo:g}, {hi:g}] of {free}")
    if kind == "HB":   # a transverse Hopf point: the oscillatory pattern (bifnet.patterns.cycle_steps)
        from bifnet.patterns.cycle_steps import oscillatory_pattern_step

        return oscillatory_pattern_step(context, spec, free, params, mode, value, x, settings)
    if spec.get("shooting") is not None:
        raise RunFileError(f"step {step!r}: shooting applies to oscillatory patterns (a transverse Hopf start)")
    Lambda = complex(operator.spectrum().eigenvalues[mode - 1])
    if abs(Lambda.imag) > 1e-12:
        raise RunFileError(f"step {step!r}: mode {mode} has a complex eigenvalue; a zero eigenvalue of its "
                           f"J(Lambda) is not a real branch point")
    value, x = _bracket(model, params, free, Lambda.real, value, x)
    params[free] = value
    pattern_settings = PatternSettings(ds=abs(settings.ds), ds_min=settings.ds_min, ds_max=settings.ds_max,
                                       max_steps=min(settings.max_steps, 2000), bounds=settings.bounds[free])
    try:
        branch = stationary_pattern_branch(model, operator, params, free, x, mode, pattern_settings,
                                           name=f"pattern[mode{mode}]", observe=observe)
    except BifnetError as error:
        raise RunFileError(f"step {step!r}: {error}") from None
    branch.engine["problem"] = types.SimpleNamespace(system=types.SimpleNamespace(model=model, kind="network"))
    _append_tables(context, step, [branch])
    _write_profiles(context, step, branch, operator)
    _plot_pattern(context, step, branch, params, x)
    brain = _plot_brain(context, step, spec, branch, operator)
    context.results[step] = [branch]
    nf = branch.engine["normal_form"]
    worst = float(np.nanmax(branch["residual"]))
    return {"mode": mode, "Lambda": Lambda.real, "branch_point": {free: value}, "criticality": nf.criticality,
            "nf_quadratic": nf.quadratic, "nf_cubic": nf.cubic, "points": len(branch), "status": branch.status,
            "max_residual": worst, "stable_points": int(np.sum(branch["stable"] == 1)), "brain_points": brain,
            "special_points": [{"name": sp.name, **{k: float(v) for k, v in sp.parameters.items()},
                                "located": bool(sp.located)} for sp in branch.special_points]}


def _write_profiles(context, step, branch: Branch, operator) -> None:
    """``pattern_<step>.nc``: the state of every region at every point (equilibria: the
    mean is the state, the amplitude 0, the phase undefined)."""
    import xarray as xr

    from bifnet import io

    states = branch.engine["states"]
    free = branch.free[0]
    model_vars = list(branch.variables)
    labels = list(operator.labels) if len(operator.labels) == states.shape[1] else [str(i) for i in
                                                                                      range(states.shape[1])]
    ds = xr.Dataset(
        {
            "mean": (("point", "region", "variable"), states,
                     {"description": "time mean of each variable (equilibria: the state)"}),
            "amplitude": (("point", "region", "variable"), np.zeros_like(states),
                          {"description": "(max - min) / 2 over a period (0 for equilibria)"}),
            "phase": (("point", "region", "variable"), np.full(states.shape, np.nan),
                      {"units": "rad", "description": "phase of the first harmonic (undefined for equilibria)"}),
            "stable": (("point",), np.asarray(branch["stable"], dtype=np.int64), {"units": "1"}),
            "pattern_amplitude": (("point",), np.asarray(branch["pattern_amplitude"], dtype=float),
                                  {"description": "mode coordinate y = Pi (X - X*(p)) (|Q| = 1)"}),
        },
        coords={"point": np.arange(states.shape[0]), free: ("point", np.asarray(branch[free], dtype=float)),
                "region": labels, "variable": model_vars},
        attrs={"step": step, "model": context.model.name, "mode": int(branch.mode),
               "Lambda": float(np.real(branch.Lambda)), "operator": operator.symbol, "solution": "EP",
               "criticality": branch.engine["normal_form"].criticality, "time_unit": "ms"},
    )
    io.write_netcdf(context.out_dir / f"pattern_{step}.nc", ds)


def _plot_pattern(context, step, branch: Branch, params, x_bp) -> None:
    """Amplitude diagram: the spread of the observed variable over regions against the free
    parameter; the homogeneous branch at zero (solid where stable to every mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from bifnet import io
    from bifnet.continuation.equilibria import find_equilibrium
    from bifnet.transverse.dispersion import equilibrium_dispersion

    free = branch.free[0]
    obs = branch.engine["observe"]
    p = np.asarray(branch[free], dtype=float)
    spread = np.asarray(branch[f"{obs}_spread"], dtype=float)
    stable = np.asarray(branch["stable"]) == 1
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    # homogeneous branch over the same range, its stability from every mode's growth rate
    lam = context.connectome.spectrum().eigenvalues
    pad = 0.05 * max(float(np.ptp(p)), 1e-3 * max(1.0, abs(float(params[free]))))
    grid = np.linspace(p.min() - pad, p.max() + pad, 121)
    hom_stable = np.full(grid.size, np.nan)
    p0 = float(params[free])
    for direction in (1, -1):
        x = np.asarray(x_bp, dtype=float)
        order = np.flatnonzero(grid >= p0) if direction == 1 else np.flatnonzero(grid < p0)[::-1]
        for k in order:
            try:
                x = find_equilibrium(context.model, {**params, free: float(grid[k])}, x, settle_time=0.0)
            except BifnetError:
                break
            rates = equilibrium_dispersion(context.model, {**params, free: float(grid[k])}, x, lam).growth_rate
            hom_stable[k] = float(np.all(rates < 0))
    for flag, style in ((1.0, "-"), (0.0, ":")):
        y = np.where(hom_stable == flag, 0.0, np.nan)
        ax.plot(grid, y, style, color="k", lw=1.4)
    for flag, style in ((True, "-"), (False, "--")):
        ax.plot(p, np.where(stable == flag, spread, np.nan), style, color="tab:red", lw=1.6)
    marks = {SpecialKind.BP: ("o", "k"), SpecialKind.LP: ("s", "tab:blue"), SpecialKind.HB: ("^", "tab:green")}
    counts, verified = {}, {}
    for sp in branch.special_points:
        m, c = marks.get(sp.kind, ("x", "0.3"))
        origin = sp.index == branch.engine["bp_index"] and sp.kind is SpecialKind.BP
        at = spread[sp.index]
        solved = (branch.engine.get("solutions") or {}).get(sp.name)
        if solved is not None:      # a verified point: the spread of its own state
            profile = solved.X.reshape(branch.engine["states"].shape[1:])
            at = float(np.ptp(profile[:, context.model.observed_index(obs)]))
        ax.plot(sp.parameters[free], at, m, color=c, ms=8 if origin else 5, mfc="w" if origin else c,
                zorder=6 if origin else 5)
        if not origin:
            counts[sp.kind] = counts.get(sp.kind, 0) + 1
            verified[sp.kind] = verified.get(sp.kind, 0) + int(sp.located)
    names = {SpecialKind.BP: "BP (real eigenvalue crosses)", SpecialKind.LP: "LP: fold of the pattern",
             SpecialKind.HB: "HB (complex pair crosses)"}
    handles = [Line2D([], [], color="k", lw=1.4, label="homogeneous, stable"),
               Line2D([], [], color="k", ls=":", lw=1.4, label="homogeneous, unstable"),
               Line2D([], [], color="tab:red", lw=1.6, label=f"pattern of mode {branch.mode}, stable"),
               Line2D([], [], color="tab:red", ls="--", lw=1.6, label="pattern, unstable"),
               Line2D([], [], marker="o", ls="none", color="k", mfc="w", ms=8, label="transverse branch point (origin)")]
    handles += [Line2D([], [], marker=marks[k][0], ls="none", color=marks[k][1], ms=5,
                       label=f"{names[k]} x {v} ({verified[k]} verified)") for k, v in counts.items()]
    ax.legend(handles=handles, fontsize=7, loc="best")
    ax.set_xlabel(free)
    ax.set_ylabel(f"{obs}: max - min over regions")
    nf = branch.engine["normal_form"]
    ax.set_title(f"{context.model.name}: stationary pattern of mode {branch.mode} (Lambda = "
                 f"{np.real(branch.Lambda):.4g}), {nf.criticality} at {free} = {p0:.6g}", fontsize=9)
    io.save_figure(context.out_dir / f"pattern_{step}.png", fig)


def _plot_brain(context, step, spec, branch: Branch, operator) -> list[int]:
    """``pattern_<step>_brain.png``: the observed variable minus its regional mean at the chosen rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bifnet import io
    from bifnet.network.plots import plot_brain

    centres = getattr(operator, "centres", None)
    if centres is None:
        return []
    n_points = len(branch)
    obs = branch.engine["observe"]
    spread = np.asarray(branch[f"{obs}_spread"], dtype=float)
    chosen = spec.get("brain_points")
    if chosen is None:
        stable = np.flatnonzero(np.asarray(branch["stable"]) == 1)
        pool = stable if stable.size else np.arange(n_points)
        chosen = [int(pool[np.argmax(spread[pool])])]
    bad = [k for k in chosen if not (isinstance(k, int) and 0 <= k < n_points)]
    if bad:
        raise RunFileError(f"step {step!r}: brain_points: no row {bad[0]} (the branch has rows 0..{n_points - 1})")
    oi = context.model.observed_index(obs)
    states = branch.engine["states"]
    free = branch.free[0]
    fig, axes = plt.subplots(len(chosen), 3, figsize=(14, 4.3 * len(chosen)), squeeze=False)
    for row, k in zip(axes, chosen):
        values = states[k, :, oi] - states[k, :, oi].mean()
        for ax, view in zip(row, ("axial", "sagittal", "coronal")):
            plot_brain(values, centres, ax, view=view, title=f"{view}, row {k}")
    rows = "; ".join(f"row {k}: {free} = {branch[free][k]:.5g}, {'stable' if branch['stable'][k] == 1 else 'unstable'}"
                     for k in chosen)
    fig.suptitle(f"{context.model.name}: pattern of mode {branch.mode}, {obs} minus its mean over regions\n{rows}")
    io.save_figure(context.out_dir / f"pattern_{step}_brain.png", fig)
    return [int(k) for k in chosen]


# ---------------------------------------------------------------------------
# kind = "pattern_curve": two-parameter loci of a pattern branch's folds and Hopf points


def pattern_curve_step(context: StepContext, spec: dict) -> dict:
    """``kind = "pattern_curve"``: continue a verified point of a pattern branch in two parameters.

    Keys: ``start`` (``"<pattern step>:<point>"``: ``"pat:LP1"`` or ``"pat:HB1"`` of a stationary
    pattern, ``"osc:LPC1"`` or ``"osc:PD1"`` of an oscillatory one; the point must be verified,
    ``located = True``), ``free`` (two parameters, the pattern branch's own first), ``range``
    (bounds of both; the locus stops at the first point outside), ``settings`` (``ds``, ``ds_min``,
    ``ds_max``, ``max_steps`` per direction), ``levels`` (values of the second parameter where the
    locus point is solved exactly and added as a row).

    Writes the locus to ``branches.csv`` (``solution`` = ``LP``, ``HB``, ``LPC`` or ``PD``, the mode of
    origin, ``residual``; LP/HB: the regional means, ``omega`` and ``frequency_hz`` for HB; LPC/PD:
    ``period``, ``amplitude``, ``multiplier_error``, ``return_error``), the zero-Hopf, generalised-Hopf
    (HB loci), cusp and Bogdanov-Takens (LP loci) points to ``special_points.csv`` and
    ``pattern_curve_<step>.png``.
    """
    from bifnet.continuation.steps import _append_tables
    from bifnet.patterns.loci import continue_pattern_locus
    from bifnet.patterns.verify import NetworkDerivatives

    step = spec["name"]
    check_keys(spec, {"start", "free", "range", "settings", "levels"}, step)
    model = context.model
    operator = context.require_connectome(step)
    start = spec.get("start")
    if not isinstance(start, str) or ":" not in start:
        raise RunFileError(f"step {step!r}: start must look like \"pat:LP1\" (a point of a pattern step)")
    source, point = start.split(":", 1)
    branches = context.results.get(source)
    branch = branches[0] if isinstance(branches, list) and branches and isinstance(branches[0], Branch) else None
    if branch is not None and branch.kind is BranchKind.CYCLES and "verified_orbits" in (branch.engine or {}):
        return _cycle_curve(context, spec, branch, source, point, operator)
    if branch is None or "solutions" not in (branch.engine or {}):
        raise RunFileError(f"step {step!r}: no earlier pattern step {source!r}")
    names = [sp.name for sp in branch.special_points if sp.kind in (SpecialKind.LP, SpecialKind.HB)]
    sp = next((s for s in branch.special_points if s.name == point), None)
    if sp is None or sp.kind not in (SpecialKind.LP, SpecialKind.HB):
        raise RunFileError(f"step {step!r}: pattern step {source!r} has no fold or Hopf point {point!r} "
                           f"(has: {', '.join(names) or 'none'})")
    solution = branch.engine["solutions"].get(point)
    if not sp.located or solution is None:
        raise RunFileError(f"step {step!r}: {source}:{point} is not verified ({sp.details.get('reason', '')}); "
                           f"a locus starts only from a verified point")
    free, settings, levels = _curve_arguments(context, spec, branch)
    own = free[0]
    values = {own: float(solution.value), free[1]: float(branch.parameters[free[1]])}
    D = NetworkDerivatives(model, operator, branch.parameters)
    try:
        locus = continue_pattern_locus(
            D, solution, sp.kind, tuple(free), values, ds=abs(settings.ds), ds_min=settings.ds_min,
            ds_max=settings.ds_max, max_steps=min(settings.max_steps, 2000),
            bounds={k: settings.bounds[k] for k in free}, levels=levels,
            name=f"{sp.kind.value}[pattern{branch.mode}:{point}]", mode=branch.mode, Lambda=branch.Lambda,
            variables=model.variable_names)
    except BifnetError as error:
        raise RunFileError(f"step {step!r}: {error}") from None
    locus.engine["problem"] = types.SimpleNamespace(system=types.SimpleNamespace(model=model, kind="network"))
    _append_tables(context, step, [locus])
    _plot_pattern_curve(context, step, locus, branch, sp)
    context.results[step] = [locus]
    rows = locus.engine["level_rows"]
    return {"start": start, "kind": sp.kind.value, "points": len(locus), "status": locus.status,
            "max_residual": float(np.max(locus["residual"])),
            "levels": [{free[1]: float(locus[free[1]][k]), own: float(locus[own][k])} for k in rows],
            "special_points": [{"name": p.name, **{k: float(v) for k, v in p.parameters.items()},
                                "located": bool(p.located),
                                "residual": float(p.residual) if np.isfinite(p.residual) else None}
                               for p in locus.special_points]}


def _curve_arguments(context: StepContext, spec: dict, branch: Branch):
    """``(free, settings, levels)`` of a ``pattern_curve`` step, checked against the pattern ``branch``."""
    from bifnet.continuation.steps import step_settings

    step = spec["name"]
    free = spec.get("free")
    own = branch.free[0]
    if not (isinstance(free, list) and len(free) == 2 and free[0] == own and free[1] != own):
        raise RunFileError(f"step {step!r}: free must be [\"{own}\", \"<second parameter>\"] (the pattern "
                           f"branch's parameter first), got {free!r}")
    context.model.check_parameter_names(free)
    settings = step_settings(context, spec, tuple(free))
    levels = spec.get("levels", [])
    if not (isinstance(levels, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             for v in levels)):
        raise RunFileError(f"step {step!r}: levels must be a list of values of {free[1]}, got {levels!r}")
    return free, settings, [float(v) for v in levels]


def _cycle_curve(context: StepContext, spec: dict, branch: Branch, source: str, point: str, operator) -> dict:
    """``pattern_curve`` from an LPC or PD point of an oscillatory pattern (:mod:`bifnet.patterns.cycle_loci`)."""
    from bifnet.continuation.steps import _append_tables
    from bifnet.patterns.cycle_loci import continue_cycle_locus

    step = spec["name"]
    kinds = (SpecialKind.LPC, SpecialKind.PD)
    names = [sp.name for sp in branch.special_points if sp.kind in kinds]
    sp = next((s for s in branch.special_points if s.name == point), None)
    if sp is not None and sp.kind is SpecialKind.NS:
        raise RunFileError(f"step {step!r}: {source}:{point} is a torus point (NS): two-parameter loci of NS points "
                           f"of oscillatory patterns are not supported (LPC and PD are)")
    if sp is None or sp.kind not in kinds:
        what = "" if sp is None else f" ({point} is its {sp.kind.value} point, not a fold or period doubling of cycles)"
        raise RunFileError(f"step {step!r}: oscillatory pattern step {source!r} has no LPC or PD point {point!r}"
                           f"{what} (has: {', '.join(names) or 'none'})")
    orbit = branch.engine["verified_orbits"].get(point)
    if not sp.located or orbit is None or "steps_per_period" not in sp.details:
        raise RunFileError(f"step {step!r}: {source}:{point} is not verified ({sp.details.get('reason', '')}); "
                           f"a locus starts only from a verified point")
    free, settings, levels = _curve_arguments(context, spec, branch)
    own = free[0]
    values = {own: float(sp.parameters[own]), free[1]: float(branch.parameters[free[1]])}
    try:
        locus = continue_cycle_locus(
            context.model, operator, branch.parameters, orbit, sp.kind, tuple(free), values,
            steps=int(sp.details["steps_per_period"]), ds=abs(settings.ds), ds_min=settings.ds_min,
            ds_max=settings.ds_max, max_steps=min(settings.max_steps, 2000),
            bounds={k: settings.bounds[k] for k in free}, levels=levels,
            name=f"{sp.kind.value}[pattern{branch.mode}:{point}]", mode=branch.mode, Lambda=branch.Lambda)
    except BifnetError as error:
        raise RunFileError(f"step {step!r}: {error}") from None
    locus.engine["problem"] = types.SimpleNamespace(system=types.SimpleNamespace(model=context.model,
                                                                                 kind="network"))
    _append_tables(context, step, [locus])
    _plot_pattern_curve(context, step, locus, branch, sp)
    context.results[step] = [locus]
    rows = locus.engine["level_rows"]
    return {"start": f"{source}:{point}", "kind": sp.kind.value, "points": len(locus), "status": locus.status,
            "max_residual": float(np.max(locus["residual"])),
            "max_multiplier_error": float(np.max(locus["multiplier_error"])),
            "max_return_error": float(np.nanmax(locus["return_error"])),
            "steps_per_period": locus.engine["steps_per_period"],
            "levels": [{free[1]: float(locus[free[1]][k]), own: float(locus[own][k]),
                        "period": float(locus["period"][k])} for k in rows],
            "special_points": []}


def _plot_pattern_curve(context, step, locus: Branch, branch: Branch, sp) -> None:
    """``pattern_curve_<step>.png``: the locus in its two parameters, the start marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bifnet import io

    p1, p2 = locus.free
    line, title = {SpecialKind.LP: ("tab:blue", "folds of the stationary"),
                   SpecialKind.HB: ("tab:green", "Hopf points of the stationary"),
                   SpecialKind.LPC: ("tab:blue", "folds of cycles of the oscillatory"),
                   SpecialKind.PD: ("tab:purple", "period doublings of the oscillatory")}[sp.kind]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    ax.plot(locus[p1], locus[p2], "-", color=line, lw=1.6,
            label=f"{sp.kind.value} locus of the mode-{branch.mode} pattern")
    k = locus.engine["start_index"]
    ax.plot(locus[p1][k], locus[p2][k], "o", color="k", mfc="w", ms=7, label=f"start: {sp.name}")
    rows = locus.engine["level_rows"]
    if rows:
        ax.plot(locus[p1][rows], locus[p2][rows], "x", color="k", ms=6, label=f"{p2} levels (solved exactly)")
    marks = {SpecialKind.ZH: ("D", "tab:purple", "zero-Hopf"), SpecialKind.GH: ("s", "tab:red", "generalised Hopf"),
             SpecialKind.CP: ("^", "tab:orange", "cusp"), SpecialKind.BT: ("v", "tab:brown", "Bogdanov-Takens")}
    for kind, (marker, colour, what) in marks.items():
        for located in (True, False):
            pts = [p for p in locus.special_points if p.kind is kind and p.located == located]
            if pts:
                ax.plot([p.parameters[p1] for p in pts], [p.parameters[p2] for p in pts], marker, color=colour, ms=6,
                        mfc=colour if located else "w",
                        label=f"{kind.value} ({what}){'' if located else ', not verified'} x {len(pts)}")
    ax.set_xlabel(p1)
    ax.set_ylabel(p2)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{context.model.name}: {title} pattern of mode {branch.mode}", fontsize=9)
    io.save_figure(context.out_dir / f"pattern_curve_{step}.png", fig)
