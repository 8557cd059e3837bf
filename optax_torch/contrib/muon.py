"""Muon: momentum orthogonalized by Newton-Schulz iterations."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

from optax_torch import _validate, numerics, tree
from optax_torch import transforms as T
from optax_torch.alias import adamw
from optax_torch.base import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Params,
    ScalarOrSchedule,
    Updates,
    init_empty_state,
)
from optax_torch.combine import chain, partition

__all__ = [
    "MuonDimensionNumbers",
    "MuonMomentumState",
    "MuonState",
    "muon",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_shape",
]

Num = float | torch.Tensor

_PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
_DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
_DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
_NS_COEFFS_PRESETS: dict[str, Any] = {"standard": _DEFAULT_NS_COEFFS, "dion": _DION_NS_COEFFS}


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight form the matrix that Muon orthogonalizes.

    The weight is read as :math:`x W = y`: ``reduction_axis`` (the input axes, default 0) and
    ``output_axis`` (default 1), each an axis or a sequence of axes. All other axes are batch
    axes: each slice is orthogonalized independently.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


class MuonState(NamedTuple):
    """State of :func:`scale_by_muon`."""

    count: torch.Tensor  # 0-d int32
    mu: Updates
    ns_coeffs: torch.Tensor  # (3,) or (n, 3) float64


class MuonMomentumState(NamedTuple):
    """State of :func:`scale_by_muon` with ``bias_correction=False`` (``torch.optim.Muon``'s:
    the momentum only)."""

    mu: Updates


WeightDimNumOrFn = MuonDimensionNumbers | Params | Callable[[Params], Params | None]


class _Spec:
    """A dimension-numbers leaf hidden from pytree flattening (MuonDimensionNumbers is a
    NamedTuple, which pytrees would otherwise walk into)."""

    __slots__ = ("dim_nums",)

    def __init__(self, dim_nums: MuonDimensionNumbers):
        self.dim_nums = dim_nums


def _is_spec_leaf(x: Any) -> bool:
    return x is None or isinstance(x, MuonDimensionNumbers)


def _flat_specs(dim_nums: Any, like: Updates) -> list[MuonDimensionNumbers | None]:
    """One dimension-numbers entry (or ``None``) per leaf of ``like``; ``dim_nums`` is a
    ``MuonDimensionNumbers``, or a tree of them (and ``None``) that is a prefix of ``like``."""
    import torch.utils._pytree as _py

    wrapped = _py.tree_map(
        lambda d: None if d is None else _Spec(d), dim_nums, is_leaf=_is_spec_leaf
    )
    return [None if s is None else s.dim_nums for s in tree.broadcast_prefix(wrapped, like)]


SpecsFn = Callable[[Updates], list[MuonDimensionNumbers | None]]


def _specs_fn(dim_nums: WeightDimNumOrFn | None) -> SpecsFn:
    """``updates -> [dimension numbers or None per leaf]`` for a ``weight_dimension_numbers``."""
    if dim_nums is None:
        return lambda u: [None if x is None else MuonDimensionNumbers() for x in tree.flatten(u)[0]]
    if callable(dim_nums) and not isinstance(dim_nums, MuonDimensionNumbers):
        fn = dim_nums
        return lambda u: _flat_specs(fn(u), u)
    return lambda u: _flat_specs(dim_nums, u)


def _axes(x: torch.Tensor, dim_nums: MuonDimensionNumbers) -> tuple[tuple[int, ...], ...]:
    def norm(a: Sequence[int] | int) -> tuple[int, ...]:
        return tuple(ax % x.ndim for ax in ((a,) if isinstance(a, int) else a))

    return norm(dim_nums.reduction_axis), norm(dim_nums.output_axis)


def _reshape_fns(x: torch.Tensor, dim_nums: MuonDimensionNumbers):
    """``(to_3d, from_3d)``: ``x`` as a (batch, reduction, output) stack of matrices and back."""
    if x.ndim < 2:
        raise ValueError(f"Muon optimized parameters must have rank >= 2, got x.ndim={x.ndim}")
    red, out = _axes(x, dim_nums)
    if set(red) & set(out):
        raise ValueError(
            "Normalized reduction axes and output axes must be disjoint, got "
            f"{red} and {out}. Originally dim_nums={dim_nums} and x.shape={tuple(x.shape)}"
        )
    batch = tuple(sorted(set(range(x.ndim)) - set(red) - set(out)))
    perm = batch + red + out
    inv = tuple(sorted(range(x.ndim), key=lambda i: perm[i]))
    shape = tuple(x.shape[a] for a in perm)
    flat = (
        math.prod([x.shape[a] for a in batch]),
        math.prod([x.shape[a] for a in red]),
        math.prod([x.shape[a] for a in out]),
    )
    return (lambda y: y.permute(perm).reshape(flat)), (lambda y: y.reshape(shape).permute(inv))


def _ns_step(x: torch.Tensor, c: torch.Tensor, first: str) -> torch.Tensor:
    """One Newton-Schulz step on a stack of matrices, optionally with the first step's
    preconditioning (``"aol"`` or ``"schatten"``)."""
    if first == "schatten":
        a = x @ x.mT
        s = torch.rsqrt(torch.clamp(torch.linalg.matrix_norm(a), min=1e-8))[..., None, None]
        x, a = x * s, a * s**2
    else:
        a = x @ x.mH
        if first == "aol":
            s = torch.rsqrt(torch.clamp(a.abs().sum(dim=-1), min=1e-8))[..., None]
            x, a = x * s, a * s * s.mT
    b = c[1] * a + c[2] * (a @ a)
    return c[0] * x + b @ x


def _normalize(
    m: torch.Tensor,
    preconditioning: str,
    eps: Num,
    eps_floor: bool,
    safety_factor: Num = 1.0,
) -> torch.Tensor:
    """``m`` divided by its Frobenius or spectral norm (per matrix of the stack, times
    ``safety_factor``) plus ``eps``, or by ``max(norm, eps)`` with ``eps_floor``; other
    preconditionings: ``m`` unchanged."""
    if preconditioning == "frobenius":
        n = torch.linalg.matrix_norm(m)[..., None, None] if m.ndim > 2 else m.norm()
    elif preconditioning == "spectral":
        low = m.dtype in (torch.bfloat16, torch.float16)  # no low-precision SVD
        n = torch.linalg.matrix_norm(m.float() if low else m, ord=2)[..., None, None].to(m.dtype)
    else:
        return m
    if not (isinstance(safety_factor, float | int) and safety_factor == 1):
        n = n * safety_factor
    return m / (n.clamp(min=eps) if eps_floor else n + eps)


def _scaled_eps(m: torch.Tensor, eps: Num) -> Num:
    """``eps * sqrt(cols / rows)`` of ``m``'s (last two axes) matrices (muP damping)."""
    return eps * (m.shape[-1] / m.shape[-2]) ** 0.5


def _ns_fused(
    m: torch.Tensor,
    rows: list[list[float]],
    preconditioning: str,
    eps: Num,
    eps_floor: bool,
    safety_factor: Num = 1.0,
    scale_eps: bool = False,
) -> torch.Tensor:
    """Newton-Schulz on one matrix (already in the iteration dtype), each step as two fused
    ``addmm`` (``torch.optim.Muon``'s operations, in its order)."""
    if scale_eps:
        eps, eps_floor = _scaled_eps(m, eps), False
    transposed = m.shape[0] > m.shape[1]
    if transposed:
        m = m.T
    m = _normalize(m, preconditioning, eps, eps_floor, safety_factor)
    first = preconditioning if preconditioning in ("aol", "schatten") else "none"
    for i, (a, b, c) in enumerate(rows):
        if i == 0 and first != "none":
            m = _ns_step(m, torch.tensor([a, b, c], dtype=m.dtype, device=m.device), first)
            continue
        gram = m @ m.mH
        gram_update = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        m = torch.addmm(m, gram_update, m, beta=a)
    return m.T if transposed else m


def _ns_fused_batched(
    m: torch.Tensor,
    rows: list[list[float]],
    preconditioning: str,
    eps: Num,
    eps_floor: bool,
    safety_factor: Num = 1.0,
    scale_eps: bool = False,
) -> torch.Tensor:
    """:func:`_ns_fused` on a stack of matrices, with batched products (``torch.baddbmm`` on a
    contiguous stack: timm's operations, in its order)."""
    if scale_eps:
        eps, eps_floor = _scaled_eps(m, eps), False
    transposed = m.shape[1] > m.shape[2]
    if transposed:
        m = m.mT
    m = _normalize(m, preconditioning, eps, eps_floor, safety_factor).contiguous()
    first = preconditioning if preconditioning in ("aol", "schatten") else "none"
    for i, (a, b, c) in enumerate(rows):
        if i == 0 and first != "none":
            m = _ns_step(m, torch.tensor([a, b, c], dtype=m.dtype, device=m.device), first)
            continue
        gram = torch.bmm(m, m.mH)
        gram_update = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
        m = torch.baddbmm(m, gram_update, m, beta=a)
    return m.mT if transposed else m


def _orthogonalize(
    x: torch.Tensor,
    ns_coeffs: torch.Tensor,
    ns_steps: int,
    preconditioning: str,
    eps: Num,
    dim_nums: MuonDimensionNumbers,
    ns_dtype: torch.dtype | None = None,
    fused: bool = False,
    eps_floor: bool = False,
    safety_factor: Num = 1.0,
    scale_eps: bool = False,
) -> torch.Tensor:
    """Newton-Schulz orthogonalization of each matrix slice of ``x`` (see :func:`scale_by_muon`)."""
    to_3d, from_3d = _reshape_fns(x, dim_nums)
    m = to_3d(x)
    if ns_dtype is not None:
        m = m.to(ns_dtype)
    if fused:
        coeffs = ns_coeffs.tolist()
        rows = [coeffs] * ns_steps if ns_coeffs.ndim == 1 else coeffs
        if m.shape[0] > 1:  # a stack: batched products (timm's conv_mode="batched")
            m = _ns_fused_batched(
                m, rows, preconditioning, eps, eps_floor, safety_factor, scale_eps
            )
            return from_3d(m).to(x.dtype)
        m = _ns_fused(m[0], rows, preconditioning, eps, eps_floor, safety_factor, scale_eps)
        return from_3d(m[None]).to(x.dtype)
    if scale_eps:
        eps, eps_floor = _scaled_eps(m, eps), False
    transposed = m.shape[1] > m.shape[2]
    if transposed:
        m = m.mT
    m = _normalize(m, preconditioning, eps, eps_floor, safety_factor)
    coeffs = ns_coeffs.to(m.dtype)
    first = preconditioning if preconditioning in ("aol", "schatten") else "none"
    rows = [coeffs] * ns_steps if coeffs.ndim == 1 else list(coeffs.unbind(0))
    for i, c in enumerate(rows):
        m = _ns_step(m, c, first if i == 0 else "none")
    if transposed:
        m = m.mT
    return from_3d(m).to(x.dtype)


def orthogonalize_via_newton_schulz(
    x: torch.Tensor,
    ns_coeffs: Any = _DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: Num = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
    *,
    ns_dtype: torch.dtype | None = None,
    fused: bool = False,
    eps_floor: bool = False,
    safety_factor: Num = 1.0,
    scale_eps: bool = False,
) -> torch.Tensor:
    r"""Orthogonalizes ``x`` (each matrix slice) by Newton-Schulz iterations.

    :math:`X_0 = x / (\|x\| + \epsilon)` (Frobenius norm; see ``preconditioning``), then
    :math:`X_{i+1} = a X_i + (b A_i + c A_i^2) X_i` with :math:`A_i = X_i X_i^H`, on the matrix or
    its transpose, whichever has fewer rows: :math:`X_n pprox U V^T` for :math:`x = U S V^T`
    (with the default quintic coefficients the singular values land in about ``[0.7, 1.2]``).
    The function used by :func:`scale_by_muon`.

    Args:
      x: a matrix, or a tensor whose matrices ``dimension_numbers`` names.
      ns_coeffs: :math:`(a, b, c)`, or one triple per step (shape ``(n, 3)``).
      ns_steps: number of iterations (with per-step coefficients: ignored, must be ``>= n``).
      preconditioning: ``"frobenius"`` (default), ``"spectral"``, ``"aol"`` or ``"schatten"``.
      eps: added to the norm (or its floor, with ``eps_floor``), default ``1e-8``.
      dimension_numbers: the reduction and output axes (default: a 2-d matrix, axes 0 and 1).
      ns_dtype: dtype of the iterations (``x`` is cast before the normalization, the result cast
        back to ``x``'s dtype); ``torch.optim.Muon`` uses ``torch.bfloat16``. Default ``None``:
        ``x``'s dtype.
      fused: each step as two fused multiply-adds, :math:`A_i' = b A_i + c A_i A_i` and
        :math:`X_{i+1} = a X_i + A_i' X_i` (``torch.addmm``, one matrix at a time, one rounding
        per product in low precision: ``torch.optim.Muon``'s operations in its order). Default
        ``False``: optax's order.
      eps_floor: divide by :math:`\max(\|x\|, \epsilon)` (``torch.optim.Muon``) instead of
        :math:`\|x\| + \epsilon`. Default ``False``.
      safety_factor: *extension* (timm's): the norm is multiplied by it before ``eps`` is added
        (or floors it), default ``1.0``.
      scale_eps: *extension* (timm's muP damping): ``eps`` times :math:`\sqrt{n_{cols} /
        n_{rows}}` of each matrix (before any transposition), always added to the norm (even
        with ``eps_floor``). Default ``False``.

    Example::

        >>> o = orthogonalize_via_newton_schulz(torch.randn(4, 6))
        >>> torch.linalg.svdvals(o)  # all near 1
    """
    if isinstance(ns_steps, torch.Tensor):
        ns_steps = int(ns_steps)
    _validate.check_non_negative("ns_steps", ns_steps)
    _validate.check_non_negative("eps", eps)
    if preconditioning not in _PRECONDITIONINGS:
        raise ValueError(f"Unknown preconditioning {preconditioning!r}")
    coeffs = _check_ns(ns_coeffs, ns_steps)
    dims = MuonDimensionNumbers() if dimension_numbers is None else dimension_numbers
    return _orthogonalize(
        x,
        coeffs,
        ns_steps,
        preconditioning,
        eps,
        dims,
        ns_dtype,
        fused,
        eps_floor,
        safety_factor,
        scale_eps,
    )


def _check_ns(ns_coeffs: Any, ns_steps: int) -> torch.Tensor:
    coeffs = torch.as_tensor(ns_coeffs, dtype=torch.float64)
    if coeffs.ndim > 2 or coeffs.ndim == 0 or coeffs.shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got {tuple(coeffs.shape)}")
    if coeffs.ndim == 2:
        if not coeffs.shape[0] <= ns_steps:
            raise ValueError(f"Not enough coeffs to perform {ns_steps} steps (ns_steps)")
        coeffs = coeffs[-ns_steps:]
    return coeffs


def scale_by_muon(
    ns_coeffs: Any = _DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: Num = 0.95,
    eps: Num = 1e-8,
    mu_dtype: torch.dtype | None = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: WeightDimNumOrFn | None = None,
    bias_correction: bool = True,
    ns_dtype: torch.dtype | None = None,
    fused: bool = False,
    eps_floor: bool = False,
    safety_factor: Num = 1.0,
    scale_eps: bool = False,
) -> GradientTransformation:
    r"""Rescales updates by Muon: momentum orthogonalized by Newton-Schulz iterations.

    .. math::
        m_k = \beta m_{k-1} + (1-\beta) g_k,\quad
        \hat m_k = \beta\frac{m_k}{1-\beta^{k+1}} + (1-\beta)\frac{g_k}{1-\beta^k}
        \;\;(\text{nesterov; else } m_k / (1-\beta^k)),\\
        X_0 = \hat m_k / (\|\hat m_k\|_F + \epsilon),\quad
        X_{i+1} = a X_i + (b A_i + c A_i^2) X_i,\; A_i = X_i X_i^H,\quad u_k = X_{n}

    (transposed first when the matrix has more rows than columns), which drives the singular
    values of :math:`\hat m_k` towards 1: :math:`u_k \approx U V^T` for :math:`\hat m_k = U S
    V^T`. With ``adaptive``, :math:`u_k \leftarrow \langle \hat m_k, u_k\rangle u_k`.

    Args:
      ns_coeffs: Newton-Schulz coefficients :math:`(a, b, c)`, or one triple per step
        (shape ``(n, 3)``, then ``ns_steps`` is ignored but must be ``>= n``).
      ns_steps: number of Newton-Schulz iterations (>= 1; >= 0 with ``bias_correction=False``),
        default 5.
      beta: momentum decay rate, default 0.95.
      eps: added to the norm in the preconditioning, default 1e-8.
      mu_dtype: dtype of the momentum.
      nesterov: Nesterov momentum (default ``True``).
      adaptive: scale the updates by the dual norm of the momentum.
      preconditioning: ``"frobenius"`` (default), ``"spectral"``, ``"aol"`` or ``"schatten"``:
        how the matrix is rescaled before (or in) the first iteration.
      weight_dimension_numbers: a :class:`MuonDimensionNumbers` for every leaf, a tree of them
        (a prefix of the params), or a function ``params -> tree``. ``None``: every leaf is a 2-d
        matrix (optax documents this but fails on a tree with more than one leaf; ours applies
        ``MuonDimensionNumbers()`` to every leaf).
      bias_correction: debias the momentum (optax, default ``True``). ``False``:
        ``torch.optim.Muon``'s (and Keller Jordan's) momentum, :math:`m_k = \mathrm{lerp}(m_{k-1},
        g_k, 1-\beta)`, :math:`\hat m_k = \mathrm{lerp}(g_k, m_k, \beta)` with nesterov (else
        :math:`m_k`), no step count: the state is a :class:`MuonMomentumState` (the momentum
        only; the coefficients stay in the transform), and ``beta`` may be any number ``>= 0``.
      ns_dtype, fused, eps_floor: torch's Newton-Schulz iteration, see
        :func:`orthogonalize_via_newton_schulz`; ``torch.optim.Muon`` is ``ns_dtype=
        torch.bfloat16, fused=True, eps_floor=True`` (default ``None, False, False``: optax's).
      safety_factor, scale_eps: *extensions* (timm's ``Muon``), see
        :func:`orthogonalize_via_newton_schulz`; default ``1.0``, ``False``.

    ``torch.optim.Muon``'s scaling is ``scale_by_muon(beta=momentum, eps=eps, bias_correction=
    False, ns_dtype=torch.bfloat16, fused=True, eps_floor=True)`` followed by
    :func:`scale_by_shape` (its ``adjust_lr_fn``).

    Reference: Jordan, 2024, https://github.com/KellerJordan/modded-nanogpt; Bernstein &
    Newhouse, 2024, https://arxiv.org/abs/2409.20325

    Example::

        >>> tx = otx.chain(otx.contrib.scale_by_muon(), otx.scale_by_learning_rate(0.02))
    """
    return _scale_by_muon(
        ns_coeffs,
        ns_steps,
        beta,
        eps,
        mu_dtype,
        nesterov,
        adaptive,
        preconditioning,
        _specs_fn(weight_dimension_numbers),
        bias_correction,
        ns_dtype,
        fused,
        eps_floor,
        safety_factor,
        scale_eps,
    )


def _scale_by_muon(
    ns_coeffs: Any,
    ns_steps: int,
    beta: Num,
    eps: Num,
    mu_dtype: torch.dtype | None,
    nesterov: bool,
    adaptive: bool,
    preconditioning: str,
    specs_fn: SpecsFn,
    bias_correction: bool = True,
    ns_dtype: torch.dtype | None = None,
    fused: bool = False,
    eps_floor: bool = False,
    safety_factor: Num = 1.0,
    scale_eps: bool = False,
) -> GradientTransformation:
    if isinstance(ns_steps, torch.Tensor):  # e.g. from inject_hyperparams: a loop count
        ns_steps = int(ns_steps)
    if bias_correction:
        _validate.check_positive_int("ns_steps", ns_steps)
        _validate.check_decay("beta", beta)
    else:  # torch.optim.Muon's ranges
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 0:
            raise ValueError(f"ns_steps must be an integer >= 0, got ns_steps={ns_steps!r}")
        _validate.check_non_negative("beta", beta)
    _validate.check_non_negative("eps", eps)
    _validate.check_positive("safety_factor", safety_factor)
    if preconditioning not in _PRECONDITIONINGS:
        raise ValueError(f"Unknown preconditioning {preconditioning!r}")
    coeffs0 = _check_ns(ns_coeffs, ns_steps)

    def init_fn(params):
        if not bias_correction:
            return MuonMomentumState(mu=tree.zeros_like(params, dtype=mu_dtype))
        return MuonState(
            count=numerics.zero_count(),
            mu=tree.zeros_like(params, dtype=mu_dtype),
            ns_coeffs=coeffs0.clone(),
        )

    def orthogonalize(mu_hat, specs, ns_coeffs):
        leaves, spec = tree.flatten(mu_hat)
        out = [
            None
            if x is None or d is None
            else _orthogonalize(
                x,
                ns_coeffs,
                ns_steps,
                preconditioning,
                eps,
                d,
                ns_dtype,
                fused,
                eps_floor,
                safety_factor,
                scale_eps,
            )
            for x, d in zip(leaves, specs)
        ]
        new_updates = tree.unflatten(spec, out)
        if adaptive:
            new_updates = tree.map(lambda m, u: (m.conj() * u).sum() * u, mu_hat, new_updates)
        return new_updates

    def update_fn(updates, state, params=None):
        del params
        specs = specs_fn(updates)
        mu = tree.update_moment(updates, state.mu, beta, 1)
        if not bias_correction:
            if nesterov:
                w = beta

                def lerp(g, m):
                    return torch.lerp(
                        g, m.to(g.dtype), w.to(g) if isinstance(w, torch.Tensor) else w
                    )

                mu_hat = tree.map(lerp, updates, mu)
            else:
                mu_hat = mu
            new_updates = orthogonalize(mu_hat, specs, coeffs0)
            return new_updates, MuonMomentumState(mu=tree.cast(mu, mu_dtype))
        count_inc = numerics.safe_increment(state.count)
        if nesterov:
            mu_hat = tree.add_scale(
                tree.scale(
                    beta, tree.bias_correction(mu, beta, numerics.safe_increment(count_inc))
                ),
                1 - beta,
                tree.bias_correction(updates, beta, count_inc),
            )
        else:
            mu_hat = tree.bias_correction(mu, beta, count_inc)
        new_updates = orthogonalize(mu_hat, specs, state.ns_coeffs)
        return new_updates, MuonState(
            count=count_inc, mu=tree.cast(mu, mu_dtype), ns_coeffs=state.ns_coeffs
        )

    return GradientTransformation(init_fn, update_fn)


_SHAPE_RULES = (None, "rms_to_rms", "rsqrt_in", "numel", "unit")


def _scale_by_shape(
    specs_fn: SpecsFn,
    consistent_rms: Num | None,
    rule: str | None = None,
    normalize_batch: bool = False,
) -> GradientTransformation:
    """Scales each matrix update by ``sqrt(max(1, fan_out / fan_in))`` (width transfer), or by
    ``sqrt(max(fan_in, fan_out)) * consistent_rms``, or by ``rule``'s factor (see
    :func:`scale_by_shape`), times ``batch ** -0.5`` with ``normalize_batch``."""

    def factor(x: torch.Tensor, d: MuonDimensionNumbers) -> Any:
        red, out = _axes(x, d)
        fan_in = math.prod([x.shape[a] for a in red])
        fan_out = math.prod([x.shape[a] for a in out])
        if rule is None and consistent_rms is not None:
            f: Any = math.sqrt(max(fan_in, fan_out)) * consistent_rms
        elif rule is None:
            f = math.sqrt(max(1, fan_out / max(fan_in, 1)))  # (empty matrices: 1)
        elif rule == "rms_to_rms":
            f = (fan_out / fan_in) ** 0.5
        elif rule == "rsqrt_in":
            f = fan_in**-0.5
        elif rule == "numel":
            f = (1.0 if consistent_rms is None else consistent_rms) * x.numel() ** 0.5
        else:  # "unit"
            f = 1.0
        if normalize_batch:
            batch = x.numel() // max(fan_in * fan_out, 1)
            f = f * batch**-0.5
        return f

    def update_fn(updates, state, params=None):
        del params
        specs = specs_fn(updates)
        leaves, spec = tree.flatten(updates)
        out = [None if x is None or d is None else factor(x, d) * x for x, d in zip(leaves, specs)]
        return tree.unflatten(spec, out), state

    return GradientTransformation(init_empty_state, update_fn)


def scale_by_shape(
    weight_dimension_numbers: WeightDimNumOrFn | None = None,
    consistent_rms: Num | None = None,
    *,
    rule: str | None = None,
    normalize_batch: bool = False,
) -> GradientTransformation:
    r"""Scales each matrix update by a factor of its shape (Muon's learning-rate adjustment).

    With :math:`f_{in}` / :math:`f_{out}` the sizes of the reduction / output axes:
    :math:`u \leftarrow \sqrt{\max(1, f_{out}/f_{in})}\,u` (width transfer, Keller Jordan's), or,
    with ``consistent_rms`` :math:`r`, :math:`u \leftarrow r\sqrt{\max(f_{in}, f_{out})}\,u`
    (Liu et al.'s, matching AdamW's update RMS for :math:`r = 0.2`). Stateless.

    ``torch.optim.Muon``'s ``adjust_lr_fn`` on a torch ``(out, in)`` weight: ``"original"`` (or
    ``None``) is ``scale_by_shape(MuonDimensionNumbers(reduction_axis=1, output_axis=0))``,
    ``"match_rms_adamw"`` is ``scale_by_shape(consistent_rms=0.2)``.

    Args:
      weight_dimension_numbers: a :class:`MuonDimensionNumbers` for every leaf, a tree of them
        (``None`` leaves are left unscaled), or a function ``updates -> tree``. Default ``None``:
        every leaf is a matrix with reduction axis 0 and output axis 1 (optax's ``(in, out)``).
      consistent_rms: :math:`r`, default ``None`` (width transfer).
      rule: *extension* (timm's ``adjust_lr_fn``), default ``None`` (the two rules above).
        ``"rms_to_rms"``: :math:`\sqrt{f_{out}/f_{in}}`; ``"rsqrt_in"``: :math:`f_{in}^{-1/2}`;
        ``"numel"``: :math:`r\sqrt{n}` with :math:`n` the number of elements, batch axes
        included (:math:`r` = ``consistent_rms``, or 1); ``"unit"``: 1.
      normalize_batch: *extension* (timm's ``normalize_spatial``): also multiply by
        :math:`b^{-1/2}`, :math:`b` the product of the batch axes (those neither reduction nor
        output axes), default ``False``.

    timm's ``Muon`` on a torch ``(out, in, *spatial)`` weight, with the reduction axes the
    ``in`` (and, flattened, spatial) axes and the output axis 0: ``"original"`` is the default,
    ``"match_rms_adamw"`` is ``consistent_rms=0.2`` (AdaMuon's: ``rule="numel"``), and
    ``"rms_to_rms"``, ``"rsqrt_in"`` the rules of the same name.

    Reference: Jordan, 2024, https://kellerjordan.github.io/posts/muon/; Liu et al., 2025,
    https://arxiv.org/abs/2502.16982

    Example::

        >>> tx = otx.chain(otx.contrib.scale_by_muon(), otx.contrib.scale_by_shape(),
        ...                otx.scale_by_learning_rate(0.02))
    """
    _validate.check_positive("consistent_rms", consistent_rms)
    if rule not in _SHAPE_RULES:
        raise ValueError(f"Unknown rule {rule!r}: one of {_SHAPE_RULES}")
    return _scale_by_shape(
        _specs_fn(weight_dimension_numbers), consistent_rms, rule, normalize_batch
    )


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = _DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: Num = 0.95,
    eps: Num = 1e-8,
    weight_decay: Num = 0.0,
    weight_decay_mask: Any | Callable[[Params], Any] | None = None,
    mu_dtype: torch.dtype | None = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: Num = 0.9,
    adam_b2: Num = 0.999,
    adam_eps_root: Num = 0.0,
    adam_weight_decay: Num = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: WeightDimNumOrFn | None = None,
    consistent_rms: Num | None = None,
) -> GradientTransformationExtraArgs:
    r"""Muon: Momentum Orthogonalized by Newton-Schulz, with AdamW for the other parameters.

    The matrix parameters (2-d, or those given ``muon_weight_dimension_numbers``) get
    ``chain(scale_by_muon(...), scale by shape, add_decayed_weights(weight_decay,
    weight_decay_mask), scale_by_learning_rate(learning_rate))``, where the shape scale is
    :math:`\sqrt{\max(1, \text{fan_out}/\text{fan_in})}` (or :math:`\sqrt{\max(\text{fan_in},
    \text{fan_out})}\cdot` ``consistent_rms``); all other parameters get
    ``adamw(adam_learning_rate, adam_b1, adam_b2, eps, adam_eps_root, mu_dtype,
    adam_weight_decay, nesterov=nesterov)``. See :func:`scale_by_muon` for the math.

    Args:
      learning_rate: learning rate or schedule.
      ns_coeffs: Newton-Schulz coefficients, ``(n, 3)`` per-step coefficients, or a preset:
        ``"standard"`` or ``"dion"``.
      ns_steps: number of Newton-Schulz iterations, default 5.
      beta: momentum decay rate, default 0.95.
      eps: stability term (Muon's normalization and Adam's denominator), default 1e-8.
      weight_decay: weight decay of the Muon parameters (times the learning rate), default 0.
      weight_decay_mask: mask (tree or function) of the Muon parameters to decay.
      mu_dtype: dtype of the momenta.
      nesterov: Nesterov momentum (Muon and Adam), default ``True``.
      adaptive: scale Muon's updates by the dual norm of the momentum.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      adam_b1, adam_b2, adam_eps_root, adam_weight_decay: AdamW's hyperparameters.
      adam_learning_rate: AdamW's learning rate (``None``: ``learning_rate``).
      muon_weight_dimension_numbers: tree (or function of the params) of
        :class:`MuonDimensionNumbers`, ``None`` marking the AdamW parameters (``None``: Muon on
        every 2-d parameter).
      consistent_rms: activates the consistent-RMS shape scaling (0.2 matches AdamW's RMS).

    Reference: Jordan, 2024, https://github.com/KellerJordan/modded-nanogpt; Liu et al., 2025,
    https://arxiv.org/abs/2502.16982

    Example::

        >>> opt = otx.contrib.muon(0.02, weight_decay=0.01, adam_learning_rate=3e-4)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_non_negative("weight_decay", weight_decay)
    _validate.check_decay("adam_b1", adam_b1)
    _validate.check_decay("adam_b2", adam_b2)
    _validate.check_non_negative("adam_eps_root", adam_eps_root)
    _validate.check_non_negative("adam_weight_decay", adam_weight_decay)
    _validate.check_finite("adam_learning_rate", adam_learning_rate)
    _validate.check_positive("consistent_rms", consistent_rms)
    if adam_learning_rate is None:
        adam_learning_rate = learning_rate
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in _NS_COEFFS_PRESETS:
            raise ValueError(f"Unknown ns_coeff preset string: {ns_coeffs} (ns_coeffs)")
        ns_coeffs = _NS_COEFFS_PRESETS[ns_coeffs]
    user_specs = _specs_fn(muon_weight_dimension_numbers)

    def muon_specs(params):
        """Dimension numbers per leaf; ``None`` for the AdamW leaves (and masked-out ones)."""
        if muon_weight_dimension_numbers is None:
            return [
                MuonDimensionNumbers() if x is not None and x.ndim == 2 else None
                for x in tree.flatten(params)[0]
            ]
        xs = tree.flatten(params)[0]
        return [None if x is None else d for x, d in zip(xs, user_specs(params))]

    def param_labels(params):
        labels = ["adam" if d is None else "muon" for d in muon_specs(params)]
        return tree.unflatten(tree.structure(params), labels)

    return partition(
        {
            "muon": chain(
                _scale_by_muon(
                    ns_coeffs=ns_coeffs,
                    ns_steps=ns_steps,
                    beta=beta,
                    eps=eps,
                    mu_dtype=mu_dtype,
                    nesterov=nesterov,
                    adaptive=adaptive,
                    preconditioning=preconditioning,
                    specs_fn=muon_specs,
                ),
                _scale_by_shape(muon_specs, consistent_rms),
                T.add_decayed_weights(weight_decay, weight_decay_mask),
                T.scale_by_learning_rate(learning_rate),
            ),
            "adam": adamw(
                learning_rate=adam_learning_rate,
                b1=adam_b1,
                b2=adam_b2,
                eps=eps,
                eps_root=adam_eps_root,
                weight_decay=adam_weight_decay,
                mu_dtype=mu_dtype,
                nesterov=nesterov,
            ),
        },
        param_labels=param_labels,
    )
