"""SGD variants: sign-based (signSGD, Signum, Rprop) and noisy SGD."""

from __future__ import annotations

import torch

from optax_torch import _validate
from optax_torch import transforms as T
from optax_torch.base import GradientTransformationExtraArgs, ScalarOrSchedule
from optax_torch.combine import chain

__all__ = ["noisy_sgd", "rprop", "sign_sgd", "signum"]

Num = float | torch.Tensor


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformationExtraArgs:
    r"""signSGD: steps by the signs of the gradient elements only.

    ``chain(scale_by_sign(), scale_by_learning_rate(learning_rate))``:
    :math:`u_k = -\alpha_k \operatorname{sign}(g_k)`.

    Args:
      learning_rate: a number, a 0-d tensor or a schedule ``count -> value``.

    References:
      Bernstein et al., 2018, https://arxiv.org/abs/1802.04434;
      Balles et al., 2020, https://arxiv.org/abs/2002.08056

    Example::

        >>> opt = otx.sign_sgd(1e-3)
    """
    _validate.check_finite("learning_rate", learning_rate)
    return chain(T.scale_by_sign(), T.scale_by_learning_rate(learning_rate))


def signum(
    learning_rate: ScalarOrSchedule,
    beta: Num = 0.9,
    accumulator_dtype: torch.dtype | None = None,
) -> GradientTransformationExtraArgs:
    r"""Signum: steps by the signs of an exponential moving average of the gradients.

    ``chain(ema(beta, debias=False, accumulator_dtype), scale_by_sign(),
    scale_by_learning_rate(learning_rate))``:

    .. math::
        m_k = \beta m_{k-1} + (1-\beta) g_k,\qquad u_k = -\alpha_k \operatorname{sign}(m_k)

    (no bias correction: it does not change the sign).

    Args:
      learning_rate: a number, a 0-d tensor or a schedule ``count -> value``.
      beta: the decay rate of the average (default ``0.9``).
      accumulator_dtype: optional dtype of the average.

    References:
      Bernstein et al., 2018, https://arxiv.org/abs/1802.04434;
      Zhao et al., 2024, https://arxiv.org/abs/2407.07972

    Example::

        >>> opt = otx.signum(1e-3, beta=0.95)
    """
    _validate.check_finite("learning_rate", learning_rate)
    _validate.check_decay("beta", beta)
    return chain(
        T.ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        T.scale_by_sign(),
        T.scale_by_learning_rate(learning_rate),
    )


def rprop(
    learning_rate: Num,
    eta_minus: Num = 0.5,
    eta_plus: Num = 1.2,
    min_step_size: Num = 1e-6,
    max_step_size: Num = 50.0,
) -> GradientTransformationExtraArgs:
    r"""Rprop: per-element step sizes that grow while the gradient keeps its sign.

    ``chain(scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size),
    scale(-1.0))``: see :func:`optax_torch.scale_by_rprop` for the math. Steps like
    ``torch.optim.Rprop``. **Differs from optax 0.2.8**, whose updates lag one step behind
    (see :func:`optax_torch.scale_by_rprop`).

    Args:
      learning_rate: the initial step size.
      eta_minus: the step-size factor when the gradient's sign flips (default ``0.5``).
      eta_plus: the step-size factor when it persists (default ``1.2``).
      min_step_size: the smallest step size (default ``1e-6``).
      max_step_size: the largest step size (default ``50.0``).

    References:
      Riedmiller & Braun, 1993, https://ieeexplore.ieee.org/document/298623;
      Igel & Hüsken, 2003, https://doi.org/10.1016/S0925-2312(01)00700-7

    Example::

        >>> opt = otx.rprop(1e-2)
    """
    return chain(
        T.scale_by_rprop(
            learning_rate=learning_rate,
            eta_minus=eta_minus,
            eta_plus=eta_plus,
            min_step_size=min_step_size,
            max_step_size=max_step_size,
        ),
        T.scale(-1.0),
    )


def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: Num = 0.01,
    gamma: Num = 0.55,
    key: int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformationExtraArgs:
    r"""Noisy SGD: SGD on gradients with annealed Gaussian noise added.

    ``chain(add_noise(eta, gamma, key), scale_by_learning_rate(learning_rate))``:

    .. math::
        u_k = -\alpha_k (g_k + \xi_k),\qquad \xi_k \sim \mathcal N\big(0, \eta / k^\gamma\big)

    for steps :math:`k = 1, 2, \dots` (see :func:`optax_torch.add_noise`). The generator state
    lives in the optimizer state, so runs are reproducible from ``key``. It draws from a
    ``torch.Generator``, so its ``update`` runs eagerly, not under ``torch.compile``.

    Args:
      learning_rate: a number, a 0-d tensor or a schedule ``count -> value``.
      eta: the initial variance :math:`\eta` of the noise (default ``0.01``).
      gamma: the decay exponent :math:`\gamma` of the variance (default ``0.55``).
      key: the integer seed of the noise (optax's ``key``; ``None``: 0, as optax).
      seed: deprecated alias of ``key``, as in optax.

    Reference: Neelakantan et al., 2015, https://arxiv.org/abs/1511.06807

    Example::

        >>> opt = otx.noisy_sgd(1e-2, key=0)
    """
    _validate.check_finite("learning_rate", learning_rate)
    return chain(T.add_noise(eta, gamma, key, seed=seed), T.scale_by_learning_rate(learning_rate))
