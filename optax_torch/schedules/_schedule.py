"""Schedules: pure functions of the step count.

Schedules may be used to anneal the value of a hyperparameter over time; for instance the learning
rate used to update parameters. Each schedule here maps an integer step count (a tensor or a Python
``int``) to a float64 tensor shaped like the count, on the count's device (see
:mod:`optax_torch.schedules._join` for the conventions). Names, signatures and values follow
``optax.schedules``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from optax_torch import _validate as V
from optax_torch.base import Schedule
from optax_torch.schedules._join import _as_value, _float_count, join_schedules

__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]

_logger = logging.getLogger(__name__)

Numeric = float | int | torch.Tensor


def _check_values(**values: Any) -> None:
    """``ValueError`` naming the first NaN or infinite value (tensors and ``None`` pass)."""
    for name, value in values.items():
        V.check_finite(name, value)


def _check_steps(**steps: Any) -> None:
    """Step counts must be numbers, not NaN (a non-positive count keeps optax's meaning)."""
    for name, value in steps.items():
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(f"{name} must be an integer number of steps, got {name}={value!r}")


def _check_scales(who: str, boundaries_and_scales: dict[int, float]) -> None:
    for step, scale in boundaries_and_scales.items():
        if isinstance(step, float) and not math.isfinite(step):
            raise ValueError(f"`{who}` expects integer boundaries, got boundary {step!r}")
        if not scale >= 0.0:  # NaN too
            raise ValueError(
                f"`{who}` expects non-negative scale factors, got scale {scale!r} at boundary "
                f"{step!r} (boundaries_and_scales={boundaries_and_scales!r})"
            )


def _check_onecycle(
    peak_value: Any,
    pct_start: Any,
    div_factor: Any,
    final_div_factor: Any,
    pct_final: Any = None,
) -> None:
    V.check_finite("peak_value", peak_value)
    V.check_in_range("pct_start", pct_start, 0.0, 1.0)
    if pct_final is not None:
        V.check_in_range("pct_final", pct_final, 0.0, 1.0)
        numbers = isinstance(pct_start, float | int) and isinstance(pct_final, float | int)
        if numbers and pct_final < pct_start:
            raise ValueError(
                f"pct_final must be >= pct_start, got pct_start={pct_start!r}, "
                f"pct_final={pct_final!r}"
            )
    V.check_positive("div_factor", div_factor)
    V.check_positive("final_div_factor", final_div_factor)


def _finish(value: Any, count: torch.Tensor) -> torch.Tensor:
    """Casts a computed value to the schedule value convention (dtype, shape of ``count``)."""
    return _as_value(value, count)


def constant_schedule(value: Numeric) -> Schedule:
    """Constructs a constant schedule.

    Args:
      value: value to be held constant throughout.

    Returns:
      schedule
        A function that maps step counts to values.

    Examples:
      >>> from optax_torch.schedules import constant_schedule
      >>> schedule_fn = constant_schedule(5)
      >>> schedule_fn(0)
      tensor(5., dtype=torch.float64)
      >>> schedule_fn(100)
      tensor(5., dtype=torch.float64)
    """
    V.check_finite("value", value)

    def schedule(count):
        return _as_value(value, _float_count(count))

    return schedule


def polynomial_schedule(
    init_value: Numeric,
    end_value: Numeric,
    power: Numeric,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    r"""Constructs a schedule with polynomial transition from init to end value.

    This function transitions the value from an initial value (``init_value``) to a final value
    (``end_value``) over a specified number of steps (``transition_steps``) with a polynomial
    function of power ``power``. The transition can optionally begin after a specified number of
    initial steps (``transition_begin``).

    More precisely, the value at iteration :math:`t` is given by:

    .. math::
      \begin{cases}
        I, & \text{if } t < B \\
        (I - E) \left( 1 - \frac{t - B}{T} \right)^{P} + E, & \text{if } B \leq t < B + T \\
        E, & \text{if } t \geq B + T
      \end{cases}

    where :math:`I` is the initial value, :math:`E` is the end value, :math:`B` is the transition
    begin, :math:`T` is the transition steps, and :math:`P` is the power used for the polynomial
    transition.

    Args:
      init_value: initial value for the scalar to be annealed.
      end_value: end value of the scalar to be annealed.
      power: the power of the polynomial used to transition from init to end.
      transition_steps: number of steps over which annealing takes place. The scalar starts
        changing at ``transition_begin`` steps and completes the transition by
        ``transition_begin + transition_steps`` steps. If ``transition_steps <= 0``, then the
        entire annealing process is disabled and the value is held fixed at ``init_value``.
      transition_begin: must be non-negative (a negative value falls back to ``0``). After how
        many steps to start annealing (before this many steps the scalar value is held fixed at
        ``init_value``). Defaults to 0.

    Returns:
      schedule
        A function that maps step counts to values.

    Examples:
      >>> from optax_torch.schedules import polynomial_schedule
      >>> schedule_fn = polynomial_schedule(
      ...    init_value=1.0, end_value=0.01, transition_steps=100, power=2)
      >>> schedule_fn(0)  # value on the first iteration
      tensor(1., dtype=torch.float64)
      >>> schedule_fn(100)  # value on the last iteration
      tensor(0.0100, dtype=torch.float64)
    """
    _check_values(init_value=init_value, end_value=end_value, power=power)
    _check_steps(transition_steps=transition_steps, transition_begin=transition_begin)
    if transition_steps <= 0:
        _logger.info(
            "A polynomial schedule was set with a non-positive `transition_steps` value; this "
            "results in a constant schedule with value `init_value`."
        )
        return constant_schedule(init_value)

    if transition_begin < 0:
        _logger.info(
            "A polynomial schedule was set with a negative `transition_begin` value; this will "
            "result in `transition_begin` falling back to `0`."
        )
        transition_begin = 0

    def schedule(count):
        count = _float_count(count)
        steps = torch.clamp(count - transition_begin, 0, transition_steps)
        frac = 1 - steps / transition_steps
        return _finish((init_value - end_value) * (frac**power) + end_value, count)

    return schedule


def linear_schedule(
    init_value: Numeric,
    end_value: Numeric,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    r"""Schedule with linear transition from ``init_value`` to ``end_value``.

    More precisely, the value at iteration :math:`t` is given by:

    .. math::
      \begin{cases}
        I, & \text{if } t < B \\
        I + \frac{t - B}{T} (E - I), & \text{if } B \leq t < B + T \\
        E, & \text{if } t \geq B + T
      \end{cases}

    where :math:`I` is the initial value, :math:`E` is the end value, :math:`B` is the transition
    begin, and :math:`T` is the transition steps. This schedule is
    :func:`polynomial_schedule` with ``power=1``.

    Args:
      init_value: initial value for the scalar to be annealed.
      end_value: end value of the scalar to be annealed.
      transition_steps: number of steps over which annealing takes place. The scalar starts
        changing at ``transition_begin`` steps and completes the transition by
        ``transition_begin + transition_steps`` steps. If ``transition_steps <= 0``, then the
        entire annealing process is disabled and the value is held fixed at ``init_value``.
      transition_begin: must be non-negative. After how many steps to start annealing (before
        this many steps the scalar value is held fixed at ``init_value``). Defaults to 0.

    Returns:
      schedule
        A function that maps step counts to values.

    Examples:
      >>> from optax_torch.schedules import linear_schedule
      >>> schedule_fn = linear_schedule(init_value=1.0, end_value=0.01, transition_steps=100)
      >>> schedule_fn(0)  # value on the first iteration
      tensor(1., dtype=torch.float64)
      >>> schedule_fn(100)  # value on the last iteration
      tensor(0.0100, dtype=torch.float64)
    """
    return polynomial_schedule(
        init_value=init_value,
        end_value=end_value,
        power=1,
        transition_steps=transition_steps,
        transition_begin=transition_begin,
    )


def piecewise_constant_schedule(
    init_value: Numeric,
    boundaries_and_scales: dict[int, float] | None = None,
) -> Schedule:
    r"""Piecewise constant schedule with scaled jumps at specific boundaries.

    At each step :math:`t`, this schedule returns ``init_value`` scaled by the product of all
    factors :math:`f_i` such that :math:`t \geq b_i`, where :math:`(b_i, f_i)` are the entries
    of ``boundaries_and_scales``.

    Args:
      init_value: The starting value of the schedule.
      boundaries_and_scales: Dictionary of ``{step: scale}`` where ``scale`` is multiplied into
        the schedule value at the given ``step``. All ``scale`` values must be non-negative.
        Defaults to ``None`` (a constant schedule).

    Returns:
      A function that maps step counts to schedule values.

    Examples:
      >>> from optax_torch.schedules import piecewise_constant_schedule
      >>> sched = piecewise_constant_schedule(
      ...     init_value=1.0, boundaries_and_scales={100: 0.1, 200: 0.01})
      >>> print(sched(50).item())   # before first boundary
      1.0
      >>> print(sched(150).item())  # after first boundary
      0.1
      >>> print(sched(250).item())  # after second boundary
      0.001
    """
    V.check_finite("init_value", init_value)
    if boundaries_and_scales is not None:
        _check_scales("piecewise_constant_schedule", boundaries_and_scales)
        steps_and_scales = sorted(boundaries_and_scales.items())
    else:
        steps_and_scales = []

    def schedule(count):
        count = _float_count(count)
        value = _as_value(init_value, count)
        for threshold, scale in steps_and_scales:
            value = torch.where(count >= threshold, scale * value, value)
        return value

    return schedule


def exponential_decay(
    init_value: Numeric,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Numeric | None = None,
) -> Schedule:
    r"""Constructs a schedule with either continuous or discrete exponential decay.

    When ``count >= transition_begin`` the schedule returns the decayed value

    .. math::
      I \cdot r^{(t - B) / T}

    where :math:`I` is ``init_value``, :math:`r` is ``decay_rate``, :math:`B` is
    ``transition_begin`` and :math:`T` is ``transition_steps``; before that it returns
    :math:`I`. If ``staircase`` is ``True`` the exponent is rounded down,
    :math:`\lfloor (t - B) / T \rfloor`, and the decayed value follows a staircase function.

    Args:
      init_value: the initial value.
      transition_steps: must be positive. See the decay computation above. A non-positive value
        gives a constant schedule with value ``init_value``.
      decay_rate: must not be zero (zero gives a constant schedule). The decay rate.
      transition_begin: must be non-negative (a negative value falls back to ``0``). After how
        many steps to start annealing (before this many steps the scalar value is held fixed at
        ``init_value``). Defaults to 0.
      staircase: if ``True``, decay the values at discrete intervals. Defaults to ``False``.
      end_value: the value at which the exponential decay stops. When ``decay_rate < 1``,
        ``end_value`` is treated as a lower bound, otherwise as an upper bound. Has no effect when
        ``decay_rate = 0``. Defaults to ``None`` (no bound).

    Returns:
      schedule
        A function that maps step counts to values.

    Examples:
      >>> from optax_torch.schedules import exponential_decay
      >>> schedule_fn = exponential_decay(
      ...     init_value=1.0, transition_steps=10, decay_rate=0.5, staircase=True)
      >>> schedule_fn(25)
      tensor(0.2500, dtype=torch.float64)
    """
    _check_values(init_value=init_value, end_value=end_value)
    V.check_non_negative("decay_rate", decay_rate)
    _check_steps(transition_steps=transition_steps, transition_begin=transition_begin)
    if transition_steps <= 0:
        _logger.info(
            "An exponential schedule was set with a non-positive `transition_steps` value; this "
            "will result in a constant schedule with value `init_value`."
        )
        return constant_schedule(init_value)

    if decay_rate == 0:
        _logger.info(
            "An exponential schedule was set with a zero `decay_rate` value; this will result in "
            "a constant schedule with value `init_value`."
        )
        return constant_schedule(init_value)

    if transition_begin < 0:
        _logger.info(
            "An exponential schedule was set with a negative `transition_begin` value; this will "
            "result in `transition_begin` falling back to `0`."
        )
        transition_begin = 0

    decays = bool(decay_rate < 1.0)

    def schedule(count):
        count = _float_count(count)
        decreased_count = count - transition_begin
        p = decreased_count / transition_steps
        if staircase:
            p = torch.floor(p)
        decayed = _as_value(init_value * decay_rate**p, count)
        decayed = torch.where(decreased_count <= 0, _as_value(init_value, count), decayed)
        if end_value is not None:
            bound = _as_value(end_value, count)
            decayed = torch.maximum(decayed, bound) if decays else torch.minimum(decayed, bound)
        return decayed

    return schedule


def cosine_decay_schedule(
    init_value: Numeric,
    decay_steps: int,
    alpha: Numeric = 0.0,
    exponent: Numeric = 1.0,
) -> Schedule:
    r"""Returns a function which implements cosine decay.

    This schedule smoothly decreases the value over ``decay_steps`` steps. The decay follows a
    cosine function, with an optional exponent to modify the decay curve. A minimum multiplier
    (``alpha``) keeps the value from dropping to zero.

    More precisely, the value at iteration :math:`t` is given by:

    .. math::
      \begin{cases}
        \alpha I + (1 - \alpha) I \left[ \frac{1}{2} \left( 1 + \cos \left( \pi\,\frac{t}{T}
        \right) \right) \right]^p, & \text{if } t \leq T \\
        \alpha I, & \text{if } t > T
      \end{cases}

    where :math:`T` is the number of decay steps (``decay_steps``), :math:`p` is the
    ``exponent`` and :math:`I` is the initial value (``init_value``).

    Args:
      init_value: An initial value for the schedule.
      decay_steps: Positive integer - the number of steps for which to apply the decay.
      alpha: The minimum value of the multiplier used to adjust the value. Defaults to 0.0.
      exponent: The default decay is ``0.5 * (1 + cos(pi * t/T))``, where ``t`` is the current
        timestep and ``T`` is ``decay_steps``. The exponent modifies this to be
        ``(0.5 * (1 + cos(pi * t/T))) ** exponent``. Defaults to 1.0.

    Returns:
      schedule
        A function that maps step counts to values.

    References:
      Loshchilov et al., `SGDR: Stochastic Gradient Descent with Warm Restarts
      <https://arxiv.org/abs/1608.03983>`_, 2017

    Examples:
      >>> from optax_torch.schedules import cosine_decay_schedule
      >>> schedule_fn = cosine_decay_schedule(init_value=1.0, decay_steps=100)
      >>> schedule_fn(50)
      tensor(0.5000, dtype=torch.float64)
    """
    if not decay_steps > 0:
        raise ValueError(
            f"The cosine_decay_schedule requires positive decay_steps, got {decay_steps=}."
        )
    _check_values(init_value=init_value, alpha=alpha, exponent=exponent)
    # Python ints can exceed every integer tensor dtype: compute in float64, as optax does.
    total = float(decay_steps) if isinstance(decay_steps, int) else decay_steps

    def schedule(count):
        count = _float_count(count)
        t = torch.clamp(count, max=total)
        cosine_decay = 0.5 * (1 + torch.cos(math.pi * t / total))
        decayed = (1 - alpha) * cosine_decay**exponent + alpha
        return _finish(init_value * decayed, count)

    return schedule


def _linear_interpolate(start: Any, end: Any, pct: torch.Tensor) -> torch.Tensor:
    """Linearly interpolates between two values."""
    return (end - start) * pct + start


def _cosine_interpolate(start: Any, end: Any, pct: torch.Tensor) -> torch.Tensor:
    """Cosine interpolates between two values (smoother transitions)."""
    return end + (start - end) / 2.0 * (torch.cos(math.pi * pct) + 1)


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: Numeric,
    boundaries_and_scales: dict[int, float] | None = None,
) -> Schedule:
    """Piecewise interpolated schedule with linear or cosine transitions.

    At each boundary, the scaling factor is multiplied into the current value; between boundaries
    the schedule interpolates (linearly or with a half cosine) **between the accumulated scaled
    values**, not between the raw multiplicative scales.

    Args:
      interpolate_type: Either ``'linear'`` or ``'cosine'``, the interpolation method used
        between boundary segments.
      init_value: Starting value for the schedule.
      boundaries_and_scales: A dictionary ``{step: scale}`` of the boundaries and their
        multiplicative scaling factors (non-negative). Defaults to ``None``.

    Returns:
      A function that maps step counts to interpolated values.

    Examples:
      >>> from optax_torch.schedules import piecewise_interpolate_schedule
      >>> sched = piecewise_interpolate_schedule(
      ...     interpolate_type='linear', init_value=1.0, boundaries_and_scales={4: 0.1, 8: 0.01})
      >>> [round(sched(step).item(), 6) for step in range(0, 11, 2)]
      [1.0, 0.55, 0.1, 0.0505, 0.001, 0.001]
    """
    if interpolate_type == "linear":
        interpolate_fn: Callable[..., torch.Tensor] = _linear_interpolate
    elif interpolate_type == "cosine":
        interpolate_fn = _cosine_interpolate
    else:
        raise ValueError(
            f"`interpolate_type` must be either 'cosine' or 'linear', got {interpolate_type!r}"
        )
    V.check_finite("init_value", init_value)

    if boundaries_and_scales:
        _check_scales("piecewise_interpolate_schedule", boundaries_and_scales)
        boundaries, scales = zip(*sorted(boundaries_and_scales.items()))
    else:
        boundaries, scales = (), ()

    bounds = (0, *boundaries)
    values = [init_value]  # cumulative products of the scales
    for scale in scales:
        values.append(values[-1] * scale)

    def schedule(count):
        count = _float_count(count)
        out = torch.zeros_like(count)
        for i in range(len(boundaries)):
            lo, hi = bounds[i], bounds[i + 1]
            pct = (count - lo) / max(hi - lo, 1)
            value = _as_value(interpolate_fn(values[i], values[i + 1], pct), count)
            out = torch.where((lo <= count) & (count < hi), value, out)
        return torch.where(bounds[-1] <= count, _as_value(values[-1], count), out)

    return schedule


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: Numeric,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    r"""Returns a schedule with three linear phases.

    * *Phase 1*, from iteration 0 to ``pct_start * transition_steps``: the value increases
      linearly from ``peak_value / div_factor`` to ``peak_value``.
    * *Phase 2*, from ``pct_start * transition_steps`` to ``pct_final * transition_steps``: the
      value decreases linearly from ``peak_value`` back to ``peak_value / div_factor``.
    * *Phase 3*, for the remaining steps: the value interpolates between
      ``peak_value / div_factor`` and ``peak_value / (div_factor * final_div_factor)``.

    Args:
      transition_steps: Number of steps over which annealing takes place.
      peak_value: Maximum value attained at ``pct_start`` of the cycle.
      pct_start: The fraction of the cycle spent increasing the value. Defaults to 0.3.
      pct_final: The fraction of the cycle spent increasing to ``peak_value`` then decreasing
        back to the initial value. Defaults to 0.85.
      div_factor: ``init_value = peak_value / div_factor``. Defaults to 25.0.
      final_div_factor: ``final_value = init_value / final_div_factor``. Defaults to 1e4.

    Returns:
      schedule
        A function that maps step counts to values.

    References:
      Smith et al, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
      Rates <https://arxiv.org/abs/1708.07120>`_, 2017
    """
    if transition_steps <= 0:
        raise ValueError(
            "A linear onecycle schedule was set with a non-positive `transition_steps`, got "
            f"transition_steps={transition_steps!r}"
        )
    _check_onecycle(peak_value, pct_start, div_factor, final_div_factor, pct_final)
    return piecewise_interpolate_schedule(
        "linear",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(pct_final * transition_steps): 1.0 / div_factor,
            transition_steps: 1.0 / final_div_factor,
        },
    )


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: Numeric,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> Schedule:
    """Returns a function which implements the onecycle schedule with cosine phases.

    The value increases from ``peak_value / div_factor`` to ``peak_value`` over the first
    ``pct_start * transition_steps`` steps, then decreases to
    ``peak_value / (div_factor * final_div_factor)`` at ``transition_steps``, both along half
    cosines; it stays there afterwards.

    Args:
      transition_steps: Number of steps over which annealing takes place.
      peak_value: Maximum value attained at ``pct_start`` of the cycle.
      pct_start: The fraction of the cycle spent increasing the value. Defaults to 0.3.
      div_factor: ``init_value = peak_value / div_factor``. Defaults to 25.0.
      final_div_factor: ``final_value = init_value / final_div_factor``. Defaults to 1e4.

    Returns:
      schedule
        A function that maps step counts to values.

    References:
      Smith et al, `Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
      Rates <https://arxiv.org/abs/1708.07120>`_, 2017

    Examples:
      >>> from optax_torch.schedules import cosine_onecycle_schedule
      >>> schedule_fn = cosine_onecycle_schedule(transition_steps=100, peak_value=1.0)
      >>> schedule_fn(30)
      tensor(1., dtype=torch.float64)
    """
    if transition_steps <= 0:
        raise ValueError(
            "A cosine onecycle schedule was set with a non-positive `transition_steps`, got "
            f"transition_steps={transition_steps!r}"
        )
    _check_onecycle(peak_value, pct_start, div_factor, final_div_factor)
    return piecewise_interpolate_schedule(
        "cosine",
        peak_value / div_factor,
        {
            int(pct_start * transition_steps): div_factor,
            int(transition_steps): 1.0 / (div_factor * final_div_factor),
        },
    )


def warmup_constant_schedule(
    init_value: Numeric,
    peak_value: Numeric,
    warmup_steps: int,
) -> Schedule:
    """Linear warmup followed by a constant schedule (no decay).

    Args:
      init_value: Initial value for the scalar to be annealed.
      peak_value: Peak value for the scalar at the end of the warmup, held afterwards.
      warmup_steps: Positive integer, the length of the linear warmup.

    Returns:
      schedule
        A function that maps step counts to values.

    Examples:
      >>> from optax_torch.schedules import warmup_constant_schedule
      >>> schedule_fn = warmup_constant_schedule(0.0, 1.0, warmup_steps=4)
      >>> schedule_fn(1), schedule_fn(10)
      (tensor(0.2500, dtype=torch.float64), tensor(1., dtype=torch.float64))
    """
    return linear_schedule(
        init_value=init_value, end_value=peak_value, transition_steps=warmup_steps
    )


def warmup_cosine_decay_schedule(
    init_value: Numeric,
    peak_value: Numeric,
    warmup_steps: int,
    decay_steps: int,
    end_value: Numeric = 0.0,
    exponent: Numeric = 1.0,
) -> Schedule:
    r"""Linear warmup followed by cosine decay.

    .. math::
      \begin{cases}
        I + \frac{t}{W} (P - I), & \text{if } t < W \\
        E + (P - E) \left[ \frac{1}{2} \left( 1 + \cos \left( \pi\,\frac{t - W}{D - W}
        \right) \right) \right]^p, & \text{if } W \leq t \leq D \\
        E, & \text{if } t > D
      \end{cases}

    where :math:`I` is ``init_value``, :math:`P` is ``peak_value``, :math:`E` is ``end_value``,
    :math:`W` is ``warmup_steps``, :math:`D` is ``decay_steps`` and :math:`p` is ``exponent``.

    Args:
      init_value: Initial value for the scalar to be annealed.
      peak_value: Peak value for the scalar at the end of the warmup.
      warmup_steps: Positive integer, the length of the linear warmup.
      decay_steps: Positive integer, the total length of the schedule. This includes the warmup
        time, so the number of steps during which cosine annealing is applied is
        ``decay_steps - warmup_steps`` (which must be positive).
      end_value: End value of the scalar to be annealed. Defaults to 0.0.
      exponent: The default decay is ``0.5 * (1 + cos(pi t/T))``, where ``t`` is the current
        timestep and ``T`` is ``decay_steps - warmup_steps``. The exponent modifies this to be
        ``(0.5 * (1 + cos(pi * t/T))) ** exponent``. Defaults to 1.0.

    Returns:
      schedule
        A function that maps step counts to values.

    References:
      Loshchilov et al., `SGDR: Stochastic Gradient Descent with Warm Restarts
      <https://arxiv.org/abs/1608.03983>`_, 2017

    Examples:
      >>> from optax_torch.schedules import warmup_cosine_decay_schedule
      >>> schedule_fn = warmup_cosine_decay_schedule(
      ...     init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=110)
      >>> schedule_fn(5), schedule_fn(10), schedule_fn(60)
      (tensor(0.5000, dtype=torch.float64), tensor(1., dtype=torch.float64), tensor(0.5000, dtype=torch.float64))
    """  # noqa: E501
    _check_values(init_value=init_value, peak_value=peak_value, end_value=end_value)
    V.check_non_negative("warmup_steps", warmup_steps)
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    schedules = [
        linear_schedule(init_value=init_value, end_value=peak_value, transition_steps=warmup_steps),
        cosine_decay_schedule(
            init_value=peak_value,
            decay_steps=decay_steps - warmup_steps,
            alpha=alpha,
            exponent=exponent,
        ),
    ]
    return join_schedules(schedules, [warmup_steps])


def warmup_exponential_decay_schedule(
    init_value: Numeric,
    peak_value: Numeric,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Numeric | None = None,
) -> Schedule:
    """Linear warmup followed by exponential decay.

    Args:
      init_value: Initial value for the scalar to be annealed.
      peak_value: Peak value for the scalar at the end of the warmup.
      warmup_steps: Positive integer, the length of the linear warmup.
      transition_steps: must be positive. See :func:`exponential_decay`.
      decay_rate: must not be zero. The decay rate.
      transition_begin: must be non-negative. After how many steps (counted from the end of the
        warmup) to start annealing (before this the value is held fixed at ``peak_value``).
        Defaults to 0.
      staircase: if ``True``, decay the values at discrete intervals. Defaults to ``False``.
      end_value: the value at which the exponential decay stops. When ``decay_rate < 1``,
        ``end_value`` is treated as a lower bound, otherwise as an upper bound. Defaults to
        ``None``.

    Returns:
      schedule
        A function that maps step counts to values.
    """
    _check_values(init_value=init_value, peak_value=peak_value)
    V.check_non_negative("warmup_steps", warmup_steps)
    schedules = [
        linear_schedule(init_value=init_value, end_value=peak_value, transition_steps=warmup_steps),
        exponential_decay(
            init_value=peak_value,
            transition_steps=transition_steps,
            decay_rate=decay_rate,
            transition_begin=transition_begin,
            staircase=staircase,
            end_value=end_value,
        ),
    ]
    return join_schedules(schedules, [warmup_steps])


def sgdr_schedule(cosine_kwargs: Iterable[dict[str, Any]]) -> Schedule:
    """SGD with warm restarts.

    This schedule joins several :func:`warmup_cosine_decay_schedule` cycles.

    Args:
      cosine_kwargs: An iterable of dicts, each the keyword arguments of one
        :func:`warmup_cosine_decay_schedule` cycle. The ``decay_steps`` entry says how long each
        cycle lasts, and therefore when to start the next one.

    Returns:
      schedule
        A function that maps step counts to values.

    References:
      Loshchilov et al., `SGDR: Stochastic Gradient Descent with Warm Restarts
      <https://arxiv.org/abs/1608.03983>`_, 2017
    """
    boundaries = []
    schedules = []
    step = 0
    for kwargs in cosine_kwargs:
        schedules.append(warmup_cosine_decay_schedule(**kwargs))
        boundaries.append(step + kwargs["decay_steps"])
        step += kwargs["decay_steps"]
    return join_schedules(schedules, boundaries[:-1])
