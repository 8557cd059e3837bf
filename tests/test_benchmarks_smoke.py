"""Keeps ``benchmarks/adamw_step.py`` runnable: a tiny configuration, no timing assertions."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "adamw_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("adamw_step", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_quick_run_on_a_tiny_problem(bench, capsys):
    rows = bench.main(["--quick", "--sizes", "tiny", "--steps", "2"])
    out = capsys.readouterr().out
    assert "| size | implementation |" in out
    by_key = {r.key: r for r in rows}
    assert set(by_key) == set(bench.IMPLS)
    # fused AdamW (unsupported on some builds) and JAX (optional) may be skipped; ours may not.
    for key in ("foreach", "functional", "adapter"):
        assert by_key[key].skipped is None, by_key[key].skipped
    if importlib.util.find_spec("jax") and importlib.util.find_spec("optax"):
        assert by_key["jax"].skipped is None, by_key["jax"].skipped  # timed in a child process
    for r in rows:
        if r.skipped is None:
            assert math.isfinite(r.median_ms) and r.median_ms > 0
            assert r.state_bytes > 0
    assert by_key["foreach"].ratio == 1.0
    # AdamW state: two moments of the 71 float32 parameters, plus step counters.
    n = sum(math.prod(s) for s in bench.SIZES["tiny"]())
    assert 8 * n <= by_key["functional"].state_bytes <= 8 * n + 64


def test_sizes_are_what_the_readme_says(bench):
    def count(size):
        shapes = bench.SIZES[size]()
        return len(shapes), sum(math.prod(s) for s in shapes)

    n_tensors, n_params = count("tf")
    assert n_tensors == 100 and 19e6 < n_params < 22e6
    n_tensors, n_params = count("small")
    assert n_tensors == 1000 and 0.45e6 < n_params < 0.55e6


def test_step_transient_memory(bench):
    """An out-of-place step allocates new state while the old is alive; foreach AdamW does not."""
    params, grads = bench.make_tensors([(256, 256)] * 4)
    functional = bench.optax_torch_functional(params, grads)
    foreach = bench.torch_foreach(params, grads)
    functional.step()
    foreach.step()
    t_functional = bench.step_transient_bytes(functional.step)
    t_foreach = bench.step_transient_bytes(foreach.step)
    if t_functional is None:
        pytest.skip("torch.profiler gave no memory events on this build")
    assert t_functional >= functional.state_bytes()
    assert t_foreach is not None and t_foreach < functional.state_bytes()
