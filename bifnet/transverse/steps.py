"""Run-file steps of the transverse analysis: ``dispersion``, ``transverse``, ``neutral``."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind
from bifnet.continuation.restarts import continue_cycles, ends_at_hopf
from bifnet.continuation.steps import _append_tables, _free, step_settings
from bifnet.errors import BifnetError, RunFileError
from bifnet.steps import StepContext, check_keys
from bifnet.transverse.curves import Mode, distinct_modes, trace_transverse_curves

log = logging.getLogger("bifnet")


def _step_parameters(context: StepContext, spec: dict) -> dict:
    params = dict(context.parameters)
    overrides = spec.get("parameters", {})
    context.model.check_parameter_names(overrides)
    params.update({k: float(v) for k, v in overrides.items()})
    return params


MODE_RULES = ("all", "most_negative", "most_positive")


def select_modes(rule, eigenvalues, step: str, key: str = "modes") -> list[int]:
    """Mode numbers (1-based) chosen by a run-file rule.

    ``rule`` is a list of mode numbers; ``"all"`` (every non-uniform mode);
    ``"most_negative"`` / ``"most_positive"`` (the non-uniform mode with the
    smallest / largest real ``Lambda``, and the modes sharing it); or a table
    ``{ Lambda = [low, high] }`` (every non-uniform mode with ``low <= Re Lambda
    <= high``). Rules, unlike indices, mean the same on every connectome.
    """
    values = np.real(np.asarray(eigenvalues))
    n = values.size
    others = np.arange(2, n + 1)
    if isinstance(rule, list) and all(isinstance(m, int) and not isinstance(m, bool) for m in rule):
        bad = [m for m in rule if not 1 <= m <= n]
        if bad:
            raise RunFileError(f"step {step!r}: {key}: no mode {bad[0]} (the connectome has {n})")
        return list(rule)
    if rule == "all":
        return others.tolist()
    if rule in ("most_negative", "most_positive"):
        if not others.size:
            return []
        target = values[1:].min() if rule == "most_negative" else values[1:].max()
        return [int(m) for m in others if abs(values[m - 1] - target) <= 1e-9 * max(1.0, abs(target))]
    if isinstance(rule, dict) and set(rule) == {"Lambda"} and isinstance(rule["Lambda"], list) \
            and len(rule["Lambda"]) == 2:
        lo, hi = (float(v) for v in rule["Lambda"])
        return [int(m) for m in others if lo <= values[m - 1] <= hi]
    raise RunFileError(f"step {step!r}: {key} must be a list of mode numbers, one of "
                       f"{', '.join(map(repr, MODE_RULES))}, or {{ Lambda = [low, high] }}; got {rule!r}")


def _modes(context: StepContext, spec: dict) -> tuple[np.ndarray, list[Mode]]:
    context.model.require_coupling(f"step {spec['name']!r}")
    connectome = context.require_connectome(spec["name"])
    eigenvalues = connectome.spectrum().eigenvalues
    groups = distinct_modes(eigenvalues)
    chosen = spec.get("modes", "all")
    if chosen != "all":
        chosen = select_modes(chosen, eigenvalues, spec["name"])
        # mode 1 always: the map needs the uniform growth rate
        groups = [g for g in groups if set(g.modes) & (set(chosen) | {1})]
    return eigenvalues, groups


def _operator_symbol(context: StepContext) -> str:
    coupling = context.model.coupling
    return coupling.operator if coupling is not None else "P"


def _operator_description(context: StepContext) -> str:
    from bifnet.connectome import OPERATOR_DESCRIPTIONS

    return OPERATOR_DESCRIPTIONS[_operator_symbol(context)]


def _lambda_label(context: StepContext) -> str:
    return f"Lambda (eigenvalue of the {_operator_description(context)})"


def _with_operator(frame, context: StepContext):
    """``frame`` with an ``operator`` column (``P``, ``L`` or ``L_rw``) right after ``Lambda_imag``/``Lambda``."""
    frame = frame.copy()
    where = list(frame.columns)
    at = where.index("Lambda_imag") + 1 if "Lambda_imag" in where else (
        where.index("Lambda") + 1 if "Lambda" in where else len(where))
    frame.insert(at, "operator", _operator_symbol(context))
    return frame


def _default_lambda_range(context: StepContext, eigenvalues) -> list[float]:
    re = np.real(np.asarray(eigenvalues))
    if context.model.coupling is not None and context.model.coupling.scheme == "diffusive":
        hi = float(re.max()) if re.size else 1.0
        return [0.0, hi * 1.05 if hi > 0 else 1.0]
    lo = float(np.min(re)) - 0.1 if re.size else -1.0
    return [max(lo, -1.0), 1.0]


def _where(context: StepContext, params: dict) -> str:
    """The parameters that differ from the model's defaults, as ``name = value`` text."""
    defaults = context.model.default_parameters()
    changed = [k for k in context.model.parameter_names if params.get(k) != defaults[k]]
    return ", ".join(f"{k} = {params[k]:g}" for k in changed[:4]) or "defaults"


def _append_csv(context: StepContext, filename: str, frame, step: str) -> None:
    from bifnet import io

    io.write_step_rows(context.out_dir / filename, step, frame)


def dispersion_step(context: StepContext, spec: dict) -> dict:
    """``kind = "dispersion"``: growth rate against Lambda at one parameter point.

    Keys: ``parameters``, ``x0``, ``solution`` (``"auto"``, ``"EP"``, ``"LC"``),
    ``curve_points`` (default 401), ``Lambda_range`` (default: the spectrum's
    real range, padded).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bifnet import io
    from bifnet.transverse.dispersion import dispersion_at

    step = spec["name"]
    check_keys(spec, {"parameters", "x0", "solution", "curve_points", "Lambda_range"}, step)
    params = _step_parameters(context, spec)
    context.model.require_coupling(f"step {step!r}")
    eigenvalues = context.require_connectome(step).spectrum().eigenvalues
    relation = dispersion_at(context.model, params, eigenvalues, x0=spec.get("x0"),
                             solution=spec.get("solution", "auto"))
    modes = np.arange(1, len(eigenvalues) + 1)
    frame = relation.to_frame(modes)
    lam_lo, lam_hi = spec.get("Lambda_range", _default_lambda_range(context, eigenvalues))
    curve_lam = np.linspace(float(lam_lo), float(lam_hi), int(spec.get("curve_points", 401)))
    if relation.solution == "EP":
        from bifnet.transverse.dispersion import equilibrium_dispersion

        curve = equilibrium_dispersion(context.model, params, relation.state, curve_lam)
    else:
        from bifnet.transverse.dispersion import cycle_dispersion
        from bifnet.transverse.floquet import HomogeneousCycle

        cycle = HomogeneousCycle(parameters=params, period=relation.period, x0=relation.state)
        curve = cycle_dispersion(context.model, cycle, curve_lam)
    _append_csv(context, "dispersion.csv", _with_operator(frame, context), step)
    _append_csv(context, "dispersion_curve.csv", _with_operator(curve.to_frame(), context), step)

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax1.axhline(0, color="0.6", lw=0.8)
    ax1.plot(curve_lam, curve.growth_rate, "k-", lw=1.2, label="dispersion relation")
    lam_r = np.real(eigenvalues)
    unstable = relation.growth_rate > 0
    real = np.abs(np.imag(eigenvalues)) <= 1e-9 * np.maximum(1.0, np.abs(eigenvalues))
    ax1.plot(lam_r[~unstable & real], relation.growth_rate[~unstable & real], "o", ms=4, color="tab:blue",
             label="connectome modes")
    ax1.plot(lam_r[unstable & real], relation.growth_rate[unstable & real], "o", ms=5, color="tab:red",
             label="unstable modes")
    if not real.all():
        ax1.plot(lam_r[~unstable & ~real], relation.growth_rate[~unstable & ~real], "D", ms=4, mfc="none",
                 color="tab:blue", label="complex Lambda (at Re Lambda; the curve is for real Lambda)")
        ax1.plot(lam_r[unstable & ~real], relation.growth_rate[unstable & ~real], "D", ms=5, mfc="none",
                 color="tab:red", label="unstable, complex Lambda")
        ax2.plot(lam_r[~real], relation.frequency_hz[~real], "D", ms=3, mfc="none", color="tab:blue")
    ax1.set_ylabel("growth rate (1/ms)")
    ax1.legend(fontsize=8)
    ax2.plot(curve_lam, curve.frequency_hz, "k-", lw=1.0)
    ax2.plot(lam_r[real], relation.frequency_hz[real], "o", ms=3, color="tab:blue")
    ax2.set_xlabel(_lambda_label(context))
    ax2.set_ylabel("frequency (Hz)")
    where = _where(context, params)
    ax1.set_title(f"{context.model.name}: dispersion of the homogeneous {relation.solution} ({where})")
    io.save_figure(context.out_dir / f"dispersion_{step}.png", fig)
    n_unstable = int(np.sum(unstable[1:]))
    log.info("  %s: homogeneous %s, mode 1 growth %.4g /ms, %d unstable non-uniform mode(s)",
             step, relation.solution, relation.growth_rate[0], n_unstable)
    return {"solution": relation.solution, "uniform_growth_rate_per_ms": float(relation.growth_rate[0]),
            "unstable_modes": [int(m) for m in modes[1:][unstable[1:]]],
            "period_ms": None if not np.isfinite(relation.period) else relation.period}


def _levels(spec: dict, bounds, step: str) -> list[float]:
    levels = spec.get("levels", 7)
    lo, hi = bounds
    if isinstance(levels, int):
        if levels < 1:
            raise RunFileError(f"step {step!r}: levels must be a positive number or a list")
        # avoid the exact ends, where branches start on their bounds
        return list(np.linspace(lo, hi, levels + 2)[1:-1]) if levels > 1 else [(lo + hi) / 2]
    if not isinstance(levels, list) or not levels:
        raise RunFileError(f"step {step!r}: levels must be a positive number or a list")
    return [float(v) for v in levels]


def _curves_frame(curves, free):
    import pandas as pd

    rows = []
    for c in curves:
        kinds = {sp.index: sp.kind.value for sp in c.special_points if sp.located}   # verified ones only
        with np.errstate(divide="ignore", invalid="ignore"):
            freq = 1000.0 / c["period"] if "period" in c.columns else np.full(len(c), np.nan)
        frame = pd.DataFrame({
            "mode": c.mode, "modes": " ".join(str(m) for m in c.engine.get("modes", (c.mode,))),
            "Lambda": float(np.real(c.Lambda)), "Lambda_imag": float(np.imag(c.Lambda)),
            "kind": c.locus_of.value if c.locus_of else "", "curve": c.name, "point": np.arange(len(c)),
            free[0]: c[free[0]], free[1]: c[free[1]], "frequency_hz": freq,
            "codim2": [kinds.get(i, "") for i in range(len(c))],
        })
        rows.append(frame)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["mode", "modes", "Lambda", "Lambda_imag", "kind", "curve", "point", *free, "frequency_hz",
                 "codim2"])


def _cycle_crossings(context, cycles, groups, p1, q, level):
    """Floquet growth rates of every mode along homogeneous cycles of a level,
    and where they change sign (interpolated, PD/LPC/NS by the multiplier)."""
    from bifnet.transverse.floquet import cycle_from_branch, floquet_dispersion

    lams = np.array([g.Lambda for g in groups])
    rows = []
    table = []
    for cyc in cycles:
        rates = np.full((len(cyc), len(lams)), np.nan)
        mults = np.full((len(cyc), len(lams)), np.nan, dtype=complex)
        span = np.nanmax(np.vstack([cyc[f"{v}_max"] - cyc[f"{v}_min"] for v in cyc.variables]), axis=0)
        for i in range(len(cyc)):
            if not span[i] > 1e-3 * np.nanmax(span):
                continue  # a Hopf point (zero amplitude): its "multipliers" are exp(lambda T), not Floquet's
            try:
                cycle = cycle_from_branch(cyc, i)
                cycle = type(cycle)(parameters=cycle.parameters, period=cycle.period,
                                    x0=np.asarray(cycle.x0)[: context.model.n_variables])
                fd = floquet_dispersion(context.model, cycle, lams)
            except BifnetError:
                continue
            rates[i] = fd.growth_rate
            # the multiplier behind the growth rate: largest modulus (trivial one removed for mode 1)
            for k in range(len(lams)):
                mu = np.asarray(fd.multipliers[k])
                if abs(lams[k] - context.model.coupling.uniform_eigenvalue) < 1e-12:
                    mu = np.delete(mu, np.argmin(np.abs(mu - 1)))
                mults[i, k] = mu[np.argmax(np.abs(mu))]
        table.append((cyc, rates))
        x = cyc[p1]
        for k, g in enumerate(groups):
            if g.mode == 1:
                continue
            r = rates[:, k]
            ok = np.isfinite(r[:-1]) & np.isfinite(r[1:])
            for i in np.flatnonzero(ok & (np.sign(r[:-1]) * np.sign(r[1:]) < 0)):
                t = r[i] / (r[i] - r[i + 1])
                mu = mults[i + 1][k] if abs(r[i + 1]) < abs(r[i]) else mults[i][k]
                kind = "NS" if abs(mu.imag) > 1e-3 * abs(mu) else ("PD" if mu.real < 0 else "LPC")
                rows.append({"mode": g.mode, "Lambda": float(np.real(g.Lambda)),
                             "Lambda_imag": float(np.imag(g.Lambda)), "solution": "LC", "kind": kind,
                             p1: float((1 - t) * x[i] + t * x[i + 1]), q: level, "branch": cyc.name,
                             "homogeneous_stable": bool(cyc["stable"][i] == 1 and cyc["stable"][i + 1] == 1),
                             "located": False})
    return rows, table


def _continue_cycle_crossings(context, step, level_branch, rows, cycle_modes, groups, free, settings, done,
                              failures):
    """Continue the cycle crossings of the modes in ``cycle_modes`` (see
    :mod:`bifnet.transverse.cycle_curves`); one augmented cycle branch per Hopf
    point and mode, reused for all its crossings."""
    from bifnet.transverse.cycle_curves import augmented_cycles, trace_cycle_curve
    from bifnet.transverse.curves import _on_curve

    p1, q = free
    scale = max(np.ptp(settings.bounds[p1]), np.ptp(settings.bounds[q]))
    branches = {}
    new = []
    for row in rows:
        group = next((g for g in groups if g.mode == row["mode"]), None)
        if group is None or not set(group.modes) & set(cycle_modes) or not group.is_real:
            continue
        same = [c for c in done + new if c.mode == group.mode and c.locus_of.value == row["kind"]]
        if _on_curve(same, (row[p1], row[q]), free, 2e-3 * scale):
            continue
        hopf = row["branch"].rsplit(":", 1)[-1]
        key = (hopf, group.mode)
        name = f"{row['kind']}[mode{group.mode}]#{len(same) + 1}"
        try:
            if key not in branches:
                branches[key] = augmented_cycles(context.model, level_branch, hopf, float(np.real(group.Lambda)),
                                                 settings, name=f"{level_branch.name}:mode{group.mode}")
            if branches[key] is None:
                continue
            locus = trace_cycle_curve(context.model, branches[key], float(np.real(group.Lambda)), row["kind"],
                                      row[p1], free, settings, name=name)
        except BifnetError as error:
            log.warning("  %s: %s: %s", step, name, error)
            failures.append(f"{name}: {error}")
            continue
        if locus is None:
            log.info("  %s: %s at %s = %.5g: no matching point on the augmented cycles", step, name, p1, row[p1])
            continue
        locus = dataclasses.replace(locus, mode=group.mode, Lambda=float(np.real(group.Lambda)))
        log.info("  %s: %s, %d points", step, name, len(locus))
        new.append(locus)
    return new


def _level_cycles(eq, settings, step, failures):
    """The homogeneous cycles from the Hopf points of a level's equilibrium branch (one per closed branch)."""
    cycles = []
    for hb in eq.points_of_kind(SpecialKind.HB):
        if any(ends_at_hopf(c, hb) for c in cycles):
            continue
        try:
            cycles.append(continue_cycles(eq, hb.name, settings=settings.replace(max_steps=600),
                                          name=f"{eq.name}:{hb.name}"))
        except BifnetError as error:
            log.warning("  %s: cycles from %s on %s failed: %s", step, hb.name, eq.name, error)
            failures.append(f"cycles from {hb.name} on {eq.name}: {error}")
    return cycles


def level_cycles_task(*, model_source, parameters, free, level, settings, groups, step):
    """One level's cycles and their Floquet crossings (a task of the ``transverse`` step)."""
    import types

    from bifnet.continuation.equilibria import continue_equilibria
    from bifnet.model import load_model
    from bifnet.transverse.curves import detach

    model = load_model(model_source)
    p1, q = free
    lo1, hi1 = settings.bounds[p1]
    params = {**parameters, p1: lo1, q: float(level)}
    eq = continue_equilibria(model, params, p1, settings=settings.replace(bounds={p1: (lo1, hi1)}),
                             name=f"level[{q}={level:g}]")
    failures: list[str] = []
    cycles = _level_cycles(eq, settings, step, failures)
    rows, table = _cycle_crossings(types.SimpleNamespace(model=model), cycles, groups, p1, q, level)
    return [detach(c) for c in cycles], rows, [(detach(c), r) for c, r in table], failures


def _parallel_level_cycles(context, params, free, levels, settings, groups, step, scheduler, workers, failures):
    """``{level: (cycles, crossing rows, [(cycle, rates)])}`` computed by one task per level (what failed
    appended to ``failures``)."""
    from bifnet.sweep import map_tasks
    from bifnet.transverse.curves import attach

    tasks = [dict(model_source=context.model.source, parameters=dict(params), free=tuple(free), level=level,
                  settings=settings, groups=list(groups), step=step) for level in levels]
    out = {}
    for level, (cycles, rows, table, lost) in zip(levels, map_tasks(level_cycles_task, tasks, scheduler=scheduler,
                                                                     workers=workers,
                                                                     progress=f"{step}: level cycles")):
        failures.extend(lost)
        cycles = [attach(context.model, free, c) for c in cycles]
        by_name = {c.name: c for c in cycles}
        out[level] = (cycles, rows, [(by_name.get(c.name, c), r) for c, r in table])
    return out


def _map_level(branch_rates, samples, n_modes):
    """Growth rates of every mode at ``samples`` along the stable parts of branches.

    ``branch_rates``: list of (branch, rates (points, K)). Returns (solution
    code per sample: 0 none, 1 EP, 2 LC, 3 both; rates (samples, K) from the
    first stable solution found, EP preferred)."""
    solution = np.zeros(len(samples), dtype=int)
    rates = np.full((len(samples), n_modes), np.nan)
    for branch, table in branch_rates:
        code = 1 if branch.kind is BranchKind.EQUILIBRIA else 2
        x = branch[branch.free[0]]
        stable = branch["stable"] == 1
        for i in range(len(branch) - 1):
            if not (stable[i] and stable[i + 1]) or not np.all(np.isfinite(table[i])) or not np.all(np.isfinite(table[i + 1])):
                continue
            a, b = sorted((x[i], x[i + 1]))
            inside = (samples >= a) & (samples <= b)
            if not inside.any() or b == a:
                continue
            t = ((samples[inside] - x[i]) / (x[i + 1] - x[i]))[:, None]
            values = (1 - t) * table[i] + t * table[i + 1]
            fresh = solution[inside] == 0
            idx = np.flatnonzero(inside)
            rates[idx[fresh]] = values[fresh]
            solution[idx] = np.where(solution[idx] == 0, code, np.where(solution[idx] == code, code, 3))
    return solution, rates


def _grid(spec: dict, free, settings, step: str):
    """The map's grid ``{p: values, q: values}`` from ``grid = { p = step, q = step }``, or None."""
    if "grid" not in spec:
        return None
    from bifnet.transverse.maps import grid_axis

    grid = spec["grid"]
    if not isinstance(grid, dict) or set(grid) != set(free):
        raise RunFileError(f"step {step!r}: grid must give the step of both free parameters, e.g. "
                           f"grid = {{ {free[0]} = 0.05, {free[1]} = 0.05 }}; got {grid!r}")
    if "map_points" in spec:
        raise RunFileError(f"step {step!r}: map_points is the resolution of the map on levels; with grid, "
                           f"the grid steps set it: remove one of them")
    out = {}
    for name in free:
        value = grid[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RunFileError(f"step {step!r}: grid.{name} must be a number (the step), got {value!r}")
        try:
            out[name] = grid_axis(settings.bounds[name], float(value), name)
        except RunFileError as error:
            raise RunFileError(f"step {step!r}: {error}") from None
    return out


def transverse_step(context: StepContext, spec: dict) -> dict:
    """``kind = "transverse"``: transverse bifurcation curves of every mode and the instability map.

    Keys: ``free`` (two parameters), ``range`` (both), ``modes`` (``"all"`` or
    mode numbers), ``levels`` (number or list of values of the second
    parameter where starting points are searched; default 7), ``cycles``
    (analyse homogeneous cycles too; default true), ``map_points`` (samples
    along the first parameter per level; default 201), ``grid`` (the map on a
    grid instead: ``{ p = step, q = step }``, see :mod:`bifnet.transverse.maps`),
    ``workers`` and ``scheduler`` (where the grid's cycles are computed),
    ``map_mode_rates`` (write every mode's growth rate on the grid), ``parameters``,
    ``settings``.
    """
    import pandas as pd

    step = spec["name"]
    check_keys(spec, {"free", "range", "modes", "levels", "cycles", "map_points", "parameters", "settings",
                      "plot", "cycle_curves", "grid", "workers", "scheduler", "map_mode_rates"}, step)
    free = _free(spec, 2, step)
    context.model.check_parameter_names(free)
    settings = step_settings(context, spec, free)
    grid = _grid(spec, free, settings, step)
    params = _step_parameters(context, spec)
    eigenvalues, groups = _modes(context, spec)
    p1, q = free
    levels = _levels(spec, settings.bounds[q], step)
    complex_groups = [g for g in groups if not g.is_real]
    cycle_modes = select_modes(spec.get("cycle_curves", []), eigenvalues, step, "cycle_curves")
    begin = time.perf_counter()
    done = []
    failures: list[str] = []    # levels, curves and cycles that failed (each also a warning)

    def progress(name, locus):
        done.append(name)
        log.info("  %s: %s, %d points (%d curves, %.0f s)", step, name, len(locus), len(done),
                 time.perf_counter() - begin)

    run = context.results.get("__run__", {})
    scheduler = spec.get("scheduler", run.get("dask", {}).get("scheduler"))
    workers = spec.get("workers")
    followed = sum(1 for g in groups if g.mode != 1)
    in_parallel = ((workers is None or workers > 1 or scheduler not in (None, "processes", "serial"))
                   and scheduler != "serial" and bool(context.model.source) and Path(context.model.source).exists())
    if followed > 1 and in_parallel:
        from bifnet.transverse.curves import trace_curves_parallel

        curves, crossings, table = trace_curves_parallel(context.model, params, groups, free, levels, settings,
                                                         scheduler=scheduler, workers=workers,
                                                         label=f"{step}: transverse curves", failures=failures)
        log.info("  %s: %d transverse curves of %d modes in parallel (%.0f s)", step, len(curves), followed,
                 time.perf_counter() - begin)
    else:
        curves, crossings, table = trace_transverse_curves(context.model, params, groups, free, levels, settings,
                                                           progress=progress, failures=failures)
    for c in curves:
        c.engine["modes"] = next((g.modes for g in groups if g.mode == c.mode), (c.mode,))
    # where the growth rates of the equilibria change sign on each level (interpolated)
    point_rows = [{"mode": next((g.mode for g in groups if abs(complex(g.Lambda) - c.Lambda) < 1e-9), 0),
                   "Lambda": float(np.real(c.Lambda)), "Lambda_imag": float(np.imag(c.Lambda)), "solution": "EP",
                   "kind": c.kind.value,
                   p1: c.value, q: c.level, "branch": f"level[{q}={c.level:g}]",
                   "homogeneous_stable": bool(table[c.level][0]["stable"][c.index] == 1
                                              and table[c.level][0]["stable"][c.index + 1] == 1),
                   "located": False}
                  for c in crossings]
    _add_normal_forms(context, point_rows, crossings, table, groups)
    # instability map along the levels, equilibria and (optionally) cycles
    samples = np.linspace(*settings.bounds[p1], int(spec.get("map_points", 201)))

    map_solution, map_rates = [], []
    level_cycles = {}
    parallel_cycles = {}
    if spec.get("cycles", True) and len(table) > 1 and in_parallel:
        # the longest equilibrium branches first: their cycles are the longest tasks (on tvb68 the three
        # highest eps levels take three quarters of the time), which must not start last
        order = sorted(table, key=lambda level: -len(table[level][0]))
        parallel_cycles = _parallel_level_cycles(context, params, free, order, settings, groups, step,
                                                 scheduler, workers, failures)
        log.info("  %s: cycles of %d levels in parallel (%.0f s)", step, len(table), time.perf_counter() - begin)
    for level in levels:
        if level not in table:
            map_solution.append(np.zeros(len(samples), dtype=int))
            map_rates.append(np.full((len(samples), len(groups)), np.nan))
            continue
        eq, eq_rates, _ = table[level]  # columns in the order of groups
        branch_rates = [(eq, eq_rates)]
        if spec.get("cycles", True):
            if level in parallel_cycles:
                cycles, rows, cyc_table = parallel_cycles[level]
            else:
                cycles = _level_cycles(eq, settings, step, failures)
                rows, cyc_table = _cycle_crossings(context, cycles, groups, p1, q, level)
            level_cycles[level] = cycles
            point_rows.extend(rows)
            branch_rates.extend(cyc_table)
            curves.extend(_continue_cycle_crossings(context, step, eq, rows, cycle_modes, groups, free, settings,
                                                    [c for c in curves if c.kind is BranchKind.LOCUS
                                                     and c.locus_of in (SpecialKind.PD, SpecialKind.NS,
                                                                        SpecialKind.LPC)], failures))
        if grid is None:
            sol, rates = _map_level(branch_rates, samples, len(groups))
            map_solution.append(sol)
            map_rates.append(rates)
        log.info("  %s: level %s = %g analysed (%.0f s)", step, q, level, time.perf_counter() - begin)

    if grid is None:
        map_rows = levels
        _write_map(context, step, free, levels, samples, groups, np.array(map_solution), np.array(map_rates))
    else:
        from bifnet.transverse.maps import instability_map

        result = instability_map(context.model, params, free, grid[p1], grid[q], [g.Lambda for g in groups],
                                 {level: table[level][0] for level in table},
                                 level_cycles if spec.get("cycles", True) else None,
                                 scheduler=scheduler, workers=workers, label=f"{step}: map")
        samples, map_rows = result.values1, list(result.values2)
        map_solution, map_rates = result.solution, result.growth_rate
        _write_map(context, step, free, map_rows, samples, groups, map_solution, map_rates,
                   grid_steps=spec["grid"], mode_rates=bool(spec.get("map_mode_rates", False)))
        log.info("  %s: map on the %d x %d grid (%.0f s)", step, len(samples), len(map_rows),
                 time.perf_counter() - begin)
    curves_frame = _curves_frame(curves, free)
    _append_csv(context, "transverse_curves.csv", _with_operator(curves_frame, context), step)
    _append_csv(context, "transverse_points.csv", _with_operator(pd.DataFrame(point_rows, columns=_POINT_COLUMNS(free)),
                                                                 context), step)
    _append_tables(context, step, curves)
    context.results[step] = curves
    _plot_transverse(context, step, free, curves, map_rows, samples, np.asarray(map_solution), np.asarray(map_rates),
                     settings.bounds[q], groups, grid_steps=spec.get("grid"))
    kinds = {}
    for c in curves:
        kinds[c.locus_of.value] = kinds.get(c.locus_of.value, 0) + 1
    summary_map = {}
    if grid is not None:
        counts, _ = _map_counts(groups, np.asarray(map_solution), np.asarray(map_rates))
        summary_map = {"map_grid": [len(samples), len(map_rows)],
                       "map_points_by_solution": {k: int(np.sum(np.asarray(map_solution) == c))
                                                  for k, c in (("none", 0), ("EP", 1), ("LC", 2))},
                       "map_max_unstable_modes": int(counts.max()) if counts.size else 0}
    summary = {"curves": len(curves), "curves_by_kind": kinds, "levels": levels, **summary_map,
               "modes_with_curves": sorted({c.mode for c in curves}),
               "cycle_crossings": sum(1 for r in point_rows if r["solution"] == "LC"),
               "complex_modes": [g.mode for g in complex_groups]}
    if failures:
        summary["failures"] = failures
    return summary


def _unit(context: StepContext, name: str) -> str:
    if name == "Lambda":
        return "1"
    parameter = context.model.parameters.get(name)
    return (parameter.unit if parameter is not None else "") or "1"


def _POINT_COLUMNS(free):
    return ["mode", "Lambda", "Lambda_imag", "solution", "kind", free[0], free[1], "branch", "homogeneous_stable",
            "located", f"{free[0]}_located", "frequency_hz_located", "l1", "nf_quadratic", "nf_cubic", "criticality"]


def _add_normal_forms(context, rows, crossings, table, groups):
    """Criticality of every equilibrium crossing of the full network (columns of
    :func:`bifnet.patterns.criticality.crossing_columns`), in place."""
    from bifnet.patterns.criticality import crossing_columns

    for row, c in zip(rows, crossings):
        group = next((g for g in groups if abs(complex(g.Lambda) - complex(c.Lambda)) < 1e-9), None)
        if group is not None:
            row.update(crossing_columns(context.model, context.connectome, table[c.level][0], c, group))


def _write_map(context, step, free, levels, samples, groups, solution, rates, *, grid_steps=None, mode_rates=True):
    """``instability_map_<step>.nc``: per level (or grid row) and sample, the homogeneous
    solution, its uniform stability, the number of unstable non-uniform modes
    and the most unstable one."""
    import xarray as xr

    from bifnet import io

    modes = np.array([g.mode for g in groups])
    uniform = modes == 1
    with np.errstate(invalid="ignore"):
        uniform_rate = rates[:, :, uniform][:, :, 0] if uniform.any() else np.full(solution.shape, np.nan)
        others = rates[:, :, ~uniform]
        multiplicity = np.array([len(g.modes) for g in groups])[~uniform]
        n_unstable = np.where(np.isfinite(others).all(axis=2), ((others > 0) * multiplicity).sum(axis=2), -1)
        safe = np.where(np.isfinite(others), others, -np.inf)
        if others.shape[2]:
            best = np.argmax(safe, axis=2)
            most = np.where(np.isfinite(others).all(axis=2), modes[~uniform][best], 0)
            max_rate = np.max(safe, axis=2)
        else:  # no non-uniform mode chosen (e.g. modes = []): nothing can be unstable
            most = np.zeros(solution.shape, dtype=np.int64)
            max_rate = np.full(solution.shape, np.nan)
    p1, q = free
    codes = ("0 none stable, 1 EP, 2 LC, 3 both (EP used)" if grid_steps is None else
             "0 no stable homogeneous state found, 1 stable EP, 2 stable LC (continued or period-doubled; "
             "the EP where both are stable)")
    ds = xr.Dataset(
        {
            "homogeneous_solution": ((q, p1), solution.astype(np.int64), {"units": "1", "description": codes}),
            "uniform_growth_rate": ((q, p1), uniform_rate, {"units": "1/ms"}),
            "uniform_stable": ((q, p1), (uniform_rate < 0).astype(np.int64), {"units": "1", "description": "1 stable to mode 1"}),
            "n_unstable_modes": ((q, p1), n_unstable.astype(np.int64), {"units": "1", "description": "non-uniform modes with positive growth, with multiplicity; -1 where no stable homogeneous state"}),
            "most_unstable_mode": ((q, p1), most.astype(np.int64), {"units": "1", "description": "mode number (1-based); 0 where none"}),
            "max_transverse_growth_rate": ((q, p1), np.where(np.isfinite(max_rate), max_rate, np.nan), {"units": "1/ms"}),
        },
        coords={q: (q, np.asarray(levels, dtype=float), {"units": _unit(context, q)}),
                p1: (p1, samples, {"units": _unit(context, p1)}),
                "mode_group": ("mode_group", modes.astype(np.int64), {"units": "1", "description": "first mode of each distinct eigenvalue"}),
                "Lambda": ("mode_group", np.real([g.Lambda for g in groups]).astype(float),
                           {"units": "1", "operator": _operator_symbol(context),
                            "description": "real part of the eigenvalue of the " + _operator_description(context)}),
                "Lambda_imag": ("mode_group", np.imag([g.Lambda for g in groups]).astype(float), {"units": "1"})},
        attrs={"step": step, "time_unit": "ms", "model": context.model.name, "operator": _operator_symbol(context)},
    )
    if mode_rates:
        ds["growth_rate"] = ((q, p1, "mode_group"), rates if grid_steps is None else rates.astype(np.float32),
                             {"units": "1/ms"})
    if grid_steps is not None:
        ds.attrs.update({f"grid_step_{k}": float(v) for k, v in grid_steps.items()})
        ds.attrs["method"] = ("homogeneous states solved at every grid point from the continued branches; "
                              "growth rates: eigenvalues of J(Lambda) at equilibria, Floquet exponents at cycles "
                              "(bifnet.transverse.maps)")
    io.write_netcdf(context.out_dir / f"instability_map_{step}.nc", ds)


def _map_counts(groups, solution, rates):
    """Per level and sample: the number of unstable non-uniform modes (with
    multiplicity; -1 where no stable homogeneous state was analysed or it is
    unstable to mode 1), as in ``n_unstable_modes`` of the NetCDF."""
    modes = np.array([g.mode for g in groups])
    uniform = modes == 1
    multiplicity = np.array([len(g.modes) for g in groups])[~uniform]
    with np.errstate(invalid="ignore"):
        others = rates[:, :, ~uniform]
        n = np.where(np.isfinite(others).all(axis=2), ((others > 0) * multiplicity).sum(axis=2), -1)
        if uniform.any():
            n = np.where(rates[:, :, uniform][:, :, 0] < 0, n, -1)
    return n, int(multiplicity.sum())


_MAX_CODIM2_PER_CURVE = 5


def _codim2_labels(curves, free):
    """(point, text) of the codimension-two points on ``curves`` (``GH m2``: GH
    on the curve of mode 2), and the (kind, mode) pairs left out because one
    curve reports more than ``_MAX_CODIM2_PER_CURVE`` points of that kind
    (as the engine's GH test does along the realified curves of complex modes)."""
    from bifnet.plots import _CODIM2

    out, skipped = [], []
    for c in curves:
        by_kind = {}
        for sp in c.special_points:
            if (sp.kind in _CODIM2 or sp.kind is SpecialKind.BP) and sp.located:
                by_kind.setdefault(sp.kind, []).append(sp)
        for kind, points in by_kind.items():
            tag = f" m{c.mode}" if c.mode not in (None, 1) else ""
            if len(points) > _MAX_CODIM2_PER_CURVE:
                skipped.append(f"{kind.value}{tag} ({len(points)})")
                continue
            out.extend(((float(c[free[0]][sp.index]), float(c[free[1]][sp.index])), f"{kind.value}{tag}")
                       for sp in points)
    return out, skipped


def _plot_transverse(context, step, free, curves, levels, samples, solution, rates, bounds, groups, grid_steps=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from bifnet import io
    from bifnet.plots import place_labels, plot_unstable_counts

    p1, q = free
    fig, ax = plt.subplots(figsize=(9, 6.5))
    ax.set_xlim(samples[0], samples[-1])
    ax.set_ylim(*bounds)
    handles = []
    drawn_map = len(levels) > 1
    if drawn_map:
        counts, n_modes = _map_counts(groups, solution, rates)
        rows_text = f"rows: {q} levels" if grid_steps is None else "per grid point"
        plot_unstable_counts(samples, levels, counts, ax, bounds=bounds, max_count=max(n_modes, 1),
                             label=f"unstable non-uniform modes\n(with multiplicity; {rows_text})")
        if grid_steps is None:
            ax.plot(np.full(len(levels), samples[-1]), levels, marker="<", ls="none", color="k", ms=5,
                    clip_on=False, zorder=7)
            handles.append(Line2D([], [], marker="<", ls="none", color="k", ms=5, label=f"{q} levels of the map"))
        handles.append(Patch(facecolor="0.7", alpha=0.85, label="no stable homogeneous state analysed"))
    cmap = plt.get_cmap("winter")
    spectrum = np.real(context.connectome.spectrum().eigenvalues) if context.connectome is not None else None
    lam = [float(np.real(c.Lambda)) for c in curves]
    if spectrum is not None and spectrum.size > 1:
        lo, hi = float(spectrum.min()), float(spectrum.max())
    else:
        lo, hi = (min(lam), max(lam)) if lam else (-1.0, 1.0)
    norm = Normalize(lo, hi if hi > lo else lo + 1e-9)
    for c in curves:
        ax.plot(c[p1], c[q], color=cmap(norm(float(np.real(c.Lambda)))), lw=1.1,
                ls="-" if c.locus_of is SpecialKind.HB else "--")
    homogeneous = [b for v in context.results.values() if isinstance(v, list) for b in v
                   if isinstance(b, Branch) and b.kind is BranchKind.LOCUS and b.mode == 1 and tuple(b.free) == tuple(free)]
    for b in homogeneous:
        ax.plot(b[p1], b[q], color="k", lw=1.6)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, location="bottom", pad=0.1, fraction=0.04,
                       aspect=40)
    bar.set_label(f"Lambda of the transverse curves (eigenvalue of the {_operator_description(context)})",
                  fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if curves:
        handles.append(Line2D([], [], color="0.3", ls="-", label="transverse HB (colour: Lambda)"))
        if any(c.locus_of is not SpecialKind.HB for c in curves):
            handles.append(Line2D([], [], color="0.3", ls="--", label="transverse LP / LPC / PD / NS"))
    if homogeneous:
        handles.append(Line2D([], [], color="k", lw=1.6, label="homogeneous loci"))
    labels, skipped = _codim2_labels(curves, free)
    more, skipped_h = _codim2_labels(homogeneous, free)
    labels, skipped = labels + more, skipped + skipped_h
    if skipped:
        log.info("  %s: figure: codimension-two points not drawn (more than %d on one curve): %s", step,
                 _MAX_CODIM2_PER_CURVE, ", ".join(skipped))
    if labels or skipped:
        if labels:
            pts = np.array([p for p, _ in labels])
            ax.plot(pts[:, 0], pts[:, 1], "s", ms=4, color="k", mfc="w", zorder=6)
            place_labels(ax, [p for p, _ in labels], [t for _, t in labels])
        note = ""
        if skipped:  # a few names, wrapped: the full list (tvb96: dozens) is in the log
            import textwrap

            shown = ", ".join(skipped[:4]) + (f" and {len(skipped) - 4} more" if len(skipped) > 4 else "")
            note = "\n" + textwrap.fill(f"(not drawn, > {_MAX_CODIM2_PER_CURVE} on one curve: {shown})", 60)
        handles.append(Line2D([], [], marker="s", ls="none", ms=4, color="k", mfc="w",
                              label="codimension-two points (m: mode)" + note))
    ax.set_xlabel(p1)
    ax.set_ylabel(q)
    if grid_steps is None:
        rows = ", ".join(f"{v:g}" for v in sorted(levels))
        where = f"; map evaluated on the rows {q} = {rows}, each drawn up to the midpoints"
    else:
        where = (f"; map on the {len(samples)} x {len(levels)} grid (steps {p1} {grid_steps[p1]:g}, "
                 f"{q} {grid_steps[q]:g})")
    ax.set_title(f"{context.model.name}: {len(curves)} transverse curves" + (where if drawn_map else ""),
                 fontsize=9)
    if handles:
        bar.ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -2.2), ncol=3,
                      frameon=False)
    io.save_figure(context.out_dir / f"transverse_{step}.png", fig)


def neutral_step(context: StepContext, spec: dict) -> dict:
    """``kind = "neutral"``: neutral-stability curves ``Lambda_c(p)`` at fixed
    other parameters, traced with ``Lambda`` as a continuation parameter.

    Keys: ``free`` (one model parameter), ``range`` (it, and optionally
    ``Lambda``; default [-1, 1]), ``levels`` (number or list of Lambda values
    where starting points are searched; default 21), ``parameters``, ``settings``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bifnet import io

    step = spec["name"]
    check_keys(spec, {"free", "range", "levels", "parameters", "settings"}, step)
    (p1,) = _free(spec, 1, step)
    context.model.check_parameter_names([p1])
    context.model.require_coupling(f"step {step!r}")
    if context.connectome is not None:
        default_range = _default_lambda_range(context, context.connectome.spectrum().eigenvalues)
    else:
        diffusive = context.model.coupling is not None and context.model.coupling.scheme == "diffusive"
        default_range = [0.0, 1.0] if diffusive else [-1.0, 1.0]
    spec = {**spec, "range": {"Lambda": default_range, **spec.get("range", {})}}
    settings = step_settings(context, spec, (p1, "Lambda"))
    params = _step_parameters(context, spec)
    levels = _levels({"levels": spec.get("levels", 21)}, settings.bounds["Lambda"], step)
    failures: list[str] = []
    curves, crossings, _ = trace_transverse_curves(context.model, params, [], (p1, "Lambda"), levels, settings,
                                                   failures=failures)
    import pandas as pd

    rows = []
    for c in curves:
        with np.errstate(divide="ignore", invalid="ignore"):
            freq = 1000.0 / c["period"] if "period" in c.columns else np.full(len(c), np.nan)
        rows.append(pd.DataFrame({"kind": c.locus_of.value, "curve": c.name, "point": np.arange(len(c)),
                                  p1: c[p1], "Lambda_c": c["Lambda"], "frequency_hz": freq}))
    frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["kind", "curve", "point", p1, "Lambda_c", "frequency_hz"])
    frame.insert(frame.columns.get_loc("Lambda_c") + 1, "operator", _operator_symbol(context))
    _append_csv(context, "neutral_curves.csv", frame, step)
    fig, ax = plt.subplots(figsize=(7, 5))
    for c in curves:
        ax.plot(c[p1], c["Lambda"], color="tab:red" if c.locus_of is SpecialKind.HB else "tab:blue", lw=1.3)
    if context.connectome is not None:
        for lam in np.real(context.connectome.spectrum().eigenvalues):
            ax.axhline(lam, color="0.8", lw=0.5, zorder=0)
    ax.set_xlabel(p1)
    ax.set_ylabel(_lambda_label(context) + "\n(neutral: growth rate 0)")
    ax.set_xlim(*settings.bounds[p1])
    ax.set_ylim(*settings.bounds["Lambda"])
    ax.set_title(f"{context.model.name}: neutral curves (red HB, blue LP; grey lines: connectome eigenvalues)",
                 fontsize=9)
    io.save_figure(context.out_dir / f"neutral_{step}.png", fig)
    summary = {"curves": len(curves), "crossings": len(crossings)}
    if failures:
        summary["failures"] = failures
    return summary
