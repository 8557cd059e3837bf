"""The leaf-level kernels behind :mod:`optax_torch.tree` (private).

Two backends with the same methods, each taking and returning Python lists of tensors:

* :class:`_Foreach` — multi-tensor ``torch._foreach_*`` kernels (one call per (device, dtype)
  group), used eagerly; scalars that are plain CPU tensors are read as exact Python numbers;
* :class:`_PerLeaf` — one plain op per tensor, traceable by ``torch.compile`` and every
  ``torch.func`` transform, and used when autograd records the step; tensor scalars are cast to
  each leaf's dtype so that a float64 hyperparameter never promotes a float32 leaf.

``optax_torch.tree`` chooses the backend and handles flattening, ``None`` leaves and donation.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import torch

Scalar = float | int | torch.Tensor


def _is_one(s: Scalar) -> bool:
    return not isinstance(s, torch.Tensor) and s == 1


def _is_zero(s: Scalar) -> bool:
    return not isinstance(s, torch.Tensor) and s == 0


def _as_number(s: Scalar) -> Scalar:
    """A CPU scalar tensor that needs no autograd becomes an exact Python number.

    Not under ``torch.compile``: dynamo traces ``.item()`` of a hyperparameter tensor into an
    unbacked symbolic float, which DTensor's sharding propagation cannot hash ("could not guard
    on data-dependent expression"); the compiled kernels take the 0-d tensor as it is.
    """
    if (
        isinstance(s, torch.Tensor)
        and s.device.type == "cpu"
        and s.dim() == 0
        and not s.requires_grad
        and not torch._C._are_functorch_transforms_active()  # a batched scalar has no one value
        and not torch.compiler.is_compiling()
    ):
        return s.item()
    return s


# Above this many elements per tensor (on average) a Python loop of per-tensor ops costs nothing
# next to the memory traffic, and writing into a scratch buffer (``out=``) saves the allocation
# and first-touch cost of a fresh one: ~1.5x faster for large tensors on CPU.
_LARGE = 1 << 16


def _div_into(xs: Sequence[torch.Tensor], den: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``xs / den``, written into ``den`` (a scratch buffer owned by the caller)."""
    if builtins.sum(d.numel() for d in den) >= _LARGE * len(den):
        for x, d in zip(xs, den):
            torch.div(x, d, out=d)
        return list(den)
    return list(torch._foreach_div(list(xs), list(den)))


class _Foreach:
    """Multi-tensor kernels (one call per (device, dtype) group)."""

    @staticmethod
    def add(xs, ys):
        return torch._foreach_add(xs, ys)

    @staticmethod
    def sub(xs, ys):
        return torch._foreach_sub(xs, ys)

    @staticmethod
    def mul(xs, ys):
        return torch._foreach_mul(xs, ys)

    @staticmethod
    def div(xs, ys):
        return torch._foreach_div(xs, ys)

    @staticmethod
    def maximum(xs, ys):
        return torch._foreach_maximum(xs, ys)

    # Tensor scalars that stay tensors (accelerator-resident, or requiring grad: the multi-tensor
    # kernels have no usable backward for a tensor scalar) take the per-tensor path.

    @staticmethod
    def mul_scalar(xs, s):
        s = _as_number(s)
        if isinstance(s, torch.Tensor):
            return _PerLeaf.mul_scalar(xs, s)
        return torch._foreach_mul(xs, s)

    @staticmethod
    def add_scalar(xs, s):
        s = _as_number(s)
        if isinstance(s, torch.Tensor):
            return _PerLeaf.add_scalar(xs, s)
        return torch._foreach_add(xs, s)

    @staticmethod
    def add_scaled(xs, s, ys):  # xs + s * ys
        s = _as_number(s)
        if isinstance(s, torch.Tensor):
            return _PerLeaf.add_scaled(xs, s, ys)
        return torch._foreach_add(xs, ys, alpha=s)

    @staticmethod
    def lerp(xs, ys, w):  # xs + w * (ys - xs)
        w = _as_number(w)
        if isinstance(w, torch.Tensor):
            return _PerLeaf.lerp(xs, ys, w)
        return torch._foreach_lerp(xs, ys, w)

    @staticmethod
    def decay_add_sq(ms, gs, decay):  # decay * ms + (1 - decay) * gs * gs
        decay = _as_number(decay)
        if isinstance(decay, torch.Tensor):
            return _PerLeaf.decay_add_sq(ms, gs, decay)
        out = torch._foreach_mul(ms, decay)
        torch._foreach_addcmul_(out, gs, gs, value=1 - decay)
        return out

    @staticmethod
    def sqrt(xs):
        return torch._foreach_sqrt(xs)

    @staticmethod
    def div_sqrt(xs, ys, eps, eps_root, divisor, x_scale, out=None):
        # Two fresh buffers (one if ``out``, a scratch buffer of ``ys``' dtype, is given for
        # large tensors); every other step works in place on them (nobody else sees them).
        den = _Foreach.denominator(ys, eps, eps_root, divisor, x_scale, out)
        if den is None:  # device-resident hyperparameters
            return _PerLeaf.div_sqrt(xs, ys, eps, eps_root, divisor, x_scale)
        return _div_into(xs, den)

    @staticmethod
    def denominator(ys, eps, eps_root, divisor, x_scale, out=None):
        """``sqrt(y + eps_root) / (divisor * x_scale) + eps / x_scale``, the denominator of
        :meth:`div_sqrt` (its quotient is ``x / den``), in a fresh buffer or ``out``; ``None``
        where a hyperparameter is a tensor that is not a plain CPU scalar."""
        scalars = [_as_number(v) for v in (eps, eps_root, divisor, x_scale)]
        if any(isinstance(v, torch.Tensor) for v in scalars):
            return None
        eps, eps_root, divisor, x_scale = scalars
        if out is not None and builtins.sum(o.numel() for o in out) >= _LARGE * len(out):
            den = list(out)
            for y, d in zip(ys, den):  # no multi-tensor kernel writes into given buffers
                if _is_zero(eps_root):
                    torch.sqrt(y, out=d)
                else:
                    torch.add(y, eps_root, out=d)
                    d.sqrt_()
        elif _is_zero(eps_root):
            den = torch._foreach_sqrt(ys)
        else:
            den = torch._foreach_add(ys, eps_root)
            torch._foreach_sqrt_(den)
        # x * s / (sqrt(y) / d + e) == x / (sqrt(y) / (d * s) + e / s): the scale folds into den.
        if not (_is_one(divisor) and _is_one(x_scale)):
            torch._foreach_div_(den, divisor * x_scale)
        if not _is_zero(eps):
            torch._foreach_add_(den, eps / x_scale)
        return den

    @staticmethod
    def abs(xs):
        return torch._foreach_abs(xs)

    @staticmethod
    def sign(xs):
        return torch._foreach_sign(xs)

    @staticmethod
    def pow(xs, p):
        return torch._foreach_pow(xs, p)

    @staticmethod
    def clamp(xs, lo, hi):
        lo = None if lo is None else _as_number(lo)
        hi = None if hi is None else _as_number(hi)
        if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
            return _PerLeaf.clamp(xs, lo, hi)
        out = xs
        if lo is not None:
            out = torch._foreach_clamp_min(out, lo)
        if hi is not None:
            out = torch._foreach_clamp_max(out, hi)
        return out if out is not xs else list(xs)

    @staticmethod
    def norms(xs, ord):
        return list(torch._foreach_norm(xs, ord))


def _s(s: Scalar, like: torch.Tensor) -> Scalar:
    if isinstance(s, torch.Tensor) and s.dtype != like.dtype and like.is_floating_point():
        return s.to(like.dtype)
    return s


def _realize_impl(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


try:  # an opaque identity: the compiler computes its input once, in a kernel of its own
    _realize: Any = torch.library.custom_op("optax_torch::realize", mutates_args=())(_realize_impl)
    _realize.register_fake(lambda x: torch.empty_like(x))
    _realize.register_autograd(lambda ctx, grad: grad)
except (AttributeError, RuntimeError):  # pragma: no cover - older torch, or registered twice
    _realize = None


class _Cast:
    """A tensor scalar cast to each leaf's dtype, once per dtype (``_s`` for a whole list).

    Under ``torch.compile`` the cast scalar also goes through the opaque ``optax_torch::
    realize``: inductor otherwise inlines the scalar's computation (a bias correction's
    ``pow``, a ``sqrt``) into the element-wise loop that uses it, where the C++ compiler cannot
    hoist it (its inputs may alias the outputs), and recomputes it for every vector of
    elements: 3.3x slower on a 20 M-element AdamW step on CPU.
    """

    __slots__ = ("memo", "s")

    def __init__(self, s: Any):
        self.s = s
        self.memo: dict[torch.dtype, Any] = {}

    def __call__(self, like: torch.Tensor) -> Any:
        s = self.s
        if not isinstance(s, torch.Tensor):
            return s
        out = self.memo.get(like.dtype)
        if out is None:
            out = _s(s, like)
            if (
                _realize is not None
                and torch.compiler.is_compiling()
                and type(out) is torch.Tensor  # not a DTensor (the op has no sharding rule)
                and out.dim() == 0
            ):
                out = _realize(out)
            self.memo[like.dtype] = out
        return out


class _PerLeaf:
    """Per-tensor kernels: traceable by torch.compile, vmap, grad and friends."""

    @staticmethod
    def add(xs, ys):
        return [x + y for x, y in zip(xs, ys)]

    @staticmethod
    def sub(xs, ys):
        return [x - y for x, y in zip(xs, ys)]

    @staticmethod
    def mul(xs, ys):
        return [x * y for x, y in zip(xs, ys)]

    @staticmethod
    def div(xs, ys):
        return [x / y for x, y in zip(xs, ys)]

    @staticmethod
    def maximum(xs, ys):
        return [torch.maximum(x, y) for x, y in zip(xs, ys)]

    # Tensor scalars are cast to each leaf's dtype first (``_s``): a float64 0-d hyperparameter
    # times a float32 0-d leaf must stay float32, as it does with a Python-number scalar.

    @staticmethod
    def mul_scalar(xs, s):
        c = _Cast(s)
        return [x * c(x) for x in xs]

    @staticmethod
    def add_scalar(xs, s):
        c = _Cast(s)
        return [x + c(x) for x in xs]

    @staticmethod
    def add_scaled(xs, s, ys):
        c = _Cast(s)
        return [x + c(x) * y for x, y in zip(xs, ys)]

    @staticmethod
    def lerp(xs, ys, w):
        c = _Cast(w)
        return [x + c(x) * (y - x) for x, y in zip(xs, ys)]

    @staticmethod
    def decay_add_sq(ms, gs, decay):
        c = _Cast(decay)
        c1 = _Cast(1 - decay)
        return [c(m) * m + c1(m) * (g * g) for m, g in zip(ms, gs)]

    @staticmethod
    def sqrt(xs):
        return [torch.sqrt(x) for x in xs]

    @staticmethod
    def div_sqrt(xs, ys, eps, eps_root, divisor, x_scale):
        c_root, c_div, c_eps, c_x = (_Cast(v) for v in (eps_root, divisor, eps, x_scale))
        return [
            x / (torch.sqrt(y + c_root(y)) / c_div(y) + c_eps(y)) * c_x(x) for x, y in zip(xs, ys)
        ]

    @staticmethod
    def abs(xs):
        return [torch.abs(x) for x in xs]

    @staticmethod
    def sign(xs):
        return [torch.sign(x) for x in xs]

    @staticmethod
    def pow(xs, p):
        return [x**p for x in xs]

    @staticmethod
    def clamp(xs, lo, hi):
        if lo is None and hi is None:
            return list(xs)

        c_lo, c_hi = _Cast(lo), _Cast(hi)
        return [
            torch.clamp(x, None if lo is None else c_lo(x), None if hi is None else c_hi(x))
            for x in xs
        ]

    @staticmethod
    def norms(xs, ord):
        return [torch.linalg.vector_norm(x, ord) for x in xs]
