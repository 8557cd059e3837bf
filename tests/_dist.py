"""A small harness for the multi-process tests: real ``torch.distributed`` (gloo, CPU).

``run(fn, world_size, *args)`` spawns ``world_size`` processes, each runs
``fn(rank, world_size, *args)`` inside an initialised gloo process group and returns a picklable
result (tensors, dicts, lists…); the parent gets the results by rank. An exception in a worker is
re-raised in the parent with the worker's traceback. ``fn`` must be a module-level function (spawn
pickles it by reference). Workers run single-threaded so that two of them share two cores.

Each spawn costs a second or two (a fresh interpreter importing torch): tests batch many scenarios
into one spawn and check them separately.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    path = os.path.join(out_dir, f"{rank}.pt")
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        try:
            result = fn(rank, world, *args)
        finally:
            dist.destroy_process_group()
        torch.save({"ok": result}, path)
    except BaseException:
        torch.save({"error": traceback.format_exc()}, path)
        raise


def run(fn: Callable[..., Any], world_size: int, *args: Any) -> list[Any]:
    """Runs ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks; results by rank."""
    with tempfile.TemporaryDirectory() as out_dir:
        ctx = mp.start_processes(
            _worker,
            args=(world_size, _free_port(), out_dir, fn, args),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        errors = []
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while not ctx.join(timeout=1):
                if time.monotonic() > deadline:
                    for proc in ctx.processes:
                        proc.kill()
                    raise TimeoutError(f"distributed workers still running after {TIMEOUT_S} s")
        except mp.ProcessRaisedException as e:  # pragma: no cover - reported below
            errors.append(str(e))
        except mp.ProcessExitedException as e:  # pragma: no cover
            errors.append(str(e))
        results = []
        for rank in range(world_size):
            path = os.path.join(out_dir, f"{rank}.pt")
            if not os.path.exists(path):
                errors.append(f"rank {rank} wrote no result")
                continue
            got = torch.load(path, weights_only=False)
            if "error" in got:
                errors.append(f"rank {rank}:\n{got['error']}")
            else:
                results.append(got["ok"])
        if errors:
            raise RuntimeError("distributed worker failed:\n" + "\n".join(errors))
        return results
