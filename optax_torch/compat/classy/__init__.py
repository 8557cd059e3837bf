"""Classy Vision's optimizers and param schedulers on optax_torch (``classy_vision.optim``,
Classy Vision 0.7).

Laid out like Classy Vision: :mod:`optax_torch.compat.classy.optim` (``ClassyOptimizer``,
``SGD`` with LARC, ``Adam``, ``AdamW``, ``RMSProp``, ``RMSPropTF``, ``ZeRO``, ``build_optimizer``,
``register_optimizer``) and :mod:`optax_torch.compat.classy.optim.param_scheduler` (the param
schedulers as pure functions of the training progress ``where`` in ``[0, 1)``, their registry,
and a bridge to optax_torch schedules of the step count). Classy Vision itself is not needed.
"""
