"""Optimizers with adaptive or optimistic step sizes: Polyak SGD, optimistic GD and Adam.

Each is a short chain of transformations (optax's names and defaults).
"""

from __future__ import annotations

import warnings

import torch

from optax_torch import _validate
from optax_torch import transforms as T
from optax_torch.alias.classic import sgd
from optax_torch.base import GradientTransformationExtraArgs, ScalarOrSchedule
from optax_torch.combine import chain

__all__ = [
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
]

Num = float | torch.Tensor


def polyak_sgd(
    max_learning_rate: Num = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: Num = 0.0,
    eps: Num = 0.0,
    variant: str = "sps",
) -> GradientTransformationExtraArgs:
    r"""SGD with Polyak's step size (SPS, Loizou et al. 2021).

    ``chain(sgd(learning_rate=scaling), scale_by_polyak(max_learning_rate, f_min, eps,
    variant))``. With ``scaling`` :math:`s = 1` (the default) the step is

    .. math::
        x_{k+1} = x_k - \min\left\{\frac{f(x_k) - f^\star}{\|g_k\|^2 + \epsilon},
                  \gamma_{\max}\right\} g_k .

    As in optax, ``scaling`` is applied *before* the Polyak step, which therefore sees
    :math:`s g_k`: the update is :math:`-s \min\{(f(x_k) - f^\star) / (s^2\|g_k\|^2 + \epsilon),
    \gamma_{\max}\}\, g_k` (optax's docstring writes :math:`-s \min\{(f - f^\star) / (\|g\|^2 +
    \epsilon), \gamma_{\max}\}\, g`, which agrees only for :math:`s = 1`). ``variant="sps+"``
    (Garrigos et al. 2023) uses the positive part of the gap :math:`f(x_k) - f^\star`.

    ``update`` needs the loss value: ``opt.update(grads, state, params, value=loss)``.

    Args:
      max_learning_rate: :math:`\gamma_{\max}`, the largest step size (default 1).
      scaling: a global scale :math:`s`, a number or a schedule (default 1).
      f_min: :math:`f^\star`, a lower bound on the objective (default 0). Choosing it badly can
        make the method diverge or stall.
      eps: added to the denominator (default 0).
      variant: ``"sps"`` or ``"sps+"``.

    References: Loizou et al., 2021, https://arxiv.org/abs/2002.10542; Berrada et al., 2020,
    https://arxiv.org/abs/1906.05661; Garrigos et al., 2023, https://arxiv.org/abs/2307.14528

    Example::

        >>> opt = otx.polyak_sgd()
        >>> updates, state = opt.update(grads, state, params, value=loss)
    """
    _validate.check_finite("scaling", scaling)
    return chain(
        sgd(learning_rate=scaling),
        T.scale_by_polyak(
            max_learning_rate=max_learning_rate, f_min=f_min, eps=eps, variant=variant
        ),
    )


def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule,
    alpha: Num = 1.0,
    beta: Num = 1.0,
) -> GradientTransformationExtraArgs:
    r"""Optimistic gradient descent (OGD), for min-max games where plain GD cycles or diverges.

    ``chain(scale_by_optimistic_gradient(alpha, beta), scale_by_learning_rate(learning_rate))``:

    .. math::
        u_k = (\alpha + \beta)\, g_k - \beta\, g_{k-1},\qquad x_{k+1} = x_k - \eta_k u_k

    (with :math:`g_{-1} = g_0`).

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      alpha: coefficient of generalized OGD (default 1.0).
      beta: coefficient of the negative momentum (default 1.0).

    Reference: Mokhtari et al., 2019, https://arxiv.org/abs/1901.08511

    Example::

        >>> opt = otx.optimistic_gradient_descent(0.003)
    """
    _validate.check_finite("learning_rate", learning_rate)
    return chain(
        T.scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        T.scale_by_learning_rate(learning_rate),
    )


def optimistic_adam(
    learning_rate: Num,
    optimism: Num | None = None,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-08,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    *,
    nesterov: bool = True,
) -> GradientTransformationExtraArgs:
    r"""Optimistic Adam (deprecated in optax: use :func:`optimistic_adam_v2`).

    With :math:`r_k` Adam's update (:func:`optax_torch.scale_by_adam`, Nesterov by default) and
    :math:`o` the optimism (``learning_rate`` when ``None``, as in the paper):

    .. math::
        u_k = -\alpha\, r_k - o\, (r_k - r_{k-1})

    ``chain(scale_by_adam(...), scale_by_optimistic_gradient(alpha=learning_rate,
    beta=optimism), scale_by_learning_rate(1.0))``. Emits a ``DeprecationWarning``; a schedule
    as ``learning_rate`` raises ``ValueError`` (``optimistic_adam_v2`` accepts one).

    Args:
      learning_rate: :math:`\alpha`, a number.
      optimism: :math:`o` (default: ``learning_rate``).
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in :func:`optax_torch.scale_by_adam`.

    Reference: Daskalakis et al., 2017, https://arxiv.org/abs/1711.00141

    Example::

        >>> opt = otx.optimistic_adam(1e-2, 1.0)
    """
    warnings.warn(
        "`optimistic_adam` is deprecated, please use `optimistic_adam_v2` instead.",
        category=DeprecationWarning,
        stacklevel=2,
    )
    if callable(learning_rate):
        raise ValueError(
            "This version of `optimistic_adam` does not support learning rate schedules but "
            "`optimistic_adam_v2` does."
        )
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_finite("optimism", optimism)
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)
    if optimism is None:
        optimism = learning_rate
    return chain(
        T.scale_by_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        ),
        T.scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism),
        T.scale_by_learning_rate(1.0),
    )


def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: Num = 1.0,
    beta: Num = 1.0,
    b1: Num = 0.9,
    b2: Num = 0.999,
    eps: Num = 1e-08,
    eps_root: Num = 0.0,
    mu_dtype: torch.dtype | None = None,
    nesterov: bool = True,
) -> GradientTransformationExtraArgs:
    r"""Optimistic Adam, with a learning rate (or schedule) separate from the optimism.

    With :math:`r_k` Adam's update (:func:`optax_torch.scale_by_adam`, Nesterov by default):

    .. math::
        u_k = -\eta_k \left((\alpha + \beta)\, r_k - \beta\, r_{k-1}\right)

    ``chain(scale_by_adam(...), scale_by_optimistic_gradient(alpha, beta),
    scale_by_learning_rate(learning_rate))``.

    Args:
      learning_rate: :math:`\eta`, a number or a schedule.
      alpha, beta: the optimism parameters of :func:`optax_torch.scale_by_optimistic_gradient`
        (default 1.0 each).
      b1, b2, eps, eps_root, mu_dtype, nesterov: as in :func:`optax_torch.scale_by_adam`.

    Reference: Daskalakis et al., 2017, https://arxiv.org/abs/1711.00141

    Example::

        >>> opt = otx.optimistic_adam_v2(1.0, alpha=1e-2, beta=1.0)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_decay("b1", b1)
    _validate.check_decay("b2", b2)
    _validate.check_non_negative("eps", eps)
    _validate.check_non_negative("eps_root", eps_root)
    return chain(
        T.scale_by_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        ),
        T.scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        T.scale_by_learning_rate(learning_rate),
    )
