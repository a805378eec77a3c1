"""Run-file steps of the homogeneous analysis: ``equilibria``, ``cycles``, ``curve``.

Each step stores its branches in ``context.results[name]`` (a list), appends
rows to ``branches.csv`` and ``special_points.csv``, and draws figures.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from typing import Sequence

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind, SpecialKind
from bifnet.continuation.equilibria import continue_equilibria
from bifnet.continuation.restarts import continue_cycles, continue_locus, ends_at_hopf
from bifnet.continuation.settings import ContinuationSettings
from bifnet.continuation.tables import branches_frame, special_points_frame
from bifnet.errors import BifnetError, ContinuationError, RunFileError
from bifnet.steps import StepContext, check_keys

log = logging.getLogger("bifnet")

_COMMON = {"free", "range", "settings", "parameters", "start", "plot"}


def _free(spec: dict, n: int | None, step: str) -> tuple[str, ...]:
    free = spec.get("free")
    if isinstance(free, str):
        free = [free]
    if not isinstance(free, list) or not free or not all(isinstance(f, str) for f in free):
        raise RunFileError(f"step {step!r}: 'free' must be a list of parameter names")
    if n is not None and len(free) != n:
        raise RunFileError(f"step {step!r}: needs {n} free parameter(s), got {free}")
    return tuple(free)


def step_settings(context: StepContext, spec: dict, free: Sequence[str]) -> ContinuationSettings:
    """Run-file ``[settings]`` updated by the step's ``settings`` and ``range``."""
    step = spec["name"]
    table = dict(context.results["__run__"].get("settings", {}))
    table.update(spec.get("settings", {}))
    bounds = {k: tuple(v) for k, v in dict(table.pop("bounds", {})).items()}
    for name, pair in dict(spec.get("range", {})).items():
        if name not in context.model.parameters and name != "Lambda":
            raise RunFileError(f"step {step!r}: range names unknown parameter {name!r}")
        if not (isinstance(pair, list) and len(pair) == 2):
            raise RunFileError(f"step {step!r}: range of {name} must be [low, high]")
        bounds[name] = tuple(float(v) for v in pair)
    missing = [f for f in free if f not in bounds]
    if missing:
        raise RunFileError(f"step {step!r}: give a range for {', '.join(missing)}, e.g. range = {{ {missing[0]} = [0.0, 40.0] }}")
    try:
        return ContinuationSettings.from_mapping({**table, "bounds": bounds}, where=f"step {step!r} settings")
    except ContinuationError as error:
        raise RunFileError(str(error)) from None


def _report(context: StepContext) -> list[str]:
    """Parameters reported in every table: those any step varies."""
    run = context.results["__run__"]
    names = []
    for spec in run["steps"]:
        for key in ("free",):
            value = spec.get(key, [])
            names.extend([value] if isinstance(value, str) else value)
        names.extend(spec.get("values", {}).keys())
    return list(dict.fromkeys(n for n in names if n in context.model.parameters))


def _append_tables(context: StepContext, step: str, branches: Sequence[Branch]) -> None:
    from bifnet import io

    report = _report(context)
    for filename, build in (("branches.csv", branches_frame), ("special_points.csv", special_points_frame)):
        io.write_step_rows(context.out_dir / filename, step, build(step, branches, report))


def _summary(branches: Sequence[Branch]) -> dict:
    def point(sp):
        out = {"name": sp.name, **{k: float(v) for k, v in sp.parameters.items()}}
        if np.isfinite(sp.period):
            out["period_ms"] = float(sp.period)
        out["located"] = bool(sp.located)
        out["residual"] = float(sp.residual) if np.isfinite(sp.residual) else None
        return out

    return {"branches": [
        {"name": b.name, "points": len(b), "status": b.status,
         "accounting": {k: (v if not isinstance(v, float) or np.isfinite(v) else None)
                        for k, v in dict(b.accounting).items()},
         "special_points": [point(sp) for sp in b.special_points if sp.kind not in (SpecialKind.EP,)]}
        for b in branches]}


def _finish(context: StepContext, step: str, branches: Sequence[Branch], failures: list[str], what: str) -> dict:
    """Store and tabulate a step's branches; its summary, failures included.

    Raises :class:`ContinuationError` only when every start failed.
    """
    context.results[step] = list(branches)
    _append_tables(context, step, branches)
    summary = _summary(branches)
    if failures:
        summary["failures"] = failures
        if not branches:
            raise ContinuationError(f"step {step!r}: every {what} failed: {failures[0]}")
    return summary


def _expected_cost(source) -> tuple:
    """Sort key of a cycles step's source branch, likely longest first. Cycles from an equilibrium branch with
    folds tend to end at a homoclinic orbit through the saddle the folds create, and snake there (ngnmm_ping
    at eps = 26 - 30: 32 - 105 s against 1 - 6 s); the wider the parameter range with that saddle, the
    longer (eps = 30: 1.77 wide, 105 s; eps = 29.5: 1.48, 55 s; eps = 26: 0.07, 32 s). Started in the run
    file's order, eps = 30 began after the other two and set the step's wall time."""
    folds = source.points_of_kind(SpecialKind.LP)
    values = [float(sp.parameters[source.free[0]]) for sp in folds if source.free[0] in sp.parameters]
    return (-len(folds), -(max(values) - min(values)) if len(values) > 1 else 0.0)


def _restartable(sp) -> bool:
    """A point the engine located and bifnet verified: it has the engine data a restart needs."""
    return sp.located and sp.details.get("found_by", "engine") == "engine"


def _start_points(context: StepContext, spec: dict, kinds: set[SpecialKind]) -> list[tuple[Branch, str]]:
    """Resolve ``start = "step:HB1"`` (one point per branch) or ``"step:HB"`` (all HB points)."""
    step = spec["name"]
    start = spec.get("start")
    if not isinstance(start, str) or ":" not in start:
        raise RunFileError(f"step {step!r}: 'start' must look like \"eq:HB1\" or \"eq:HB\"")
    source, point = start.split(":", 1)
    branches = context.results.get(source)
    if not isinstance(branches, list):
        raise RunFileError(f"step {step!r}: step {source!r} produced no branches to start from")
    selected = []
    skipped = []
    for branch in branches:
        for sp in branch.special_points:
            if sp.name == point:
                selected.append((branch, sp.name))
            elif sp.kind.value == point and sp.kind in kinds:
                # "eq:HB" means every trustworthy HB point: not those that failed verification, nor
                # those bifnet located after the engine missed them (no engine data to restart from)
                if _restartable(sp):
                    selected.append((branch, sp.name))
                else:
                    skipped.append(f"{branch.name}:{sp.name}")
    if skipped:
        log.info("  %s: %d start point(s) skipped (not located by the engine and verified): %s", step,
                 len(skipped), ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    if not selected:
        allowed = ", ".join(sorted(k.value for k in kinds))
        raise RunFileError(f"step {step!r}: no special point {point!r} on the branches of step {source!r} (usable kinds: {allowed})")
    return selected


def _parameter_sets(context: StepContext, spec: dict) -> list[dict]:
    """The step's parameters, one set per combination of ``values`` (a scan)."""
    base = dict(context.parameters)
    overrides = spec.get("parameters", {})
    context.model.check_parameter_names(overrides)
    base.update({k: float(v) for k, v in overrides.items()})
    values = spec.get("values", {})
    if not values:
        return [base]
    context.model.check_parameter_names(values)
    names = list(values)
    out = []
    from bifnet.runfile_schema import axis_values

    axes = []
    for n in names:
        axis = [values[n]] if isinstance(values[n], (int, float)) else axis_values(values[n]).tolist()
        if not axis:
            raise RunFileError(f"step {spec['name']!r}: values.{n} is empty: the scan has no points")
        axes.append(axis)
    for combo in itertools.product(*axes):
        out.append({**base, **{n: float(v) for n, v in zip(names, combo)}})
    return out


def _tag(params: dict, spec: dict) -> str:
    values = spec.get("values", {})
    return ",".join(f"{n}={params[n]:g}" for n in values)


def equilibria_step(context: StepContext, spec: dict) -> dict:
    """``kind = "equilibria"``: one-parameter continuation of homogeneous equilibria.

    Keys: ``free`` (one name), ``range``, optional ``values`` (scan other
    parameters: one branch per combination), ``x0``, ``parameters``,
    ``settings``.
    """
    step = spec["name"]
    check_keys(spec, _COMMON | {"values", "x0"}, step)
    free = _free(spec, 1, step)
    context.model.check_parameter_names(free)
    settings = step_settings(context, spec, free)
    branches = []
    for params in _parameter_sets(context, spec):
        tag = _tag(params, spec)
        name = f"{step}[{tag}]" if tag else step
        lo, hi = settings.bounds[free[0]]
        if not lo <= params[free[0]] <= hi:
            params = {**params, free[0]: lo}
        branch = continue_equilibria(context.model, params, free, x0=spec.get("x0"), settings=settings, name=name)
        log.info("  %s: %d points; %s", name, len(branch),
                 ", ".join(f"{sp.name} at {free[0]} = {sp.parameters[free[0]]:.6f}"
                           for sp in branch.special_points if sp.kind is not SpecialKind.EP) or "no bifurcations")
        branches.append(branch)
    context.results[step] = branches
    _append_tables(context, step, branches)
    return _summary(branches)


def cycles_step(context: StepContext, spec: dict) -> dict:
    """``kind = "cycles"``: periodic orbits from Hopf points (``start = "eq:HB"``)
    and, with ``period_doubling = N``, N levels of period-doubled orbits.

    The start points of different source branches (e.g. the equilibria at
    different ``eps``) are independent: they run on ``workers`` threads
    (default: the CPUs this process may use), as AUTO-07p runs in its own
    process and bifnet's verification kernels release the GIL. The branches
    come out in the order a serial run gives (breadth first: every level of
    period doubling after the one before).
    """
    step = spec["name"]
    check_keys(spec, _COMMON | {"period_doubling", "workers"}, step)
    starts = _start_points(context, spec, {SpecialKind.HB, SpecialKind.PD})
    free = _free(spec, 1, step) if "free" in spec else starts[0][0].free[:1]
    settings = step_settings(context, spec, free)
    depth = int(spec.get("period_doubling", 0))
    workers = spec.get("workers")
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise RunFileError(f"step {step!r}: workers must be a positive integer, got {workers!r}")
    groups: dict[str, list] = {}
    for index, (source, point) in enumerate(starts):
        groups.setdefault(source.name, []).append(((index,), source, point))

    unusable: list[str] = []   # PD points that cannot start doubled orbits (list.append: thread-safe)

    def run_group(queue):
        """One source's start points, in turn (a later one may be reached by an earlier branch),
        with their period doublings; items ``(level, path, branch or None, failure or None)``."""
        done, out = [], []
        queue = [(path, source, point, 0) for path, source, point in queue]
        while queue:
            path, source, point, level = queue.pop(0)
            name = f"{step}@{source.name}:{point}"
            reached = _closed_onto(done, source, point)
            if reached:
                log.info("  %s: skipped, the closed branch %s already ends there", name, reached)
                continue
            began = time.perf_counter()
            try:
                cycles = continue_cycles(source, point, free=free, settings=settings, name=name)
            except ContinuationError as error:
                out.append((level, path, None, f"{name}: {error}"))
                log.warning("  %s failed: %s", name, error)
                continue
            seconds = time.perf_counter() - began
            cycles = dataclasses.replace(cycles, accounting={**cycles.accounting, "seconds": round(seconds, 2)})
            log.info("  %s: %d cycles, %s; %s (%.1f s)", name, len(cycles), cycles.status,
                     ", ".join(sp.name for sp in cycles.special_points) or "no bifurcations", seconds)
            done.append(cycles)
            out.append((level, path, cycles, None))
            if level < depth:
                # as for "eq:HB": only PD points the engine located and bifnet verified can start doubled
                # orbits (the others have no engine data to restart from)
                pds = cycles.points_of_kind(SpecialKind.PD)
                usable = [(k, sp) for k, sp in enumerate(pds) if _restartable(sp)]
                if len(usable) < len(pds):
                    log.info("  %s: %d of its %d PD points cannot start doubled orbits (not located by the "
                             "engine and verified)", name, len(pds) - len(usable), len(pds))
                    started = {sp.name for _, sp in usable}
                    unusable.extend(f"{cycles.name}:{sp.name}" for sp in pds if sp.name not in started)
                queue.extend((path + (k,), cycles, sp.name, level + 1) for k, sp in usable)
        return out

    n_threads = min(workers or _available_cpus(), len(groups)) if groups else 1
    if n_threads <= 1:
        results = [run_group(g) for g in groups.values()]
    else:
        from concurrent.futures import ThreadPoolExecutor

        from bifnet.continuation import _watchdog

        log.info("  %s: %d start branches on %d threads", step, len(groups), n_threads)
        pool = ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="bifnet-cycles")
        try:
            # likely longest first (the order of the results does not depend on it)
            order = sorted(groups.values(), key=lambda g: _expected_cost(g[0][1]))
            futures = [pool.submit(run_group, g) for g in order]
            results = [f.result() for f in futures]
        except BaseException:  # Ctrl-C, SIGTERM: the other threads' AUTO runs go too, and no new ones start
            _watchdog.stop_all()
            pool.shutdown(wait=True, cancel_futures=True)
            _watchdog.allow_runs()
            raise
        pool.shutdown()
    items = sorted((item for out in results for item in out), key=lambda item: (item[0], item[1]))
    branches = [b for _, _, b, _ in items if b is not None]
    failures = [f for _, _, _, f in items if f is not None]
    _plot_one_parameter(context, step, branches)
    summary = _finish(context, step, branches, failures, "cycle continuation")
    if unusable:
        summary["pd_not_started"] = sorted(unusable)
    return summary


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _closed_onto(branches: Sequence[Branch], source: Branch, point: str) -> str | None:
    """Name of a closed cycle branch from ``source`` that ends at ``point``."""
    sp = source.point(point)
    for b in branches:
        if b.origin and b.origin[0] == source.name and ends_at_hopf(b, sp):
            return b.name
    return None


def curve_step(context: StepContext, spec: dict) -> dict:
    """``kind = "curve"``: two-parameter loci of special points
    (``start = "eq:HB"``, ``"eq:LP1"``, ``"lc:LPC"``, ``"lc:PD"``...).

    ``max_per_branch`` keeps the first N start points of each branch (cycle
    branches that wind towards a homoclinic orbit carry dozens of folds);
    ``dedupe = false`` continues points that lie on a curve already computed.
    """
    step = spec["name"]
    check_keys(spec, _COMMON | {"dedupe", "max_per_branch"}, step)
    free = _free(spec, 2, step)
    context.model.check_parameter_names(free)
    settings = step_settings(context, spec, free)
    kinds = {SpecialKind.LP, SpecialKind.HB, SpecialKind.LPC, SpecialKind.PD, SpecialKind.NS}
    starts = _start_points(context, spec, kinds)
    limit = spec.get("max_per_branch")
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise RunFileError(f"step {step!r}: max_per_branch must be a positive integer")
        kept: dict[str, int] = {}
        selected = []
        for source, point in starts:
            kept[source.name] = kept.get(source.name, 0) + 1
            if kept[source.name] <= limit:
                selected.append((source, point))
        if len(selected) < len(starts):
            log.info("  %s: %d of %d start points kept (max_per_branch = %d)", step, len(selected), len(starts), limit)
        starts = selected
    loci, failures = [], []
    for source, point in starts:
        name = f"{step}@{source.name}:{point}"
        if spec.get("dedupe", True) and _on_existing_locus(loci, source, point, free):
            log.info("  %s: already on a computed curve, skipped", name)
            continue
        try:
            locus = continue_locus(source, point, free, settings=settings, name=name)
        except BifnetError as error:
            failures.append(f"{name}: {error}")
            log.warning("  %s failed: %s", name, error)
            continue
        log.info("  %s: %d points; %s", name, len(locus),
                 ", ".join(sp.name for sp in locus.special_points) or "no codimension-two points")
        loci.append(locus)
    context.results[step] = loci
    _plot_two_parameter(context, step, free)
    return _finish(context, step, loci, failures, "locus")


def _on_existing_locus(loci: Sequence[Branch], source: Branch, point: str, free) -> bool:
    """True when the start point lies on a locus of the same kind already computed."""
    sp = source.point(point)
    values = {f: float(sp.parameters.get(f, source.parameters.get(f))) for f in free}
    for locus in loci:
        if locus.locus_of is not sp.kind:
            continue
        scale = {f: max(float(np.ptp(locus[f])), 1e-9) for f in free}
        if locus.distance_to(values, scale) < 1e-3:
            return True
    return False


def _plot_one_parameter(context: StepContext, step: str, cycle_branches: Sequence[Branch]) -> None:
    """Figure per equilibrium branch: diagram of the coupled variable and frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bifnet import io
    from bifnet.plots import plot_frequency, plot_one_parameter

    by_source: dict[str, list[Branch]] = {}
    for b in cycle_branches:
        root = b.origin[0] if b.origin else b.name
        by_source.setdefault(root, []).append(b)
    eq_branches = {b.name: b for v in context.results.values() if isinstance(v, list)
                   for b in v if isinstance(b, Branch) and b.kind is BranchKind.EQUILIBRIA}
    variable = context.model.variable_names[0]
    for root, group in by_source.items():
        # follow PD chains back to their equilibrium branch
        eq = eq_branches.get(root)
        if eq is None:
            continue
        members = [b for b in cycle_branches if _root_of(b, cycle_branches) == root]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
        plot_frequency(members, eq.free[0], ax2)  # first: the shared limits are final before labels are placed
        plot_one_parameter([eq, *members], eq.free[0], variable, ax1)
        ax1.set_xlabel("")
        ax1.set_title(f"{context.model.name}: {root}")
        safe = root.replace("[", "_").replace("]", "").replace(",", "_").replace("=", "")
        io.save_figure(context.out_dir / f"diagram_{safe}.png", fig)


def _root_of(branch: Branch, branches: Sequence[Branch]) -> str:
    names = {b.name: b for b in branches}
    while branch.origin and branch.origin[0] in names:
        branch = names[branch.origin[0]]
    return branch.origin[0] if branch.origin else branch.name


def _plot_two_parameter(context: StepContext, step: str, free) -> None:
    """Two-parameter diagram of every locus computed so far in these parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bifnet import io
    from bifnet.plots import plot_two_parameter

    loci = [b for v in context.results.values() if isinstance(v, list) for b in v
            if isinstance(b, Branch) and b.kind is BranchKind.LOCUS and tuple(b.free) == tuple(free)]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    run = context.results["__run__"]
    for spec in run["steps"]:  # limits first: labels are placed in display space
        if spec.get("name") == step:
            rng = spec.get("range", {})
            if free[0] in rng:
                ax.set_xlim(*rng[free[0]])
            if free[1] in rng:
                ax.set_ylim(*rng[free[1]])
    plot_two_parameter(loci, free[0], free[1], ax)
    ax.set_title(f"{context.model.name}: two-parameter diagram")
    io.save_figure(context.out_dir / f"two_parameter_{step}.png", fig)
