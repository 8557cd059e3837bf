"""Gradient transformations, one family per module."""

from optax_torch.transforms.clipping import (
    ClipByGlobalNormState,
    ClipState,
    clip,
    clip_by_global_norm,
)
from optax_torch.transforms.masking import MaskedState, masked
from optax_torch.transforms.moments import (
    ScaleByAdamState,
    ScaleByAmsgradState,
    ScaleByNadamState,
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRssState,
    ScaleByRStdDevState,
    ScaleByRStdDevWithCountState,
    scale_by_adam,
    scale_by_amsgrad,
    scale_by_nadam,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from optax_torch.transforms.momentum import EmaState, TraceState, ema, trace
from optax_torch.transforms.scaling import (
    ScaleByScheduleState,
    ScaleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from optax_torch.transforms.weight_decay import (
    AddDecayedWeightsState,
    WeightDecaySchedule,
    add_decayed_weights,
)

__all__ = [
    "AddDecayedWeightsState",
    "ClipByGlobalNormState",
    "ClipState",
    "EmaState",
    "MaskedState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByNadamState",
    "ScaleByRStdDevState",
    "ScaleByRStdDevWithCountState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleState",
    "TraceState",
    "WeightDecaySchedule",
    "add_decayed_weights",
    "clip",
    "clip_by_global_norm",
    "ema",
    "masked",
    "scale",
    "scale_by_adam",
    "scale_by_amsgrad",
    "scale_by_learning_rate",
    "scale_by_nadam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "trace",
]
