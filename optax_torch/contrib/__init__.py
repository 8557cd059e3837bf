"""Newer optimizers (optax's ``optax.contrib``), built by the same rules as the core library."""

from optax_torch.contrib import acprop as _acprop
from optax_torch.contrib import ademamix as _ademamix
from optax_torch.contrib import adopt as _adopt
from optax_torch.contrib import cocob as _cocob
from optax_torch.contrib import complex_valued as _complex_valued
from optax_torch.contrib import dadapt_adamw as _dadapt_adamw
from optax_torch.contrib import dog as _dog
from optax_torch.contrib import galore as _galore
from optax_torch.contrib import madgrad as _madgrad
from optax_torch.contrib import mechanic as _mechanic
from optax_torch.contrib import momo as _momo
from optax_torch.contrib import muon as _muon
from optax_torch.contrib import privacy as _privacy
from optax_torch.contrib import prodigy as _prodigy
from optax_torch.contrib import reduce_on_plateau as _reduce_on_plateau
from optax_torch.contrib import sam as _sam
from optax_torch.contrib import schedule_free as _schedule_free
from optax_torch.contrib import sophia as _sophia
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

# Modules are bound under private names: a module and its main function may share a name
# (``contrib.muon``), and the function wins in this namespace, as in optax.
__all__: list[str] = [
    *[
        name
        for module in (
            _acprop,
            _ademamix,
            _adopt,
            _cocob,
            _complex_valued,
            _dadapt_adamw,
            _dog,
            _galore,
            _madgrad,
            _mechanic,
            _momo,
            _muon,
            _privacy,
            _prodigy,
            _reduce_on_plateau,
            _sam,
            _schedule_free,
            _sophia,
        )
        for name in module.__all__
    ],
]
