"""Newer optimizers (optax's ``optax.contrib``), built by the same rules as the core library."""

from optax_torch.contrib import (
    acprop,
    ademamix,
    adopt,
    cocob,
    complex_valued,
    dadapt_adamw,
    dog,
    galore,
    madgrad,
    mechanic,
    momo,
    muon,
    privacy,
    prodigy,
    reduce_on_plateau,
    sam,
    schedule_free,
    sophia,
)
from optax_torch.contrib.acprop import *  # noqa: F403
from optax_torch.contrib.ademamix import *  # noqa: F403
from optax_torch.contrib.adopt import *  # noqa: F403
from optax_torch.contrib.cocob import *  # noqa: F403
from optax_torch.contrib.complex_valued import *  # noqa: F403
from optax_torch.contrib.dadapt_adamw import *  # noqa: F403
from optax_torch.contrib.dog import *  # noqa: F403
from optax_torch.contrib.galore import *  # noqa: F403
from optax_torch.contrib.madgrad import *  # noqa: F403
from optax_torch.contrib.mechanic import *  # noqa: F403
from optax_torch.contrib.momo import *  # noqa: F403
from optax_torch.contrib.muon import *  # noqa: F403
from optax_torch.contrib.privacy import *  # noqa: F403
from optax_torch.contrib.prodigy import *  # noqa: F403
from optax_torch.contrib.reduce_on_plateau import *  # noqa: F403
from optax_torch.contrib.sam import *  # noqa: F403
from optax_torch.contrib.schedule_free import *  # noqa: F403
from optax_torch.contrib.sophia import *  # noqa: F403

__all__: list[str] = [
    name
    for module in (
        acprop,
        ademamix,
        adopt,
        cocob,
        complex_valued,
        dadapt_adamw,
        dog,
        galore,
        madgrad,
        mechanic,
        momo,
        muon,
        privacy,
        prodigy,
        reduce_on_plateau,
        sam,
        schedule_free,
        sophia,
    )
    for name in module.__all__
]
