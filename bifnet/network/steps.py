"""Run-file steps for network simulations and their analyses.

Each step has the signature ``step(context, spec) -> dict`` (see
:mod:`bifnet.steps`), writes its files into ``context.out_dir`` and returns a
JSON-serialisable summary.

* ``simulate_step``  -> ``simulation.nc``, ``simulation.png``
* ``validate_step``  -> ``validation.json``, ``validation.png``
* ``lyapunov_step``  -> ``lyapunov.csv`` (``index, exponent_per_ms``), ``lyapunov.png``
* ``spectrum_step``  -> ``spectrum.csv``, ``pac.csv``, ``spectrum.png``, ``pac.png``
* ``sweep_step``     -> ``sweep_<step>.nc`` (+ checkpoint), ``sweep_<step>.png``
"""

from __future__ import annotations

import numpy as np

from bifnet.errors import RunFileError, SimulationError
from bifnet.steps import StepContext, check_keys

_SIM_KEYS = {"t_max", "dt", "method", "stride", "rtol", "atol", "perturbation", "amplitude", "mode", "seed",
             "noise", "parameters", "initial", "animate", "variable"}


def _variable(context: StepContext, spec: dict, step: str) -> int:
    """Index of the step's ``variable`` (default: the model's ``[observe] variable``)."""
    from bifnet.errors import ModelError

    variable = spec.get("variable")
    if variable is not None and not isinstance(variable, str):
        raise RunFileError(f"step {step!r}: variable must be a variable name, got {variable!r}")
    try:
        return context.model.observed_index(variable)
    except ModelError as error:
        raise RunFileError(f"step {step!r}: {error}") from None


def _number(spec, key, default, step, *, positive=True, integer=False):
    value = spec.get(key, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok or (positive and not value > 0) or (not positive and value < 0):
        kind = "integer" if integer else "number"
        raise RunFileError(f"step {step!r}: {key} must be a {'positive ' if positive else 'non-negative '}{kind},"
                           f" got {value!r}")
    return int(value) if integer else float(value)


def _name(spec, default):
    return str(spec.get("name", default))


def _network(context: StepContext, spec: dict, step: str, *, homogeneous: bool = False):
    from bifnet.network.core import build_network, homogeneous_network

    context.model.require_coupling(f"step {step!r}")
    overrides = spec.get("parameters", {})
    if not isinstance(overrides, dict):
        raise RunFileError(f"step {step!r}: parameters must be a table of name = value")
    params = {**context.parameters, **overrides}
    if homogeneous:
        return homogeneous_network(context.model, params)
    return build_network(context.model, context.require_connectome(step), params)


def _seed(context, spec):
    return spec.get("seed", context.rng_seed)


def _initial_node_state(context, network, spec, step):
    from bifnet.network.core import find_homogeneous_equilibrium

    initial = spec.get("initial", "equilibrium")
    if initial == "equilibrium":
        try:
            return find_homogeneous_equilibrium(context.model, dict(network.parameters))
        except SimulationError as error:
            context.log.warning("step %s: %s; starting from the model's initial state", step, error)
            return context.model.default_state()
    if initial == "default":
        return context.model.default_state()
    raise RunFileError(f"step {step!r}: initial must be 'equilibrium' or 'default', got {initial!r}")


def _run_simulation(context, spec, step):
    from bifnet.network.core import homogeneous_initial_state
    from bifnet.network.integrate import simulate

    net = _network(context, spec, step)
    x = _initial_node_state(context, net, spec, step)
    rng = np.random.default_rng(_seed(context, spec))
    y0 = homogeneous_initial_state(net, x, spec.get("perturbation", "random"),
                                   _number(spec, "amplitude", 1e-3, step, positive=False),
                                   mode=int(spec.get("mode", 2)), rng=rng)
    dt = _number(spec, "dt", 0.01, step)
    result = simulate(net, (0.0, _number(spec, "t_max", 1000.0, step)), y0, spec.get("method", "rk4"), dt=dt,
                      stride=_number(spec, "stride", 10, step, integer=True),
                      rtol=_number(spec, "rtol", 1e-6, step), atol=_number(spec, "atol", 1e-9, step),
                      noise=spec.get("noise", 0.0), rng=rng)
    return net, result


def simulate_step(context: StepContext, spec: dict) -> dict:
    """Simulate the network from a perturbed homogeneous state.

    Keys: ``variable`` (the one plotted; default: the model's ``[observe] variable``),
    ``t_max`` (ms, 1000), ``dt`` (0.01), ``method`` ("rk4"),
    ``stride`` (10), ``rtol``, ``atol``, ``initial`` ("equilibrium" or
    "default"), ``perturbation`` ("random", "mode", "none"), ``amplitude``
    (1e-3), ``mode`` (2), ``noise`` (0), ``seed``, ``parameters`` (overrides),
    ``animate`` (false; an MP4 on the brain when ffmpeg is installed).
    Writes ``simulation.nc``, ``simulation.png`` and, when the connectome has
    region centres, ``simulation_brain.png`` (the last snapshot on three views).
    A failed integration writes only ``simulation_partial.nc`` (the states up
    to the failure) and fails the step.
    """
    from bifnet.io import save_figure
    from bifnet.network.output import write_simulation
    from bifnet.network.plots import plot_spatiotemporal

    step = _name(spec, "simulate")
    check_keys(spec, _SIM_KEYS, step)
    k = _variable(context, spec, step)
    net, result = _run_simulation(context, spec, step)
    out = context.out_dir
    if not result.success:  # keep the states up to the failure, under a name that does not look complete
        write_simulation(out / "simulation_partial.nc", result, net)
        raise SimulationError(f"step {step!r}: simulation failed at t = {float(result.t[-1]):.6g} ms: "
                              f"{result.message} (states up to the failure in simulation_partial.nc)")
    write_simulation(out / "simulation.nc", result, net)
    ax = plot_spatiotemporal(result, net, variable=context.model.variable_names[k])
    save_figure(out / "simulation.png", ax.figure)
    files = ["simulation.nc", "simulation.png"]
    centres = getattr(net.connectome, "centres", None)
    if centres is not None and result.y.shape[0] > 1:
        from bifnet.network.plots import animate_simulation, plot_brain_views

        last = np.asarray(result.y)[-1, :, k]
        fig = plot_brain_views(last - last.mean(), centres,
                               title=f"{context.model.variable_names[k]} - network mean at t = {result.t[-1]:.1f} ms")
        save_figure(out / "simulation_brain.png", fig)
        files.append("simulation_brain.png")
        if spec.get("animate", False) and animate_simulation(result, net, out / "simulation.mp4",
                                                             variable=context.model.variable_names[k]):
            files.append("simulation.mp4")
    context.results[step] = {"result": result, "network": net}
    return {"success": result.success, "message": result.message, "n_times": int(result.t.size),
            "nfev": result.nfev, "files": files}


def validate_step(context: StepContext, spec: dict) -> dict:
    """Check a mode's predicted growth rate against a simulation.

    Keys: ``mode`` (default: most unstable), ``amplitude`` (1e-7), ``t_max``,
    ``dt`` (0.01), ``linear_limit`` (1e-4), ``variable`` (whose regional
    pattern is compared with the mode; default: the model's ``[observe]
    variable``), ``parameters``.
    Writes ``validation.json``, ``validation.png`` and, when the connectome has
    region centres, ``validation_mode.png`` (the mode's eigenvector on the brain).
    """
    from bifnet.analysis.validation import plot_validation, validate_mode
    from bifnet.io import save_figure, write_json
    from bifnet.network.core import find_homogeneous_equilibrium

    step = _name(spec, "validate")
    check_keys(spec, {"mode", "amplitude", "t_max", "dt", "linear_limit", "parameters", "variable"}, step)
    k = _variable(context, spec, step)
    net = _network(context, spec, step)
    x = find_homogeneous_equilibrium(context.model, dict(net.parameters))
    kwargs = dict(amplitude=_number(spec, "amplitude", 1e-7, step), dt=_number(spec, "dt", 0.01, step),
                  linear_limit=_number(spec, "linear_limit", 1e-4, step), return_traces=True,
                  variable=context.model.variable_names[k])
    if "mode" in spec:
        kwargs["mode"] = int(_number(spec, "mode", 1, step, integer=True))
    if "t_max" in spec:
        kwargs["t_max"] = _number(spec, "t_max", 0, step)
    result = validate_mode(net, x, **kwargs)
    summary = {k: v for k, v in result.items() if k not in ("t", "log_amplitude", "intercept")}
    summary["equilibrium"] = dict(zip(context.model.variable_names, x.tolist()))
    write_json(context.out_dir / "validation.json", summary)
    ax = plot_validation(result)
    save_figure(context.out_dir / "validation.png", ax.figure)
    files = ["validation.json", "validation.png"]
    centres = getattr(net.connectome, "centres", None)
    if centres is not None:
        from bifnet.network.plots import plot_brain_views

        vector = net.spectrum.eigenvectors[:, summary["mode"] - 1]
        fig = plot_brain_views(vector, centres, title=f"mode {summary['mode']} (Lambda = "
                               f"{complex(net.spectrum.eigenvalues[summary['mode'] - 1]).real:.4g}): eigenvector")
        save_figure(context.out_dir / "validation_mode.png", fig)
        files.append("validation_mode.png")
    return {"mode": summary["mode"], "predicted_growth_rate": summary["predicted_growth_rate"],
            "measured_growth_rate": summary["measured_growth_rate"], "files": files}


def lyapunov_step(context: StepContext, spec: dict) -> dict:
    """Lyapunov spectrum of the network (or of the homogeneous node).

    Keys: ``k`` (default: all, capped at 20 for networks unless given),
    ``t_max`` (ms, 2000), ``transient`` (300), ``dt`` (0.01; with dopri5 the first trial step),
    ``renormalise_every`` (1.0), ``precision`` (``"double"``, or ``"single"``
    for float32 tangent vectors of a network), ``method`` (``"rk4"`` or
    ``"dopri5"``: adaptive steps), ``rtol`` (1e-6), ``atol`` (1e-9) and
    ``tangent_error`` (false: the state's error norm only) of dopri5, ``homogeneous`` (false),
    ``initial``, ``amplitude``, ``seed``, ``parameters``, ``variable`` (checked and recorded
    in the summary like the other network steps'; the exponents do not depend on it).
    Writes ``lyapunov.csv`` and ``lyapunov.png`` (running estimates).
    """
    import pandas as pd

    from bifnet.analysis.lyapunov import kaplan_yorke_dimension, lyapunov_convergence, plot_convergence
    from bifnet.io import save_figure, write_csv
    from bifnet.network.core import homogeneous_initial_state

    step = _name(spec, "lyapunov")
    check_keys(spec, {"k", "t_max", "transient", "dt", "renormalise_every", "precision", "homogeneous", "initial",
                      "amplitude", "seed", "parameters", "variable"} | set(_ADAPTIVE_DEFAULTS), step)
    observed = context.model.variable_names[_variable(context, spec, step)]
    precision = _precision(spec, step)
    integrator = _integrator(spec, step)
    homogeneous = bool(spec.get("homogeneous", False))
    net = _network(context, spec, step, homogeneous=homogeneous)
    k = int(_number(spec, "k", min(net.dimension, 20), step, integer=True))
    rng = np.random.default_rng(_seed(context, spec))
    x = _initial_node_state(context, net, spec, step)
    y0 = homogeneous_initial_state(net, x, "random", _number(spec, "amplitude", 1e-3, step, positive=False),
                                   rng=rng)
    t, running = lyapunov_convergence(net, k, t_max=_number(spec, "t_max", 2000.0, step),
                                      transient=_number(spec, "transient", 300.0, step, positive=False),
                                      dt=_number(spec, "dt", 0.01, step),
                                      renormalise_every=_number(spec, "renormalise_every", 1.0, step),
                                      y0=y0, rng=rng, precision=precision, **integrator)
    exponents = running[-1]
    write_csv(context.out_dir / "lyapunov.csv",
              pd.DataFrame({"index": np.arange(1, k + 1), "exponent_per_ms": exponents}))
    ax = plot_convergence(t, running)
    save_figure(context.out_dir / "lyapunov.png", ax.figure)
    return {"largest_exponent_per_ms": float(exponents[0]), "k": k, "variable": observed,
            "kaplan_yorke_dimension": kaplan_yorke_dimension(exponents), "precision": precision,
            **integrator, "files": ["lyapunov.csv", "lyapunov.png"]}


#: integrator keys of the Lyapunov steps, with their defaults
_ADAPTIVE_DEFAULTS = {"method": "rk4", "rtol": 1e-6, "atol": 1e-9, "tangent_error": False}


def _integrator(spec: dict, step: str) -> dict:
    """``method`` and, for dopri5, ``rtol``, ``atol`` and ``tangent_error`` of a Lyapunov step."""
    from bifnet.analysis.lyapunov import METHODS

    method = spec.get("method", "rk4")
    if method not in METHODS:
        raise RunFileError(f"step {step!r}: method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method == "rk4":
        return {"method": method}
    tangent_error = spec.get("tangent_error", False)
    if not isinstance(tangent_error, bool):
        raise RunFileError(f"step {step!r}: tangent_error must be true or false, got {tangent_error!r}")
    return {"method": method, "rtol": _number(spec, "rtol", 1e-6, step), "atol": _number(spec, "atol", 1e-9, step),
            "tangent_error": tangent_error}


def _precision(spec: dict, step: str) -> str:
    from bifnet.analysis.lyapunov import PRECISIONS

    precision = spec.get("precision", "double")
    if precision not in PRECISIONS:
        raise RunFileError(f"step {step!r}: precision must be one of {', '.join(map(repr, PRECISIONS))}, "
                           f"got {precision!r}")
    return precision


def spectrum_step(context: StepContext, spec: dict) -> dict:
    """Power spectra and phase–amplitude coupling of a network simulation.

    Simulation keys as in :func:`simulate_step` plus ``transient`` (ms, 200),
    ``variable`` (default: the model's ``[observe] variable``), ``phase_band`` ([4, 8] Hz), ``amplitude_band``
    ([30, 80] Hz), ``n_surrogates`` (200).
    Writes ``spectrum.csv``, ``pac.csv`` (one row per region and the network
    mean), ``spectrum.png`` and ``pac.png``.
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from bifnet.analysis.spectral import (modulation_index, network_spectra, plot_phase_amplitude,
                                          plot_power_spectrum, spectrum_axis_limit, spectrum_peaks)
    from bifnet.io import save_figure, write_csv

    step = _name(spec, "spectrum")
    keys = _SIM_KEYS | {"transient", "variable", "phase_band", "amplitude_band", "n_surrogates"}
    check_keys(spec, keys, step)
    sim_spec = {k: v for k, v in spec.items() if k in _SIM_KEYS or k == "name"}
    sim_spec.setdefault("t_max", 2200.0)
    net, result = _run_simulation(context, sim_spec, step)
    if not result.success:
        raise SimulationError(f"step {step!r}: simulation failed: {result.message}")
    k = _variable(context, spec, step)
    variable = context.model.variable_names[k]
    transient = _number(spec, "transient", 200.0, step, positive=False)
    frame = network_spectra(result, net, variable=variable, transient=transient)
    write_csv(context.out_dir / "spectrum.csv", frame)
    peaks = spectrum_peaks(frame)
    f_max = spectrum_axis_limit([peaks["network_mean_hz"], peaks["region_mean_hz"], peaks["regional_median_hz"]])
    ax = plot_power_spectrum(frame["frequency_hz"], frame["mean_power"], label="network mean", f_max=f_max,
                             peak=peaks["network_mean_hz"], colour="tab:blue")
    plot_power_spectrum(frame["frequency_hz"], frame["region_mean_power"], ax=ax, label="mean of regions",
                        f_max=f_max, peak=peaks["region_mean_hz"], colour="tab:orange")
    ax.set_title(f"{context.model.name}: {variable}; median of regional peaks "
                 f"{peaks['regional_median_hz']:.1f} Hz", fontsize=9)
    save_figure(context.out_dir / "spectrum.png", ax.figure)
    keep = result.t >= result.t[0] + transient
    x = result.y[keep, :, k]
    dt = float(result.t[1] - result.t[0])
    rng = np.random.default_rng(_seed(context, spec))
    bands = dict(phase_band=tuple(spec.get("phase_band", (4.0, 8.0))),
                 amplitude_band=tuple(spec.get("amplitude_band", (30.0, 80.0))),
                 n_surrogates=int(spec.get("n_surrogates", 200)), rng=rng)
    rows = []
    signals = [("mean", x.mean(axis=1))] + [(str(r), x[:, r]) for r in range(x.shape[1])]
    pac_mean = None
    for label, sig in signals:
        try:
            pac = modulation_index(sig, dt, **bands)
        except SimulationError as error:
            raise RunFileError(f"step {step!r}: {error}") from None
        if label == "mean":
            pac_mean = pac
        peak = peaks["network_mean_hz"] if label == "mean" else float(peaks["regions_hz"][int(label)])
        rows.append({"region": label, "dominant_frequency_hz": peak,
                     "modulation_index": pac["modulation_index"], "p_value": pac["p_value"],
                     "z_score": pac["z_score"], "preferred_phase": pac["preferred_phase"]})
    write_csv(context.out_dir / "pac.csv", pd.DataFrame(rows))
    ax = plot_phase_amplitude(pac_mean)
    (p_lo, p_hi), (a_lo, a_hi) = bands["phase_band"], bands["amplitude_band"]
    ax.set_title(f"network mean {variable}: phase {p_lo:g}–{p_hi:g} Hz, amplitude {a_lo:g}–{a_hi:g} Hz\n"
                 f"MI = {pac_mean['modulation_index']:.3g}, p = {pac_mean['p_value']:.3g} "
                 f"({bands['n_surrogates']} surrogates)", fontsize=9)
    save_figure(context.out_dir / "pac.png", ax.figure)
    plt.close("all")
    return {"dominant_frequency_hz": peaks["network_mean_hz"],
            "dominant_frequency_region_mean_hz": peaks["region_mean_hz"],
            "dominant_frequency_regional_median_hz": peaks["regional_median_hz"],
            "spectrum_axis_max_hz": f_max,
            "modulation_index_mean": pac_mean["modulation_index"], "p_value_mean": pac_mean["p_value"],
            "files": ["spectrum.csv", "pac.csv", "spectrum.png", "pac.png"]}


# ---------------------------------------------------------------------------
# sweeps

_SWEEP_ANALYSES = ("lyapunov", "dispersion")


def sweep_point(*, model_source: str, base: dict, analysis: str, options: dict, lambdas, **point) -> dict:
    """One point of a sweep (module level, so process pools and Dask can pickle it).

    ``analysis = "lyapunov"``: the ``k`` largest Lyapunov exponents (1/ms) of the
    homogeneous system (or of the network when ``options["weights"]`` is given).
    ``analysis = "dispersion"``: the homogeneous attractor's growth rate for
    mode 1 and the largest over the other modes, and how many grow.
    """
    from bifnet.model import load_model

    model = load_model(model_source)
    params = {**base, **point}
    if analysis == "lyapunov":
        from bifnet.analysis.lyapunov import lyapunov_spectrum
        from bifnet.network.core import build_network, homogeneous_network

        weights = options.get("weights")
        net = homogeneous_network(model, params) if weights is None else build_network(model, np.asarray(weights), params)
        k = int(options.get("k", model.n_variables if weights is None else 4))
        integrator = {key: options[key] for key in _ADAPTIVE_DEFAULTS if key in options}
        rng = np.random.default_rng(options.get("seed"))
        y0 = None
        if weights is not None and options.get("amplitude", 0.0) > 0:
            from bifnet.network.core import homogeneous_initial_state

            # off the synchronous manifold (which a homogeneous start never leaves): the network's attractor
            y0 = homogeneous_initial_state(net, model.default_state(), "random", options["amplitude"], rng=rng)
        exps = lyapunov_spectrum(net, k, t_max=options["t_max"], transient=options["transient"],
                                 dt=options["dt"], rng=rng, y0=y0,
                                 precision=options.get("precision", "double"), threads=options.get("threads", 1),
                                 **integrator)
        out = {f"lyapunov_{i + 1}": float(e) for i, e in enumerate(exps)}
        out["lyapunov_sum"] = float(np.sum(exps))
        return out
    from bifnet.transverse.dispersion import dispersion_at

    lam = np.asarray(lambdas)
    rel = dispersion_at(model, params, lam)
    others = rel.growth_rate[1:]
    return {"uniform_growth_rate": float(rel.growth_rate[0]),
            "max_transverse_growth_rate": float(np.max(others)) if others.size else float("nan"),
            "most_unstable_mode": int(np.argmax(others) + 2) if others.size else -1,
            "n_unstable_modes": int(np.sum(others > 0)),
            "homogeneous_cycle": int(rel.solution == "LC")}


#: integer outputs of the sweep analyses, with the value that marks a failed point
SWEEP_COUNTS = {"n_unstable_modes": -1, "most_unstable_mode": -1, "homogeneous_cycle": -1}


def annotate_sweep(ds, model, analysis: str, operator=None):
    """``units`` (and ``description``) on every variable and coordinate of a sweep, counts as integers.

    Counts (:data:`SWEEP_COUNTS`) are stored as ``int64`` with ``-1`` where the
    point failed (attribute ``failed_point_value``); rates and exponents are
    ``float64`` in 1/ms; the grid coordinates carry the model's parameter units.
    """
    ds = ds.copy()
    for name in list(ds.data_vars):
        var = ds[name]
        if name in SWEEP_COUNTS:
            missing = SWEEP_COUNTS[name]
            values = np.where(np.isfinite(var.values), var.values, missing).astype(np.int64)
            ds[name] = (var.dims, values)
            ds[name].attrs.update(units="1", failed_point_value=missing)  # not missing_value: readers would mask it to float
        elif name.startswith("lyapunov_") or name.endswith("growth_rate"):
            ds[name].attrs["units"] = "1/ms"
        else:
            ds[name].attrs.setdefault("units", "1")
    descriptions = {
        "uniform_growth_rate": "growth rate of mode 1 (the uniform mode)",
        "max_transverse_growth_rate": "largest growth rate of the non-uniform modes",
        "most_unstable_mode": "mode number (1-based) of that growth rate",
        "n_unstable_modes": "non-uniform modes with a positive growth rate",
        "homogeneous_cycle": "1 where the homogeneous attractor is a cycle, 0 an equilibrium",
        "lyapunov_sum": "sum of the computed Lyapunov exponents",
    }
    for name, text in descriptions.items():
        if name in ds:
            ds[name].attrs["description"] = text
    for name in ds.coords:
        parameter = model.parameters.get(name)
        ds[name].attrs["units"] = (parameter.unit if parameter is not None else "") or "1"
    ds.attrs.update(analysis=analysis, model=model.name, time_unit="ms")
    if operator is not None and hasattr(operator, "symbol"):
        ds.attrs["operator"] = operator.symbol
    return ds


def _sweep_grid(spec: dict, model, step: str) -> dict:
    """The grid of a sweep step: ``{name = [values...]}`` or ``{name = { start, stop, num | step }}``
    (checked by :mod:`bifnet.runfile_schema` before the run)."""
    from bifnet.runfile_schema import axis_values

    grid = spec.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise RunFileError(f"step {step!r}: grid must be a table, e.g. grid = {{ Iext_e = {{ start = 0.0, stop = 16.0,"
                           f" num = 33 }} }}")
    model.check_parameter_names(grid)
    out = {}
    for name, value in grid.items():
        try:
            values = axis_values(value)
        except Exception:
            raise RunFileError(f"step {step!r}: grid.{name} must be a list of values or {{ start, stop, num }}"
                               " / { start, stop, step }") from None
        if values.size == 0:
            raise RunFileError(f"step {step!r}: grid.{name} is empty")
        out[name] = values
    return out


def _sweep_setup(context: StepContext, spec: dict, folder):
    """What a sweep step computes: ``(step, grid, function, scheduler, out_path, key, batch_size)``
    (``batch_size`` None: ``function`` takes one point; else chunks of up to that many points)."""
    import functools

    step = _name(spec, "sweep")
    check_keys(spec, {"grid", "analysis", "network", "k", "t_max", "transient", "dt", "precision", "seed",
                      "workers", "scheduler", "parameters", "progress", "vectorise", "batch_size", "threads", "amplitude"}
               | set(_ADAPTIVE_DEFAULTS), step)
    analysis = spec.get("analysis", "lyapunov")
    if analysis not in _SWEEP_ANALYSES:
        raise RunFileError(f"step {step!r}: analysis must be one of {', '.join(_SWEEP_ANALYSES)}, got {analysis!r}")
    grid = _sweep_grid(spec, context.model, step)
    base = {**context.parameters, **{k: float(v) for k, v in spec.get("parameters", {}).items()}}
    options = {"t_max": _number(spec, "t_max", 2000.0, step), "transient": _number(spec, "transient", 500.0, step,
                                                                                   positive=False),
               "dt": _number(spec, "dt", 0.01, step), "seed": _seed(context, spec),
               "precision": _precision(spec, step)}
    if "k" in spec:
        options["k"] = _number(spec, "k", 1, step, integer=True)
    # only what differs from RK4 on one thread enters the options (and the checkpoint key): sweeps
    # written before these keys existed resume unchanged
    integrator = _integrator(spec, step)
    if integrator["method"] != "rk4":
        options.update(integrator)
    if spec.get("amplitude", 0.0):
        options["amplitude"] = _number(spec, "amplitude", 0.0, step, positive=False)
    if "threads" in spec:  # does not change the numbers (kept out of the checkpoint key)
        options["threads"] = _number(spec, "threads", 1, step, integer=True)
    lambdas = None
    if analysis == "dispersion" or spec.get("network", False):
        connectome = context.require_connectome(step)
        lambdas = connectome.spectrum().eigenvalues
        if spec.get("network", False):
            options["weights"] = np.asarray(connectome.weights)
    function = functools.partial(sweep_point, model_source=context.model.source, base=base, analysis=analysis,
                                 options=options, lambdas=lambdas)
    batch_size = _sweep_batch(spec, step, analysis, options, grid)
    if batch_size is not None:  # homogeneous Lyapunov: chunks of points through one vectorised kernel
        from bifnet.analysis.lyapunov_grid import sweep_chunk

        function = functools.partial(sweep_chunk, model_source=context.model.source, base=base, options=options)
    run = context.results.get("__run__", {})
    scheduler = spec.get("scheduler", run.get("dask", {}).get("scheduler"))
    out_path = folder / f"sweep_{step}.nc"
    fingerprint = context.fingerprint or {}
    key = None
    if fingerprint:
        key = {"model": fingerprint.get("model"),
               "parameters": _sweep_digest(base),
               "connectome": fingerprint.get("connectome") if lambdas is not None else None,
               "analysis": _sweep_digest({"analysis": analysis, "options": {k: v for k, v in options.items()
                                                                            if k not in ("weights", "threads")}}),
               "versions": _sweep_digest(fingerprint.get("versions"))}
    return step, grid, function, scheduler, out_path, key, batch_size


def _sweep_batch(spec, step, analysis, options, grid):
    """Points per chunk of the vectorised homogeneous Lyapunov kernel, or None for one task per point.

    ``vectorise`` (default: true for homogeneous Lyapunov sweeps in double
    precision); ``batch_size`` (default: up to 64, at least two chunks per worker).
    """
    import os

    vectorise = spec.get("vectorise")
    if vectorise is not None and not isinstance(vectorise, bool):
        raise RunFileError(f"step {step!r}: vectorise must be true or false, got {vectorise!r}")
    eligible = analysis == "lyapunov" and "weights" not in options
    if vectorise and not eligible:
        raise RunFileError(f"step {step!r}: vectorise = true needs analysis = \"lyapunov\" on the homogeneous system"
                           " (network = false)")
    if vectorise and options["precision"] != "double":
        raise RunFileError(f"step {step!r}: vectorise = true computes in double precision; remove precision ="
                           f" {options['precision']!r} or set vectorise = false")
    if vectorise is None:
        vectorise = eligible and options["precision"] == "double"
    if not vectorise:
        if "batch_size" in spec:
            raise RunFileError(f"step {step!r}: batch_size applies to the vectorised homogeneous Lyapunov sweep only")
        return None
    if "batch_size" in spec:
        return int(_number(spec, "batch_size", 64, step, integer=True))
    points = int(np.prod([len(v) for v in grid.values()]))
    workers = spec.get("workers") or os.cpu_count() or 1
    return max(1, min(64, -(-points // (2 * int(workers)))))


def sweep_preflight(context: StepContext, spec: dict, folder) -> None:
    """Before a resumed run starts: refuse a sweep checkpoint in ``folder`` from another grid or content."""
    from bifnet.sweep import check_checkpoint

    step, grid, function, scheduler, out_path, key, _ = _sweep_setup(context, spec, folder)
    check_checkpoint(out_path, grid, key=key)


def sweep_step(context: StepContext, spec: dict) -> dict:
    """``kind = "sweep"``: one analysis on every point of a parameter grid.

    Keys: ``grid`` (``{name = [values]}`` or ``{name = {start, stop, num}}`` /
    ``{start, stop, step}``), ``analysis``
    (``"lyapunov"`` or ``"dispersion"``), ``network`` (Lyapunov exponents of
    the full network instead of the homogeneous system), ``k``, ``t_max``,
    ``transient``, ``dt``, ``precision`` (of the Lyapunov tangent vectors),
    ``method`` (``"rk4"`` or ``"dopri5"``), ``rtol``, ``atol``, ``tangent_error``
    (as in :func:`lyapunov_step`), ``threads`` (threads per point sharing
    the tangent vectors, 1: the points themselves run in parallel),
    ``amplitude`` (with ``network``: random perturbation of the homogeneous
    initial state, 0; a homogeneous start stays on the synchronous manifold),
    ``seed``, ``workers``, ``scheduler`` (a Dask
    address; also ``[dask] scheduler`` in the run file or ``--scheduler``),
    ``parameters``. Output ``sweep_<step>.nc`` (written as points finish, via a
    checkpoint: an interrupted sweep resumes with ``--resume``) and a figure.
    """
    from bifnet.sweep import run_sweep

    step, grid, function, scheduler, out_path, key, batch_size = _sweep_setup(context, spec, context.out_dir)
    ds = run_sweep(function, grid, out_path=out_path, scheduler=scheduler, workers=spec.get("workers"),
                   progress=bool(spec.get("progress", True)), key=key, retry_failed=context.retry_failed,
                   batch_size=batch_size)
    points = int(np.prod([len(v) for v in grid.values()]))
    failed = int(ds.attrs.get("n_failed", 0))
    if failed == points:
        raise SimulationError(f"step {step!r}: every one of the {points} sweep points failed"
                              f" (first: {ds.attrs.get('first_error', 'see the log')});"
                              " rerun with --resume --retry-failed after fixing the cause")
    ds = annotate_sweep(ds, context.model, spec.get("analysis", "lyapunov"), context.connectome)
    if spec.get("analysis", "lyapunov") == "lyapunov":
        from bifnet.analysis.lyapunov_grid import lyapunov_map

        ds = lyapunov_map(ds)
        ds.attrs["system"] = ("network" if spec.get("network", False) else "homogeneous system")
        ds.attrs["method"] = ("vectorised homogeneous kernel, chunks of %d points" % batch_size if batch_size
                              else "lyapunov_spectrum, one task per point")
    from bifnet import io

    io.write_netcdf(out_path, ds)
    _plot_sweep(context, step, ds, list(grid))
    return {"status": "partial" if failed else "ok", "points": points, "failed": failed,
            "file": out_path.name, "variables": list(ds.data_vars), "units": "1/ms for rates and exponents",
            "scheduler": str(scheduler or "local processes"),
            **({"batch_size": batch_size} if batch_size else {})}


def _sweep_digest(value) -> str:
    from bifnet.run_folder import digest

    return digest(value)


def _plot_sweep(context, step, ds, names):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bifnet import io

    if "lyapunov" in ds and len(names) == 2:
        from bifnet.analysis.lyapunov_grid import plot_lyapunov_map

        fig = plot_lyapunov_map(ds, names, title=f"{context.model.name}: sweep {step}, Lyapunov exponents of the"
                                f" {ds.attrs.get('system', 'homogeneous system')}")
        io.save_figure(context.out_dir / f"sweep_{step}.png", fig)
        plt.close(fig)
        return
    one_d_lyapunov = "lyapunov" in ds and len(names) == 1
    var = "lyapunov" if one_d_lyapunov else next(
        (name for name in ("max_lyapunov", "max_transverse_growth_rate") if name in ds), next(iter(ds.data_vars)))
    data = ds[var]
    fig, ax = plt.subplots(figsize=(7, 5))
    if len(names) == 2:
        mesh = ax.pcolormesh(ds[names[0]], ds[names[1]], data.transpose(names[1], names[0]), shading="nearest",
                             cmap="RdBu_r", vmin=-float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else None,
                             vmax=float(np.nanmax(np.abs(data))) if np.isfinite(data).any() else None)
        fig.colorbar(mesh, ax=ax, label=f"{var} (1/ms)")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    else:
        lines = ax.plot(ds[names[0]], data.values.reshape(len(ds[names[0]]), -1), marker="." if one_d_lyapunov
                        else None, lw=1)
        ax.set_xlabel(names[0])
        ax.set_ylabel(f"{var} (1/ms)")
        if one_d_lyapunov:  # every exponent against the one grid parameter
            ax.axhline(0.0, color="k", lw=0.5)
            ax.legend(lines, [f"λ{int(i)}" for i in ds["exponent"].values], fontsize="small", ncol=2)
            ax.set_ylabel("Lyapunov exponents (1/ms)")
    ax.set_title(f"{context.model.name}: sweep {step}")
    io.save_figure(context.out_dir / f"sweep_{step}.png", fig)
