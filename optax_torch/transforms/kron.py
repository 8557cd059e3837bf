"""PSGD Kron: a Kronecker-factored preconditioner fitted on the matrix Lie group (Li 2018)."""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from optax_torch import _validate, tree
from optax_torch.base import GradientTransformation

__all__ = [
    "KRON_MAX_NDIM",
    "ScaleByKronState",
    "kron_rng_state",
    "precond_update_prob_schedule",
    "scale_by_kron",
]

Num = float | Tensor
# Einstein notation runs out of letters beyond 13 dimensions (3 letters per dimension).
KRON_MAX_NDIM = 13
_LETTERS = string.ascii_lowercase + string.ascii_uppercase
_TINY = torch.finfo(torch.bfloat16).tiny
_MODES = (None, "one_diag", "smart_one_diag", "all_diag")


class ScaleByKronState(NamedTuple):
    """State of :func:`scale_by_kron`; lists hold one entry per leaf (flattening order), ``None``
    for ``None`` leaves.

    ``Q[j]`` is a tuple of :data:`KRON_MAX_NDIM` entries: the factors of leaf ``j`` (one per
    dimension of the, possibly flattened, leaf: a vector for a diagonal factor, an upper
    triangular matrix otherwise; one 0-d factor for a 0-d leaf) padded with ``None``, so that
    every leaf's state has the same structure. ``rng`` is the state of the Python
    ``random.Random`` (Mersenne Twister) driving the random choices: its 624 words and index as
    an int64 tensor of 625 entries (see :func:`kron_rng_state`).
    """

    count: list  # 0-d int32 per leaf: steps taken (timm's "step")
    update_counter: list  # 0-d int32 per leaf: steps since the last preconditioner update
    mu: list  # momentum per leaf (mu_dtype)
    Q: list  # per leaf, a KRON_MAX_NDIM-tuple of factors padded with None
    rng: Tensor  # int64 (625,): random.Random state


def kron_rng_state(seed_or_state: int | tuple = 1337) -> Tensor:
    """The ``rng`` field of :class:`ScaleByKronState` for ``random.Random(seed)`` (an int) or
    for a ``random.Random.getstate()`` tuple."""
    if isinstance(seed_or_state, int):
        seed_or_state = random.Random(seed_or_state).getstate()
    return torch.tensor(seed_or_state[1], dtype=torch.int64)


def _python_rng(rng: Tensor) -> random.Random:
    r = random.Random()
    r.setstate((3, tuple(int(x) for x in rng.tolist()), None))
    return r


def precond_update_prob_schedule(
    n: Any,
    max_prob: float = 1.0,
    min_prob: float = 0.03,
    decay: float = 0.001,
    flat_start: float = 500,
) -> Tensor:
    """The default probability of a preconditioner update at step ``n`` (steps taken before):
    ``clamp(max_prob * exp(-decay * (n - flat_start)), min_prob, max_prob)`` in float32 (timm's
    and kron_torch's): 1 for the first 500 steps, then annealed to 0.03 by about 4000 steps."""
    n = torch.as_tensor(n, dtype=torch.float32)
    prob = max_prob * torch.exp(-decay * (n - flat_start))
    return prob.clamp(min=min_prob, max=max_prob)


def _flatten(t: Tensor, start_dim: int, end_dim: int) -> Tensor:
    """timm's ``safe_flatten``: dims ``start_dim..end_dim`` merged, the tensor as it is when it
    has too few dims."""
    ndim = t.ndim
    end = min(end_dim if end_dim >= 0 else ndim + end_dim, ndim - 1)
    if ndim <= start_dim or start_dim > end:
        return t
    return t.flatten(start_dim, end)


def _diag_dims(shape: tuple[int, ...], max_size: int, min_ndim: int, mode: str | None) -> list:
    """Which dims get a diagonal factor (the others a triangular one)."""
    n = len(shape)
    diag = [mode == "all_diag"] * n
    if n and mode in ("one_diag", "smart_one_diag"):
        largest = max(range(n), key=lambda i: (shape[i], i))  # numpy's argsort()[::-1][0]
        s = sorted(shape)
        if mode == "one_diag" or (n >= 2 and s[-1] > s[-2]):
            diag[largest] = True
    return [d or size == 1 or size > max_size or n < min_ndim for size, d in zip(shape, diag)]


@functools.lru_cache(maxsize=1024)
def _exprs(diag: tuple[bool, ...]) -> tuple[str, tuple[str, ...], str]:
    """The einsum expressions of a leaf whose dims are diagonal / triangular per ``diag``: for
    ``A = Q G``, for the factor statistics, and for the preconditioned gradient ``Q^H Q G``."""
    n = len(diag)
    if n == 0:
        return ",->", (",->",), ",,->"
    L = _LETTERS
    p1a, p2a, p3a = [], "", ""
    exprs_g = []
    p1p, p2p, p3p, p4p = [], [], "", ""
    for i, d in enumerate(diag):
        piece1 = "".join(L[i + 13] if j == i else L[j] for j in range(n))
        if d:
            p1a.append(L[i])
            p2a, p3a = p2a + L[i], p3a + L[i]
            exprs_g.append(piece1 + "," + piece1 + "->" + L[i + 13])
            p1p.append(L[i + 13])
            p2p.append(L[i + 13])
            p3p, p4p = p3p + L[i + 13], p4p + L[i + 13]
        else:
            p1a.append(L[i] + L[i + 13])
            p2a, p3a = p2a + L[i + 13], p3a + L[i]
            piece2 = "".join(L[i + 26] if j == i else L[j] for j in range(n))
            exprs_g.append(piece1 + "," + piece2 + "->" + L[i + 13] + L[i + 26])
            a, b, c = L[i], L[i + 13], L[i + 26]
            p1p.append(a + b)
            p2p.append(a + c)
            p3p, p4p = p3p + c, p4p + b
    expr_a = ",".join(p1a) + "," + p2a + "->" + p3a
    expr_p = ",".join(p1p) + "," + ",".join(p2p) + "," + p3p + "->" + p4p
    return expr_a, tuple(exprs_g), expr_p


def _norm_lower_bound(A: Tensor) -> Tensor:
    """A cheap lower bound of the spectral norm of ``A`` (Li's)."""
    max_abs = A.norm(float("inf"))
    B = A / max_abs
    aa = torch.real(B * B.conj())
    value0, i = torch.max(torch.sum(aa, dim=0), 0)
    value1, j = torch.max(torch.sum(aa, dim=1), 0)
    if value0 > value1:
        x = B[:, i].conj() @ B
        lb = max_abs * torch.linalg.vector_norm((x / torch.linalg.vector_norm(x)) @ B.H)
    else:
        x = B @ B[j].conj()
        lb = max_abs * torch.linalg.vector_norm(B.H @ (x / torch.linalg.vector_norm(x)))
    return torch.where(max_abs > 0, lb, max_abs)


def _solve_triangular_right(X: Tensor, A: Tensor) -> Tensor:
    """``X @ inv(A)`` for an upper triangular ``A``, solved in float32 (as the reference)."""
    out = torch.linalg.solve_triangular(
        A.to(torch.float32), X.to(torch.float32).reshape(-1, X.size(-1)), upper=True, left=False
    )
    return out.reshape_as(X).to(X.dtype)


def _update_factors(Q, G, V, expr_a, exprs_g, precond_lr):
    """One fitting step of the factors ``Q`` on the pair (``V``, ``G``): returns the new list."""
    A = torch.einsum(expr_a, *Q, G)
    order = G.dim()
    perm = tuple(range(order))
    conj_b = torch.permute(V.conj(), perm[1:] + perm[:1])
    for i, q in enumerate(Q):
        conj_b = conj_b / q if q.dim() < 2 else _solve_triangular_right(conj_b, q)
        if i < order - 1:
            conj_b = torch.transpose(conj_b, i, order - 1)
    new_q = []
    for q, expr_g in zip(Q, exprs_g):
        term1 = torch.einsum(expr_g, A, A.conj())
        term2 = torch.einsum(expr_g, conj_b.conj(), conj_b)
        tmp = (term1 - term2) * precond_lr
        if q.dim() < 2:
            tmp = tmp * q
            tmp = tmp / ((term1 + term2).norm(float("inf")) + _TINY)
        else:
            tmp = torch.triu(tmp)
            tmp = tmp / (_norm_lower_bound(term1 + term2) + _TINY)
            tmp = tmp @ q
        new_q.append(q - tmp)
    return new_q


def _balance(Q: list) -> list:
    """Rescales the factors to equal infinity norms (their Kronecker product unchanged)."""
    norms = torch.stack([q.norm(float("inf")) for q in Q])
    geometric_mean = norms.prod() ** (1 / len(Q))
    norms = geometric_mean / norms
    return [q * norms[i] for i, q in enumerate(Q)]


def scale_by_kron(
    b1: float = 0.9,
    preconditioner_update_probability: float | Callable[[int], Any] | None = None,
    max_size_triangular: int = 2048,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    momentum_into_precond_update: bool = True,
    precond_lr: float = 0.1,
    precond_init_scale: float = 1.0,
    mu_dtype: torch.dtype | None = None,
    precond_dtype: torch.dtype | None = None,
    *,
    flatten: bool = False,
    flatten_start_dim: int = 2,
    flatten_end_dim: int = -1,
    weight_decay: Num = 0.0,
    stochastic_weight_decay: bool = False,
    seed: int = 1337,
    deterministic: bool = True,
) -> GradientTransformation:
    r"""PSGD Kron: momentum preconditioned by a Kronecker product of factors fitted online.

    For each leaf (a ``(d_1, ..., d_k)`` tensor, after merging dims ``flatten_start_dim..
    flatten_end_dim`` if ``flatten``), per step :math:`t` (the leaf's own count):

    .. math::
        m_t = b_1 m_{t-1} + (1-b_1) g_t,\quad \hat m_t = m_t / (1 - b_1^t),\quad
        P = Q^H Q,\ Q = Q_1 \otimes \dots \otimes Q_k

    each :math:`Q_i` upper triangular (``d_i x d_i``) or diagonal (a vector: dims of size 1 or
    above ``max_size_triangular``, leaves of fewer than ``min_ndim_triangular`` dims, and per
    ``memory_save_mode``: ``"one_diag"`` the largest dim, ``"smart_one_diag"`` the largest dim
    when strictly largest, ``"all_diag"`` all), initialized to
    ``precond_init_scale ** (1/k) * I``. With probability ``preconditioner_update_probability``
    (deterministically: when the steps since the last update reach ``1 / p``) the factors take
    one step of Li's fitting criterion on the pair :math:`(v, h)`, :math:`v \sim N(0, I)` and
    :math:`h = \hat m_t` (``momentum_into_precond_update``, else :math:`g_t`): with
    :math:`A = Q h` and :math:`B = Q^{-H} v` (triangular solves in float32),

    .. math::
        Q_i \leftarrow Q_i - \frac{\eta}{\|T_1 + T_2\|}\,
        \mathrm{triu}(T_1 - T_2)\, Q_i,\qquad T_1 = A_{(i)} A_{(i)}^H,\ T_2 = B_{(i)} B_{(i)}^H

    (:math:`\eta` = ``precond_lr``, the norm a cheap lower bound of the spectral norm; diagonal
    factors: elementwise, the infinity norm). Before an update, with probability 0.01 the
    factors are rebalanced to equal infinity norms. The update is

    .. math::
        u = c\, P \hat m_t + \lambda p,\qquad c = \min(1, 1.1 / (\mathrm{rms}(P \hat m_t)
        + 10^{-8}))

    (RMS capped at 1.1; :math:`\lambda` = ``weight_decay``, times :math:`2 r`, :math:`r \sim U[0,
    1)`, per leaf and step with ``stochastic_weight_decay``). Chain a learning rate after it.

    Randomness: the update draws, leaf after leaf, from a Python ``random.Random`` (seeded with
    ``seed``) whose state is the ``rng`` field of the state: one ``random()`` per leaf and step
    (rebalancing), then with a preconditioner update a ``randint(0, 2**31)`` that seeds a
    ``torch.Generator`` for :math:`v`, then one ``random()`` with ``stochastic_weight_decay``.
    This is timm's ``Kron(deterministic=True)`` draw for draw, and ``update`` is a function of
    its inputs. With ``deterministic=False``, :math:`v` is drawn from torch's global generator
    instead (timm's default: ``update`` is then not pure). The update is eager only: the
    decisions are Python branches on the state's values (not ``torch.compile(fullgraph=True)``,
    ``vmap`` or ``grad``).

    Args:
      b1: momentum decay, in ``[0, 1)``; default 0.9.
      preconditioner_update_probability: a probability in ``(0, 1]``, a function of the leaf's
        step count (a Python ``int``, steps taken before) returning one, or ``None``
        (default): :func:`precond_update_prob_schedule`.
      max_size_triangular: dims larger than this get a diagonal factor; default 2048.
      min_ndim_triangular: leaves with fewer dims get diagonal factors only; default 2.
      memory_save_mode: ``None`` (default), ``"one_diag"``, ``"smart_one_diag"``, ``"all_diag"``.
      momentum_into_precond_update: fit the factors on the momentum (default) or the gradient.
      precond_lr: step size of the factor fit, default 0.1.
      precond_init_scale: initial scale of the preconditioner, default 1.
      mu_dtype: dtype of the momentum (default: the gradient's).
      precond_dtype: dtype of the factors and the preconditioned momentum (default: the
        gradient's).
      flatten: merge dims ``flatten_start_dim..flatten_end_dim`` (default 2, -1: a conv
        weight becomes ``(out, in, kh * kw)``) before preconditioning; default False.
      weight_decay: coupled decay added after the RMS cap, default 0.
      stochastic_weight_decay: multiply ``weight_decay`` by ``2 r`` per leaf and step.
      seed: the seed of the Python generator (timm's: 1337).
      deterministic: draw :math:`v` from a generator seeded from the state (default, pure) or
        from torch's global generator.

    References: Li 2018, "Preconditioner on matrix Lie group for SGD",
    https://arxiv.org/abs/1809.10232 (https://github.com/lixilinx/psgd_torch); Evan Walters'
    PSGD Kron, https://github.com/evanatyourservice/kron_torch (timm's ``Kron`` adapts it).

    Example::

        >>> tx = otx.chain(scale_by_kron(b1=0.9), otx.scale_by_learning_rate(1e-3))
        >>> params = [torch.randn(8, 4), torch.randn(4)]
        >>> state = tx.init(params)
        >>> updates, state = tx.update([torch.randn(8, 4), torch.randn(4)], state, params)
    """
    _validate.check_decay("b1", b1)
    p_update = preconditioner_update_probability
    if not callable(p_update) and p_update is not None:
        _validate.check_positive("preconditioner_update_probability", p_update)
    _validate.check_positive_int("max_size_triangular", max_size_triangular)
    if not isinstance(min_ndim_triangular, int) or isinstance(min_ndim_triangular, bool):
        raise ValueError(f"min_ndim_triangular must be an integer, got {min_ndim_triangular!r}")
    if memory_save_mode not in _MODES:
        raise ValueError(
            f"memory_save_mode must be one of {list(_MODES)}, got "
            f"memory_save_mode={memory_save_mode!r}"
        )
    _validate.check_non_negative("precond_lr", precond_lr)
    _validate.check_positive("precond_init_scale", precond_init_scale)
    _validate.check_non_negative("weight_decay", weight_decay)
    prob_fn = (
        precond_update_prob_schedule
        if preconditioner_update_probability is None
        else preconditioner_update_probability
    )

    def shaped(x: Tensor) -> Tensor:
        return _flatten(x, flatten_start_dim, flatten_end_dim) if flatten else x

    def diag_of(x: Tensor) -> tuple[bool, ...]:
        shape = tuple(x.shape)
        if len(shape) > KRON_MAX_NDIM:
            raise ValueError(f"Got tensor with dim {len(shape)}; Einstein runs out of letters!")
        return tuple(_diag_dims(shape, max_size_triangular, min_ndim_triangular, memory_save_mode))

    def init_leaf(p: Tensor) -> tuple:
        x = shaped(p)
        dtype = precond_dtype or p.dtype
        if x.dim() == 0:
            factors = [precond_init_scale * torch.ones_like(x, dtype=dtype)]
        else:
            scale = precond_init_scale ** (1 / x.dim())
            factors = [
                scale * torch.ones(size, dtype=dtype, device=x.device)
                if d
                else scale * torch.eye(size, dtype=dtype, device=x.device)
                for size, d in zip(x.shape, diag_of(x))
            ]
        return tuple(factors) + (None,) * (KRON_MAX_NDIM - len(factors))

    def init_fn(params):
        _validate.check_real_params(params, "scale_by_kron")
        leaves = tree.flatten(params)[0]
        zero = torch.zeros((), dtype=torch.int32)
        return ScaleByKronState(
            count=[None if p is None else zero.clone() for p in leaves],
            update_counter=[None if p is None else zero.clone() for p in leaves],
            mu=[
                None if p is None else torch.zeros_like(shaped(p), dtype=mu_dtype or p.dtype)
                for p in leaves
            ],
            Q=[(None,) * KRON_MAX_NDIM if p is None else init_leaf(p) for p in leaves],
            rng=kron_rng_state(seed),
        )

    def update_fn(updates, state, params=None):
        u_leaves, spec = tree.flatten(updates)
        p_leaves = [None] * len(u_leaves) if params is None else tree.flatten(params)[0]
        rng = _python_rng(state.rng)
        count, counter = list(state.count), list(state.update_counter)
        mus, Qs = list(state.mu), list(state.Q)
        out: list[Any] = []
        for j, (g, p) in enumerate(zip(u_leaves, p_leaves)):
            if g is None:
                out.append(None)
                continue
            x = shaped(g)
            pdtype = precond_dtype or g.dtype
            step = int(count[j])
            if x.numel() == 0:  # nothing to precondition (the reference fails on these)
                count[j] = torch.tensor(step + 1, dtype=torch.int32)
                out.append(torch.zeros_like(g))
                continue
            prob = prob_fn(step) if callable(prob_fn) else prob_fn
            n_since = int(counter[j]) + 1
            do_update = bool(n_since >= 1 / prob)
            counter[j] = torch.tensor(0 if do_update else n_since, dtype=torch.int32)
            step += 1
            count[j] = torch.tensor(step, dtype=torch.int32)
            mu = torch.add(mus[j] * b1, x, alpha=1 - b1).to(mus[j].dtype)
            mus[j] = mu
            debiased = (mu / (1 - b1**step)).to(pdtype)
            Q = [q for q in Qs[j] if q is not None]
            if rng.random() < 0.01 and do_update and x.dim() > 1:
                Q = _balance(Q)
            if do_update:
                expr_a, exprs_g, _ = _exprs(diag_of(x) if x.dim() else ())
                gen = None
                if deterministic:
                    gen = torch.Generator(device=debiased.device)
                    gen.manual_seed(rng.randint(0, 2**31))
                V = torch.randn(
                    debiased.shape, generator=gen, dtype=debiased.dtype, device=debiased.device
                )
                h = debiased if momentum_into_precond_update else x.to(debiased.dtype)
                Q = _update_factors(Q, h, V, expr_a, exprs_g, precond_lr)
            Qs[j] = tuple(Q) + (None,) * (KRON_MAX_NDIM - len(Q))
            expr_p = _exprs(diag_of(x) if x.dim() else ())[2]
            pre = torch.einsum(expr_p, *[q.conj() for q in Q], *Q, debiased).to(g.dtype)
            pre = pre * torch.clamp(1.1 / (pre.square().mean().sqrt() + 1e-8), max=1.0)
            pre = pre.reshape(g.shape)
            if bool(weight_decay != 0):
                if p is None:
                    raise ValueError("scale_by_kron: weight_decay needs the params")
                wd: Any = weight_decay
                if stochastic_weight_decay:
                    wd = 2 * rng.random() * wd
                pre = pre + p * wd if isinstance(wd, Tensor) else pre.add(p, alpha=wd)
            out.append(pre)
        new_state = ScaleByKronState(
            count=count,
            update_counter=counter,
            mu=mus,
            Q=Qs,
            rng=kron_rng_state(rng.getstate()).to(state.rng.device),
        )
        return tree.unflatten(spec, out), new_state

    return GradientTransformation(init_fn, update_fn)
