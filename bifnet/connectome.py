"""Connectomes: loading, checking, row normalisation and spectra.

A :class:`Connectome` holds a structural weight matrix ``W`` (``W[i, j]`` is
the weight of the connection that region ``i`` receives from region ``j``, as
in The Virtual Brain), its region labels and, when known, region centres.
It is immutable: every change (dropping regions, self-loops, row
normalisation) returns a new object and is recorded in
:attr:`Connectome.transformations`.

A model's coupling scheme decides the operator whose eigenvectors are the
*modes* of a homogeneous state (:class:`CouplingOperator`, built by
:func:`coupling_operator`, the one place every stage takes it from): the
row-normalised matrix ``P = D^{-1} W`` (``D = diag(row sums)``) for additive
coupling, the graph Laplacian ``L = D - W`` of the weights as given for
diffusive coupling. :meth:`Connectome.spectrum` returns the eigenvalues of the
matrix itself sorted by real part, descending (for ``P`` mode 1 is the uniform
mode with ``Λ = 1``); :meth:`CouplingOperator.spectrum` puts the uniform mode
first for either operator (``Λ = 0`` for ``L``).

Sources understood by :func:`load_connectome`:

* built-in names ``tvb66``, ``tvb68``, ``tvb76``, ``tvb96``, ``tvb192``
  (from the PyPI package ``tvb-data``);
* ``.npy``; ``.npz`` (``key`` or the only array); ``.mat`` (``key`` or the
  only square 2-D array);
* ``.csv`` / ``.txt`` / ``.tsv`` dense matrices (comma, semicolon or
  whitespace separated, optional header row and/or first column of labels);
* edge lists (``.edges`` / ``.edgelist``, or a ``.txt`` file whose first line
  is a single integer ``N``): lines ``i j [w]`` with 0-based indices, setting
  ``W[i, j] = w`` (``w = 1`` when absent). Edges are directed (``i`` receives
  from ``j``); a list of each undirected edge once (e.g. the upper triangle)
  needs ``symmetrize``. A list that never uses index 0 is probably 1-based;
  the zero-row error then says so;
* TVB connectivity folders: a ``.zip`` or a directory holding ``weights.txt``
  (optionally ``.bz2``-compressed) and optionally ``centres.txt``
  (lines ``label x y z``).
"""

from __future__ import annotations

import bz2
import hashlib
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bifnet.errors import ConnectomeError

__all__ = [
    "BUILTIN_NAMES",
    "DEFAULT_CONNECTOME",
    "Connectome",
    "CouplingOperator",
    "Spectrum",
    "coupling_operator",
    "describe_connectome",
    "load_connectome",
]

logger = logging.getLogger(__name__)

BUILTIN_NAMES: tuple[str, ...] = ("tvb66", "tvb68", "tvb76", "tvb96", "tvb192")
DEFAULT_CONNECTOME = "tvb68"

_DENSE_TEXT_SUFFIXES = (".csv", ".txt", ".tsv", ".dat")
_EDGE_LIST_SUFFIXES = (".edges", ".edgelist")
_SUPPORTED = (
    "built-in names " + ", ".join(BUILTIN_NAMES)
    + "; files .npy, .npz, .csv, .txt, .tsv, .dat, .edges, .edgelist, .mat, .zip (TVB)"
    + " or a directory holding weights.txt"
)
_COMMON_MAT_KEYS = ("weights", "W", "SC", "sc", "connectivity", "C")
_ROW_SUM_TOLERANCE = 1e-12


# --------------------------------------------------------------------------- #
# Spectrum
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Eigen-decomposition of a coupling matrix, sorted into modes.

    Attributes
    ----------
    eigenvalues : numpy.ndarray
        Shape ``(N,)``; ``float64`` when the spectrum is known to be real
        (symmetric matrix, or row normalisation of a symmetric matrix, or
        every eigenvalue found exactly real), ``complex128`` otherwise.
        Sorted by real part descending, ties by imaginary part descending:
        index 0 is mode 1 (``Λ = 1`` for a row-normalised matrix).
    eigenvectors : numpy.ndarray
        Shape ``(N, N)``; column ``k`` is the right eigenvector of
        ``eigenvalues[k]``, with unit 2-norm and its largest-magnitude
        component real and positive.
    is_real : bool
        Whether ``eigenvalues`` (and ``eigenvectors``) are real arrays.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    is_real: bool

    def modes(self) -> np.ndarray:
        """Return the 1-based mode numbers ``1..N`` matching :attr:`eigenvalues`.

        Returns
        -------
        numpy.ndarray
            Integer array ``[1, 2, ..., N]``.
        """
        return np.arange(1, self.eigenvalues.shape[0] + 1)


def _fix_phase(vectors: np.ndarray) -> np.ndarray:
    """Normalise columns to unit norm with the largest component real positive."""
    vectors = vectors / np.linalg.norm(vectors, axis=0, keepdims=True)
    largest = np.argmax(np.abs(vectors), axis=0)
    pivots = vectors[largest, np.arange(vectors.shape[1])]
    phases = pivots / np.abs(pivots)
    if np.isrealobj(vectors):
        return vectors * np.sign(pivots)
    return vectors * np.conj(phases)


def _make_spectrum(values: np.ndarray, vectors: np.ndarray) -> Spectrum:
    order = np.lexsort((-np.imag(values), -np.real(values)))
    values = values[order]
    vectors = _fix_phase(vectors[:, order])
    is_real = not np.iscomplexobj(values)
    if is_real:
        values = values.astype(np.float64)
        vectors = vectors.astype(np.float64)
    else:
        values = values.astype(np.complex128)
        vectors = vectors.astype(np.complex128)
    values.setflags(write=False)
    vectors.setflags(write=False)
    return Spectrum(eigenvalues=values, eigenvectors=vectors, is_real=is_real)


def _symmetriser(W: np.ndarray) -> np.ndarray | None:
    """``d > 0`` with ``diag(d) W`` symmetric (so ``W = D^-1 S``), or ``None``."""
    N = W.shape[0]
    nz = W != 0
    if not np.array_equal(nz, nz.T):
        return None
    d = np.full(N, np.nan)
    d[0] = 1.0
    stack = [0]
    while stack:
        i = stack.pop()
        for j in np.flatnonzero(nz[i]):
            if np.isnan(d[j]):
                d[j] = d[i] * W[i, j] / W[j, i]
                stack.append(j)
    if np.any(np.isnan(d)) or np.any(d <= 0):
        return None
    if not np.allclose(W * d[:, None], (W * d[:, None]).T, rtol=1e-10, atol=0):
        return None
    return d


def matrix_spectrum(weights, *, symmetric_original: np.ndarray | None = None,
                    detect_row_normalised: bool = True) -> Spectrum:
    """Eigenvalues and right eigenvectors of a weight matrix, sorted by real part descending.

    Parameters
    ----------
    weights : array_like
        ``(N, N)`` matrix, e.g. a row-normalised connectome.
    symmetric_original : ndarray, optional
        A symmetric ``S`` with ``weights = S / S.sum(1)``, when known.
    detect_row_normalised : bool, default True
        Look for such an ``S`` (only valid for a row normalisation; off for
        Laplacians).

    Returns
    -------
    Spectrum

    Notes
    -----
    Real arithmetic whenever it is exact: ``weights = D^{-1} S`` with ``S``
    symmetric (given, or detected: ``diag(d) W`` symmetric for some ``d > 0``)
    is similar to the symmetric ``D^{-1/2} S D^{-1/2}`` (:func:`numpy.linalg.eigh`,
    eigenvectors ``v = D^{-1/2} u``); a symmetric matrix uses ``eigh`` directly;
    otherwise :func:`numpy.linalg.eig` (complex in general; real when every
    eigenvalue is).
    """
    W = np.asarray(weights, dtype=float)
    if detect_row_normalised and symmetric_original is None and not np.allclose(W, W.T, rtol=1e-12, atol=0):
        d = _symmetriser(W)
        if d is not None:
            symmetric_original = W * d[:, None]
    if symmetric_original is not None:
        S = np.asarray(symmetric_original, dtype=float)
        scale = 1.0 / np.sqrt(S.sum(axis=1))
        similar = S * scale[:, None] * scale[None, :]
        values, vectors = np.linalg.eigh(0.5 * (similar + similar.T))
        vectors = vectors * scale[:, None]
        method = "eigh of D^-1/2 S D^-1/2"
    elif np.allclose(W, W.T, rtol=1e-12, atol=0):
        values, vectors = np.linalg.eigh(0.5 * (W + W.T))
        method = "eigh"
    else:
        values, vectors = np.linalg.eig(W)
        if np.all(np.abs(values.imag) <= 1e-12 * max(1.0, float(np.abs(values).max()))):
            values, vectors = values.real, vectors.real
        method = "eig"
    logger.debug("spectrum by %s", method)
    return _make_spectrum(values, vectors)


# --------------------------------------------------------------------------- #
# Connectome
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Connectome:
    """A structural connectome: weights, labels, centres and provenance.

    Attributes
    ----------
    weights : numpy.ndarray
        ``(N, N)`` float64, read-only. ``weights[i, j]`` is the input region
        ``i`` receives from region ``j``.
    labels : tuple of str
        Region labels (``"0"`` .. ``"N-1"`` when the source has none).
    centres : numpy.ndarray or None
        ``(N, 3)`` region centres in mm, read-only, or ``None``.
    name : str
        Short name (built-in name or file stem).
    source : str
        What was loaded (built-in name or resolved path).
    transformations : tuple of str
        Human-readable record of every change made since loading.

    Notes
    -----
    Equality is identity; compare :meth:`sha256` to compare contents.
    The spectrum is computed once and cached.
    """

    weights: np.ndarray = field(repr=False)
    labels: tuple[str, ...]
    centres: np.ndarray | None = field(repr=False)
    name: str
    source: str
    transformations: tuple[str, ...] = ()
    # symmetric matrix S with weights == S / S.sum(1) (set by row_normalised)
    _symmetric_original: np.ndarray | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        weights = np.array(self.weights, dtype=np.float64, order="C", copy=True)
        _check_matrix(weights, self.name)
        weights.setflags(write=False)
        object.__setattr__(self, "weights", weights)
        labels = tuple(str(label) for label in self.labels)
        if len(labels) != weights.shape[0]:
            raise ConnectomeError(
                f"connectome {self.name} has {weights.shape[0]} regions but {len(labels)} labels"
            )
        object.__setattr__(self, "labels", labels)
        if self.centres is not None:
            centres = np.array(self.centres, dtype=np.float64, order="C", copy=True)
            if centres.shape != (weights.shape[0], 3):
                raise ConnectomeError(
                    f"connectome {self.name}: centres have shape {centres.shape}, "
                    f"expected ({weights.shape[0]}, 3)"
                )
            centres.setflags(write=False)
            object.__setattr__(self, "centres", centres)
        object.__setattr__(self, "transformations", tuple(self.transformations))

    # -- properties -------------------------------------------------------- #

    @property
    def n_regions(self) -> int:
        """Number of regions ``N``."""
        return int(self.weights.shape[0])

    @property
    def is_symmetric(self) -> bool:
        """Whether ``W == W.T`` to a relative tolerance of 1e-12."""
        return bool(np.allclose(self.weights, self.weights.T, rtol=1e-12, atol=0))

    @property
    def self_loop_count(self) -> int:
        """Number of nonzero diagonal entries."""
        return int(np.count_nonzero(np.diag(self.weights)))

    @property
    def zero_rows(self) -> tuple[int, ...]:
        """0-based indices of the rows whose weights are all zero."""
        return tuple(int(i) for i in np.flatnonzero(~np.any(self.weights != 0, axis=1)))

    # -- methods ----------------------------------------------------------- #

    def weights_sha256(self) -> str:
        """SHA-256 hex digest of the float64 C-order bytes of :attr:`weights` alone."""
        return hashlib.sha256(np.ascontiguousarray(self.weights, dtype=np.float64).tobytes()).hexdigest()

    def labels_sha256(self) -> str:
        """SHA-256 hex digest of the labels joined with NUL characters (UTF-8)."""
        return hashlib.sha256("\0".join(self.labels).encode("utf-8")).hexdigest()

    def sha256(self) -> str:
        """Return the SHA-256 hex digest of the weights and labels together.

        See :meth:`weights_sha256` and :meth:`labels_sha256` for each alone
        (the same weights under other labels are the same network).

        Returns
        -------
        str
            Digest of the float64 C-order bytes of :attr:`weights` followed by
            the labels joined with NUL characters (UTF-8).
        """
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.weights, dtype=np.float64).tobytes())
        digest.update("\0".join(self.labels).encode("utf-8"))
        return digest.hexdigest()

    def row_normalised(self) -> "Connectome":
        """Return the connectome with each row divided by its sum.

        Returns
        -------
        Connectome
            ``P_ij = W_ij / sum_k W_ik``; rows of ``P`` sum to 1. The change is
            recorded in :attr:`transformations`.

        Raises
        ------
        ConnectomeError
            If any row sums to zero (the message names each row by index and
            label).

        Notes
        -----
        When this connectome is symmetric, the symmetric matrix is kept
        privately so that :meth:`spectrum` of the result can use the
        similarity transform ``D^{-1/2} W D^{-1/2}`` (real spectrum,
        orthogonal eigen-solver).

        Examples
        --------
        >>> P = load_connectome("tvb68").row_normalised()
        >>> bool(np.allclose(P.weights.sum(axis=1), 1.0))
        True
        """
        sums = self.weights.sum(axis=1)
        zero = np.flatnonzero(sums == 0)
        if zero.size:
            raise ConnectomeError(
                f"cannot row-normalise connectome {self.name}: "
                f"{_zero_rows_phrase(zero, self.labels)}"
            )
        if np.all(np.abs(sums - 1.0) <= _ROW_SUM_TOLERANCE):
            note = "row-normalised (rows already summed to 1)"
        else:
            note = "row-normalised (each row divided by its sum)"
        result = Connectome(
            weights=self.weights / sums[:, None],
            labels=self.labels,
            centres=self.centres,
            name=self.name,
            source=self.source,
            transformations=self.transformations + (note,),
        )
        if self._symmetric_original is not None:
            original = self._symmetric_original
        elif self.is_symmetric:
            original = self.weights
        else:
            original = None
        object.__setattr__(result, "_symmetric_original", original)
        return result

    def spectrum(self) -> Spectrum:
        """Return the eigenvalues and right eigenvectors of :attr:`weights`.

        Returns
        -------
        Spectrum
            Sorted by real part descending (mode 1 first).

        Notes
        -----
        Three cases:

        1. ``W`` is the row normalisation ``D^{-1} S`` of a symmetric ``S``
           (made by :meth:`row_normalised`): ``A = D^{-1/2} S D^{-1/2}`` is
           symmetric and similar to ``W``; ``A = U Λ U^T`` by
           :func:`numpy.linalg.eigh` and the right eigenvectors of ``W`` are
           ``v = D^{-1/2} u``, normalised.
        2. ``W`` is symmetric: :func:`numpy.linalg.eigh`.
        3. Otherwise :func:`numpy.linalg.eig` (complex in general).

        The caller normalises first: the spectrum is of this matrix as is.
        The result is cached.

        Examples
        --------
        >>> spectrum = load_connectome("tvb68").row_normalised().spectrum()
        >>> round(float(spectrum.eigenvalues[0]), 12)
        1.0
        """
        cached = self._cache.get("spectrum")
        if cached is not None:
            return cached
        result = matrix_spectrum(self.weights, symmetric_original=self._symmetric_original)
        self._cache["spectrum"] = result
        return result

    def to_manifest(self) -> dict:
        """Return a JSON-serialisable description for run manifests.

        Returns
        -------
        dict
            Keys ``name``, ``source``, ``n_regions``, ``symmetric``,
            ``self_loops``, ``zero_rows``, ``sha256``, ``transformations``
            (list) and ``spectrum``: ``None`` when the row-normalised matrix
            cannot be formed, else ``{"real", "re_min", "re_max",
            "max_abs_imag"}`` of the eigenvalues of the row-normalised matrix
            (of this matrix itself if its rows already sum to 1).
        """
        spectrum = None
        if not self.zero_rows:
            normalised = self if self._rows_sum_to_one() else self.row_normalised()
            values = normalised.spectrum().eigenvalues
            spectrum = {
                "real": bool(normalised.spectrum().is_real),
                "re_min": float(np.min(values.real)),
                "re_max": float(np.max(values.real)),
                "max_abs_imag": float(np.max(np.abs(values.imag))) if values.size else 0.0,
            }
        return {
            "name": self.name,
            "source": self.source,
            "n_regions": self.n_regions,
            "symmetric": self.is_symmetric,
            "self_loops": self.self_loop_count,
            "zero_rows": list(self.zero_rows),
            "sha256": self.sha256(),
            "sha256_weights": self.weights_sha256(),
            "sha256_labels": self.labels_sha256(),
            "transformations": list(self.transformations),
            "spectrum": spectrum,
        }

    def _rows_sum_to_one(self) -> bool:
        return bool(np.all(np.abs(self.weights.sum(axis=1) - 1.0) <= _ROW_SUM_TOLERANCE))


# --------------------------------------------------------------------------- #
# the coupling operator of a scheme: the one place stages take modes from
# --------------------------------------------------------------------------- #

OPERATOR_DESCRIPTIONS = {
    "P": "row-normalised weights P = D^-1 W",
    "L": "graph Laplacian L = D - W (weights as given)",
    "L_rw": "random-walk Laplacian L_rw = I - D^-1 W",
}


@dataclass(frozen=True, eq=False)
class CouplingOperator:
    """The operator of a coupling scheme on a connectome, and its modes.

    Channel ``k`` of node ``i`` receives ``C_k,i = s_k sum_j G_ij c_k(x_j)``
    with the *coupling matrix* ``G = sign * M``; the eigenvalues of the *mode
    operator* ``M`` index the modes (the ``Lambda`` column of every table):

    ========== ============== ================================ ====== =========
    scheme     laplacian      M                                sign   uniform
    ========== ============== ================================ ====== =========
    additive   --             ``P = D^-1 W``                   +1     1
    diffusive  combinatorial  ``L = D - W``                    -1     0
    diffusive  random_walk    ``L_rw = I - D^-1 W``            -1     0
    ========== ============== ================================ ====== =========

    ``D = diag(row sums of W)``. Modes are sorted so that mode 1 is the
    uniform one: by real part descending for ``P``, ascending for ``L``.

    Attributes
    ----------
    connectome : Connectome
        The weights the scheme starts from: row-normalised (additive) or as
        given (diffusive; all-zero rows are allowed).
    scheme : {"additive", "diffusive"}
    laplacian : {"combinatorial", "random_walk"}
    """

    connectome: Connectome
    scheme: str = "additive"
    laplacian: str = "combinatorial"
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # a Connectome's read-only face, so that stages can use either
    @property
    def weights(self) -> np.ndarray:
        """The weights :func:`bifnet.network.build_network` takes for this scheme."""
        return self.connectome.weights

    @property
    def labels(self) -> tuple[str, ...]:
        return self.connectome.labels

    @property
    def centres(self):
        return self.connectome.centres

    @property
    def name(self) -> str:
        return self.connectome.name

    @property
    def n_regions(self) -> int:
        return self.connectome.n_regions

    @property
    def symbol(self) -> str:
        """``"P"``, ``"L"`` or ``"L_rw"``."""
        if self.scheme == "additive":
            return "P"
        return "L" if self.laplacian == "combinatorial" else "L_rw"

    @property
    def description(self) -> str:
        return OPERATOR_DESCRIPTIONS[self.symbol]

    @property
    def sign(self) -> int:
        return 1 if self.scheme == "additive" else -1

    @property
    def uniform_eigenvalue(self) -> float:
        return 1.0 if self.scheme == "additive" else 0.0

    @property
    def mode_matrix(self) -> np.ndarray:
        """``M`` (``P``, ``L`` or ``L_rw``), ``(N, N)``."""
        W = self.connectome.weights
        if self.symbol == "P":
            return np.array(W)
        if self.symbol == "L":
            return np.diag(W.sum(axis=1)) - W
        return np.eye(W.shape[0]) - W

    @property
    def matrix(self) -> np.ndarray:
        """The coupling matrix ``G = sign * M`` the network kernels multiply by (read-only)."""
        cached = self._cache.get("matrix")
        if cached is None:
            W = self.connectome.weights
            if self.symbol == "P":
                cached = np.array(W, dtype=float, order="C")
            elif self.symbol == "L":
                cached = np.array(W, dtype=float, order="C")
                cached[np.diag_indices_from(cached)] -= W.sum(axis=1)
            else:
                cached = np.array(W, dtype=float, order="C")
                cached[np.diag_indices_from(cached)] -= 1.0
            cached.setflags(write=False)
            self._cache["matrix"] = cached
        return cached

    def spectrum(self) -> Spectrum:
        """Eigenvalues and right eigenvectors of ``M``, mode 1 (uniform) first.

        Notes
        -----
        ``P``: :meth:`Connectome.spectrum` (real arithmetic for a row
        normalisation of a symmetric matrix). ``L``: the spectrum of
        ``G = W - D`` (symmetric when ``W`` is: ``eigh``), negated; the
        eigenvalue of the uniform mode is set to exactly 0 when it is
        within ``1e-12 * max(1, max|L_ij|) * N`` of zero (it is zero in exact
        arithmetic for any ``W``). ``L_rw = I - P``: the spectrum of ``P``,
        shifted.
        """
        cached = self._cache.get("spectrum")
        if cached is not None:
            return cached
        if self.symbol == "P":
            result = self.connectome.spectrum()
        else:
            if self.symbol == "L":
                base = matrix_spectrum(self.matrix, detect_row_normalised=False)
                values = -np.array(base.eigenvalues)
            else:
                base = self.connectome.spectrum()
                values = 1.0 - np.array(base.eigenvalues)
            scale = max(1.0, float(np.max(np.abs(self.mode_matrix)))) * self.n_regions
            if values.size and abs(values[0]) <= 1e-12 * scale:
                values[0] = 0.0
            values.setflags(write=False)
            result = Spectrum(eigenvalues=values, eigenvectors=base.eigenvectors, is_real=base.is_real)
        self._cache["spectrum"] = result
        return result

    def to_manifest(self) -> dict:
        """The connectome's manifest plus ``operator`` (symbol, description, scheme) and its spectrum."""
        values = self.spectrum().eigenvalues
        out = self.connectome.to_manifest()
        out["operator"] = {
            "scheme": self.scheme, "symbol": self.symbol, "description": self.description,
            "laplacian": self.laplacian if self.scheme == "diffusive" else None,
            "uniform_eigenvalue": self.uniform_eigenvalue,
            "eigenvalues": {"real": bool(self.spectrum().is_real), "re_min": float(np.min(values.real)),
                            "re_max": float(np.max(values.real)),
                            "max_abs_imag": float(np.max(np.abs(values.imag))) if values.size else 0.0},
        }
        return out


def coupling_operator(connectome: Connectome, coupling) -> CouplingOperator:
    """The :class:`CouplingOperator` of a model's coupling on ``connectome``.

    Parameters
    ----------
    connectome : Connectome
        As loaded (row normalisation is done here for additive coupling; a
        connectome whose rows already sum to one is used as it is).
    coupling : bifnet.model.Coupling or str
        The model's coupling (or just its scheme name).

    Raises
    ------
    ConnectomeError
        Additive coupling (or the random-walk Laplacian) on a connectome with
        all-zero rows.
    """
    if isinstance(connectome, CouplingOperator):
        connectome = connectome.connectome
    scheme = coupling if isinstance(coupling, str) else coupling.scheme
    laplacian = "combinatorial" if isinstance(coupling, str) else coupling.laplacian
    if scheme not in ("additive", "diffusive"):
        raise ConnectomeError(f"unknown coupling scheme {scheme!r} (known: additive, diffusive)")
    if scheme == "additive" or laplacian == "random_walk":
        if not connectome._rows_sum_to_one():
            connectome = connectome.row_normalised()
    return CouplingOperator(connectome=connectome, scheme=scheme, laplacian=laplacian)


# --------------------------------------------------------------------------- #
# checks
# --------------------------------------------------------------------------- #


def _check_matrix(weights: np.ndarray, where: str) -> None:
    """Raise ConnectomeError unless ``weights`` is square, finite, non-negative."""
    if weights.ndim != 2:
        raise ConnectomeError(
            f"connectome {where} is not a 2-D matrix: shape {tuple(weights.shape)}"
        )
    if weights.shape[0] != weights.shape[1]:
        raise ConnectomeError(
            f"connectome {where} is not square: shape {tuple(weights.shape)}"
        )
    if weights.shape[0] == 0:
        raise ConnectomeError(f"connectome {where} is empty: shape {tuple(weights.shape)}")
    bad = ~np.isfinite(weights)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        n_nan = int(np.isnan(weights).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ConnectomeError(
            f"connectome {where} has {int(bad.sum())} non-finite weights "
            f"({n_nan} NaN, {n_inf} inf); first at row {i}, column {j} ({weights[i, j]})"
        )
    negative = weights < 0
    if negative.any():
        i, j = (int(k) for k in np.argwhere(negative)[0])
        raise ConnectomeError(
            f"connectome {where} has {int(negative.sum())} negative weights; "
            f"first at row {i}, column {j} ({weights[i, j]:g})"
        )


def _zero_rows_phrase(rows: Sequence[int], labels: Sequence[str]) -> str:
    listed = ", ".join(f"{int(i)} ({labels[int(i)]})" for i in rows)
    plural = "row" if len(rows) == 1 else "rows"
    return f"{len(rows)} all-zero {plural}: {listed}"


def _zero_rows_message(where: str, rows: Sequence[int], labels: Sequence[str], weights=None) -> str:
    hints = []
    if weights is not None:
        W = np.asarray(weights)
        off = W[~np.eye(W.shape[0], dtype=bool)]
        if off.size and np.count_nonzero(np.tril(W, -1)) == 0 and np.count_nonzero(np.triu(W, 1)):
            hints.append("the weights are upper-triangular (each edge listed once?): symmetrize them with "
                         "connectome_options.symmetrize = true (CLI: --symmetrize)")
        if 0 in rows and not np.any(W[:, 0]):
            hints.append("region 0 has neither inputs nor outputs: if the list is 1-based, subtract 1 "
                         "from every index (edge lists are 0-based)")
    hints.append("drop them with connectome_options.drop_zero_rows = true (CLI: --drop-zero-rows) "
                 "or drop_regions")
    if not hints[0].startswith("drop"):
        hints[-1] = "or " + hints[-1]
    return f"connectome {where} has {_zero_rows_phrase(rows, labels)}; " + "; ".join(hints)


SYMMETRIZE = {"max": "max(W, W^T)", "mean": "(W + W^T) / 2", "sum": "W + W^T"}


# --------------------------------------------------------------------------- #
# readers: each returns (weights, labels or None, centres or None)
# --------------------------------------------------------------------------- #

_Raw = tuple  # (np.ndarray, list[str] | None, np.ndarray | None)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _text_rows(text: str) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based line numbers."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "%")):
            rows.append((number, stripped))
    return rows


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return line.split()
    tokens = [token.strip().strip('"').strip("'") for token in line.rstrip(delimiter).split(delimiter)]
    return tokens


def _parse_dense_text(text: str, where: str) -> _Raw:
    """Parse a dense matrix, with an optional header row / label column."""
    rows = _text_rows(text)
    if not rows:
        raise ConnectomeError(f"connectome file {where} holds no data")
    body = "\n".join(line for _, line in rows)
    delimiter = ";" if ";" in body else ("," if "," in body else None)
    table = [(number, _split(line, delimiter)) for number, line in rows]

    header: list[str] | None = None
    if not all(_is_number(token) for token in table[0][1] if token != ""):
        header = table[0][1]
        table = table[1:]
    if not table:
        raise ConnectomeError(f"connectome file {where} holds only a header row")
    row_labels: list[str] | None = None
    if all(not _is_number(tokens[0]) for _, tokens in table if tokens):
        row_labels = [tokens[0] for _, tokens in table]
        table = [(number, tokens[1:]) for number, tokens in table]

    width = len(table[0][1])
    values = np.empty((len(table), width), dtype=np.float64)
    for r, (number, tokens) in enumerate(table):
        if len(tokens) != width:
            raise ConnectomeError(
                f"ragged matrix in {where}: line {number} has {len(tokens)} values, "
                f"line {table[0][0]} has {width}"
            )
        for c, token in enumerate(tokens):
            try:
                values[r, c] = float(token)
            except ValueError:
                raise ConnectomeError(
                    f"connectome file {where}, line {number}, column {c + 1}: "
                    f"{token!r} is not a number"
                ) from None

    labels = row_labels
    if header is not None:
        header_labels = header[1:] if len(header) == width + 1 else header
        if len(header_labels) != width:
            raise ConnectomeError(
                f"connectome file {where}: header row has {len(header)} labels "
                f"for {width} columns"
            )
        if labels is None:
            labels = list(header_labels)
    return values, labels, None


def _looks_like_edge_list(text: str) -> bool:
    rows = _text_rows(text)
    if not rows:
        return False
    tokens = rows[0][1].split()
    return len(tokens) == 1 and re.fullmatch(r"\d+", tokens[0]) is not None


def _parse_edge_list(text: str, where: str) -> _Raw:
    """Parse ``[N]`` then lines ``i j [w]`` (0-based) into a dense matrix."""
    rows = _text_rows(text)
    declared: int | None = None
    if rows and re.fullmatch(r"\d+", rows[0][1].split()[0]) and len(rows[0][1].split()) == 1:
        declared = int(rows[0][1])
        rows = rows[1:]
    edges: list[tuple[int, int, float, int]] = []
    for number, line in rows:
        tokens = line.replace(",", " ").replace(";", " ").split()
        if len(tokens) not in (2, 3):
            raise ConnectomeError(
                f"edge list {where}, line {number}: expected 'i j w', got {len(tokens)} values"
            )
        if not (tokens[0].isdigit() and tokens[1].isdigit()):
            raise ConnectomeError(
                f"edge list {where}, line {number}: region indices must be non-negative "
                f"integers (0-based), got {tokens[0]!r} {tokens[1]!r}"
            )
        try:
            weight = float(tokens[2]) if len(tokens) == 3 else 1.0
        except ValueError:
            raise ConnectomeError(
                f"edge list {where}, line {number}: weight {tokens[2]!r} is not a number"
            ) from None
        edges.append((int(tokens[0]), int(tokens[1]), weight, number))
    if not edges and declared is None:
        raise ConnectomeError(f"edge list {where} holds no edges")
    largest = max((max(i, j) for i, j, _, _ in edges), default=-1)
    n = declared if declared is not None else largest + 1
    weights = np.zeros((n, n))
    seen: dict[tuple[int, int], int] = {}
    for i, j, weight, number in edges:
        if i >= n or j >= n:
            raise ConnectomeError(
                f"edge list {where}, line {number}: index {max(i, j)} out of range "
                f"for {n} regions (indices are 0-based)"
            )
        if (i, j) in seen:
            raise ConnectomeError(
                f"edge list {where}, line {number}: edge {i} {j} repeats line {seen[(i, j)]}"
            )
        seen[(i, j)] = number
        weights[i, j] = weight
    return weights, None, None


def _parse_centres(text: str, where: str) -> tuple[list[str], np.ndarray]:
    labels, centres = [], []
    for number, line in _text_rows(text):
        tokens = line.split()
        if len(tokens) < 4:
            raise ConnectomeError(
                f"centres file {where}, line {number}: expected 'label x y z', got {line!r}"
            )
        try:
            centres.append([float(t) for t in tokens[1:4]])
        except ValueError:
            raise ConnectomeError(
                f"centres file {where}, line {number}: coordinates are not numbers: {line!r}"
            ) from None
        labels.append(tokens[0])
    return labels, np.array(centres, dtype=np.float64).reshape(-1, 3)


def _read_tvb_folder(files: dict[str, bytes], where: str) -> _Raw:
    """Build a connectome from the members of a TVB folder (basename → bytes)."""

    def text_of(base: str) -> str | None:
        if base in files:
            return files[base].decode("utf-8", errors="replace")
        if base + ".bz2" in files:
            return bz2.decompress(files[base + ".bz2"]).decode("utf-8", errors="replace")
        return None

    weights_text = text_of("weights.txt")
    if weights_text is None:
        raise ConnectomeError(
            f"TVB connectivity {where} has no weights.txt (found: {', '.join(sorted(files)) or 'nothing'})"
        )
    weights, labels, _ = _parse_dense_text(weights_text, f"{where}:weights.txt")
    centres = None
    centres_text = text_of("centres.txt")
    if centres_text is not None:
        labels, centres = _parse_centres(centres_text, f"{where}:centres.txt")
        if len(labels) != weights.shape[0]:
            raise ConnectomeError(
                f"TVB connectivity {where}: centres.txt lists {len(labels)} regions, "
                f"weights.txt has {weights.shape[0]} rows"
            )
    return weights, labels, centres


def _read_zip(path: Path) -> _Raw:
    try:
        with zipfile.ZipFile(path) as archive:
            wanted = ("weights.txt", "weights.txt.bz2", "centres.txt", "centres.txt.bz2")
            files = {}
            for member in archive.namelist():
                base = member.rsplit("/", 1)[-1]
                if base in wanted and base not in files:
                    files[base] = archive.read(member)
    except zipfile.BadZipFile as error:
        raise ConnectomeError(f"connectome file {path} is not a readable zip: {error}") from None
    return _read_tvb_folder(files, str(path))


def _read_directory(path: Path) -> _Raw:
    files = {}
    for base in ("weights.txt", "weights.txt.bz2", "centres.txt", "centres.txt.bz2"):
        if (path / base).is_file():
            files[base] = (path / base).read_bytes()
    if "weights.txt" not in files and "weights.txt.bz2" not in files:
        raise ConnectomeError(f"connectome directory {path} holds no weights.txt")
    return _read_tvb_folder(files, str(path))


def _read_npy(path: Path) -> _Raw:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ConnectomeError(f"cannot read connectome file {path}: {error}") from None
    return np.asarray(array), None, None


def _read_npz(path: Path, key: str | None) -> _Raw:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            if key is not None:
                if key not in keys:
                    raise ConnectomeError(
                        f"connectome file {path} has no array {key!r}; arrays: {', '.join(keys)}"
                    )
                return np.asarray(archive[key]), None, None
            if len(keys) != 1:
                raise ConnectomeError(
                    f"connectome file {path} holds {len(keys)} arrays "
                    f"({', '.join(keys) or 'none'}); choose one with key"
                )
            return np.asarray(archive[keys[0]]), None, None
    except (ValueError, OSError) as error:
        raise ConnectomeError(f"cannot read connectome file {path}: {error}") from None


def _read_mat(path: Path, key: str | None) -> _Raw:
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except NotImplementedError:
        raise ConnectomeError(
            f"connectome file {path} is a MATLAB v7.3 (HDF5) file; save it with -v7 "
            "or convert it to .npy"
        ) from None
    except (ValueError, OSError, TypeError) as error:
        raise ConnectomeError(f"cannot read connectome file {path}: {error}") from None
    arrays = {k: v for k, v in contents.items() if not k.startswith("__")}
    if key is not None:
        if key not in arrays:
            raise ConnectomeError(
                f"connectome file {path} has no variable {key!r}; variables: {', '.join(arrays)}"
            )
        return np.asarray(arrays[key]), None, None
    square = [
        k for k, v in arrays.items()
        if isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[0] == v.shape[1] > 1
        and np.issubdtype(v.dtype, np.number)
    ]
    if len(square) == 1:
        return np.asarray(arrays[square[0]]), None, None
    common = [k for k in _COMMON_MAT_KEYS if k in square]
    if len(common) == 1:
        logger.info("connectome file %s: using variable %r", path, common[0])
        return np.asarray(arrays[common[0]]), None, None
    raise ConnectomeError(
        f"connectome file {path} holds {len(square)} square matrices "
        f"({', '.join(square) or 'none'}; all variables: {', '.join(arrays) or 'none'}); "
        "choose one with key"
    )


def _read_builtin(name: str) -> _Raw:
    try:
        from importlib.resources import files

        folder = files("tvb_data") / "connectivity"
    except ModuleNotFoundError:
        raise ConnectomeError(
            f"built-in connectome {name!r} needs the package tvb-data: pip install tvb-data"
        ) from None
    n = name[len("tvb"):]
    resource = folder / f"connectivity_{n}.zip"
    if not resource.is_file():
        raise ConnectomeError(
            f"built-in connectome {name!r}: connectivity_{n}.zip is missing from the "
            "installed tvb-data; reinstall it with pip install --force-reinstall tvb-data"
        )
    with resource.open("rb") as handle:
        data = io.BytesIO(handle.read())
    with zipfile.ZipFile(data) as archive:
        files_ = {}
        for member in archive.namelist():
            base = member.rsplit("/", 1)[-1]
            if base in ("weights.txt", "weights.txt.bz2", "centres.txt", "centres.txt.bz2"):
                files_.setdefault(base, archive.read(member))
    return _read_tvb_folder(files_, name)


def _read_source(source: str | os.PathLike, key: str | None) -> tuple[_Raw, str, str]:
    """Return the raw data, the name and the resolved source string."""
    if isinstance(source, str) and source in BUILTIN_NAMES:
        return _read_builtin(source), source, source
    path = Path(source).expanduser()
    if not path.exists():
        text = os.fspath(source)
        if isinstance(source, str) and re.fullmatch(r"[A-Za-z]+\d*", text) and not path.suffix:
            raise ConnectomeError(
                f"unknown built-in connectome {text!r}; supported: {_SUPPORTED}"
            )
        raise ConnectomeError(f"connectome file not found: {path}")
    path = path.resolve()
    if path.is_dir():
        return _read_directory(path), path.name, str(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        raw = _read_npy(path)
    elif suffix == ".npz":
        raw = _read_npz(path, key)
    elif suffix == ".mat":
        raw = _read_mat(path, key)
    elif suffix == ".zip":
        raw = _read_zip(path)
    elif suffix in _EDGE_LIST_SUFFIXES or suffix in _DENSE_TEXT_SUFFIXES:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as error:
            raise ConnectomeError(f"cannot read connectome file {path}: {error}") from None
        if suffix in _EDGE_LIST_SUFFIXES or (suffix == ".txt" and _looks_like_edge_list(text)):
            raw = _parse_edge_list(text, str(path))
        else:
            raw = _parse_dense_text(text, str(path))
    else:
        raise ConnectomeError(
            f"unsupported connectome file {path} (extension {suffix or 'none'}); "
            f"supported: {_SUPPORTED}"
        )
    if key is not None and suffix not in (".npz", ".mat"):
        logger.warning("key=%r ignored for connectome file %s", key, path)
    where = f"{path}[{key}]" if key is not None and suffix in (".npz", ".mat") else str(path)
    return raw, path.stem, where


# --------------------------------------------------------------------------- #
# public functions
# --------------------------------------------------------------------------- #


def _resolve_regions(
    drop: Sequence[int | str], labels: Sequence[str], where: str
) -> list[int]:
    n = len(labels)
    indices = []
    for item in drop:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            index = int(item)
            if not 0 <= index < n:
                raise ConnectomeError(
                    f"cannot drop region {index} from connectome {where}: "
                    f"indices run 0..{n - 1}"
                )
        elif isinstance(item, str):
            matches = [i for i, label in enumerate(labels) if label == item]
            if not matches:
                raise ConnectomeError(
                    f"cannot drop region {item!r} from connectome {where}: no such label"
                )
            if len(matches) > 1:
                raise ConnectomeError(
                    f"cannot drop region {item!r} from connectome {where}: label is not "
                    f"unique (indices {matches}); give the index"
                )
            index = matches[0]
        else:
            raise ConnectomeError(
                f"drop_regions entries must be indices or labels, got {item!r}"
            )
        if index not in indices:
            indices.append(index)
    return sorted(indices)


def _drop(weights, labels, centres, indices):
    keep = np.setdiff1d(np.arange(len(labels)), indices)
    weights = weights[np.ix_(keep, keep)]
    labels = [labels[i] for i in keep]
    centres = None if centres is None else centres[keep]
    return weights, labels, centres


def load_connectome(
    source: str | os.PathLike,
    *,
    key: str | None = None,
    drop_self_loops: bool = False,
    drop_regions: Sequence[int | str] = (),
    drop_zero_rows: bool = False,
    allow_zero_rows: bool = False,
    symmetrize: bool | str = False,
) -> Connectome:
    """Load and check a connectome from a built-in name or a file.

    Parameters
    ----------
    source : str or os.PathLike
        A built-in name (``tvb66``, ``tvb68``, ``tvb76``, ``tvb96``,
        ``tvb192``) or a path (see the module docstring for formats).
    key : str, optional
        Array name inside a ``.npz`` or variable name inside a ``.mat`` file.
    drop_self_loops : bool, default False
        Set the diagonal to zero. Self-loops are kept otherwise.
    drop_regions : sequence of int or str, default ()
        Regions to remove (0-based indices of the loaded matrix, or labels).
    drop_zero_rows : bool, default False
        Remove regions whose row is all zero (repeated until none is left,
        since removing a region can empty another row).
    allow_zero_rows : bool, default False
        Keep all-zero rows (the result cannot be row-normalised).
    symmetrize : bool or {"max", "mean", "sum"}, default False
        Make ``W`` symmetric: ``"max"`` (or ``True``) takes ``max(W, W^T)``
        (right for a list of each undirected edge once, and no change to a
        symmetric matrix); ``"mean"`` ``(W + W^T) / 2``; ``"sum"`` ``W + W^T``.

    Returns
    -------
    Connectome
        With every drop recorded in ``transformations``.

    Raises
    ------
    ConnectomeError
        Missing file, unknown name or extension, unreadable, non-square or
        ragged matrix, NaN / inf or negative weights, all-zero rows (unless
        dropped or allowed), unknown regions in ``drop_regions``, or
        ``tvb-data`` not installed for a built-in name.

    Notes
    -----
    Order of operations: ``symmetrize``, ``drop_regions``, then
    ``drop_self_loops``, then all-zero rows are dropped or refused.

    Examples
    --------
    >>> conn = load_connectome("tvb76", drop_regions=["rCC", "lCC"])
    >>> conn.n_regions
    74
    """
    try:
        (weights, labels, centres), name, where = _read_source(source, key)
    except ConnectomeError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OSError, EOFError, UnicodeDecodeError,
            NotImplementedError, zipfile.BadZipFile) as error:  # a damaged or foreign file
        text = str(error).splitlines()[0] if str(error) else ""
        raise ConnectomeError(f"cannot read connectome {os.fspath(source)}: {type(error).__name__}"
                              f"{': ' + text if text else ''}") from None
    weights = np.asarray(weights)
    if not (np.issubdtype(weights.dtype, np.number) or weights.dtype == bool):
        raise ConnectomeError(
            f"connectome {where} is not numeric (dtype {weights.dtype})"
        )
    if np.iscomplexobj(weights):
        raise ConnectomeError(f"connectome {where} has complex weights")
    weights = np.array(weights, dtype=np.float64)
    _check_matrix(weights, where)
    n = weights.shape[0]
    if labels is None:
        labels = [str(i) for i in range(n)]
    labels = [str(label) for label in labels]
    if len(labels) != n:
        raise ConnectomeError(f"connectome {where} has {n} regions but {len(labels)} labels")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        logger.warning("connectome %s has repeated labels: %s", where, ", ".join(duplicates))
    transformations: list[str] = []

    if symmetrize:
        how = "max" if symmetrize is True else symmetrize
        if how not in SYMMETRIZE:
            raise ConnectomeError(f"symmetrize must be true, false or one of {', '.join(map(repr, SYMMETRIZE))}, "
                                  f"got {symmetrize!r}")
        changed = int(np.count_nonzero(weights != weights.T))
        weights = {"max": np.maximum(weights, weights.T), "mean": 0.5 * (weights + weights.T),
                   "sum": weights + weights.T}[how]
        transformations.append(f"symmetrized as {SYMMETRIZE[how]} ({changed} asymmetric entries)")

    if drop_regions:
        if isinstance(drop_regions, (str, int)):
            drop_regions = [drop_regions]
        indices = _resolve_regions(drop_regions, labels, where)
        listed = ", ".join(f"{i} {labels[i]!r}" for i in indices)
        weights, labels, centres = _drop(weights, labels, centres, indices)
        transformations.append(f"dropped regions [{listed}]")

    if drop_self_loops:
        count = int(np.count_nonzero(np.diag(weights)))
        weights = weights.copy()
        np.fill_diagonal(weights, 0.0)
        transformations.append(f"dropped self-loops ({count} diagonal entries set to 0)")

    zero = np.flatnonzero(~np.any(weights != 0, axis=1))
    if zero.size and drop_zero_rows:
        while zero.size:
            listed = ", ".join(f"{int(i)} {labels[int(i)]!r}" for i in zero)
            weights, labels, centres = _drop(weights, labels, centres, zero)
            transformations.append(f"dropped all-zero rows [{listed}]")
            zero = np.flatnonzero(~np.any(weights != 0, axis=1))
        if weights.shape[0] == 0:
            raise ConnectomeError(f"connectome {where} has no region left after dropping zero rows")
    elif zero.size and not allow_zero_rows:
        raise ConnectomeError(_zero_rows_message(where, zero, labels, weights))

    connectome = Connectome(
        weights=weights,
        labels=tuple(labels),
        centres=centres,
        name=name,
        source=where,
        transformations=tuple(transformations),
    )
    logger.debug(
        "loaded connectome %s: %d regions, sha256 %s", where, connectome.n_regions,
        connectome.sha256()[:12],
    )
    return connectome


def describe_connectome(source: str | os.PathLike, *, key: str | None = None, drop_self_loops: bool = False,
                        drop_regions: Sequence[int | str] = (), drop_zero_rows: bool = False,
                        symmetrize: bool | str = False) -> str:
    """Describe a connectome in a few lines of text (``bifnet connectome info``).

    Parameters
    ----------
    source : str or os.PathLike
        As for :func:`load_connectome`.
    key, drop_self_loops, drop_regions, drop_zero_rows, symmetrize
        As for :func:`load_connectome` (the run file's ``connectome_options``).

    Returns
    -------
    str
        Lines: name and source, regions, symmetry, self-loops, all-zero rows
        (with a hint when they look like an upper-triangular or 1-based edge
        list), weight range, density, the sha256 of the weights and of the
        labels, and the spectra of the row-normalised matrix ``P`` (additive
        coupling; not defined with all-zero rows) and of the graph Laplacian
        ``L = D - W`` (diffusive coupling).

    Raises
    ------
    ConnectomeError
        If the connectome cannot be loaded.

    Examples
    --------
    >>> print(describe_connectome("tvb68"))  # doctest: +ELLIPSIS
    connectome: tvb68 ...
    """
    connectome = load_connectome(source, key=key, allow_zero_rows=True, drop_self_loops=drop_self_loops,
                                 drop_regions=drop_regions, drop_zero_rows=drop_zero_rows, symmetrize=symmetrize)
    zero = connectome.zero_rows
    weights = connectome.weights
    n = connectome.n_regions
    nonzero = weights[weights != 0]
    off_diagonal = np.count_nonzero(weights[~np.eye(n, dtype=bool)])
    density = off_diagonal / (n * (n - 1)) if n > 1 else 0.0
    lines = [
        f"connectome: {connectome.name} (source: {connectome.source})",
        f"regions: {n}",
        f"centres: {'yes' if connectome.centres is not None else 'no'}",
        f"symmetric: {'yes' if connectome.is_symmetric else 'no'}",
        f"self-loops: {connectome.self_loop_count}",
        ("zero-sum rows: none" if not zero else
         "zero-sum rows: " + _zero_rows_message(connectome.source, zero, connectome.labels, weights)
         .split(" has ", 1)[1]),
        f"weights: min nonzero {nonzero.min():.6g}, max {weights.max():.6g}"
        if nonzero.size else "weights: all zero",
        f"density: {density:.4f} ({off_diagonal} nonzero off-diagonal entries)",
        f"sha256 of the weights: {connectome.weights_sha256()}",
        f"sha256 of the labels: {connectome.labels_sha256()}",
    ]
    lines += [f"transformation: {t}" for t in connectome.transformations]
    if not zero:
        values = connectome.row_normalised().spectrum().eigenvalues
        real = np.sort(values.real)[::-1]
        lines += [
            "spectrum of P = D^-1 W (additive coupling): "
            + ("real" if not np.iscomplexobj(values) else "complex"),
            f"  Re Λ range: [{real.min():.10g}, {real.max():.10g}]",
            f"  max |Im Λ|: {np.max(np.abs(values.imag)):.6g}",
            f"  second-largest Re Λ: {real[1]:.10g}" if n > 1 else "  second-largest Re Λ: n/a",
        ]
    else:
        lines.append("spectrum of P = D^-1 W (additive coupling): not defined (all-zero rows)")
    laplacian = CouplingOperator(connectome=connectome, scheme="diffusive").spectrum().eigenvalues
    lines += [
        "spectrum of L = D - W (diffusive coupling): "
        + ("real" if not np.iscomplexobj(laplacian) else "complex"),
        f"  Re Λ range: [{np.min(laplacian.real) + 0.0:.10g}, {np.max(laplacian.real) + 0.0:.10g}]",
        f"  max |Im Λ|: {np.max(np.abs(laplacian.imag)):.6g}",
        "  second-smallest Re Λ (the algebraic connectivity of a symmetric W): "
        + (f"{np.sort(laplacian.real)[1] + 0.0:.10g}" if n > 1 else "n/a"),
    ]
    return "\n".join(lines)
