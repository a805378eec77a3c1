"""Benchmark: two-parameter loci of LPC points of oscillatory patterns (bifnet.patterns.cycle_loci).

The subcritical Stuart-Landau pattern (models/stuart_landau.toml, eps = 0.5): on the random 6-node network
of the tests (``D = 12``, mode 6) or on tvb68 (``--tvb68``: ``D = 136``, mode 68, the case of
continuation_runs/subcritical_pattern.toml). The one-parameter branch is computed, its LPC1 continued in
``(mu, eps)`` with a level at ``eps = level``, and the level's row compared with LPC1 of the
one-parameter branch computed again at that ``eps``. Printed: dimension, points, seconds and
linearisations (one monodromy + 6 flows each) per accepted point, the largest residual, the agreement.

``--gradient full`` replaces the gradient of the scalar condition by central differences of ``g`` in every
unknown (two linearisations per unknown, ``2 (D + 3)``, instead of two along the null vector): the
alternative the module's method was measured against. Run from the repository root::

    BIFNET_CACHE_DIR=... /work/main/.venv/bin/python benchmarks/bench_cycle_loci.py [--tvb68] [--steps 8]
        [--level 0.55] [--gradient directional|full]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def _full_gradient(system):
    """DG with ``g_z`` by central differences of ``g`` in every unknown."""
    plain = system.DG

    def DG(z):
        out = plain(z)
        D = system.problem.D
        for j in range(D + 3):
            h = 1e-6 * (1.0 + abs(z[j]))
            up, down = z.copy(), z.copy()
            up[j] += h
            down[j] -= h
            out[D + 1, j] = (system.bordered(system.core(system._lin(up)[1]))[0]
                             - system.bordered(system.core(system._lin(down)[1]))[0]) / (2 * h)
        return out
    return DG


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tvb68", action="store_true")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--level", type=float, default=0.55)
    parser.add_argument("--gradient", choices=("directional", "full"), default="directional")
    args = parser.parse_args()

    from bifnet.connectome import coupling_operator, load_connectome
    from bifnet.continuation.branch import SpecialKind
    from bifnet.model import load_model
    from bifnet.patterns import cycle_loci
    from bifnet.patterns.cycles import CycleSettings, oscillatory_pattern_branch
    from test_patterns import _located, _random_operator

    model = load_model("stuart_landau")
    if args.tvb68:
        operator = coupling_operator(load_connectome("tvb68"), model.coupling)
        mode, settings = 68, CycleSettings(ds=0.02, ds_max=0.3, max_steps=40, first_amplitude=0.01)
    else:
        operator = _random_operator(model, 6, 5)
        mode, settings = 6, CycleSettings(ds=0.004, ds_max=0.3, max_steps=40, first_amplitude=0.01)
    lam = float(np.real(operator.spectrum().eigenvalues[mode - 1]))

    def branch_at(eps):
        mu_c = eps * lam / 2
        params, x = _located(model, operator, model.resolve_parameters({"eps": eps}), "mu", mu_c - 0.01,
                             mu_c + 0.01, mode)
        started = time.perf_counter()
        branch = oscillatory_pattern_branch(model, operator, params, "mu", x, mode, settings)
        lpc = next(sp for sp in branch.special_points if sp.kind is SpecialKind.LPC and sp.located)
        return params, branch, lpc, time.perf_counter() - started

    params, branch, lpc, seconds = branch_at(0.5)
    D = branch.engine["states"].shape[1] * branch.engine["states"].shape[2]
    print(f"D = {D}: branch of {len(branch)} rows in {seconds:.1f} s; LPC1 at mu = {lpc.parameters['mu']:.10f}, "
          f"S = {lpc.details['steps_per_period']}")
    if args.gradient == "full":
        original = cycle_loci.CycleLocusSystem.__init__

        def init(self, *a, **k):
            original(self, *a, **k)
            self.DG = _full_gradient(self)
        cycle_loci.CycleLocusSystem.__init__ = init
    started = time.perf_counter()
    locus = cycle_loci.continue_cycle_locus(
        model, operator, params, branch.engine["verified_orbits"]["LPC1"], SpecialKind.LPC, ("mu", "eps"),
        {"mu": lpc.parameters["mu"], "eps": 0.5}, steps=lpc.details["steps_per_period"], ds=0.02, ds_max=0.05,
        max_steps=args.steps, bounds={"eps": (0.3, 0.7)}, levels=[args.level], check_return=False)
    seconds = time.perf_counter() - started
    points = len(locus) - 1
    print(f"locus ({args.gradient} gradient): {len(locus)} rows ({locus.status}) in {seconds:.2f} s, "
          f"{locus.engine['seconds'] / points:.3f} s and {locus.engine['linearisations'] / points:.1f} "
          f"linearisations per point; max residual {np.max(locus['residual']):.2g}, max multiplier error "
          f"{np.max(locus['multiplier_error']):.2g}")
    rows = locus.engine["level_rows"]
    print(f"eps from {locus['eps'].min():.4f} to {locus['eps'].max():.4f}, mu from {locus['mu'].min():.6f} to "
          f"{locus['mu'].max():.6f}; rows solved at the level: {rows}")
    if rows:
        row = rows[0]
        _, _, again, seconds = branch_at(args.level)
        print(f"eps = {args.level}: locus mu = {locus['mu'][row]:.12f}, branch LPC1 mu = "
              f"{again.parameters['mu']:.12f} ({seconds:.1f} s); difference "
              f"{abs(locus['mu'][row] - again.parameters['mu']):.2g}, period {locus['period'][row]:.10f} vs "
              f"{again.period:.10f}")


if __name__ == "__main__":
    main()
