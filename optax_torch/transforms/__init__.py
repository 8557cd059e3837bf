"""Gradient transformations, one family per module."""

from optax_torch.transforms import adaptive as _adaptive
from optax_torch.transforms import averaging as _averaging
from optax_torch.transforms import caution as _caution
from optax_torch.transforms import clipping as _clipping
from optax_torch.transforms import conditionality as _conditionality
from optax_torch.transforms import constraints as _constraints
from optax_torch.transforms import factorized as _factorized
from optax_torch.transforms import freezing as _freezing
from optax_torch.transforms import hessian as _hessian
from optax_torch.transforms import kron as _kron
from optax_torch.transforms import laprop as _laprop
from optax_torch.transforms import larc as _larc
from optax_torch.transforms import lbfgs as _lbfgs
from optax_torch.transforms import linesearch as _linesearch
from optax_torch.transforms import mars as _mars
from optax_torch.transforms import masking as _masking
from optax_torch.transforms import moments as _moments
from optax_torch.transforms import momentum as _momentum
from optax_torch.transforms import monitoring as _monitoring
from optax_torch.transforms import noise as _noise
from optax_torch.transforms import normalization as _normalization
from optax_torch.transforms import per_leaf as _per_leaf
from optax_torch.transforms import projection as _projection
from optax_torch.transforms import rms_root_state as _rms_root_state
from optax_torch.transforms import scaling as _scaling
from optax_torch.transforms import sign as _sign
from optax_torch.transforms import sparse as _sparse
from optax_torch.transforms import step_size as _step_size
from optax_torch.transforms import torch_lbfgs as _torch_lbfgs
from optax_torch.transforms import weight_decay as _weight_decay
from optax_torch.transforms import zoom_linesearch as _zoom_linesearch
from optax_torch.transforms.adaptive import *  # noqa: F403
from optax_torch.transforms.averaging import *  # noqa: F403
from optax_torch.transforms.caution import *  # noqa: F403
from optax_torch.transforms.clipping import *  # noqa: F403
from optax_torch.transforms.conditionality import *  # noqa: F403
from optax_torch.transforms.constraints import *  # noqa: F403
from optax_torch.transforms.factorized import *  # noqa: F403
from optax_torch.transforms.freezing import *  # noqa: F403
from optax_torch.transforms.hessian import *  # noqa: F403
from optax_torch.transforms.kron import *  # noqa: F403
from optax_torch.transforms.laprop import *  # noqa: F403
from optax_torch.transforms.larc import *  # noqa: F403
from optax_torch.transforms.lbfgs import *  # noqa: F403
from optax_torch.transforms.linesearch import *  # noqa: F403
from optax_torch.transforms.mars import *  # noqa: F403
from optax_torch.transforms.masking import *  # noqa: F403
from optax_torch.transforms.moments import *  # noqa: F403
from optax_torch.transforms.momentum import *  # noqa: F403
from optax_torch.transforms.monitoring import *  # noqa: F403
from optax_torch.transforms.noise import *  # noqa: F403
from optax_torch.transforms.normalization import *  # noqa: F403
from optax_torch.transforms.per_leaf import *  # noqa: F403
from optax_torch.transforms.projection import *  # noqa: F403
from optax_torch.transforms.rms_root_state import *  # noqa: F403
from optax_torch.transforms.scaling import *  # noqa: F403
from optax_torch.transforms.sign import *  # noqa: F403
from optax_torch.transforms.sparse import *  # noqa: F403
from optax_torch.transforms.step_size import *  # noqa: F403
from optax_torch.transforms.torch_lbfgs import *  # noqa: F403
from optax_torch.transforms.weight_decay import *  # noqa: F403
from optax_torch.transforms.zoom_linesearch import *  # noqa: F403

# Modules are bound under private names: a module and its main function may share a name
# (``contrib.muon``), and the function wins in this namespace, as in optax.
__all__: list[str] = [
    *[
        name
        for module in (
            _adaptive,
            _averaging,
            _caution,
            _clipping,
            _conditionality,
            _constraints,
            _factorized,
            _freezing,
            _hessian,
            _kron,
            _laprop,
            _larc,
            _lbfgs,
            _linesearch,
            _mars,
            _masking,
            _moments,
            _momentum,
            _monitoring,
            _noise,
            _normalization,
            _per_leaf,
            _projection,
            _rms_root_state,
            _scaling,
            _sign,
            _sparse,
            _step_size,
            _torch_lbfgs,
            _weight_decay,
            _zoom_linesearch,
        )
        for name in module.__all__
    ],
]
