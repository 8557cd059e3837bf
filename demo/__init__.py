"""Demo: an MLP on scikit-learn's digits, trained three ways with the same optimizer.

``python -m demo`` trains the same model from the same initialisation on the same minibatches with

1. ``chain(clip_by_global_norm, adamw(warmup_cosine_decay_schedule))`` in a pure ``torch.func``
   loop,
2. the same chain through ``optax_torch.wrappers.TorchOptimizer``,
3. ``torch.optim.AdamW`` with ``LambdaLR`` and ``clip_grad_norm_``,

prints a table, writes ``demo/out/digits.png``, and checks that runs 1 and 2 agree.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from demo.train import Config, RunResult

__all__ = ["Config", "RunResult", "main", "run"]

#: Runs 1 and 2 execute the same arithmetic; their final parameters must agree to this.
TOLERANCE = 1e-4

OUT_DIR = Path(__file__).resolve().parent / "out"


def run(cfg: Config, progress: bool = True) -> list[RunResult]:
    """Trains the three runs and returns their results (functional, adapter, torch)."""
    from demo import data, train

    digits = data.load(seed=cfg.seed)
    init = train.initial_params(cfg)
    batches = train.minibatch_indices(cfg, len(digits.y_train))
    return [
        fn(cfg, digits, init, batches, progress=progress)
        for fn in (train.run_functional, train.run_adapter, train.run_torch)
    ]


def main(
    steps: int | None = None,
    plot: bool = True,
    progress: bool = True,
    out_dir: Path | None = None,
    seed: int = 0,
    threads: int | None = 1,
) -> int:
    """Runs the demo, prints the report; returns the exit status (0 when the self-check passes).

    ``threads``: torch intra-op threads during training (restored afterwards). The default, 1,
    suits a model this small: more threads only add synchronisation, and on a busy machine each
    parallel region can wait milliseconds for a core. ``None`` keeps torch's setting.
    """
    import torch

    from demo import report
    from demo.train import max_abs_diff

    cfg = Config(seed=seed)
    if steps is not None:
        cfg = replace(cfg, steps=steps, eval_every=max(1, min(cfg.eval_every, steps // 4)))
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        results = run(cfg, progress=progress)
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(saved_threads)
    functional, adapter, reference = results

    print()
    print(
        f"MLP 64-{cfg.hidden}-{cfg.hidden}-10 on sklearn digits, {cfg.steps} steps of "
        f"{cfg.batch_size}: clip_by_global_norm({cfg.max_grad_norm:g}), AdamW (weight decay "
        f"{cfg.weight_decay:g}),\nlr warmup 0 -> {cfg.peak_lr:g} over {cfg.warmup_steps} steps "
        f"then cosine to {cfg.end_lr:g}"
    )
    print(report.table(results))
    print(
        "opt step ms: median time of the optimizer part of a step only (clipping + AdamW update\n"
        "             + LR schedule; forward/backward excluded).\n"
        "state bytes: sum of nbytes of the optimizer state's tensors."
    )
    print()
    d12 = max_abs_diff(functional.params, adapter.params)
    d13 = max_abs_diff(functional.params, reference.params)
    ok = d12 <= TOLERANCE
    print(
        f"self-check  functional vs TorchOptimizer: max |param diff| = {d12:.3e} "
        f"(tolerance {TOLERANCE:g}) -> {'OK' if ok else 'FAILED'}"
    )
    print(
        f"comparison  functional vs torch.optim:    max |param diff| = {d13:.3e}, "
        f"test accuracy {functional.test_accuracy:.4f} vs {reference.test_accuracy:.4f}"
    )
    print(
        "            (not expected to be bit-equal: clip_grad_norm_ divides by norm + 1e-6 and\n"
        "            always rescales, LambdaLR computes the lr in float64 Python, and torch\n"
        "            applies the weight decay to the parameters before the Adam step; rounding\n"
        "            differences grow over training)"
    )
    if plot:
        path = report.plot(results, (out_dir or OUT_DIR) / "digits.png")
        print(f"figure      {path}")
    print(
        f"total time  {elapsed:.1f} s for the three runs "
        f"({threads or saved_threads} torch thread{'s' if (threads or saved_threads) > 1 else ''})"
    )
    return 0 if ok else 1
