"""transforms.caution: cautious updates (Liang et al., 2024), as timm applies them."""

from __future__ import annotations

import pytest
import torch

import optax_torch as otx


def test_masks_components_against_the_gradient_and_rescales():
    g = [torch.tensor([1.0, -1.0, 2.0, 0.5], dtype=torch.float64)]
    inner = otx.stateless(lambda u, p: [torch.tensor([2.0, 1.0, -1.0, 1.0], dtype=torch.float64)])
    tx = otx.caution(inner)
    updates, _ = tx.update(g, tx.init([torch.zeros(4)]))
    # Agreeing components: 0 and 3 (mask mean 0.5) -> kept and doubled.
    torch.testing.assert_close(updates[0], torch.tensor([4.0, 0.0, 0.0, 2.0], dtype=torch.float64))
    assert torch.equal(g[0], torch.tensor([1.0, -1.0, 2.0, 0.5], dtype=torch.float64))


def test_all_masked_is_bounded_by_min_fraction():
    tx = otx.caution(otx.scale(-1.0), min_fraction=0.25)
    updates, _ = tx.update([torch.ones(3)], tx.init([torch.zeros(3)]))
    assert torch.equal(updates[0], torch.zeros(3))
    with pytest.raises(ValueError, match="min_fraction"):
        otx.caution(otx.identity(), min_fraction=0.0)


def test_none_gradients_pass_and_state_is_inner():
    tx = otx.caution(otx.scale_by_adam())
    params = [torch.ones(2), torch.ones(3)]
    state = tx.init(params)
    assert type(state) is type(otx.scale_by_adam().init(params))
    updates, _ = tx.update([torch.ones(2), None], state, params)
    assert updates[1] is None


def test_caution_adamw_equals_timm():
    pytest.importorskip("timm")
    from timm.optim import AdamWLegacy as TimmAdamW

    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(2)]
    ref_params = [torch.nn.Parameter(x.clone()) for x in init]
    ref = TimmAdamW(ref_params, lr=0.05, weight_decay=0.0, caution=True)
    tx = otx.chain(otx.caution(otx.scale_by_adam()), otx.scale_by_learning_rate(0.05))
    params = [x.clone() for x in init]
    state = tx.init(params)
    for _ in range(20):
        grads = [torch.randn(x.shape, generator=gen, dtype=torch.float64) for x in init]
        for p, g in zip(ref_params, grads):
            p.grad = g.clone()
        ref.step()
        updates, state = tx.update(grads, state, params)
        params = otx.apply_updates(params, updates)
        for p, q in zip(ref_params, params):
            torch.testing.assert_close(q, p.detach(), rtol=0, atol=1e-12)


def test_complex_components_agree_by_the_real_part_of_conj_u_times_g():
    """A complex component is kept when Re(conj(u) g) > 0 (u and g less than 90 degrees apart
    in the plane); it failed with '"gt_cpu" not implemented for ComplexFloat' (fuzz-found)."""
    g = [torch.tensor([1 + 1j, 1 + 0j, -1 + 2j, 2j], dtype=torch.complex128)]
    u = torch.tensor([1 - 0.5j, -1 + 3j, -1 - 1j, 1 + 0j], dtype=torch.complex128)
    tx = otx.caution(otx.stateless(lambda _u, _p: [u]))
    updates, _ = tx.update(g, tx.init([torch.zeros(4, dtype=torch.complex128)]))
    # Re(conj(u) g) = 0.5, -1, -1, 0: only component 0 agrees (mask mean 1/4).
    expected = torch.tensor([4 - 2j, 0, 0, 0], dtype=torch.complex128)
    assert updates[0].dtype == torch.complex128
    torch.testing.assert_close(updates[0], expected, rtol=0, atol=0)
    # the real case is the same rule on real numbers
    real = otx.caution(otx.stateless(lambda _u, _p: [u.real.clone()]))
    r_updates, _ = real.update([g[0].real.clone()], real.init([torch.zeros(4)]))
    torch.testing.assert_close(
        r_updates[0], torch.tensor([2.0, 0.0, -2.0, 0.0], dtype=torch.float64)
    )
    # a chain on complex params runs (catalogue: caution_adam is complex_ok)
    tx = otx.chain(otx.caution(otx.scale_by_adam()), otx.scale_by_learning_rate(0.1))
    p = [torch.tensor([0.5 - 0.3j, 1j])]
    new, _ = tx.update([torch.tensor([0.1 + 0.2j, -1 + 0j])], tx.init(p), p)
    assert new[0].dtype == torch.complex64 and torch.isfinite(torch.view_as_real(new[0])).all()
