"""The demo (``python -m demo``) on a few steps: it runs, plots, and its self-check holds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the demo package lives at the repository root, not in the wheel
    sys.path.insert(0, str(ROOT))

import demo  # noqa: E402
from demo.train import Config, max_abs_diff  # noqa: E402


def test_main_passes_its_self_check_and_writes_the_figure(tmp_path, capsys):
    assert demo.main(steps=40, plot=True, progress=False, out_dir=tmp_path) == 0
    out = capsys.readouterr().out
    assert "self-check" in out and "OK" in out
    for name in ("torch.func loop", "TorchOptimizer", "torch.optim.AdamW"):
        assert name in out
    assert (tmp_path / "digits.png").stat().st_size > 10_000


def test_three_runs_agree_and_learn():
    cfg = Config(steps=60, eval_every=20)
    functional, adapter, reference = demo.run(cfg, progress=False)

    # Runs 1 and 2 do the same arithmetic; torch.optim differs only by rounding and the 1e-6 of
    # clip_grad_norm_ this early in training.
    assert max_abs_diff(functional.params, adapter.params) <= 1e-5
    assert max_abs_diff(functional.params, reference.params) <= 1e-3
    assert functional.lrs == pytest.approx(reference.lrs, rel=1e-6, abs=1e-12)
    assert functional.lrs[0] == 0.0 and max(functional.lrs) == pytest.approx(cfg.peak_lr)

    for r in (functional, adapter, reference):
        assert len(r.losses) == len(r.step_seconds) == cfg.steps
        assert r.eval_steps == [20, 40, 60]
        assert r.losses[-1] < 0.5 * r.losses[0]
        assert r.test_accuracy > 0.8

    # AdamW keeps two float32 moments per parameter (plus a few scalars).
    n = sum(p.numel() for p in functional.params.values())
    for r in (functional, adapter, reference):
        assert 8 * n <= r.state_bytes <= 8 * n + 256, r.name


def test_main_fails_when_the_two_optax_torch_runs_disagree(monkeypatch, capsys):
    monkeypatch.setattr(demo, "TOLERANCE", -1.0)  # no difference can pass
    assert demo.main(steps=5, plot=False, progress=False) == 1
    assert "FAILED" in capsys.readouterr().out
