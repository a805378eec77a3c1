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

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"

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


@dataclasses.dataclass(frozen=True)
class Coupling:
    """How a node talks to the network.

    ``variable`` is sent to the network; the network input
    ``C_i = strength * sum_j W_ij variable_j`` enters the equations through the
    symbol ``input``.
    """

    variable: str
    strength: str
    input: str


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
    coupling : Coupling
        Which variable is coupled, by which strength parameter, through which
        input symbol.
    source : str
        Path of the model file.
    """

    name: str
    variables: tuple[Variable, ...]
    parameters: Mapping[str, Parameter]
    equations: tuple[sympy.Expr, ...]
    coupling: Coupling
    source: str = ""
    description: str = ""
    reference: str = ""
    time_unit: str = "ms"

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
    def input_symbol(self) -> sympy.Symbol:
        return sympy.Symbol(self.coupling.input, real=True)

    @property
    def coupled_index(self) -> int:
        """Index of the coupled variable in the state vector."""
        return self.variable_names.index(self.coupling.variable)

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


def _parse_expression(text, name: str, symbols: dict, where: str) -> sympy.Expr:
    from sympy.parsing.sympy_parser import parse_expr, standard_transformations

    if not isinstance(text, str):
        raise ModelError(f"{where}: equation for {name!r} must be a string")
    local = {**_ALLOWED_FUNCTIONS, **_ALLOWED_CONSTANTS, **symbols}
    try:
        expr = parse_expr(text, local_dict=local, global_dict={"Integer": sympy.Integer,
                          "Float": sympy.Float, "Rational": sympy.Rational, "Symbol": sympy.Symbol,
                          "Function": sympy.Function},
                          transformations=standard_transformations, evaluate=True)
    except Exception as error:  # sympy raises many kinds here
        raise ModelError(f"{where}: cannot parse equation for {name!r}: {error}") from None
    if not isinstance(expr, sympy.Expr):
        raise ModelError(f"{where}: equation for {name!r} is not an expression")
    unknown = sorted(str(s) for s in expr.free_symbols if str(s) not in symbols)
    if unknown:
        raise ModelError(f"{where}: equation for {name!r} uses unknown symbol(s) {', '.join(unknown)}")
    undefined = sorted({type(f).__name__ for f in expr.atoms(sympy.Function)
                        if isinstance(f, sympy.core.function.AppliedUndef)})
    if undefined:
        raise ModelError(f"{where}: equation for {name!r} uses unknown function(s) {', '.join(undefined)}")
    return expr


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
    raw_coupling = _table(data, "coupling", where)

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

    for key in ("variable", "strength", "input"):
        if not isinstance(raw_coupling.get(key), str):
            raise ModelError(f"{where} [coupling]: missing '{key}' (a name)")
    coupling = Coupling(raw_coupling["variable"], raw_coupling["strength"], raw_coupling["input"])
    if coupling.variable not in raw_vars:
        raise ModelError(f"{where} [coupling]: variable {coupling.variable!r} is not a declared variable")
    if coupling.strength not in parameters:
        raise ModelError(f"{where} [coupling]: strength {coupling.strength!r} is not a declared parameter")
    if coupling.input in names:
        raise ModelError(f"{where} [coupling]: input symbol {coupling.input!r} clashes with a declared name")

    symbols = {n: sympy.Symbol(n, real=True) for n in names}
    symbols[coupling.input] = sympy.Symbol(coupling.input, real=True)

    missing = [v.name for v in variables if v.name not in raw_eqs]
    if missing:
        raise ModelError(f"{where} [equations]: missing equation for {', '.join(missing)}")
    extra = [k for k in raw_eqs if k not in raw_vars]
    if extra:
        raise ModelError(f"{where} [equations]: equation for undeclared variable(s) {', '.join(extra)}")
    equations = tuple(
        _parse_expression(raw_eqs[v.name], v.name, symbols, f"{where} [equations]") for v in variables
    )
    input_symbol = symbols[coupling.input]
    if not any(eq.has(input_symbol) for eq in equations):
        raise ModelError(f"{where} [coupling]: no equation uses the input symbol {coupling.input!r}")

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
