"""Node models: parse ``models/*.toml`` into symbolic :class:`NodeModel` objects.

A model file declares the node's variables (with initial guesses), its
parameters (defaults and units), one right-hand side per variable as a
string expression, and the coupling: which variable a node sends to the
network, the parameter that scales the network input, and the symbol the
equations use for that input (``C_i = eps * sum_j W_ij c(x_j)``).

See ``docs/model-spec.md`` for the format.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import sympy

from bifnet.errors import ModelError

def data_folder(name: str) -> Path:
    """A folder of shipped files: ``models`` or ``continuation_runs``.

    In an installed package they are ``bifnet/_models`` and
    ``bifnet/_continuation_runs`` (package data, see ``setup.cfg``); in a
    checkout, the top-level folders of the same names.
    """
    here = Path(__file__).resolve().parent
    installed = here / f"_{name}"
    return installed if installed.is_dir() else here.parent / name


MODELS_DIR = data_folder("models")

_ALLOWED_FUNCTIONS = {
    name: getattr(sympy, name)
    for name in (
        "exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sinh", "cosh",
        "atan", "asin", "acos", "Abs", "erf",
    )
}
_ALLOWED_FUNCTIONS["abs"] = sympy.Abs
_ALLOWED_CONSTANTS = {"pi": sympy.pi}
_RESERVED_NAMES = {"t", "Lambda"}


@dataclasses.dataclass(frozen=True)
class Parameter:
    """A model parameter: default value, unit and description."""

    name: str
    value: float
    unit: str = ""
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Variable:
    """A state variable of the node: default initial guess, unit and description."""

    name: str
    initial: float
    unit: str = ""
    description: str = ""


SCHEMES = ("additive", "diffusive")
LAPLACIANS = ("combinatorial", "random_walk")


@dataclasses.dataclass(frozen=True)
class Channel:
    """One coupled variable: ``variable`` is sent, ``input`` receives, scaled by ``strength``.

    ``strength`` is the expression text from the model file (a parameter name
    or an expression in the parameters, e.g. ``"eps*Du"``);
    :attr:`strength_expr` is it parsed.
    """

    variable: str
    strength: str
    input: str
    strength_expr: sympy.Expr = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Coupling:
    """How a node talks to the network: a scheme and one or more channels.

    For each channel ``k`` (variable ``h_k``, input ``C_k``, strength ``s_k``):

    * ``scheme = "additive"``: ``C_k,i = s_k sum_j P_ij h_k(x_j)`` with the
      row-normalised ``P = D^-1 W``; modes are the eigenvalues of ``P``.
    * ``scheme = "diffusive"``: ``C_k,i = s_k sum_j W_ij (h_k(x_j) - h_k(x_i))
      = -s_k (L h_k)_i`` with the graph Laplacian ``L = D - W`` of the weights
      as given (``laplacian = "random_walk"``: ``L = I - D^-1 W``); modes are the
      eigenvalues of ``L``.

    The properties ``variable``, ``strength`` and ``input`` are those of the
    first channel (the single-channel form of the model file).
    """

    scheme: str
    channels: tuple[Channel, ...]
    laplacian: str = "combinatorial"

    @property
    def variable(self) -> str:
        return self.channels[0].variable

    @property
    def strength(self) -> str:
        return self.channels[0].strength

    @property
    def input(self) -> str:
        return self.channels[0].input

    @property
    def mode_sign(self) -> int:
        """``+1`` (additive) or ``-1`` (diffusive): the coupling matrix is ``sign * M``
        with ``M`` the operator whose eigenvalues index the modes."""
        return 1 if self.scheme == "additive" else -1

    @property
    def uniform_eigenvalue(self) -> float:
        """Eigenvalue of the uniform mode: 1 (``P``) or 0 (``L``)."""
        return 1.0 if self.scheme == "additive" else 0.0

    @property
    def operator(self) -> str:
        """Short name of the mode operator: ``"P"`` (row-normalised W) or ``"L"`` (Laplacian)."""
        if self.scheme == "additive":
            return "P"
        return "L" if self.laplacian == "combinatorial" else "L_rw"


@dataclasses.dataclass(frozen=True, eq=False)
class NodeModel:
    """A node model parsed from a model file.

    Attributes
    ----------
    name : str
        Model name (file stem unless the file says otherwise).
    variables : tuple of Variable
        State variables, in the order of the equations.
    parameters : mapping of str to Parameter
        Parameters with defaults, in the order of the file.
    equations : tuple of sympy.Expr
        ``dx/dt`` for each variable, in terms of the variable and parameter
        symbols and the coupling input symbol.
    coupling : Coupling or None
        The coupling scheme and its channels (which variables are coupled,
        by which strengths, through which input symbols); ``None`` for a
        single-node model without ``[coupling]``.
    observe : str
        The variable network steps record and analyse by default
        (``[observe] variable``; else the first coupled variable; else the
        first variable).
    source : str
        Path of the model file.
    """

    name: str
    variables: tuple[Variable, ...]
    parameters: Mapping[str, Parameter]
    equations: tuple[sympy.Expr, ...]
    coupling: Coupling | None
    source: str = ""
    description: str = ""
    reference: str = ""
    time_unit: str = "ms"
    observe: str = ""

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(self.parameters)

    @property
    def n_variables(self) -> int:
        return len(self.variables)

    @property
    def state_symbols(self) -> tuple[sympy.Symbol, ...]:
        return tuple(sympy.Symbol(n, real=True) for n in self.variable_names)

    @property
    def parameter_symbols(self) -> tuple[sympy.Symbol, ...]:
        return tuple(sympy.Symbol(n, real=True) for n in self.parameter_names)

    @property
    def is_coupled(self) -> bool:
        return self.coupling is not None

    def require_coupling(self, what: str = "this step") -> "Coupling":
        """The coupling, or :class:`ModelError` in one line when the model has none."""
        if self.coupling is None:
            raise ModelError(f"model {self.name!r} has no [coupling]: {what} needs a coupled network model "
                             "(single-node continuation works without it)")
        return self.coupling

    @property
    def channels(self) -> tuple[Channel, ...]:
        return () if self.coupling is None else self.coupling.channels

    @property
    def input_symbols(self) -> tuple[sympy.Symbol, ...]:
        """Input symbols of the channels, in channel order."""
        return tuple(sympy.Symbol(c.input, real=True) for c in self.channels)

    @property
    def input_symbol(self) -> sympy.Symbol:
        """Input symbol of the first channel."""
        return self.input_symbols[0]

    @property
    def coupled_indices(self) -> tuple[int, ...]:
        """State index of each channel's variable."""
        return tuple(self.variable_names.index(c.variable) for c in self.channels)

    @property
    def coupled_index(self) -> int:
        """Index of the first channel's variable in the state vector."""
        return self.coupled_indices[0]

    @property
    def strength_expressions(self) -> tuple[sympy.Expr, ...]:
        """Strength of each channel as a sympy expression in the parameter symbols."""
        return tuple(c.strength_expr for c in self.channels)

    def observed_index(self, variable: str | None = None) -> int:
        """Index of ``variable`` (default :attr:`observe`); :class:`ModelError` names the choices."""
        name = variable or self.observe or self.variable_names[0]
        if name not in self.variable_names:
            raise ModelError(f"variable: {name!r} is not one of {', '.join(self.variable_names)} "
                             f"(model {self.name!r})")
        return self.variable_names.index(name)

    def strengths(self, parameters: Mapping[str, float]) -> "list[float]":
        """Numerical strength of each channel at ``parameters``."""
        values = {sympy.Symbol(k, real=True): float(v) for k, v in parameters.items()}
        return [float(e.xreplace(values)) for e in self.strength_expressions]

    def default_parameters(self) -> dict[str, float]:
        """Parameter defaults as a plain dict (a fresh copy)."""
        return {p.name: p.value for p in self.parameters.values()}

    def default_state(self):
        """Initial guesses of the variables as a float array."""
        import numpy as np

        return np.array([v.initial for v in self.variables], dtype=float)

    def resolve_parameters(self, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """Defaults updated with ``overrides``; unknown names raise :class:`ModelError`."""
        values = self.default_parameters()
        for name, value in (overrides or {}).items():
            if name not in values:
                raise ModelError(
                    f"model {self.name!r} has no parameter {name!r} "
                    f"(known: {', '.join(self.parameter_names)})"
                )
            try:
                values[name] = float(value)
            except (TypeError, ValueError):
                raise ModelError(f"parameter {name!r} must be a number, got {value!r}") from None
        return values

    def check_parameter_names(self, names) -> None:
        """Raise :class:`ModelError` if any of ``names`` is not a parameter."""
        unknown = [n for n in names if n not in self.parameters]
        if unknown:
            raise ModelError(
                f"model {self.name!r} has no parameter {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(self.parameter_names)})"
            )


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key)
    if not isinstance(value, dict) or not value:
        raise ModelError(f"{where}: missing or empty table [{key}]")
    return value


def _entry(item, name: str, field: str, where: str) -> tuple[float, str, str]:
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return float(item), "", ""
    if not isinstance(item, dict) or field not in item:
        raise ModelError(f"{where}: {name!r} needs a number or a table with '{field}'")
    value = item[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelError(f"{where}: {name}.{field} must be a number, got {value!r}")
    return float(value), str(item.get("unit", "")), str(item.get("description", ""))


def _diagnose(text: str) -> str | None:
    """A plain explanation of a common mistake in ``text``, with its 1-based column, or ``None``."""
    caret = text.find("^")
    if caret >= 0:
        return f"'^' at column {caret + 1} is not a power in Python syntax; write '**' (e.g. x**2)"
    stack = []
    for column, char in enumerate(text, 1):
        if char == "(":
            stack.append(column)
        elif char == ")":
            if not stack:
                return f"')' at column {column} has no matching '('"
            stack.pop()
    if stack:
        return f"'(' at column {stack[-1]} is never closed (missing ')')"
    return None


def _located(name: str, text: str) -> str:
    """``'name' (column k)`` for the first whole-word occurrence of ``name`` in ``text``."""
    import re

    match = re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text)
    return f"{name!r} (column {match.start() + 1})" if match else repr(name)


def _parse_expression(text, name: str, symbols: dict, where: str, what: str = "equation for") -> sympy.Expr:
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    if not isinstance(text, str):
        raise ModelError(f"{where}: {what} {name!r} must be a string")
    hint = _diagnose(text)
    if hint is not None:
        raise ModelError(f"{where}: cannot parse {what} {name!r}: {hint}: {text!r}")
    local = {**_ALLOWED_FUNCTIONS, **_ALLOWED_CONSTANTS, **symbols}
    try:
        expr = parse_expr(text, local_dict=local, global_dict={"Integer": sympy.Integer,
                          "Float": sympy.Float, "Rational": sympy.Rational, "Symbol": sympy.Symbol,
                          "Function": sympy.Function},
                          transformations=standard_transformations, evaluate=True)
    except SyntaxError as error:
        column = f" at column {error.offset}" if error.offset else ""
        raise ModelError(f"{where}: cannot parse {what} {name!r}: invalid syntax{column}: {text!r}") from None
    except Exception as error:  # sympy raises many kinds here
        raise ModelError(f"{where}: cannot parse {what} {name!r}: {type(error).__name__}: {error}: {text!r}") from None
    if not isinstance(expr, sympy.Expr):
        raise ModelError(f"{where}: {what} {name!r} is not an expression")
    unknown = sorted(str(s) for s in expr.free_symbols if str(s) not in symbols)
    if unknown:
        listed = ", ".join(_located(u, text) for u in unknown)
        raise ModelError(f"{where}: {what} {name!r} uses unknown symbol(s) {listed}")
    undefined = sorted({type(f).__name__ for f in expr.atoms(sympy.Function)
                        if isinstance(f, sympy.core.function.AppliedUndef)})
    if undefined:
        listed = ", ".join(_located(u, text) for u in undefined)
        raise ModelError(f"{where}: {what} {name!r} uses unknown function(s) {listed}")
    return expr


def _parse_coupling(raw, variables, parameters, names, where) -> Coupling | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ModelError(f"{where}: [coupling] must be a table (or be left out for a single-node model)")
    where = f"{where} [coupling]"
    allowed = {"scheme", "laplacian", "channels", "variable", "strength", "input"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ModelError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
    scheme = raw.get("scheme", "additive")
    if scheme not in SCHEMES:
        raise ModelError(f"{where}: scheme must be one of {', '.join(map(repr, SCHEMES))}, got {scheme!r}")
    laplacian = raw.get("laplacian", "combinatorial")
    if laplacian not in LAPLACIANS:
        raise ModelError(f"{where}: laplacian must be one of {', '.join(map(repr, LAPLACIANS))}, got {laplacian!r}")
    if "laplacian" in raw and scheme != "diffusive":
        raise ModelError(f"{where}: laplacian applies to scheme = \"diffusive\" only")
    single = [k for k in ("variable", "strength", "input") if k in raw]
    if "channels" in raw:
        if single:
            raise ModelError(f"{where}: give either [[coupling.channels]] or the keys variable/strength/input, "
                             f"not both (found {', '.join(single)})")
        entries = raw["channels"]
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise ModelError(f"{where}: channels must be a non-empty array of tables [[coupling.channels]]")
        labelled = [(f"{where} channel {i}", e) for i, e in enumerate(entries, 1)]
    else:
        labelled = [(where, raw)]
    parameter_symbols = {n: sympy.Symbol(n, real=True) for n in parameters}
    channels, inputs = [], []
    for label, entry in labelled:
        extra = sorted(set(entry) - {"variable", "strength", "input"}) if entry is not raw else []
        if extra:
            raise ModelError(f"{label}: unknown key(s) {', '.join(extra)} (known: input, strength, variable)")
        for key in ("variable", "strength", "input"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ModelError(f"{label}: missing '{key}' (a name{' or an expression' if key == 'strength' else ''})")
        variable, strength, input_ = entry["variable"], entry["strength"], entry["input"]
        if variable not in variables:
            raise ModelError(f"{label}: variable {variable!r} is not a declared variable "
                             f"({', '.join(variables)})")
        if input_ in names or input_ in _RESERVED_NAMES or not input_.isidentifier():
            raise ModelError(f"{label}: input symbol {input_!r} clashes with a declared or reserved name")
        if input_ in inputs:
            raise ModelError(f"{label}: input symbol {input_!r} is used by two channels")
        inputs.append(input_)
        expr = _parse_expression(strength, variable, parameter_symbols, label, "strength of channel")
        channels.append(Channel(variable, strength, input_, expr))
    return Coupling(scheme=scheme, channels=tuple(channels), laplacian=laplacian)


def parse_model(text: str, *, source: str = "<string>", name: str | None = None) -> NodeModel:
    """Parse a model specification given as TOML text.

    Parameters
    ----------
    text : str
        TOML text of the model specification.
    source : str
        Where the text came from; used in error messages.
    name : str, optional
        Model name when the text has no ``name`` key.

    Returns
    -------
    NodeModel

    Raises
    ------
    ModelError
        Bad TOML, a missing table or equation, an unknown symbol, or a
        coupling that names something undeclared. The message names the
        file and the item.
    """
    where = source
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ModelError(f"{where}: not valid TOML: {error}") from None

    raw_vars = _table(data, "variables", where)
    raw_pars = _table(data, "parameters", where)
    raw_eqs = _table(data, "equations", where)

    variables = []
    for vname, item in raw_vars.items():
        value, unit, desc = _entry(item, vname, "initial", f"{where} [variables]")
        variables.append(Variable(vname, value, unit, desc))
    parameters = {}
    for pname, item in raw_pars.items():
        value, unit, desc = _entry(item, pname, "value", f"{where} [parameters]")
        parameters[pname] = Parameter(pname, value, unit, desc)

    names = [v.name for v in variables] + list(parameters)
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise ModelError(f"{where}: name(s) used for both a variable and a parameter: {', '.join(clash)}")
    reserved = sorted(set(names) & (_RESERVED_NAMES | set(_ALLOWED_FUNCTIONS) | set(_ALLOWED_CONSTANTS)))
    if reserved:
        raise ModelError(f"{where}: reserved name(s) cannot be declared: {', '.join(reserved)}")

    coupling = _parse_coupling(data.get("coupling"), [v.name for v in variables], parameters, names, where)
    inputs = [c.input for c in coupling.channels] if coupling else []
    symbols = {n: sympy.Symbol(n, real=True) for n in names + inputs}

    missing = [v.name for v in variables if v.name not in raw_eqs]
    if missing:
        raise ModelError(f"{where} [equations]: missing equation for {', '.join(missing)}")
    extra = [k for k in raw_eqs if k not in raw_vars]
    if extra:
        raise ModelError(f"{where} [equations]: equation for undeclared variable(s) {', '.join(extra)}")
    equations = tuple(
        _parse_expression(raw_eqs[v.name], v.name, symbols, f"{where} [equations]") for v in variables
    )
    for name_ in inputs:
        if not any(eq.has(symbols[name_]) for eq in equations):
            raise ModelError(f"{where} [coupling]: no equation uses the input symbol {name_!r}")

    observe = data.get("observe", {})
    if not isinstance(observe, dict) or sorted(set(observe) - {"variable"}):
        raise ModelError(f"{where} [observe]: expected a table with the key 'variable'")
    observed = observe.get("variable", coupling.variable if coupling else variables[0].name)
    if observed not in raw_vars:
        raise ModelError(f"{where} [observe]: variable {observed!r} is not a declared variable")

    return NodeModel(
        name=str(data.get("name", name or Path(source).stem)),
        variables=tuple(variables),
        parameters=MappingProxyType(parameters),
        equations=equations,
        coupling=coupling,
        source=str(source),
        description=str(data.get("description", "")),
        reference=str(data.get("reference", "")),
        time_unit=str(data.get("time_unit", "ms")),
        observe=str(observed),
    )


def available_models() -> tuple[str, ...]:
    """Names of the models shipped in ``models/``."""
    return tuple(sorted(p.stem for p in MODELS_DIR.glob("*.toml")))


@functools.lru_cache(maxsize=None)
def _load_cached(path: str, mtime: float) -> NodeModel:
    return parse_model(Path(path).read_text(), source=path)


def load_model(name_or_path: str | Path) -> NodeModel:
    """Load a model by name (a file in ``models/``) or by path.

    Parameters
    ----------
    name_or_path : str or Path
        ``"ngnmm_ping"``, ``"wilson_cowan"`` or a path to a ``.toml`` file.

    Returns
    -------
    NodeModel

    Raises
    ------
    ModelError
        Unknown name, missing file or a bad specification.

    Examples
    --------
    >>> model = load_model("ngnmm_ping")
    >>> model.variable_names
    ('r_e', 'v_e', 's_e', 'r_i', 'v_i', 's_i')
    """
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".toml" or path.exists() or "/" in text):
        path = MODELS_DIR / f"{text}.toml"
        if not path.exists():
            raise ModelError(
                f"unknown model {text!r}: not a file and not one of {', '.join(available_models())}"
            )
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    path = path.resolve()
    try:
        return _load_cached(str(path), path.stat().st_mtime)
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not a text file (a model file is TOML, UTF-8)") from None
    except OSError as error:
        raise ModelError(f"{path}: cannot read it: {error.strerror or error}") from None
