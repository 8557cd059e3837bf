"""Every public name of optax (top level, ``optax.contrib``, ``optax.tree``, ``optax.schedules``)
has an optax_torch counterpart of the same name, or is listed below with the reason it has none.

The lists are exact: a name that gains a counterpart must leave :data:`EXCLUDED`, and a name optax
adds fails this test until it is ported or excluded, so the catalogue cannot silently rot.
"""

from __future__ import annotations

import optax
import optax.contrib
import optax.schedules
import optax.tree
import pytest

import optax_torch as otx
import optax_torch.contrib
import optax_torch.schedules
import optax_torch.tree

# Names of optax that make no sense in optax_torch (torch has them, or they are JAX machinery).
EXCLUDED: dict[str, dict[str, str]] = {
    "optax": {
        # Sub-packages outside the optimizer catalogue (the scope excepts them; torch has
        # losses in torch.nn.functional, and projections/perturbations are separate libraries).
        "losses": "loss functions: torch.nn.functional has them",
        "projections": "projections onto constraint sets: out of scope (issue 8)",
        "perturbations": "perturbed optimizers: out of scope (issue 8)",
        "assignment": "Hungarian matching (scipy.optimize.linear_sum_assignment on torch)",
        "experimental": "optax's experimental namespace (unstable API)",
        "second_order": "deprecated in optax (fisher_diag, hessian_diag, hvp); torch.func has them",
        "microbatching": "a JAX function transform (lax.fori_loop); torch.func users chunk batches",
        "microbatch": "see microbatching",
        "tree_utils": "the old name of optax.tree (optax_torch.tree)",
        "multi_normal": "a JAX distribution helper; torch.distributions.MultivariateNormal",
        # Loss functions re-exported at optax's top level (deprecated aliases of optax.losses).
        "convex_kl_divergence": "loss function (torch.nn.functional)",
        "cosine_distance": "loss function",
        "cosine_similarity": "loss function (torch.nn.functional.cosine_similarity)",
        "ctc_loss": "loss function (torch.nn.functional.ctc_loss)",
        "ctc_loss_with_forward_probs": "loss function",
        "generalized_kl_divergence": "loss function",
        "hinge_loss": "loss function",
        "huber_loss": "loss function (torch.nn.functional.huber_loss)",
        "kl_divergence": "loss function (torch.nn.functional.kl_div)",
        "l2_loss": "loss function",
        "log_cosh": "loss function",
        "ntxent": "loss function",
        "safe_softmax_cross_entropy": "loss function",
        "sigmoid_binary_cross_entropy": "loss function",
        "sigmoid_focal_loss": "loss function (torchvision.ops.sigmoid_focal_loss)",
        "smooth_labels": "loss helper",
        "softmax_cross_entropy": "loss function (torch.nn.functional.cross_entropy)",
        "softmax_cross_entropy_with_integer_labels": "loss function",
        "squared_error": "loss function",
    },
    "optax.contrib": {},
    "optax.tree": {
        "split_key_like": "JAX PRNG keys; optax_torch's random transforms hold torch generators",
        "unwrap_random_key_data": "JAX PRNG keys",
    },
    "optax.schedules": {},
}

# Names not ported yet. Kept exact like EXCLUDED; the goal is an empty set.
NOT_YET: dict[str, set[str]] = {
    "optax": set(),
    "optax.contrib": set(),
    "optax.tree": set(),
    "optax.schedules": set(),
}

MODULES = {
    "optax": (optax, otx),
    "optax.contrib": (optax.contrib, optax_torch.contrib),
    "optax.tree": (optax.tree, optax_torch.tree),
    "optax.schedules": (optax.schedules, optax_torch.schedules),
}


def _public(module) -> set[str]:
    return {n for n in dir(module) if not n.startswith("_")}


def _missing(name: str) -> set[str]:
    theirs, ours = MODULES[name]
    return _public(theirs) - _public(ours)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_optax_name_is_ported_or_excluded(module):
    missing = _missing(module)
    unexplained = missing - set(EXCLUDED[module]) - NOT_YET[module]
    assert not unexplained, f"{module}: names without an optax_torch counterpart: {unexplained}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_exclusion_lists_are_exact(module):
    """An excluded or not-yet name that exists now (or that optax dropped) must leave the list."""
    theirs, ours = MODULES[module]
    listed = set(EXCLUDED[module]) | NOT_YET[module]
    stale = {n for n in listed if n in _public(ours) or n not in _public(theirs)}
    assert not stale, f"{module}: listed but ported (or gone from optax): {stale}"


def test_coverage_report(capsys):
    """Prints the counts (the numbers the issue note reports)."""
    lines = []
    for module, (theirs, _) in sorted(MODULES.items()):
        total = len(_public(theirs))
        missing = _missing(module)
        lines.append(
            f"{module}: {total - len(missing)}/{total} ported, {len(EXCLUDED[module])} excluded, "
            f"{len(NOT_YET[module])} not yet"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
