"""Keeps the peer benchmark suite (``benchmarks/suite.py``) runnable: its quick mode on a subset,
in a subprocess, writing its three outputs. Timings are not checked (the machine is shared)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "suite.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(SUITE), "--quick", "--cases", "adamw,lion,clip+adamw"]
    cmd += ["--sets", "small", "--out-md", str(out / "b.md"), "--out-png", str(out / "b.png")]
    cmd += ["--out-json", str(out / "r.json"), "--jobs", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, json.loads((out / "r.json").read_text())


def test_outputs_are_written(quick_run):
    out, results = quick_run
    md = (out / "b.md").read_text()
    assert "## Set `small`" in md and "| case | implementation | median ms |" in md
    assert "torch" in md and results["machine"]["torch"] in md
    png = out / "b.png"
    if png.exists():  # matplotlib is optional
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["config"]["quick"] is True
    assert {r["case"] for r in results["rows"]} == {"adamw", "lion", "clip+adamw"}


def test_rows_are_complete(quick_run):
    _, results = quick_run
    rows = {(r["case"], r["key"]): r for r in results["rows"]}
    # the baselines and our eager implementations run everywhere
    for key in [
        ("adamw", "foreach"),
        ("adamw", "functional"),
        ("adamw", "adapter"),
        ("adamw", "dropin"),
        ("lion", "foreach-adamw"),
        ("lion", "functional"),
        ("lion", "adapter"),
        ("clip+adamw", "foreach"),
        ("clip+adamw", "adapter"),
    ]:
        r = rows[key]
        assert r["skipped"] is None, (key, r["skipped"])
        assert math.isfinite(r["median_ms"]) and r["median_ms"] > 0
        assert math.isfinite(r["ratio"]) and math.isfinite(r["passes"])
        assert r["state_bytes"] > 0
    assert rows[("adamw", "foreach")]["ratio"] == 1.0
    # quick mode compiles nothing and runs no JAX; every skip says why
    assert rows[("adamw", "jax")]["skipped"] == "quick mode"
    assert rows[("adamw", "torch-compile")]["skipped"] == "quick mode"
    assert all(r["skipped"] for r in results["rows"] if r["skipped"] is not None)
    # AdamW keeps two float32 moments per parameter (plus step counters) in every library
    n = sum(p["param_bytes"] for p in results["processes"] if p.get("case") == "adamw")
    assert 2 * n <= rows[("adamw", "adapter")]["state_bytes"] <= 2 * n + 4096
