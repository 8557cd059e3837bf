"""``torch.optim.Adagrad`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from optax_torch import tree
from optax_torch.base import GradientTransformation, identity, stateless
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import (
    TorchOptimDropIn,
    check_args,
    check_differentiable,
    check_fused_foreach,
    is_nonzero,
)
from optax_torch.transforms import (
    add_decayed_weights,
    scale,
    scale_by_learning_rate,
    scale_by_rss,
)
from optax_torch.transforms.scaling import scale_by_inverse_time_decay

__all__ = ["Adagrad"]


def _sparse_as_dense(weight_decay) -> GradientTransformation:
    """Sparse gradients (e.g. of ``nn.Embedding(sparse=True)``) made dense, rejected with a
    weight decay as torch does. Adagrad's dense step on them is torch's sparse step: entries
    without a gradient add 0 to their sum and get a zero update."""

    def densify(updates, params):
        del params
        if any(g.is_sparse for g in tree.leaves(updates)):
            if is_nonzero(weight_decay):
                raise RuntimeError("weight_decay option is not compatible with sparse gradients")
            return tree.map(lambda g: g.to_dense() if g.is_sparse else g, updates)
        return updates

    return stateless(densify)


def _adagrad_tx(
    lr,
    lr_decay,
    eps,
    weight_decay,
    initial_accumulator_value,
    foreach=None,
    maximize=False,
    differentiable=False,
    fused=None,
) -> GradientTransformation:
    """The chain of one ``Adagrad`` param group:
    ``[sparse as dense, maximize, L2 decay, rss (eps outside the root), lr_decay, -lr]``."""
    del foreach, fused
    check_differentiable(differentiable)
    return chain(
        _sparse_as_dense(weight_decay),
        scale(-1.0) if maximize else identity(),
        add_decayed_weights(weight_decay) if is_nonzero(weight_decay) else identity(),
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=False),
        scale_by_inverse_time_decay(lr_decay),
        scale_by_learning_rate(lr),
    )


class Adagrad(TorchOptimDropIn):
    r"""``torch.optim.Adagrad`` on optax_torch.

    Per param group, the chain (sparse gradients made dense) → ``scale(-1)`` (if ``maximize``)
    → ``add_decayed_weights(weight_decay)`` (L2) → ``scale_by_rss(initial_accumulator_value,
    eps, eps_in_sqrt=False)`` → ``scale_by_inverse_time_decay(lr_decay)`` →
    ``scale_by_learning_rate(lr)``, i.e. torch's

    .. math::
        g \leftarrow \pm g + \lambda p,\quad s \leftarrow s + g^2,\quad
        p \leftarrow p - \frac{\gamma}{1 + (t-1)\,\eta}\, \frac{g}{\sqrt{s} + \epsilon}

    with :math:`s_0` = ``initial_accumulator_value``, :math:`t` the parameter's step and
    :math:`\eta` = ``lr_decay``. As in torch, every sum starts at the constructor's
    ``initial_accumulator_value``, even in a param group that sets another. Sparse gradients
    (``nn.Embedding(sparse=True)``) are accepted, as in torch, and made dense: the same step
    (entries without a gradient add 0 to their sum and do not move), at the cost of a dense
    gradient; with a ``weight_decay`` they raise torch's ``RuntimeError``.

    Args:
      params: parameters or param groups (torch's format).
      lr: learning rate (float or 0-d tensor), default ``1e-2``.
      lr_decay: learning-rate decay :math:`\eta`, default ``0``.
      weight_decay: L2 penalty, default ``0``.
      initial_accumulator_value: initial value of the sum of squares, default ``0``.
      eps: added to the denominator (outside the square root), default ``1e-10``.
      foreach, fused: accepted and ignored (see the module docstring), default ``None``.
      maximize: maximize the objective, default ``False``.
      differentiable: must be ``False`` (``NotImplementedError`` otherwise).

    Example::

        >>> opt = Adagrad(model.parameters(), lr=0.1, lr_decay=1e-3)
        >>> loss.backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step`` (the parameter's number of steps) and ``sum``, as in torch,
    allocated for every parameter at construction (step 0, ``sum`` =
    ``initial_accumulator_value``). Deviations: with ``eps=0``, an entry
    whose sum is still 0 gets a zero update (torch: NaN). With a tensor ``lr`` and ``lr_decay``,
    torch computes ``lr / (1 + (step - 1) * lr_decay)`` in the tensor's dtype, here in float64.
    """

    _accepts_sparse_grads: ClassVar[bool] = True
    _state_key_map: ClassVar[dict[str, str]] = {
        "3.sum_of_squares": "sum",
        "4.count": "step",
    }

    def _group_hyperparams(self, group: dict[str, Any]) -> dict[str, Any]:
        # Like torch.optim.Adagrad: every sum starts at the constructor's (the defaults')
        # initial_accumulator_value, whatever a param group says.
        hp = super()._group_hyperparams(group)
        hp["initial_accumulator_value"] = self.defaults["initial_accumulator_value"]
        return hp

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_args(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
        )
        if fused and differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        check_fused_foreach(fused, foreach)
        check_differentiable(differentiable)
        super().__init__(
            params,
            _adagrad_tx,
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        # Like torch: every parameter's state (step 0, sum = initial_accumulator_value) exists
        # from construction on.
        self._allocate_state()
