"""Template of a model's network kernels (read as text, never imported).

:func:`bifnet.network._kernels.network_module` sets the constants below,
replaces the placeholders between the ``GENERATED`` markers with the model's
node kernels and imports the result from the kernel cache
(:func:`bifnet.codegen.kernel_module`), so every ``@jit`` function below is
compiled once per model and then loaded from numba's disk cache.

The loops call ``node_rhs``/``node_jac`` and each other directly (no
functions passed as arguments): numba cannot cache a function that takes a
function argument, and direct calls let LLVM inline the node kernels.

Conventions: the flat state ``y`` is node-major (``N * N_VAR``); ``args``
is ``(p, W)`` with ``W`` the coupling matrix ``G`` of the scheme (the
row-normalised weights for additive coupling, ``W - D = -L`` for diffusive
coupling): channel ``k`` receives ``C[i, k] = s_k sum_j G_ij y[j, CI[k]]``;
a tangent block ``V`` is ``D x k`` (C-contiguous).
"""
# ruff: noqa
import math

import numba
import numpy

N_VAR = 6  # variables per node
N_CH = 1  # coupling channels
CI = (0,)  # index of each channel's coupled variable
STATUS_OK = 0
STATUS_NONFINITE = 1
STATUS_STEP_TOO_SMALL = 2
ULP = 2.220446049250313e-16  # spacing of doubles at 1
TINY = 2.2250738585072014e-308

jit = numba.njit(cache=True, nogil=True)
jit_contract = numba.njit(cache=True, nogil=True, fastmath={"contract"})
jit_reassoc = numba.njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
# ---- BEGIN GENERATED ----


def node_rhs(x, p, C, i, out):
    raise NotImplementedError


def strengths(p, s):
    raise NotImplementedError


def node_jac(x, p, C, i, J, dfdC):
    raise NotImplementedError


def tangent_first(Js, gs, eps, V, T, A, U, WT, a, b):
    raise NotImplementedError


tangent_middle = tangent_last = tangent_first


def tangent_apply(Js, gs, sv, X, WT, K):
    raise NotImplementedError


def nodes_rhs(y, p, C, out):
    raise NotImplementedError
# ---- END GENERATED ----
np = numpy


@jit
def copy(src, dst):
    # an explicit loop: slice assignment (dst[:] = src) costs seconds of compilation
    for i in range(src.shape[0]):
        dst[i] = src[i]


@jit_reassoc
def coupling_input(y, W, p, C, yc):
    # per channel: contiguous copy of the coupled variable, then SIMD dot products (re-associated sums)
    N = W.shape[0]
    s = np.empty(N_CH)
    strengths(p, s)
    for k in range(N_CH):
        ck = CI[k]
        for j in range(N):
            yc[j] = y[j * N_VAR + ck]
        sk = s[k]
        for i in range(N):
            row = W[i]
            acc = 0.0
            for j in range(N):
                acc += row[j] * yc[j]
            C[i, k] = sk * acc


@jit
def rhs(y, args, out):
    p = args[0]
    W = args[1]
    N = W.shape[0]
    C = np.empty((N, N_CH))
    yc = np.empty(N)
    coupling_input(y, W, p, C, yc)
    nodes_rhs(y, p, C, out)


@jit
def tangent(y, V, args, dy, dV):
    p = args[0]
    W = args[1]
    N = W.shape[0]
    k = V.shape[1]
    n = N_VAR
    s = np.empty(N_CH)
    strengths(p, s)
    C = np.empty((N, N_CH))
    coupling_input(y, W, p, C, np.empty(N))
    # W @ Vc per channel as a loop: faster than numba's np.dot at these sizes and skips zero weights
    WV = np.zeros((N_CH, N, k))
    for ch in range(N_CH):
        ck = CI[ch]
        for i in range(N):
            for j in range(N):
                w = W[i, j]
                if w != 0.0:
                    for m in range(k):
                        WV[ch, i, m] += w * V[j * n + ck, m]
    J = np.empty((n, n))
    g = np.empty((n, N_CH))
    for i in range(N):
        xi = y[i * n:(i + 1) * n]
        node_rhs(xi, p, C, i, dy[i * n:(i + 1) * n])
        node_jac(xi, p, C, i, J, g)
        base = i * n
        for a in range(n):
            row = dV[base + a]
            for m in range(k):
                row[m] = 0.0
            for ch in range(N_CH):
                ga = g[a, ch] * s[ch]
                if ga != 0.0:
                    for m in range(k):
                        row[m] += ga * WV[ch, i, m]
            for b in range(n):
                jab = J[a, b]
                if jab != 0.0:
                    vb = V[base + b]
                    for m in range(k):
                        row[m] += jab * vb[m]


@jit
def node_fields(y, p, W, C, yc, F, Js, gs):
    """Network inputs ``C`` (N x N_CH), vector field ``F`` (flat) and node Jacobians ``Js``, ``gs`` at ``y``."""
    coupling_input(y, W, p, C, yc)
    for i in range(W.shape[0]):
        x = y[i * N_VAR:(i + 1) * N_VAR]
        node_rhs(x, p, C, i, F[i * N_VAR:(i + 1) * N_VAR])
        node_jac(x, p, C, i, Js[i], gs[i])


@jit
def node_jacobians(y, p, W, Js, gs):
    N = W.shape[0]
    node_fields(y, p, W, np.empty((N, N_CH)), np.empty(N), np.empty(y.shape[0]), Js, gs)


@jit
def rk4_steps(args, y, prev, dt, nsteps, step0, stride, sigma, noise, out):
    """Advance ``y`` in place by ``nsteps`` RK4 steps (plus optional
    Euler–Maruyama noise ``sigma * sqrt(dt) * noise[s]``); record every
    ``stride``-th global step into ``out``; ``prev`` holds the state before
    the last step. Returns ``(status, step)``."""
    D = y.shape[0]
    k1 = np.empty(D)
    k2 = np.empty(D)
    k3 = np.empty(D)
    k4 = np.empty(D)
    tmp = np.empty(D)
    use_noise = noise.shape[0] > 0
    sq = math.sqrt(dt)
    h = 0.5 * dt
    w = dt / 6.0
    for s in range(nsteps):
        copy(y, prev)
        rhs(y, args, k1)
        for i in range(D):
            tmp[i] = y[i] + h * k1[i]
        rhs(tmp, args, k2)
        for i in range(D):
            tmp[i] = y[i] + h * k2[i]
        rhs(tmp, args, k3)
        for i in range(D):
            tmp[i] = y[i] + dt * k3[i]
        rhs(tmp, args, k4)
        bad = False
        for i in range(D):
            y[i] += w * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
            if use_noise:
                y[i] += sigma[i] * sq * noise[s, i]
            if not math.isfinite(y[i]):
                bad = True
        g = step0 + s + 1
        if bad:
            return STATUS_NONFINITE, g
        if g % stride == 0:
            r = g // stride
            if r < out.shape[0]:
                copy(y, out[r])
    return STATUS_OK, step0 + nsteps


@jit
def rms_norm(e, scale):
    acc = 0.0
    for i in range(e.shape[0]):
        v = e[i] / scale[i]
        acc += v * v
    return math.sqrt(acc / e.shape[0])


@jit_contract
def stage_input(y, K, s, coef, hh, target):
    """``target = y + hh sum_{r<s} coef[r] K[r]``: one loop per stage with the terms written out
    (few arrays, so that LLVM vectorises it); the zero weight of stage 2 in the solution skipped."""
    D = y.shape[0]
    c0 = hh * coef[0]
    if s == 1:
        for i in range(D):
            target[i] = y[i] + c0 * K[0, i]
        return
    c1 = hh * coef[1]
    if s == 2:
        for i in range(D):
            target[i] = y[i] + c0 * K[0, i] + c1 * K[1, i]
        return
    c2 = hh * coef[2]
    if s == 3:
        for i in range(D):
            target[i] = y[i] + c0 * K[0, i] + c1 * K[1, i] + c2 * K[2, i]
        return
    c3 = hh * coef[3]
    if s == 4:
        for i in range(D):
            target[i] = y[i] + c0 * K[0, i] + c1 * K[1, i] + c2 * K[2, i] + c3 * K[3, i]
        return
    c4 = hh * coef[4]
    if s == 5:
        for i in range(D):
            target[i] = y[i] + c0 * K[0, i] + c1 * K[1, i] + c2 * K[2, i] + c3 * K[3, i] + c4 * K[4, i]
        return
    c5 = hh * coef[5]
    if c1 == 0.0:
        for i in range(D):
            target[i] = y[i] + c0 * K[0, i] + c2 * K[2, i] + c3 * K[3, i] + c4 * K[4, i] + c5 * K[5, i]
    else:
        for i in range(D):
            target[i] = (y[i] + c0 * K[0, i] + c1 * K[1, i] + c2 * K[2, i] + c3 * K[3, i] + c4 * K[4, i]
                         + c5 * K[5, i])


@jit_reassoc
def error_norm(y, ynew, K, E, hh, rtol, atol):
    """scipy's RMS norm of the embedded error ``hh sum_r E[r] K[r]`` with the scale
    ``atol + rtol max(|y|, |ynew|)``, in one loop; ``inf`` if it or ``ynew`` is not finite."""
    D = y.shape[0]
    e0, e1, e2, e3, e4, e5, e6 = E[0], E[1], E[2], E[3], E[4], E[5], E[6]
    total = 0.0
    probe = 0.0  # stays 0 unless ynew holds an inf or a nan
    for i in range(D):
        e = hh * (e0 * K[0, i] + e1 * K[1, i] + e2 * K[2, i] + e3 * K[3, i] + e4 * K[4, i] + e5 * K[5, i] + e6 * K[6, i])
        v = e / (atol + rtol * max(abs(y[i]), abs(ynew[i])))
        total += v * v
        probe += 0.0 * ynew[i]
    en = math.sqrt(total / D)
    if not (math.isfinite(en) and probe == 0.0):
        return math.inf
    return en


@jit
def dopri5(args, y, t0, t1, rtol, atol, h0, max_steps, t_out, out, A, B, Cc, E, P):
    """Dormand–Prince 5(4) with scipy's step control and dense output at
    ``t_out`` (ascending, within ``[t0, t1]``; ``t_out[0] == t0`` is
    written by the caller). ``y`` is advanced in place; on failure it
    holds the offending trial state. Returns
    ``(status, t, nfev, n_accepted, n_rejected)``."""
    D = y.shape[0]
    K = np.empty((7, D))
    ynew = np.empty(D)
    tmp = np.empty(D)
    rhs(y, args, K[0])
    nfev = 1
    t = t0
    h = h0
    iout = 1
    nacc = 0
    nrej = 0
    nout = t_out.shape[0]
    while iout < nout and t_out[iout] <= t:
        iout += 1
    while t < t1:
        if nacc + nrej >= max_steps:
            return STATUS_STEP_TOO_SMALL, t, nfev, nacc, nrej
        min_step = 10.0 * ULP * max(abs(t), TINY)  # scipy: 10 |nextafter(t, inf) - t|
        if h < min_step:
            h = min_step
        rejected = False
        while True:
            if h < min_step:
                # report the last trial state if it was not finite
                for i in range(D):
                    if not math.isfinite(ynew[i]):
                        copy(ynew, y)
                        return STATUS_NONFINITE, t, nfev, nacc, nrej
                return STATUS_STEP_TOO_SMALL, t, nfev, nacc, nrej
            tn = t + h
            if tn > t1:
                tn = t1
            hh = tn - t
            # stages 2..6 (inputs from A) and f at the new state (weights B) share one call site
            for s in range(1, 7):
                target = tmp if s < 6 else ynew
                stage_input(y, K, s, A[s] if s < 6 else B, hh, target)
                rhs(target, args, K[s])
            # K[6] = f(ynew) is the next step's K[0] (first same as last)
            nfev += 6
            en = error_norm(y, ynew, K, E, hh, rtol, atol)
            finite = math.isfinite(en)
            if en < 1.0:
                if en == 0.0:
                    fac = 10.0
                else:
                    fac = min(10.0, 0.9 * en ** (-0.2))
                if rejected:
                    fac = min(1.0, fac)
                hnext = hh * fac
                break
            else:
                if finite:
                    fac = max(0.2, 0.9 * en ** (-0.2))
                else:
                    fac = 0.2
                h = hh * fac
                rejected = True
                nrej += 1
        # dense output in (t, tn]
        while iout < nout and t_out[iout] <= tn:
            th = (t_out[iout] - t) / hh
            for i in range(D):
                acc = 0.0
                for r in range(7):
                    q = th * (P[r, 0] + th * (P[r, 1] + th * (P[r, 2] + th * P[r, 3])))
                    acc += K[r, i] * q
                out[iout, i] = y[i] + hh * acc
            iout += 1
        copy(ynew, y)
        copy(K[6], K[0])
        t = tn
        nacc += 1
        h = hnext
    return STATUS_OK, t, nfev, nacc, nrej
