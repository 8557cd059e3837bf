"""The worked examples of docs/functional.md run as scripts (``--quick``) and print a sensible
outcome: the population's best member has the lowest validation loss and beats the extreme
learning rates; hypergradient descent raises a too-small learning rate and lowers the
validation loss."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def _run(script: str, capsys: pytest.CaptureFixture[str], monkeypatch) -> str:
    """``python docs/examples/<script> --quick`` (in this process: no second torch import)."""
    monkeypatch.setattr(sys, "argv", [script, "--quick"])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    return capsys.readouterr().out


def test_population_example_picks_the_member_with_the_lowest_validation_loss(capsys, monkeypatch):
    out = _run("population.py", capsys, monkeypatch)
    members = re.findall(r"member (\d+): lr=(\S+) train_loss=\S+ val_loss=(\S+)", out)
    assert len(members) == 8
    val = {int(i): float(v) for i, _, v in members}
    lrs = [float(lr) for _, lr, _ in members]
    assert lrs == sorted(lrs) and len(set(lrs)) == 8  # one learning rate per member
    best = re.search(r"best: member (\d+) lr=(\S+) val_loss=(\S+)", out)
    assert best is not None
    i = int(best.group(1))
    assert val[i] == min(val.values()) == float(best.group(3))
    assert float(best.group(2)) == lrs[i]
    # too small a learning rate has not learned yet in the quick run, too large diverged
    assert val[i] < 0.5 * val[0] and val[i] < 0.5 * val[7]


def test_hypergradient_example_raises_a_too_small_learning_rate(capsys, monkeypatch):
    out = _run("hypergradient.py", capsys, monkeypatch)
    first = re.search(r"initial: lr=(\S+) val_loss=(\S+)", out)
    last = re.search(r"learned: lr=(\S+) val_loss=(\S+)", out)
    assert first is not None and last is not None
    assert float(last.group(1)) > 2 * float(first.group(1))  # the lr moved up
    assert float(last.group(2)) < 0.9 * float(first.group(2))  # and the validation loss down


def test_functional_guide_code_blocks_run():
    """Every ``python`` block of docs/functional.md, in order, in one namespace."""
    doc = EXAMPLES.parent / "functional.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert len(blocks) >= 6
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(doc), "exec"), namespace)
