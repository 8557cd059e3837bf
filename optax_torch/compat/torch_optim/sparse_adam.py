"""``torch.optim.SparseAdam`` on optax_torch (see :mod:`optax_torch.compat.torch_optim`)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from optax_torch.base import GradientTransformation, identity
from optax_torch.combine import chain
from optax_torch.compat.torch_optim._common import TorchOptimDropIn
from optax_torch.transforms import scale, scale_by_learning_rate
from optax_torch.transforms.sparse import scale_by_sparse_adam

__all__ = ["SparseAdam"]


def _sparse_adam_tx(lr, betas, eps, maximize=False) -> GradientTransformation:
    """The chain of one ``SparseAdam`` param group: ``[maximize, sparse adam, -lr]``."""
    b1, b2 = betas
    return chain(
        scale(-1.0) if maximize else identity(),
        scale_by_sparse_adam(b1=b1, b2=b2, eps=eps),
        scale_by_learning_rate(lr),
    )


class SparseAdam(TorchOptimDropIn):
    r"""``torch.optim.SparseAdam`` on optax_torch: Adam for sparse gradients (e.g. of
    ``torch.nn.Embedding(sparse=True)``), with the moments and parameters updated only at the
    gradient's indices.

    Per param group, the chain ``scale(-1)`` (if ``maximize``) → ``scale_by_sparse_adam(b1, b2,
    eps)`` → ``scale_by_learning_rate(lr)``, i.e. torch's, at the (coalesced) indices :math:`I`
    of the sparse gradient :math:`g`, with :math:`k` the parameter's step count:

    .. math::
        m_I \leftarrow m_I + (1-\beta_1)(g_I - m_I),\quad
        v_I \leftarrow v_I + (1-\beta_2)(g_I^2 - v_I),\quad
        p_I \leftarrow p_I - \gamma\,\frac{\sqrt{1-\beta_2^k}}{1-\beta_1^k}\,
        \frac{m_I}{\sqrt{v_I} + \epsilon}

    The updates are sparse (torch's memory traffic): the moments are updated in place at
    :math:`I` and the parameter gets a sparse addition.

    Args:
      params: dense parameters or param groups (torch's format); sparse or complex parameters
        raise ``ValueError``.
      lr: learning rate (float or 0-d tensor), default ``1e-3``.
      betas: ``(beta1, beta2)``, default ``(0.9, 0.999)``.
      eps: added to the denominator, default ``1e-8``.
      maximize: maximize the objective, default ``False``.

    A dense gradient raises ``RuntimeError`` at ``step`` (use :class:`Adam`). ``SparseAdam`` has
    no ``foreach``, ``fused``, ``capturable`` or ``differentiable`` options (nor has torch's).

    Example::

        >>> emb = torch.nn.Embedding(1000, 16, sparse=True)
        >>> opt = SparseAdam(emb.parameters(), lr=1e-3)
        >>> emb(torch.tensor([3, 7])).sum().backward(); opt.step(); opt.zero_grad()

    State per parameter: ``step``, ``exp_avg`` and ``exp_avg_sq`` (dense), as in torch. ``step``
    is an int32 0-d tensor in ``optimizer.state`` and a Python ``int`` in ``state_dict()``
    (torch's type), so that ``torch.optim.SparseAdam`` loads it exactly.
    """

    _not_compilable = "it takes sparse COO gradients, which dynamo does not trace"

    _complex_as_real: ClassVar[bool] = False  # torch's SparseAdam rejects complex parameters
    _state_key_map: ClassVar[dict[str, str]] = {
        "1.count": "step",
        "1.mu": "exp_avg",
        "1.nu": "exp_avg_sq",
    }
    _accepts_sparse_grads: ClassVar[bool] = True

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr > 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not eps > 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        super().__init__(params, _sparse_adam_tx, lr=lr, betas=betas, eps=eps, maximize=maximize)

        sparse_params = []
        complex_params = []
        for index, param_group in enumerate(self.param_groups):
            if not isinstance(param_group, dict):
                raise AssertionError(
                    f"param_groups must be a list of dicts, but got {type(param_group)}"
                )
            for d_index, d_param in enumerate(param_group["params"]):
                if d_param.is_sparse:
                    sparse_params.append([index, d_index])
                if d_param.is_complex():
                    complex_params.append([index, d_index])
        if sparse_params:
            raise ValueError(
                f"Sparse params at indices {sparse_params}: SparseAdam requires dense parameter "
                "tensors"
            )
        if complex_params:
            raise ValueError(
                f"Complex params at indices {complex_params}: SparseAdam does not support "
                "complex parameters"
            )

    def _step_group(self, gi: int, group: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        for p in group["params"]:
            if p.grad is not None and not p.grad.is_sparse:
                raise RuntimeError(
                    "SparseAdam does not support dense gradients, please consider Adam instead"
                )
        super()._step_group(gi, group, *args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """The state in torch's layout, with ``step`` a Python ``int`` as in torch."""
        state_dict = super().state_dict()
        for entry in state_dict["state"].values():
            if isinstance(entry, dict) and isinstance(entry.get("step"), Tensor):
                entry["step"] = int(entry["step"])
        return state_dict
