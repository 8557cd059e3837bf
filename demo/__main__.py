"""``python -m demo [--steps N] [--seed S] [--threads T] [--no-plot] [--no-progress]``."""

from __future__ import annotations

import argparse
import sys

from demo import main


def _cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 1500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, init and minibatches")
    p.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (default 1; 0: torch's)"
    )
    p.add_argument("--no-plot", dest="plot", action="store_false", help="skip demo/out/digits.png")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    a = p.parse_args(argv)
    return main(
        steps=a.steps, plot=a.plot, progress=a.progress, seed=a.seed, threads=a.threads or None
    )


if __name__ == "__main__":
    sys.exit(_cli())
