"""Homogeneous continuation speed (issue 2), printed, never asserted.

1. eps = 15: equilibria in Iext_e in [0, 40] and the cycles from HB1, with
   AUTO-07p transpiled (compiled model + exact Jacobian, bifnet's path),
   including compilation; baseline in the same run: the first 40 cycle steps
   through bifpy's interpreted Python callbacks against the same 40 steps
   transpiled.
2. What trust costs: the same eps = 15 and eps = 12 runs with bifnet's verification
   and accounting (bifnet.continuation.verify / accounting) against the engine's
   output alone (the accounting replaced by a plain conversion), in the same run.
3. The whole two-parameter homogeneous diagram (continuation_runs/homogeneous_study.toml).

Run: .venv/bin/python benchmarks/bench_homogeneous.py [--skip-diagram]
"""

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def interpreted_cycles(eq, steps):
    """Cycles from HB1 through bifpy's interpreted (ctypes) Python callbacks, ``steps`` steps."""
    from bifpy import auto

    from bifnet.codegen import jacobian_function, rhs_function
    from bifnet.systems import homogeneous_system

    problem = eq.engine["problem"]
    system = homogeneous_system(problem.system.model)
    f, J = rhs_function(system), jacobian_function(system)
    order = [problem.slots[n] - 1 for n in system.parameter_names]
    slot = problem.slots["Iext_e"]

    def func(u, par):
        return f(np.asarray(u), np.asarray([par[i] for i in order]))

    hopf = eq.engine["points"][eq.point("HB1").index]
    settings = dict(ips=auto.IPS_PERIODIC_ORBIT, ndim=6, npar=problem.npar, nmx=steps, npr=1, ntst=40, ncol=4,
                    ilp=1, isp=2, jac=0, ds=0.05, dsmin=1e-5, dsmax=0.5, rl0=0.0, rl1=40.0,
                    a0=-1e300, a1=1e300, epsl=1e-8, epsu=1e-8, epss=1e-6)
    del J
    return auto.restart(func, settings, hopf, icu=[slot, auto.PERIOD_INDEX], isw=auto.ISW_HOPF_TO_PERIODIC_ORBIT,
                        source_ips=auto.IPS_EQUILIBRIUM)


def engine_only():
    """A context in which branches are converted from AUTO's output without verification or accounting."""
    import contextlib

    from bifnet.continuation import equilibria, restarts

    @contextlib.contextmanager
    def patched():
        saved = equilibria.account, restarts.account, restarts.MESH_LADDER

        def plain(points, convert, *args, **kwargs):
            branch = convert(points)
            return dataclasses.replace(branch, accounting={"refinements": 0})

        equilibria.account = restarts.account = plain
        restarts.MESH_LADDER = ()
        try:
            yield
        finally:
            equilibria.account, restarts.account, restarts.MESH_LADDER = saved

    return patched()


def trust_cost(model, settings):
    """Seconds with and without verification and accounting, eps = 15 and 12 (equilibria + cycles)."""
    from bifnet.continuation.equilibria import continue_equilibria
    from bifnet.continuation.restarts import continue_from

    def run(eps):
        t = time.perf_counter()
        eq = continue_equilibria(model, model.resolve_parameters({"eps": eps}), "Iext_e", settings=settings)
        lc = continue_from(eq, "HB1", settings=settings.replace(ds=0.05, ds_max=0.5, max_steps=600))
        return time.perf_counter() - t, eq, lc

    for eps in (15.0, 12.0):
        run(eps)  # warm: compilation of the engine and of bifnet's Floquet kernels
        with engine_only():
            t_engine, eq0, lc0 = run(eps)
        t_trust, eq, lc = run(eps)
        points = [sp for b in (eq, lc) for sp in b.special_points]
        worst = max((sp.residual for sp in points if np.isfinite(sp.residual)), default=float("nan"))
        print(f"eps = {eps:g} equilibria + cycles: engine alone {t_engine:6.2f} s, with verification and accounting "
              f"{t_trust:6.2f} s (x{t_trust / t_engine:.2f}); points {len(points)} "
              f"(engine alone {len(eq0.special_points) + len(lc0.special_points)}), largest residual {worst:.1e}, "
              f"refinements {eq.accounting.get('refinements', 0) + lc.accounting.get('refinements', 0)}, "
              f"unexplained {eq.accounting.get('unexplained', 0) + lc.accounting.get('unexplained', 0)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-diagram", action="store_true")
    args = parser.parse_args()

    from bifnet.continuation.equilibria import continue_equilibria
    from bifnet.continuation.restarts import continue_from
    from bifnet.continuation.settings import ContinuationSettings
    from bifnet.model import load_model

    model = load_model("ngnmm_ping")
    params = model.resolve_parameters({"eps": 15.0})
    settings = ContinuationSettings(bounds={"Iext_e": (0.0, 40.0)})
    t0 = time.perf_counter()
    eq = continue_equilibria(model, params, "Iext_e", settings=settings)
    t1 = time.perf_counter()
    lc = continue_from(eq, "HB1", settings=settings.replace(ds=0.05, ds_max=0.5, max_steps=600))
    t2 = time.perf_counter()
    hopf = [round(sp.parameters["Iext_e"], 5) for sp in eq.points_of_kind("HB")]
    print(f"eps = 15 equilibria (transpiled, incl. compilation): {t1 - t0:6.2f} s, {len(eq)} points, HB at {hopf}")
    print(f"eps = 15 cycles from HB1 (transpiled, incl. compilation): {t2 - t1:6.2f} s, {len(lc)} cycles, {lc.status}")
    print(f"eps = 15 equilibria + cycles: {t2 - t0:6.2f} s (target < 5 s once compiled; this first run "
          f"includes compilation)")

    steps = 40
    t3 = time.perf_counter()
    interpreted_cycles(eq, steps)
    t4 = time.perf_counter()
    t5 = time.perf_counter()
    continue_from(eq, "HB1", settings=settings.replace(ds=0.05, ds_max=0.5, max_steps=steps))
    t6 = time.perf_counter()
    print(f"{steps} cycle steps from HB1: interpreted Python callbacks {t4 - t3:6.2f} s, "
          f"transpiled (incl. compilation) {t6 - t5:6.2f} s: ratio {(t4 - t3) / (t6 - t5):.1f}x")

    trust_cost(model, settings)

    if args.skip_diagram:
        return
    from bifnet.runs import execute_run_file

    with tempfile.TemporaryDirectory() as tmp:
        t5 = time.perf_counter()
        execute_run_file(ROOT / "continuation_runs" / "homogeneous_study.toml", out=Path(tmp) / "out")
        t6 = time.perf_counter()
        import json

        manifest = json.loads((Path(tmp) / "out" / "run.json").read_text())
    print(f"whole homogeneous study (8 one-parameter diagrams, cycles, PD switching, HB/LP/LPC/PD loci): "
          f"{t6 - t5:6.1f} s (target < 120 s)")
    for step in manifest["steps"]:
        print(f"    {step['name']:>6}: {step['seconds']:7.1f} s  {step['status']}")


if __name__ == "__main__":
    main()
