"""timm's ``Muon`` (and its AdaMuon algorithm) on optax_torch (see
:mod:`optax_torch.compat.timm`)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain, partition
from optax_torch.compat.timm._checks import check_scalar
from optax_torch.compat.torch_optim._common import TorchOptimDropIn, is_nonzero
from optax_torch.contrib.muon import MuonDimensionNumbers, scale_by_muon, scale_by_shape
from optax_torch.transforms import (
    add_decayed_weights,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_rms,
)
from optax_torch.transforms.monitoring import count_steps
from optax_torch.transforms.normalization import normalize_by_update_norm
from optax_torch.transforms.per_leaf import per_leaf, tag_leaves

__all__ = ["AdaMuon", "Muon"]

# timm's constants.
MUON_EPS = 1e-7
DEFAULT_NS_STEPS = 5
_COEFFICIENTS: dict[str, list[tuple[float, float, float]]] = {
    "original": [(3.4445, -4.7750, 2.0315)],
    "quintic": [
        (4.0848, -6.8946, 2.9270),
        (3.9505, -6.3029, 2.6377),
        (3.7418, -5.5913, 2.3037),
        (2.8769, -3.1427, 1.2046),
        (2.8366, -3.0525, 1.2012),
    ],
    "polar_express": [
        (8.237312490495555, -23.157747414558198, 16.680568411445915),
        (4.082441999064835, -2.893047735332586, 0.5252849256975648),
        (3.9263479922546582, -2.8547468034765298, 0.5318022422894988),
        (3.2982187133085143, -2.424541981026706, 0.48632008358844075),
        (2.2970369434552573, -1.63662558125903, 0.4002628455953627),
        (1.8763805351440397, -1.2347896577722228, 0.35891887501668385),
        (1.8564423485617974, -1.2132449880935525, 0.3568003487825883),
        (1.8749994008682747, -1.2499988017229169, 0.3749994008546422),
    ],
    "polar_express_safer": [
        (8.156554524902461, -22.48329292557795, 15.878769915207462),
        (4.0429299351667245, -2.808917465908704, 0.5000178451051299),
        (3.8916678022926563, -2.7724841532176825, 0.5060648178503389),
        (3.285753657755658, -2.3681294933425394, 0.46449024233003117),
        (2.3005307116270983, -1.6111665557258408, 0.3833374427545273),
        (1.8631210546382593, -1.2042160621002727, 0.3421879560523383),
        (1.8382572152247512, -1.1779263289537742, 0.3396513038637379),
        (1.8749999923301852, -1.2499999836060613, 0.374999991275876),
    ],
}

_ROUTING = "_use_muon"  # internal hyperparameter: the routing of the group's parameters
_MUON_SHAPE_RULES: dict[Any, dict[str, Any]] = {
    "original": dict(rule=None),
    "match_rms_adamw": dict(rule=None, consistent_rms=0.2),
    "rms_to_rms": dict(rule="rms_to_rms"),
}
_ADAMUON_SHAPE_RULES: dict[Any, dict[str, Any]] = {
    "match_rms_adamw": dict(rule="numel", consistent_rms=0.2),
    "rms_to_rms": dict(rule="rms_to_rms"),
    "rsqrt_in": dict(rule="rsqrt_in"),
}


def resolve_ns_coefficients(
    value: Any, presets: Mapping[str, Sequence[Sequence[float]]] = _COEFFICIENTS
) -> list[tuple[float, float, float]]:
    """timm's coefficient resolution: a preset name, a triple or a sequence of triples."""

    def is_seq(x):
        return isinstance(x, Sequence) and not isinstance(x, str | bytes)

    def is_real(x):
        return isinstance(x, numbers.Real) and not isinstance(x, bool)

    def as_coeff(x) -> tuple[float, float, float]:
        if not is_seq(x) or len(x) != 3 or not all(is_real(v) for v in x):
            raise ValueError(f"Coefficient must be length-3 of real numbers, got: {x!r}")
        a, b, c = x
        return float(a), float(b), float(c)

    if isinstance(value, str):
        if value not in presets:
            valid = ", ".join(sorted(presets.keys()))
            raise ValueError(f"Unknown coefficients preset '{value}'. Valid options: {valid}")
        return [as_coeff(item) for item in presets[value]]
    if not is_seq(value):
        raise TypeError(
            "Coefficients must be a preset name (str), a 3-sequence (a,b,c), "
            "or a sequence of 3-sequences."
        )
    if len(value) == 3 and all(is_real(v) for v in value):
        return [as_coeff(value)]
    out = []
    for i, item in enumerate(value):
        if not is_seq(item):
            raise TypeError(f"Item {i} is not a sequence: {item!r}")
        out.append(as_coeff(item))
    if not out:
        raise ValueError("Coefficient list cannot be empty")
    return out


def is_suitable_for_muon(
    param: Tensor, min_dim_size: int = 4, max_aspect_ratio: float = 128.0
) -> bool:
    """timm's routing rule: at least two non-unit axes, none of the first two of size 1, and
    the (out, in * spatial) matrix at least ``min_dim_size`` wide and not too elongated."""
    s = param.shape
    if param.ndim < 2 or sum(1 for d in s if d > 1) < 2:
        return False
    if s[0] == 1 or s[1] == 1:
        return False
    dims = (s[0], param.numel() // s[0]) if param.ndim >= 3 else tuple(s)
    if min(dims) < min_dim_size:
        return False
    return max(dims) / min(dims) <= max_aspect_ratio


def _route(p: Tensor, group: Mapping[str, Any]) -> bool:
    if group.get("use_fallback", False):
        return False
    if "use_muon" in group:
        return bool(group["use_muon"])
    return is_suitable_for_muon(p)


def _ns_dims(conv_mode: str):
    """Newton-Schulz matrices of a torch ``(out, in, *spatial)`` weight, in timm's layout:
    ``(out, in * spatial)`` (flatten) or one ``(out, in)`` per spatial position (batched)."""

    def dims(x: Tensor | None) -> MuonDimensionNumbers | None:
        if x is None:
            return None
        if conv_mode == "batched" or x.ndim == 2:
            return MuonDimensionNumbers(reduction_axis=0, output_axis=1)
        return MuonDimensionNumbers(reduction_axis=0, output_axis=tuple(range(1, x.ndim)))

    return lambda u: [dims(x) for x in u]


def _shape_dims(conv_mode: str):
    """The same matrices for the lr adjustment: fan-in the ``in`` (and flattened spatial)
    axes, fan-out axis 0."""

    def dims(x: Tensor | None) -> MuonDimensionNumbers | None:
        if x is None:
            return None
        if conv_mode == "batched" or x.ndim == 2:
            return MuonDimensionNumbers(reduction_axis=1, output_axis=0)
        return MuonDimensionNumbers(reduction_axis=tuple(range(1, x.ndim)), output_axis=0)

    return lambda u: [dims(x) for x in u]


def _ns_schedule(ns_coefficients: Any, ns_steps: int) -> tuple[Any, int]:
    """timm's per-step coefficients: the sequence truncated, or its last row repeated, to
    ``ns_steps`` rows."""
    seq = resolve_ns_coefficients(ns_coefficients)
    if ns_steps == 0:
        return seq[0], 0
    rows = seq[:ns_steps] if ns_steps <= len(seq) else seq + [seq[-1]] * (ns_steps - len(seq))
    return rows, ns_steps


def _muon_tx(
    lr,
    weight_decay,
    momentum,
    nesterov,
    ns_steps,
    ns_coefficients,
    eps,
    safety_factor,
    adjust_lr_fn,
    conv_mode,
    normalize_spatial,
    fallback_lr_scale,
    betas,
    algo,
    scale_eps,
    capturable,
    verbose,
    **internal: Any,
) -> GradientTransformation:
    """The chain of one ``Muon`` param group: ``[routing tags, partition(muon | adamuon per
    parameter, AdamW | NAdamW per parameter)]``."""
    del capturable, verbose
    use_muon: tuple[bool, ...] = internal.get(_ROUTING, ())
    b1, b2 = betas
    coeffs, steps = _ns_schedule(ns_coefficients, int(ns_steps))
    decay = add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity()
    ortho = scale_by_muon(
        ns_coeffs=coeffs,
        ns_steps=steps,
        beta=momentum,
        eps=eps,
        nesterov=nesterov,
        weight_dimension_numbers=_ns_dims(conv_mode),
        bias_correction=False,
        ns_dtype=torch.bfloat16,
        fused=True,
        eps_floor=True,
        safety_factor=safety_factor,
        scale_eps=scale_eps,
    )
    batched = conv_mode == "batched" and normalize_spatial
    if algo == "adamuon":
        rule = _ADAMUON_SHAPE_RULES.get(adjust_lr_fn) if adjust_lr_fn else None
        use_rms_norm = adjust_lr_fn == "match_rms_adamw"
        if use_rms_norm:  # no bias correction; the update's norm is normalized instead
            second = chain(
                count_steps(),
                scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False),
                normalize_by_update_norm(1.0, eps),
            )
        else:
            second = scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True)
    else:
        rule = _MUON_SHAPE_RULES.get(adjust_lr_fn) if adjust_lr_fn else None
        second = identity()
    shape = scale_by_shape(
        _shape_dims(conv_mode), **(rule or dict(rule="unit")), normalize_batch=batched
    )
    muon_branch = chain(ortho, second, shape, decay, scale_by_learning_rate(lr))
    adam_branch = chain(
        scale_by_adam(b1=b1, b2=b2, eps=eps, nesterov=nesterov, nesterov_shared_debias=True),
        decay,
        scale_by_learning_rate(lr * fallback_lr_scale),
    )
    labels = ["muon" if u else "adam" for u in use_muon]
    return chain(
        tag_leaves(list(use_muon)),
        partition(
            {"muon": per_leaf(muon_branch), "adam": per_leaf(adam_branch)},
            lambda params: labels,
        ),
    )


_PREFIX = "1.inner_states"


class Muon(TorchOptimDropIn):
    r"""timm's ``Muon`` on optax_torch: momentum orthogonalized by Newton-Schulz for the matrix
    parameters, AdamW for the others (or, with ``algo="adamuon"``, AdaMuon).

    Routing, per parameter (timm's): AdamW if the group sets ``use_fallback=True``, else the
    group's ``use_muon`` if set, else Muon when the weight is a matrix (or a conv weight seen as
    ``(out, in * spatial)``) with both sides ``>= 4`` and an aspect ratio ``<= 128``. Per param
    group, the chain ``tag_leaves(routing)`` (timm's ``use_muon`` state) → ``partition`` of:

    * Muon parameters, each with its own state (:func:`~optax_torch.transforms.per_leaf.per_leaf`):
      :func:`~optax_torch.contrib.scale_by_muon` ``(beta=momentum, nesterov, bias_correction=
      False, ns_dtype=torch.bfloat16, fused=True, eps_floor=True, safety_factor, scale_eps)`` on
      timm's ``(out, in * spatial)`` (``conv_mode="flatten"``) or per-position ``(out, in)``
      (``"batched"``) matrices, with timm's coefficient schedule → for AdaMuon
      ``scale_by_rms(beta2, eps, eps outside the root, bias-corrected)`` or, with
      ``adjust_lr_fn="match_rms_adamw"``, ``count_steps`` → ``scale_by_rms`` (no correction) →
      ``normalize_by_update_norm(1, eps)`` → :func:`~optax_torch.contrib.scale_by_shape`
      (``adjust_lr_fn``, ``normalize_spatial`` in batched mode) → ``add_decayed_weights
      (weight_decay)`` → ``scale_by_learning_rate(lr)``:

      .. math::
          B \leftarrow \mathrm{lerp}(B, g, 1-\mu),\ O = \mathrm{NS}(\mathrm{lerp}(g, B, \mu)
          \text{ or } B),\ [v \leftarrow \beta_2 v + (1-\beta_2) O^2,\ O \leftarrow O /
          (\sqrt{\hat v} + \epsilon)],\ p \leftarrow p(1 - \gamma\lambda) - \gamma\, s\, O

    * the others, each with its own step: ``scale_by_adam(beta1, beta2, eps)`` (with
      ``nesterov``: timm's NAdamW, ``nesterov_shared_debias=True``) → ``add_decayed_weights
      (weight_decay)`` → ``scale_by_learning_rate(lr * fallback_lr_scale)``.

    Args (timm's): ``params``; ``lr`` (0.02); ``weight_decay`` (0); ``momentum`` (0.95, in
    ``[0, 1)``); ``nesterov`` (False); ``ns_steps`` (5); ``ns_coefficients`` (``"quintic"``; a
    preset ``"original"``, ``"quintic"``, ``"polar_express"``, ``"polar_express_safer"``, a
    triple or a list of triples, truncated to or padded with its last row up to ``ns_steps``);
    ``eps`` (1e-7); ``safety_factor`` (1); ``adjust_lr_fn`` (``"match_rms_adamw"``;
    ``"original"``, ``"rms_to_rms"``, AdaMuon ``"rsqrt_in"``, or ``None``); ``conv_mode``
    (``"flatten"`` or ``"batched"``); ``normalize_spatial`` (True); ``adamw_lr`` (deprecated:
    ``fallback_lr_scale = adamw_lr / lr`` with a ``FutureWarning``); ``fallback_lr_scale`` (1);
    ``betas`` ((0.9, 0.95)); ``algo`` (``"muon"`` or ``"adamuon"``); ``scale_eps`` (False);
    ``capturable``, ``verbose``: accepted and ignored.

    Example::

        >>> opt = Muon(model.parameters(), lr=0.02, weight_decay=0.01)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter, as timm: ``use_muon`` (a 0-d bool tensor; timm: a bool) and
    ``momentum_buffer`` (Muon; AdaMuon adds ``step`` and ``exp_avg_sq``), or ``step``,
    ``exp_avg``, ``exp_avg_sq`` (AdamW). Deviations: the routing is recomputed from the group at
    each step (timm caches it in the state at a parameter's first step: changing
    ``use_fallback``/``use_muon`` of a group with state is not supported); the coefficient errors
    timm raises at the first step are raised at construction; an unknown ``adjust_lr_fn`` is
    treated as ``None`` (timm fails at the step); ``betas[1]`` must be in ``[0, 1)``.
    """

    _complex_as_real: ClassVar[bool] = False
    _state_key_map: ClassVar[dict[str, str]] = {
        "0.tags": "use_muon",
        f"{_PREFIX}.muon.inner_state.states.0.mu.0": "momentum_buffer",
        f"{_PREFIX}.muon.inner_state.states.1.count": "step",
        f"{_PREFIX}.muon.inner_state.states.1.nu.0": "exp_avg_sq",
        f"{_PREFIX}.muon.inner_state.states.1.0.count": "step",
        f"{_PREFIX}.muon.inner_state.states.1.1.nu.0": "exp_avg_sq",
        f"{_PREFIX}.adam.inner_state.states.0.count": "step",
        f"{_PREFIX}.adam.inner_state.states.0.mu.0": "exp_avg",
        f"{_PREFIX}.adam.inner_state.states.0.nu.0": "exp_avg_sq",
    }

    def __init__(
        self,
        params,
        lr: float = 0.02,
        weight_decay: float = 0,
        momentum: float = 0.95,
        nesterov: bool = False,
        ns_steps: int = DEFAULT_NS_STEPS,
        ns_coefficients: Any = "quintic",
        eps: float = MUON_EPS,
        safety_factor: float = 1.0,
        adjust_lr_fn: str | None = "match_rms_adamw",
        conv_mode: str = "flatten",
        normalize_spatial: bool = True,
        adamw_lr: float | None = None,
        fallback_lr_scale: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.95),
        algo: str = "muon",
        scale_eps: bool = False,
        capturable: bool = False,
        verbose: bool = False,
    ) -> None:
        check_scalar("learning rate", lr)
        check_scalar("weight_decay", weight_decay)
        check_scalar("momentum", momentum, max_value=1.0)
        check_scalar("epsilon", eps)
        if conv_mode not in ["flatten", "batched"]:
            raise ValueError(f"Invalid conv_mode: {conv_mode}")
        if algo not in ["muon", "adamuon"]:
            raise ValueError(f"Invalid algo: {algo}. Must be 'muon' or 'adamuon'")
        if adamw_lr is not None:
            warnings.warn(
                "adamw_lr is deprecated, use fallback_lr_scale=adamw_lr/lr instead. "
                "adamw_lr will be removed in a future release.",
                FutureWarning,
                stacklevel=2,
            )
            if isinstance(lr, Tensor):
                raise ValueError(
                    "adamw_lr is not supported with tensor lr; use fallback_lr_scale instead."
                )
            if lr == 0:
                raise ValueError("Cannot compute fallback_lr_scale from adamw_lr when lr=0")
            fallback_lr_scale = adamw_lr / lr
        super().__init__(
            params,
            _muon_tx,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            ns_coefficients=ns_coefficients,
            eps=eps,
            safety_factor=safety_factor,
            adjust_lr_fn=adjust_lr_fn,
            conv_mode=conv_mode,
            normalize_spatial=normalize_spatial,
            fallback_lr_scale=fallback_lr_scale,
            betas=betas,
            algo=algo,
            scale_eps=scale_eps,
            capturable=capturable,
            verbose=verbose,
        )

    def _group_hyperparams(self, group: dict[str, Any]) -> dict[str, Any]:
        hp = super()._group_hyperparams(group)
        hp[_ROUTING] = tuple(_route(p, group) for p in group["params"])
        return hp


class AdaMuon(Muon):
    r"""timm's ``Muon`` with ``algo="adamuon"`` (timm registers it as ``"adamuon"``; timm 1.0
    has no ``AdaMuon`` class): :class:`Muon`'s signature, ``algo`` defaulting to
    ``"adamuon"``.

    Example::

        >>> opt = AdaMuon(model.parameters(), lr=6e-4)
    """

    def __init__(
        self,
        params,
        lr: float = 0.02,
        weight_decay: float = 0,
        momentum: float = 0.95,
        nesterov: bool = False,
        ns_steps: int = DEFAULT_NS_STEPS,
        ns_coefficients: Any = "quintic",
        eps: float = MUON_EPS,
        safety_factor: float = 1.0,
        adjust_lr_fn: str | None = "match_rms_adamw",
        conv_mode: str = "flatten",
        normalize_spatial: bool = True,
        adamw_lr: float | None = None,
        fallback_lr_scale: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.95),
        algo: str = "adamuon",
        scale_eps: bool = False,
        capturable: bool = False,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            weight_decay,
            momentum,
            nesterov,
            ns_steps,
            ns_coefficients,
            eps,
            safety_factor,
            adjust_lr_fn,
            conv_mode,
            normalize_spatial,
            adamw_lr,
            fallback_lr_scale,
            betas,
            algo,
            scale_eps,
            capturable,
            verbose,
        )
