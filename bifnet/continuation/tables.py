"""Branches as tables: the columns of ``branches.csv`` and ``special_points.csv``."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from bifnet.continuation.branch import Branch, BranchKind

_LEADING = ["step", "branch", "point", "solution", "mode", "operator", "Lambda", "stable", "kind", "label"]


def _mode(branch: Branch) -> tuple[str, complex]:
    """The operator whose eigenvalue indexes the branch's mode, and that eigenvalue.

    Homogeneous branches (mode 1) have the uniform eigenvalue of the model's
    coupling scheme: 1 for ``P`` (additive), 0 for a Laplacian (diffusive).
    """
    problem = (branch.engine or {}).get("problem")
    model = getattr(getattr(problem, "system", None), "model", None)
    coupling = getattr(model, "coupling", None)
    operator = coupling.operator if coupling is not None else ""
    if branch.mode == 1 and coupling is not None and getattr(problem.system, "kind", "") == "homogeneous":
        return operator, complex(coupling.uniform_eigenvalue)
    return operator, complex(branch.Lambda)


def branches_frame(step: str, branches: Iterable[Branch], report: Sequence[str] = ()):
    """One row per computed point of every branch of a step.

    Columns: ``step, branch, point, solution`` (EP, LC or the locus kind),
    ``mode, operator, Lambda, stable`` (True/False/empty; ``operator`` is ``P``, ``L`` or ``L_rw``
    and ``Lambda`` its eigenvalue for the mode: 1 or 0 for homogeneous branches), ``kind`` (special point at the
    row, else empty), ``label`` (AUTO's), the free parameters and those named
    in ``report``, then the state (EP and loci) or ``period``, ``frequency_hz``
    and ``<var>_min``/``<var>_max`` (LC).
    """
    import pandas as pd

    frames = []
    for branch in branches:
        frame = branch.to_frame()
        n = len(frame)
        kinds = np.full(n, "", dtype=object)
        for sp in branch.special_points:
            kinds[sp.index] = sp.kind.value
        stable = np.where(frame["stable"] == 1, "True", np.where(frame["stable"] == 0, "False", ""))
        operator, lam = _mode(branch)
        head = pd.DataFrame({
            "step": step, "branch": branch.name, "point": frame["point"], "solution": branch.solution,
            "mode": branch.mode, "operator": operator, "Lambda": float(lam.real), "stable": stable, "kind": kinds,
            "label": frame["label"],
        })
        for name in list(branch.free) + [r for r in report if r not in branch.free]:
            head[name] = frame[name] if name in frame else branch.parameters.get(name, np.nan)
        body = frame.drop(columns=["point", "stable", "code", "label"] + [c for c in branch.free if c in frame])
        if "period" in body:
            with np.errstate(divide="ignore", invalid="ignore"):
                body.insert(body.columns.get_loc("period") + 1, "frequency_hz", 1000.0 / body["period"])
        frames.append(pd.concat([head, body.reset_index(drop=True)], axis=1))
    if not frames:
        return pd.DataFrame(columns=_LEADING + ["period", "frequency_hz", "trivial_error"])
    table = pd.concat(frames, ignore_index=True, sort=False)
    for column in ("period", "frequency_hz", "trivial_error"):  # documented: present, empty where not applicable
        if column not in table:
            table[column] = np.nan
    return table


def special_points_frame(step: str, branches: Iterable[Branch], report: Sequence[str] = ()):
    """One row per special point: ``step, branch, point, kind, name, mode, Lambda``,
    the parameters, ``period``, ``frequency_hz``, ``located``, ``residual``
    and ``verification`` (how bifnet solved the point's defining system),
    ``eigenvalues`` and ``multipliers`` (as text at full double precision,
    empty where they do not apply) and details."""
    import pandas as pd

    rows = []
    for branch in branches:
        for sp in branch.special_points:
            operator, lam = _mode(branch)
            row = {"step": step, "branch": branch.name, "point": sp.index, "kind": sp.kind.value,
                   "name": sp.name, "mode": branch.mode, "operator": operator, "Lambda": float(lam.real),
                   "Lambda_imag": float(lam.imag), "solution": branch.solution}
            for name in list(branch.free) + [r for r in report if r not in branch.free]:
                row[name] = float(sp.parameters.get(name, branch.parameters.get(name, np.nan)))
            row["period"] = sp.period
            row["frequency_hz"] = sp.frequency_hz
            row["located"] = sp.located
            row["residual"] = sp.residual
            row["verification"] = sp.verification or "not verified"
            row["label"] = sp.label
            text = " ".join(f"{complex(e).real!r}{complex(e).imag:+.17g}j" for e in sp.eigenvalues)
            row["eigenvalues"] = text if branch.kind is not BranchKind.CYCLES else ""
            row["multipliers"] = text if branch.kind is BranchKind.CYCLES else ""
            row["found_by"] = sp.details.get("found_by", "engine")
            row["engine_value"] = float(sp.details.get("engine_value", np.nan))
            row["reason"] = sp.details.get("reason", "")
            for key, value in sp.details.items():
                row.setdefault(key, value)
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=_SPECIAL_COLUMNS)
    return pd.DataFrame(rows)


_SPECIAL_COLUMNS = ["step", "branch", "point", "kind", "name", "mode", "operator", "Lambda", "Lambda_imag", "solution",
                    "period", "frequency_hz", "located", "residual", "verification", "label",
                    "eigenvalues", "multipliers", "found_by", "engine_value", "reason"]
