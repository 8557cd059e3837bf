"""The demo's printed table and its figure."""

from __future__ import annotations

from pathlib import Path

from demo.train import RunResult


def table(results: list[RunResult]) -> str:
    """A fixed-width table: one row per run."""
    header = (
        f"{'method':<36} {'test acc':>8} {'train loss':>10} {'opt step ms':>11} {'state bytes':>11}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.name:<36} {r.test_accuracy:>8.4f} {r.train_loss:>10.5f} "
            f"{r.median_step_ms:>11.3f} {r.state_bytes:>11,d}"
        )
    return "\n".join(lines)


def _smooth(xs: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= window:
            acc -= xs[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot(results: list[RunResult], path: Path) -> Path:
    """Loss curves, test accuracy and the learning-rate schedule, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = [("-", 2.5, 0.6), ("--", 1.5, 1.0), (":", 1.5, 1.0)]
    window = max(1, len(results[0].losses) // 50)
    for r, (ls, lw, alpha) in zip(results, styles):
        steps = range(1, len(r.losses) + 1)
        ax_loss.plot(steps, _smooth(r.losses, window), ls, lw=lw, alpha=alpha, label=r.name)
        ax_acc.plot(r.eval_steps, r.eval_accuracy, ls, lw=lw, alpha=alpha, label=r.name)
        ax_lr.plot(steps, r.lrs, ls, lw=lw, alpha=alpha, label=r.name)
    ax_loss.set(
        yscale="log",
        xlabel="step",
        ylabel=f"minibatch loss (moving mean of {window})",
        title="training loss",
    )
    ax_acc.set(xlabel="step", ylabel="accuracy", title="test accuracy")
    ax_lr.set(xlabel="step", ylabel="learning rate", title="warmup-cosine schedule")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("MLP on sklearn digits: clip_by_global_norm + AdamW, three ways")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
