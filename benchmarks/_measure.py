"""Measuring one (case, set) in one process: parameter sets, timing rounds, memory, bandwidth."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from _cases import CASES, IMPLS, Ctx, Impl, NotApplicable, Skip

# ------------------------------------------------------------------------------------------------
# Parameter sets: lists of shapes


def transformer_shapes(d: int = 384, layers: int = 8, vocab: int = 16384, mlp: int = 4):
    """Shapes of a small GPT-like model: embeddings, ``layers`` blocks, final layer norm."""
    shapes: list[tuple[int, ...]] = [(vocab, d), (512, d)]
    for _ in range(layers):
        shapes += [(d,), (d,)]  # ln1
        shapes += [(3 * d, d), (3 * d,), (d, d), (d,)]  # attention qkv and output
        shapes += [(d,), (d,)]  # ln2
        shapes += [(mlp * d, d), (mlp * d,), (d, mlp * d), (d,)]  # mlp
    shapes += [(d,), (d,)]  # final ln
    return shapes


SETS: dict[str, Callable[[], list[tuple[int, ...]]]] = {
    # 50 M parameters in 10 tensors: memory bandwidth only
    "big": lambda: [(2500, 2000)] * 10,
    # ~20.7 M parameters in 100 transformer-shaped tensors (as adamw_step.py)
    "tf": transformer_shapes,
    # ~0.5 M parameters in 1,000 tensors: per-tensor and per-op overhead dominate
    "small": lambda: [(32, 30), (32,)] * 500,
}
# --quick: the same kinds of sets, tiny
QUICK_SETS: dict[str, Callable[[], list[tuple[int, ...]]]] = {
    "big": lambda: [(250, 200)] * 10,
    "tf": lambda: transformer_shapes(d=32, layers=2, vocab=256),
    "small": lambda: [(4, 3), (4,)] * 50,
}


def shapes_of(name: str, quick: bool) -> list[tuple[int, ...]]:
    return (QUICK_SETS if quick else SETS)[name]()


def describe_set(name: str, quick: bool) -> str:
    shapes = shapes_of(name, quick)
    n = sum(torch.Size(s).numel() for s in shapes)
    return f"{n / 1e6:.2f} M float32 params in {len(shapes)} tensors"


def make_tensors(shapes, device: torch.device, seed: int = 0):
    """Parameters ~ N(0, 0.02^2) and fixed gradients ~ N(0, 1e-2^2), float32."""
    g = torch.Generator().manual_seed(seed)
    params = [(torch.randn(s, generator=g) * 0.02).to(device) for s in shapes]
    grads = [(torch.randn(s, generator=g) * 1e-2).to(device) for s in shapes]
    return params, grads


def tensor_bytes(obj: object) -> int:
    """Bytes of the distinct storages of the tensors (torch or JAX arrays) in a nest of containers
    (dicts, lists, tuples, NamedTuples, and objects' ``__dict__`` for peers' state objects): a
    tensor that views a larger buffer counts the whole buffer, once."""
    seen: set[int] = set()
    total = 0

    def walk(o: object, depth: int = 0) -> None:
        nonlocal total
        if depth > 20:
            return
        if isinstance(o, torch.Tensor):
            # count storages, not views: state packed into flat buffers counts once, whole
            storage = o.untyped_storage()
            key = storage.data_ptr() if storage.nbytes() else id(o)
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v, depth + 1)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v, depth + 1)
        elif hasattr(o, "nbytes") and hasattr(o, "block_until_ready"):  # a jax.Array
            if id(o) not in seen:
                seen.add(id(o))
                total += int(o.nbytes)  # type: ignore[attr-defined]
        elif dataclasses.is_dataclass(o) or hasattr(o, "__dict__"):
            for v in vars(o).values():
                walk(v, depth + 1)

    walk(obj)
    return total


# ------------------------------------------------------------------------------------------------
# Memory: the peak transient of one step


@contextlib.contextmanager
def _quiet_stderr():
    """Silences the profiler's C++ chatter (it writes to file descriptor 2 directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cpu_step_peak_bytes(step: Callable[[], object]) -> int | None:
    """Peak bytes torch's CPU allocator holds during one step beyond what it held before it.

    Two steps run under ``torch.profiler`` with ``profile_memory=True``; the allocation and free
    events (``[memory]``) of the second, summed in time order, give its peak growth:
    temporaries, plus new state / parameter tensors made while the old ones are alive.
    No events means no allocation (0); ``None`` when the profiler's private API failed.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    try:
        with (
            _quiet_stderr(),
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
        ):
            step()
            with record_function("bench.measured"):
                step()
        events = list(prof.profiler.kineto_results.events())  # type: ignore[union-attr]
        mark = next(e for e in events if e.name() == "bench.measured")
        t0, t1 = mark.start_ns(), mark.start_ns() + mark.duration_ns()
        memory = sorted(
            (e for e in events if e.name() == "[memory]" and t0 <= e.start_ns() <= t1),
            key=lambda e: e.start_ns(),
        )
    except Exception:  # a private profiler API: report nothing rather than fail the benchmark
        return None
    current = peak = 0
    for e in memory:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def cuda_step_peak_bytes(step: Callable[[], object], device: torch.device) -> int:
    """``torch.cuda.max_memory_allocated`` during one step, above the level before it."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


# ------------------------------------------------------------------------------------------------
# Copy bandwidth


def copy_bandwidth(n_elements: int, device: torch.device, repeats: int = 7) -> float:
    """Bytes per second moved by ``dst.copy_(src)`` of ``n_elements`` float32 (read + write):
    the median of ``repeats`` copies after one warm-up."""
    src = torch.ones(n_elements, device=device)
    dst = torch.empty_like(src)
    sync = _sync(device)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        dst.copy_(src)
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * src.nbytes / statistics.median(times)


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


# ------------------------------------------------------------------------------------------------
# Timing one (case, set)


@dataclass
class Row:
    case: str
    set: str
    key: str
    label: str
    median_ms: float = float("nan")
    min_ms: float = float("nan")
    iqr_ms: float = float("nan")
    first_step_s: float = float("nan")
    compiled: bool = False
    state_bytes: int = 0
    peak_bytes: int | None = None
    ratio: float = float("nan")
    passes: float = float("nan")
    skipped: str | None = None
    applicable: bool = True


def _moved(impl: Impl, initial: torch.Tensor) -> bool:
    """Whether the implementation's first parameter differs from its initial value."""
    if impl.params is None:
        return True
    p = impl.params()[0]
    if not isinstance(p, torch.Tensor):  # a jax.Array
        import numpy as np

        p = torch.from_numpy(np.array(p))
    return not torch.equal(p.detach().cpu(), initial.cpu())


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_one(
    case_name: str,
    set_name: str,
    keys: list[str],
    *,
    steps: int,
    rounds: int,
    warmup: int,
    memory: bool,
    quick: bool,
    device: torch.device,
) -> dict:
    """Builds and times ``keys`` on one (case, set) in this process; returns a JSON-able dict."""
    case = CASES[case_name]
    shapes = shapes_of(set_name, quick)
    params, grads = make_tensors(shapes, device)
    param_bytes = sum(p.nbytes for p in params)
    n_bw = sum(torch.Size(s).numel() for s in shapes_of("big", quick))
    bandwidth = copy_bandwidth(n_bw, device)
    ctx = Ctx(params, grads, device)
    sync = _sync(device)

    built: dict[str, Impl | Skip] = {}
    for key in keys:
        try:
            impl = IMPLS[key](case, ctx)
            sync()
            t0 = time.perf_counter()
            impl.step()  # the first step: compile time for compiled entries
            sync()
            impl.first_step_s = time.perf_counter() - t0
            for _ in range(max(warmup - 1, 0)):
                impl.step()
            if not _moved(impl, params[0]):
                raise Skip("its steps did not change the parameters (a broken peer?)")
            built[key] = impl
            _log(f"{case_name}/{set_name}: {key} ready (first step {impl.first_step_s:.2f} s)")
        except Skip as e:
            built[key] = e
        except Exception as e:  # a peer that breaks here is reported, not fatal
            built[key] = Skip(f"failed: {type(e).__name__}: {str(e)[:160]}")
            _log(f"{case_name}/{set_name}: {key} failed: {type(e).__name__}: {e}")

    for r in range(rounds):  # alternate: every implementation once per round
        for impl in built.values():
            if isinstance(impl, Impl):
                times = []
                for _ in range(steps):
                    sync()
                    t0 = time.perf_counter()
                    impl.step()
                    sync()
                    times.append(time.perf_counter() - t0)
                impl.rounds.append(times)
        _log(f"{case_name}/{set_name}: round {r + 1}/{rounds} done")

    rows = []
    for key, impl in built.items():
        if isinstance(impl, Skip):
            na = isinstance(impl, NotApplicable)
            rows.append(Row(case_name, set_name, key, key, skipped=str(impl), applicable=not na))
            continue
        best = min(impl.rounds, key=statistics.median)
        q1, q3 = _quartiles(best)
        peak = None
        if memory:
            if device.type == "cuda":
                peak = cuda_step_peak_bytes(impl.step, device)
            elif key != "jax":
                peak = cpu_step_peak_bytes(impl.step)
        median_s = statistics.median(best)
        rows.append(
            Row(
                case_name,
                set_name,
                key,
                impl.label,
                median_ms=1e3 * median_s,
                min_ms=1e3 * min(min(r) for r in impl.rounds),
                iqr_ms=1e3 * (q3 - q1),
                first_step_s=impl.first_step_s,
                compiled=impl.compiled,
                state_bytes=tensor_bytes(impl.state()),
                peak_bytes=peak,
                passes=median_s * bandwidth / param_bytes,
            )
        )
    return {
        "case": case_name,
        "set": set_name,
        "param_bytes": param_bytes,
        "n_tensors": len(shapes),
        "bandwidth_Bps": bandwidth,
        "threads": torch.get_num_threads(),
        "rows": [dataclasses.asdict(r) for r in rows],
    }
