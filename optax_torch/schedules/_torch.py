r"""The schedules of ``torch.optim.lr_scheduler`` as pure functions of the step count.

Each function here returns a schedule (``count -> value``, float64, traceable: see
:mod:`optax_torch.schedules._join`) whose value at ``count`` :math:`t` is the learning rate (or
momentum) that the torch scheduler sets after :math:`t` calls of ``scheduler.step()``, i.e. the
one used by the optimizer step that follows :math:`t` completed steps, the same convention as
the step count of an optax_torch optimizer state. ``init_value`` plays the part of torch's
``base_lr`` (the group's ``lr`` when the scheduler was created).

torch evaluates most schedulers *recursively* (each ``step()`` multiplies the current ``lr`` by
a factor); the functions here use the closed forms, which agree with the recursions to rounding
(in float64, below ``1e-13`` relative over hundreds of steps, e.g. ``CosineAnnealingLR`` over
three periods of 1000 steps). torch computes ``CosineAnnealingWarmRestarts``, ``CyclicLR``,
``OneCycleLR`` in closed form too, with the same operations as here.

================================ ===============================================================
``torch.optim.lr_scheduler``     optax_torch schedule
================================ ===============================================================
``LambdaLR(f)``                  ``lambda t: init_value * f(t)`` (any traceable ``f``)
``MultiplicativeLR(f)``          no closed form in general (the running product of ``f``)
``StepLR``                       :func:`step_schedule` (also ``exponential_decay(init_value,
                                 step_size, gamma, staircase=True)``)
``MultiStepLR``                  :func:`multistep_schedule` (repeated milestones count twice)
``ConstantLR(factor, T)``        ``piecewise_constant_schedule(init_value * factor, {T: 1 /
                                 factor})`` (torch's own arithmetic, bit for bit)
``LinearLR(s, e, T)``            ``linear_schedule(init_value * s, init_value * e, T)``
``ExponentialLR(gamma)``         ``exponential_decay(init_value, 1, gamma)``
``PolynomialLR(T, power)``       ``polynomial_schedule(init_value, 0.0, power, T)``
``CosineAnnealingLR``            :func:`cosine_annealing_schedule`; optax's
                                 ``cosine_decay_schedule(init_value, T_max, alpha=eta_min /
                                 init_value)`` is the same up to ``T_max`` but then stays at
                                 ``eta_min``, where torch's cosine goes back up
``CosineAnnealingWarmRestarts``  :func:`cosine_annealing_warm_restarts_schedule` (optax's
                                 ``sgdr_schedule`` needs every cycle listed)
``CyclicLR``                     :func:`cyclic_schedule`, momentum:
                                 :func:`cyclic_momentum_schedule`
``OneCycleLR``                   :func:`one_cycle_schedule`, momentum:
                                 :func:`one_cycle_momentum_schedule` (optax's
                                 ``cosine_onecycle_schedule`` / ``linear_onecycle_schedule``
                                 place the phases differently: ``pct_start * T`` instead of
                                 torch's ``pct_start * T - 1``, and have no ``three_phase``)
``SequentialLR``                 ``join_schedules`` of the schedules above
``ChainedScheduler``             the product of multiplicative schedules, e.g. ``lambda t: s1(t)
                                 * s2(t) / init_value``
``ReduceLROnPlateau``            not a schedule (it reads a metric): the transform
                                 :func:`optax_torch.contrib.reduce_on_plateau` (``mode``,
                                 ``threshold``, ``threshold_mode``, ``eps`` extensions)
``swa_utils.SWALR``              :func:`swa_schedule`
================================ ===============================================================

Hyperparameters are validated when the schedule is built (``ValueError`` naming the argument,
where torch raises at the scheduler's construction).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from optax_torch.base import Schedule
from optax_torch.schedules._join import _as_value, _float_count

__all__ = [
    "cosine_annealing_schedule",
    "cosine_annealing_warm_restarts_schedule",
    "cyclic_momentum_schedule",
    "cyclic_schedule",
    "multistep_schedule",
    "one_cycle_momentum_schedule",
    "one_cycle_schedule",
    "step_schedule",
    "swa_schedule",
]

Numeric = float | int | torch.Tensor

# Counts are at most int64's maximum; cycles of warm restarts past it are never reached.
_MAX_COUNT = 2**63


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def step_schedule(init_value: Numeric, step_size: int, gamma: float = 0.1) -> Schedule:
    r"""``torch.optim.lr_scheduler.StepLR``: decays by ``gamma`` every ``step_size`` steps.

    .. math::
      \eta_t = \eta_0\, \gamma^{\lfloor t / s \rfloor}

    Args:
      init_value: the initial value :math:`\eta_0` (torch's ``base_lr``).
      step_size: positive integer :math:`s`, the period of the decay.
      gamma: the multiplicative factor :math:`\gamma`, default ``0.1``.

    Returns:
      A function that maps step counts to values.

    Reference: ``torch.optim.lr_scheduler.StepLR`` (torch 2.13).

    Examples:
      >>> from optax_torch.schedules import step_schedule
      >>> sched = step_schedule(1.0, step_size=10, gamma=0.5)
      >>> [sched(t).item() for t in (0, 9, 10, 25)]
      [1.0, 1.0, 0.5, 0.25]
    """
    _check_positive_int("step_size", step_size)

    def schedule(count):
        count = _float_count(count)
        return _as_value(init_value * gamma ** torch.floor(count / step_size), count)

    return schedule


def multistep_schedule(
    init_value: Numeric, milestones: Iterable[int], gamma: float = 0.1
) -> Schedule:
    r"""``torch.optim.lr_scheduler.MultiStepLR``: decays by ``gamma`` at each milestone.

    .. math::
      \eta_t = \eta_0\, \gamma^{\#\{i : m_i \leq t\}}

    A milestone listed twice decays twice, as in torch.

    Args:
      init_value: the initial value :math:`\eta_0` (torch's ``base_lr``).
      milestones: the steps :math:`m_i` at which to decay (any order, repeats allowed).
      gamma: the multiplicative factor :math:`\gamma`, default ``0.1``.

    Returns:
      A function that maps step counts to values.

    Reference: ``torch.optim.lr_scheduler.MultiStepLR`` (torch 2.13).

    Examples:
      >>> from optax_torch.schedules import multistep_schedule
      >>> sched = multistep_schedule(1.0, milestones=[3, 6], gamma=0.5)
      >>> [sched(t).item() for t in (0, 3, 5, 6)]
      [1.0, 0.5, 0.5, 0.25]
    """
    ms = sorted(milestones)
    for m in ms:
        if isinstance(m, bool) or not isinstance(m, int):
            raise ValueError(f"milestones must be integers, got milestones={ms!r}")

    def schedule(count):
        count = _float_count(count)
        passed = torch.zeros_like(count)
        for m in ms:
            passed = passed + (count >= m).to(count.dtype)
        return _as_value(init_value * gamma**passed, count)

    return schedule


def cosine_annealing_schedule(init_value: Numeric, T_max: int, eta_min: Numeric = 0.0) -> Schedule:
    r"""``torch.optim.lr_scheduler.CosineAnnealingLR``: a cosine of period ``2 * T_max``.

    .. math::
      \eta_t = \eta_{min} + \tfrac{1}{2} (\eta_0 - \eta_{min})
        \left(1 + \cos\left(\pi\, \frac{t}{T_{max}}\right)\right)

    for every :math:`t`: after :math:`T_{max}` steps the value rises back towards
    :math:`\eta_0` (torch's behaviour; optax's ``cosine_decay_schedule`` holds
    :math:`\eta_{min}` instead).

    Args:
      init_value: the initial value :math:`\eta_0` (torch's ``base_lr``).
      T_max: positive integer, the number of steps of the half period.
      eta_min: the minimum value, default ``0``.

    Returns:
      A function that maps step counts to values.

    Reference: ``torch.optim.lr_scheduler.CosineAnnealingLR`` (torch 2.13); Loshchilov & Hutter,
    `SGDR: Stochastic Gradient Descent with Warm Restarts <https://arxiv.org/abs/1608.03983>`_.

    Examples:
      >>> from optax_torch.schedules import cosine_annealing_schedule
      >>> sched = cosine_annealing_schedule(1.0, T_max=10)
      >>> [round(sched(t).item(), 6) for t in (0, 5, 10, 15)]
      [1.0, 0.5, 0.0, 0.5]
    """
    _check_positive_int("T_max", T_max)

    def schedule(count):
        count = _float_count(count)
        cos = torch.cos(math.pi * count / T_max)
        return _as_value(eta_min + (init_value - eta_min) * (1 + cos) / 2, count)

    return schedule


def cosine_annealing_warm_restarts_schedule(
    init_value: Numeric, T_0: int, T_mult: int = 1, eta_min: Numeric = 0.0
) -> Schedule:
    r"""``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` (SGDR).

    .. math::
      \eta_t = \eta_{min} + \tfrac{1}{2} (\eta_0 - \eta_{min})
        \left(1 + \cos\left(\pi\, \frac{T_{cur}}{T_i}\right)\right)

    where the :math:`i`-th cycle lasts :math:`T_i = T_0 T_{mult}^i` steps and :math:`T_{cur}` is
    the number of steps since the start of the current cycle (the value jumps back to
    :math:`\eta_0` at each restart).

    Args:
      init_value: the initial value :math:`\eta_0` (torch's ``base_lr``).
      T_0: positive integer, the length of the first cycle.
      T_mult: integer ``>= 1``, the factor by which each cycle is longer than the previous one,
        default ``1``.
      eta_min: the minimum value, default ``0``.

    Returns:
      A function that maps step counts to values.

    Reference: ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts`` (torch 2.13); Loshchilov
    & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_.

    Examples:
      >>> from optax_torch.schedules import cosine_annealing_warm_restarts_schedule
      >>> sched = cosine_annealing_warm_restarts_schedule(1.0, T_0=4, T_mult=2)
      >>> [round(sched(t).item(), 4) for t in (0, 2, 4, 8, 12)]
      [1.0, 0.5, 1.0, 0.5, 1.0]
    """
    if isinstance(T_0, bool) or not isinstance(T_0, int) or T_0 <= 0:
        raise ValueError(f"Expected positive integer T_0, but got T_0={T_0!r}")
    if isinstance(T_mult, bool) or not isinstance(T_mult, int) or T_mult < 1:
        raise ValueError(f"Expected integer T_mult >= 1, but got T_mult={T_mult!r}")
    # Starts of the cycles after the first (exact integers), up to the largest count.
    starts: list[int] = []
    if T_mult > 1:
        start, length = T_0, T_0 * T_mult
        while start < _MAX_COUNT:
            starts.append(start)
            start, length = start + length, length * T_mult

    def schedule(count):
        count = _float_count(count)
        if T_mult == 1:
            t_cur = torch.remainder(count, T_0)
            t_i: Any = T_0
        else:
            begin = torch.zeros_like(count)
            t_i = torch.full_like(count, T_0)
            length = T_0
            for s in starts:
                length *= T_mult
                later = count >= s
                begin = torch.where(later, float(s), begin)
                t_i = torch.where(later, float(length), t_i)
            t_cur = count - begin
        cos = torch.cos(math.pi * t_cur / t_i)
        return _as_value(eta_min + (init_value - eta_min) * (1 + cos) / 2, count)

    return schedule


def _cyclic_position(
    step_size_up: int,
    step_size_down: int | None,
    mode: str,
    gamma: float,
    scale_fn: Callable[[Any], Any] | None,
    scale_mode: str,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, Any]]:
    """``count -> (scale_factor, scale)`` of CyclicLR (the validated shared part)."""
    if scale_fn is None:
        _check_choice("mode", mode, ("triangular", "triangular2", "exp_range"))
        scale_mode = "iterations" if mode == "exp_range" else "cycle"
    else:
        _check_choice("scale_mode", scale_mode, ("cycle", "iterations"))
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    if not up > 0 or not down >= 0:
        raise ValueError(
            "step_size_up must be positive and step_size_down non-negative, got "
            f"step_size_up={step_size_up!r}, step_size_down={step_size_down!r}"
        )
    total_size = up + down
    step_ratio = up / total_size

    def scale_of(x):
        if scale_fn is not None:
            return scale_fn(x)
        if mode == "triangular":
            return 1.0
        if mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return gamma**x

    def position(count: torch.Tensor):
        cycle = torch.floor(1 + count / total_size)
        x = 1.0 + count / total_size - cycle
        if step_ratio == 1.0:  # no down phase: (x - 1) / 0 is never selected
            scale_factor = x / step_ratio
        else:
            scale_factor = torch.where(x <= step_ratio, x / step_ratio, (x - 1) / (step_ratio - 1))
        return scale_factor, scale_of(cycle if scale_mode == "cycle" else count)

    return position


def cyclic_schedule(
    base_lr: Numeric,
    max_lr: Numeric,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
) -> Schedule:
    r"""``torch.optim.lr_scheduler.CyclicLR``: cyclical learning rates.

    With :math:`S = s_{up} + s_{down}`, cycle :math:`c = \lfloor 1 + t / S \rfloor`, position
    :math:`x = 1 + t / S - c \in [0, 1)` and :math:`r = s_{up} / S`,

    .. math::
      f = \begin{cases} x / r, & x \leq r \\ (x - 1) / (r - 1), & x > r \end{cases}, \qquad
      \eta_t = \eta_{base} + (\eta_{max} - \eta_{base})\, f\, \sigma(\cdot)

    where the amplitude scale :math:`\sigma` is ``1`` (``"triangular"``), :math:`2^{1-c}`
    (``"triangular2"``), :math:`\gamma^t` (``"exp_range"``) or ``scale_fn`` evaluated at
    :math:`c` (``scale_mode="cycle"``) or :math:`t` (``"iterations"``).

    Args:
      base_lr: the lower bound :math:`\eta_{base}` (torch sets the group's ``lr`` to it).
      max_lr: the upper bound :math:`\eta_{max}`.
      step_size_up: steps of the increasing half of a cycle, default ``2000``.
      step_size_down: steps of the decreasing half, default ``None`` (``step_size_up``).
      mode: ``"triangular"`` (default), ``"triangular2"`` or ``"exp_range"``; ignored when
        ``scale_fn`` is given.
      gamma: the base of ``"exp_range"``'s :math:`\gamma^t`, default ``1.0``.
      scale_fn: a custom amplitude scale, a traceable function of a float64 tensor (the cycle
        number or the count), default ``None``.
      scale_mode: ``"cycle"`` (default) or ``"iterations"``, what ``scale_fn`` is evaluated on.

    Returns:
      A function that maps step counts to values.

    Reference: ``torch.optim.lr_scheduler.CyclicLR`` (torch 2.13); Smith, `Cyclical Learning
    Rates for Training Neural Networks <https://arxiv.org/abs/1506.01186>`_, 2017.

    Examples:
      >>> from optax_torch.schedules import cyclic_schedule
      >>> sched = cyclic_schedule(0.1, 1.0, step_size_up=2, mode="triangular2")
      >>> [round(sched(t).item(), 4) for t in range(7)]
      [0.1, 0.55, 1.0, 0.55, 0.1, 0.325, 0.55]
    """
    position = _cyclic_position(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)

    def schedule(count):
        count = _float_count(count)
        scale_factor, scale = position(count)
        base_height = (max_lr - base_lr) * scale_factor
        return _as_value(base_lr + base_height * scale, count)

    return schedule


def cyclic_momentum_schedule(
    base_momentum: Numeric = 0.8,
    max_momentum: Numeric = 0.9,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: float = 1.0,
    scale_fn: Callable[[Any], Any] | None = None,
    scale_mode: str = "cycle",
) -> Schedule:
    r"""The momentum cycle of ``torch.optim.lr_scheduler.CyclicLR`` (``cycle_momentum=True``).

    The mirror image of :func:`cyclic_schedule`: with the same :math:`f` and :math:`\sigma`,

    .. math::
      m_t = m_{max} - (m_{max} - m_{base})\, f\, \sigma(\cdot),

    so the momentum is ``max_momentum`` when the learning rate is ``base_lr``. torch writes it to
    the group's ``momentum``, or to ``betas[0]`` for optimizers with ``betas`` (Adam...); here
    use it as the momentum or ``b1`` of a transform (e.g. with ``inject_hyperparams``).

    Args:
      base_momentum: the lower bound, default ``0.8``.
      max_momentum: the upper bound, default ``0.9``.
      step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode: as in
        :func:`cyclic_schedule` (use the same values).

    Returns:
      A function that maps step counts to values.

    Reference: ``torch.optim.lr_scheduler.CyclicLR`` (torch 2.13).

    Examples:
      >>> from optax_torch.schedules import cyclic_momentum_schedule
      >>> sched = cyclic_momentum_schedule(0.8, 0.9, step_size_up=2)
      >>> [round(sched(t).item(), 4) for t in range(5)]
      [0.9, 0.85, 0.8, 0.85, 0.9]
    """
    position = _cyclic_position(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)

    def schedule(count):
        count = _float_count(count)
        scale_factor, scale = position(count)
        base_height = (max_momentum - base_momentum) * scale_factor
        return _as_value(max_momentum - base_height * scale, count)

    return schedule


def _one_cycle_phases(
    total_steps: int | None,
    epochs: int | None,
    steps_per_epoch: int | None,
    pct_start: float,
    anneal_strategy: str,
    three_phase: bool,
) -> tuple[int, list[tuple[float, int, int]]]:
    """``(total_steps, [(end_step, start, end)])``; start/end index the (initial, peak, final)
    values of the lr (for the momentum: (max, base, max))."""
    if total_steps is not None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
    elif epochs is not None and steps_per_epoch is not None:
        _check_positive_int("epochs", epochs)
        _check_positive_int("steps_per_epoch", steps_per_epoch)
        total_steps = epochs * steps_per_epoch
    else:
        raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
    if not isinstance(pct_start, float) or not 0 <= pct_start <= 1:
        raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    _check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    if three_phase:
        phases = [
            (float(pct_start * total_steps) - 1, 0, 1),
            (float(2 * pct_start * total_steps) - 2, 1, 0),
            (float(total_steps - 1), 0, 2),
        ]
    else:
        phases = [(float(pct_start * total_steps) - 1, 0, 1), (float(total_steps - 1), 1, 2)]
    return total_steps, phases


def _one_cycle(
    values: tuple[Any, Any, Any],
    total_steps: int,
    phases: list[tuple[float, int, int]],
    anneal_strategy: str,
) -> Schedule:
    def anneal(start, end, pct):
        if anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (torch.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def schedule(count):
        count = _float_count(count)
        step = torch.clamp(count, max=float(total_steps))  # torch raises past total_steps
        out = None
        start_step = 0.0
        for i, (end_step, a, b) in enumerate(phases):
            span = end_step - start_step
            pct = (step - start_step) / (span if span != 0 else 1.0)  # torch: ZeroDivisionError
            value = _as_value(anneal(values[a], values[b], pct), count)
            if out is None:
                out = value
            else:  # phase i applies where every earlier phase has ended
                out = torch.where(step <= phases[i - 1][0], out, value)
            start_step = end_step
        assert out is not None
        return out

    return schedule


def one_cycle_schedule(
    max_lr: Numeric,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""``torch.optim.lr_scheduler.OneCycleLR``: the 1cycle learning rate policy.

    With :math:`\eta_{init} = \eta_{max} / d`, :math:`\eta_{min} = \eta_{init} / d_f` and
    :math:`T` the total number of steps, the value is annealed (half cosine or linearly) from
    :math:`\eta_{init}` to :math:`\eta_{max}` over steps :math:`[0, pT - 1]`, then from
    :math:`\eta_{max}` to :math:`\eta_{min}` over :math:`[pT - 1, T - 1]`; with
    ``three_phase``, from :math:`\eta_{max}` back to :math:`\eta_{init}` over
    :math:`[pT - 1, 2pT - 2]` and then to :math:`\eta_{min}` over :math:`[2pT - 2, T - 1]`.
    Annealing from :math:`a` to :math:`b` at fraction :math:`q` of a phase is
    :math:`b + \frac{a - b}{2} (1 + \cos \pi q)` (``"cos"``) or :math:`a + (b - a) q`
    (``"linear"``). torch raises past step :math:`T`; here the value is held from :math:`T` on.

    Args:
      max_lr: the peak value :math:`\eta_{max}`.
      total_steps: the total number of steps :math:`T`; default ``None``: ``epochs *
        steps_per_epoch``.
      epochs: the number of epochs (with ``steps_per_epoch``), default ``None``.
      steps_per_epoch: the number of steps per epoch, default ``None``.
      pct_start: the fraction :math:`p` of the steps spent increasing (a float in [0, 1]),
        default ``0.3``.
      anneal_strategy: ``"cos"`` (default) or ``"linear"``.
      div_factor: :math:`d`, default ``25``.
      final_div_factor: :math:`d_f`, default ``1e4``.
      three_phase: use the three phases, default ``False``.

    Returns:
      A function that maps step counts to values.

    Reference: ``torch.optim.lr_scheduler.OneCycleLR`` (torch 2.13); Smith & Topin,
    `Super-Convergence <https://arxiv.org/abs/1708.07120>`_, 2017.

    Examples:
      >>> from optax_torch.schedules import one_cycle_schedule
      >>> sched = one_cycle_schedule(1.0, total_steps=10, pct_start=0.5, anneal_strategy="linear",
      ...                            div_factor=10.0, final_div_factor=1.0)
      >>> [round(sched(t).item(), 4) for t in (0, 2, 4, 6, 9)]
      [0.1, 0.55, 1.0, 0.64, 0.1]
    """
    total, phases = _one_cycle_phases(
        total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, three_phase
    )
    initial = max_lr / div_factor
    values = (initial, max_lr, initial / final_div_factor)
    return _one_cycle(values, total, phases, anneal_strategy)


def one_cycle_momentum_schedule(
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    base_momentum: Numeric = 0.85,
    max_momentum: Numeric = 0.95,
    three_phase: bool = False,
) -> Schedule:
    r"""The momentum cycle of ``torch.optim.lr_scheduler.OneCycleLR`` (``cycle_momentum``).

    Over the phases of :func:`one_cycle_schedule` (same arguments), the momentum is annealed
    from ``max_momentum`` to ``base_momentum`` while the learning rate rises, back to
    ``max_momentum`` while it falls, and held at ``max_momentum`` in the third phase. torch writes
    it to the group's ``momentum``, or to ``betas[0]`` for optimizers with ``betas``.

    Args:
      total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, three_phase: as in
        :func:`one_cycle_schedule` (use the same values).
      base_momentum: the lowest momentum (at the peak learning rate), default ``0.85``.
      max_momentum: the highest momentum, default ``0.95``.

    Returns:
      A function that maps step counts to values.

    Reference: ``torch.optim.lr_scheduler.OneCycleLR`` (torch 2.13).

    Examples:
      >>> from optax_torch.schedules import one_cycle_momentum_schedule
      >>> sched = one_cycle_momentum_schedule(total_steps=10, pct_start=0.5)
      >>> [round(sched(t).item(), 4) for t in (0, 4, 9)]
      [0.95, 0.85, 0.95]
    """
    total, phases = _one_cycle_phases(
        total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy, three_phase
    )
    if three_phase:  # the third phase holds max_momentum
        phases = [(phases[0][0], 0, 1), (phases[1][0], 1, 0), (phases[2][0], 0, 0)]
    values = (max_momentum, base_momentum, max_momentum)
    return _one_cycle(values, total, phases, anneal_strategy)


def swa_schedule(
    init_value: Numeric,
    swa_lr: Numeric,
    anneal_epochs: int = 10,
    anneal_strategy: str = "cos",
) -> Schedule:
    r"""``torch.optim.swa_utils.SWALR``: anneals to the SWA learning rate, then holds it.

    .. math::
      \eta_t = \alpha_t\, \eta_{swa} + (1 - \alpha_t)\, \eta_0, \qquad
      \alpha_t = a\left(\min\left(1, \frac{t}{\max(1, E)}\right)\right)

    with :math:`a(q) = (1 - \cos \pi q) / 2` (``"cos"``) or :math:`a(q) = q` (``"linear"``);
    with :math:`E = 0` the value is :math:`\eta_{swa}` from the start.

    Args:
      init_value: the value :math:`\eta_0` when the annealing starts (torch: the group's ``lr``
        when ``SWALR`` is created).
      swa_lr: the value annealed to, :math:`\eta_{swa}`.
      anneal_epochs: non-negative integer :math:`E`, the steps of the annealing, default ``10``.
      anneal_strategy: ``"cos"`` (default) or ``"linear"``.

    Returns:
      A function that maps step counts (of ``SWALR.step()`` calls) to values.

    Reference: ``torch.optim.swa_utils.SWALR`` (torch 2.13); Izmailov et al., `Averaging Weights
    Leads to Wider Optima and Better Generalization <https://arxiv.org/abs/1803.05407>`_, 2018.

    Examples:
      >>> from optax_torch.schedules import swa_schedule
      >>> sched = swa_schedule(1.0, 0.1, anneal_epochs=4, anneal_strategy="linear")
      >>> [round(sched(t).item(), 4) for t in (0, 2, 4, 9)]
      [1.0, 0.55, 0.1, 0.1]
    """
    _check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
    if isinstance(anneal_epochs, bool) or not isinstance(anneal_epochs, int) or anneal_epochs < 0:
        raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
    span = max(1, anneal_epochs)

    def schedule(count):
        count = _float_count(count)
        step = torch.clamp(count, min=1.0) if anneal_epochs == 0 else count
        q = torch.clamp(step / span, 0.0, 1.0)
        alpha = (1 - torch.cos(math.pi * q)) / 2 if anneal_strategy == "cos" else q
        return _as_value(swa_lr * alpha + init_value * (1 - alpha), count)

    return schedule
