"""Median time of one AdamW step: torch.optim vs optax_torch (functional and adapter) vs optax/JAX.

Usage::

    python benchmarks/adamw_step.py                 # sizes "tf" and "small", all implementations
    python benchmarks/adamw_step.py --quick         # a few steps, one round
    python benchmarks/adamw_step.py --sizes small --no-jax --steps 50 --rounds 3

Method: every implementation gets its own copy of the same parameters and the same (fixed)
gradients. After a warm-up, the implementations run in alternating rounds (each runs ``--steps``
timed steps, then the next one, then the whole round repeats), so slow drifts of the machine hit all
of them alike. Each step is timed on its own with ``time.perf_counter`` (JAX: until the result is
ready); the reported figure is the best over rounds of the per-round median, with the minimum step
and the interquartile range of that round. ``state MB`` is the sum of ``nbytes`` of the optimizer
state's tensors. ``step transient MB`` (``--memory``, the default) is the peak of what the CPU
allocator holds during one step beyond what it held before it, from ``torch.profiler``'s memory
events: temporaries, and new state / parameter tensors made while the old ones are still alive
(out-of-place updates). It is not available for JAX.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

LR = 1e-3
WEIGHT_DECAY = 1e-2

# ------------------------------------------------------------------------------------------------
# Problem sizes: lists of parameter shapes


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


SIZES: dict[str, Callable[[], list[tuple[int, ...]]]] = {
    # ~20.6 M parameters in 100 tensors
    "tf": transformer_shapes,
    # ~0.5 M parameters in 1,000 tensors (many small layers: per-tensor overhead dominates)
    "small": lambda: [(32, 30), (32,)] * 500,
    # 50 M parameters in 10 tensors (memory bandwidth dominates)
    "big": lambda: [(2500, 2000)] * 10,
    # for the smoke test
    "tiny": lambda: [(8, 4), (8,), (3, 8), (3,)],
}


def make_tensors(shapes, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Parameters ~ N(0, 0.02^2) and fixed gradients ~ N(0, 1e-2^2), float32."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) * 0.02 for s in shapes]
    grads = [torch.randn(s, generator=g) * 1e-2 for s in shapes]
    return params, grads


def tensor_bytes(obj: object) -> int:
    """Sum of ``nbytes`` of the distinct tensors (torch or JAX arrays) in a nest of containers."""
    seen: set[int] = set()
    total = 0

    def walk(o: object) -> None:
        nonlocal total
        if isinstance(o, torch.Tensor):
            key = o.untyped_storage().data_ptr() if o.nbytes else id(o)
            if key not in seen:
                seen.add(key)
                total += o.nbytes
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)
        elif hasattr(o, "nbytes") and hasattr(o, "block_until_ready"):  # a jax.Array
            total += int(o.nbytes)  # type: ignore[attr-defined]

    walk(obj)
    return total


# ------------------------------------------------------------------------------------------------
# Implementations: each factory takes (params, grads) and returns an Impl, or raises Skip


class Skip(Exception):
    """This implementation cannot run here (missing package, unsupported feature)."""


@dataclass
class Impl:
    name: str
    step: Callable[[], None]
    state_bytes: Callable[[], int]
    rounds: list[list[float]] = field(default_factory=list)


def _torch_params(params, grads):
    ps = [p.clone().requires_grad_() for p in params]
    for p, g in zip(ps, grads):
        p.grad = g
    return ps


def torch_foreach(params, grads) -> Impl:
    opt = torch.optim.AdamW(
        _torch_params(params, grads), lr=LR, weight_decay=WEIGHT_DECAY, foreach=True
    )
    return Impl("torch.optim.AdamW(foreach=True)", opt.step, lambda: tensor_bytes(opt.state))


def torch_fused(params, grads) -> Impl:
    try:
        opt = torch.optim.AdamW(
            _torch_params(params, grads), lr=LR, weight_decay=WEIGHT_DECAY, fused=True
        )
        opt.step()  # fused support is checked lazily on some versions / devices
    except (RuntimeError, ValueError) as e:
        raise Skip(f"fused AdamW unsupported here: {e}") from e
    return Impl("torch.optim.AdamW(fused=True)", opt.step, lambda: tensor_bytes(opt.state))


def optax_torch_functional(params, grads) -> Impl:
    import optax_torch

    tx = optax_torch.adamw(LR, weight_decay=WEIGHT_DECAY)
    box = {"params": {f"p{i}": p.clone() for i, p in enumerate(params)}}
    gs = {f"p{i}": g for i, g in enumerate(grads)}
    box["state"] = tx.init(box["params"])

    def step():
        updates, box["state"] = tx.update(gs, box["state"], box["params"])
        box["params"] = optax_torch.apply_updates(box["params"], updates)

    return Impl("optax_torch.adamw functional", step, lambda: tensor_bytes(box["state"]))


def optax_torch_adapter(params, grads) -> Impl:
    import optax_torch

    try:
        from optax_torch.wrappers import TorchOptimizer
    except ImportError as e:
        raise Skip(f"optax_torch.wrappers.TorchOptimizer not available: {e}") from e
    opt = TorchOptimizer(
        _torch_params(params, grads), optax_torch.adamw, lr=LR, weight_decay=WEIGHT_DECAY
    )
    return Impl("optax_torch TorchOptimizer(adamw)", opt.step, lambda: tensor_bytes(opt.state))


def optax_jax(params, grads) -> Impl:
    try:
        import jax
        import optax
    except ImportError as e:
        raise Skip(f"jax/optax not installed: {e}") from e
    import warnings

    ps = {f"p{i}": jax.numpy.asarray(p.numpy()) for i, p in enumerate(params)}
    gs = {f"p{i}": jax.numpy.asarray(g.numpy()) for i, g in enumerate(grads)}
    tx = optax.adamw(LR, weight_decay=WEIGHT_DECAY)

    def update(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    jitted = jax.jit(update, donate_argnums=(0, 1))
    box = {"params": ps, "state": tx.init(ps)}

    def step():
        with warnings.catch_warnings():  # "donated buffers were not usable" on some backends
            warnings.simplefilter("ignore")
            box["params"], box["state"] = jitted(box["params"], box["state"], gs)
        jax.block_until_ready((box["params"], box["state"]))

    return Impl("optax.adamw under jax.jit (donated)", step, lambda: tensor_bytes(box["state"]))


IMPLS: dict[str, Callable[..., Impl]] = {
    "foreach": torch_foreach,
    "fused": torch_fused,
    "functional": optax_torch_functional,
    "adapter": optax_torch_adapter,
    "jax": optax_jax,
}
BASELINE = "foreach"
# Timed in a process of their own: XLA's CPU thread pool, once started, slows torch's kernels in
# the same process (measured here: foreach AdamW 27 -> 48 ms on "tf" with JAX stepping alongside).
ISOLATED = {"jax"}

# ------------------------------------------------------------------------------------------------
# Memory: the largest transient allocation of one step, from torch's profiler


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


def step_transient_bytes(step: Callable[[], None]) -> int | None:
    """Peak bytes the CPU allocator holds during one step beyond what it held before the step.

    Two steps run under ``torch.profiler`` with memory profiling; the allocation and free events of
    the second one, summed in order, give its peak growth (state and parameters replaced by new
    tensors count, as do temporaries). ``None`` where the profiler gives no memory events (JAX).
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    try:
        with (
            _quiet_stderr(),
            profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
        ):
            step()
            with record_function("adamw_step.measured"):
                step()
        events = list(prof.profiler.kineto_results.events())  # type: ignore[union-attr]
        mark = next(e for e in events if e.name() == "adamw_step.measured")
        t0, t1 = mark.start_ns(), mark.start_ns() + mark.duration_ns()
        memory = sorted(
            (e for e in events if e.name() == "[memory]" and t0 <= e.start_ns() <= t1),
            key=lambda e: e.start_ns(),
        )
    except Exception:  # a private profiler API: report nothing rather than fail the benchmark
        return None
    if not memory:
        return None
    current = peak = 0
    for e in memory:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


# ------------------------------------------------------------------------------------------------
# Timing


@dataclass
class Row:
    size: str
    key: str
    name: str
    median_ms: float = float("nan")
    min_ms: float = float("nan")
    iqr_ms: float = float("nan")
    state_bytes: int = 0
    transient_bytes: int | None = None
    ratio: float = float("nan")
    skipped: str | None = None


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def _time_impls(
    size: str, impl_names: list[str], steps: int, rounds: int, warmup: int, memory: bool
) -> list[Row]:
    """Times the given implementations in this process, in alternating rounds."""
    params, grads = make_tensors(SIZES[size]())
    built: dict[str, Impl | Skip] = {}
    for key in impl_names:
        try:
            impl = IMPLS[key](params, grads)
            for _ in range(warmup):
                impl.step()
            built[key] = impl
        except Skip as e:
            built[key] = e
    for r in range(rounds):  # alternate: every implementation once per round
        _log(f"{size}: round {r + 1}/{rounds}")
        for impl in built.values():
            if isinstance(impl, Impl):
                times = []
                for _ in range(steps):
                    t0 = time.perf_counter()
                    impl.step()
                    times.append(time.perf_counter() - t0)
                impl.rounds.append(times)

    rows = []
    for key, impl in built.items():
        if isinstance(impl, Skip):
            rows.append(Row(size, key, key, skipped=str(impl)))
            continue
        best = min(impl.rounds, key=statistics.median)
        q1, q3 = _quartiles(best)
        rows.append(
            Row(
                size,
                key,
                impl.name,
                median_ms=1e3 * statistics.median(best),
                min_ms=1e3 * min(min(r) for r in impl.rounds),
                iqr_ms=1e3 * (q3 - q1),
                state_bytes=impl.state_bytes(),
                transient_bytes=step_transient_bytes(impl.step) if memory else None,
            )
        )
    return rows


def _time_in_child(size: str, key: str, steps: int, rounds: int, warmup: int) -> Row:
    """Times one implementation in a fresh process (used for JAX, see ``ISOLATED``)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", key, size]
    cmd += ["--steps", str(steps), "--rounds", str(rounds), "--warmup", str(warmup)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
        return Row(size, key, key, skipped=f"child process failed: {tail[0]}")
    return Row(**json.loads(r.stdout.strip().splitlines()[-1]))


def bench_size(
    size: str, impl_names: list[str], steps: int, rounds: int, warmup: int, memory: bool
) -> list[Row]:
    """Times every implementation on one problem size; one row per implementation, in order."""
    local = [k for k in impl_names if k not in ISOLATED]
    rows = {r.key: r for r in _time_impls(size, local, steps, rounds, warmup, memory)}
    for key in impl_names:
        if key in ISOLATED:
            _log(f"{size}: {key} in its own process")
            rows[key] = _time_in_child(size, key, steps, rounds, warmup)
    ordered = [rows[k] for k in impl_names]
    base = rows.get(BASELINE)
    for r in ordered:
        if r.skipped is None and base is not None and base.skipped is None:
            r.ratio = r.median_ms / base.median_ms
    return ordered


_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def format_table(rows: list[Row]) -> str:
    """A Markdown table."""
    out = [
        "| size | implementation | median ms | min ms | IQR ms | vs foreach | state MB "
        "| step transient MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.skipped is not None:
            out.append(f"| {r.size} | {r.name} | skipped: {r.skipped} | | | | | |")
            continue
        peak = "-" if r.transient_bytes is None else f"{r.transient_bytes / 2**20:.1f}"
        out.append(
            f"| {r.size} | {r.name} | {r.median_ms:.2f} | {r.min_ms:.2f} | {r.iqr_ms:.2f} "
            f"| {r.ratio:.2f} | {r.state_bytes / 2**20:.1f} | {peak} |"
        )
    return "\n".join(out)


def describe_size(size: str) -> str:
    shapes = SIZES[size]()
    n = sum(torch.Size(s).numel() for s in shapes)
    return f"{size}: {n / 1e6:.2f} M float32 params in {len(shapes)} tensors"


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="tf,small", help=f"comma-separated, of {', '.join(SIZES)}")
    p.add_argument(
        "--impls", default=",".join(IMPLS), help=f"comma-separated, of {', '.join(IMPLS)}"
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 10)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3)")
    p.add_argument("--quick", action="store_true", help="3 steps, 1 round, 1 warm-up")
    p.add_argument(
        "--jax", action=argparse.BooleanOptionalAction, default=True, help="include optax/JAX"
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure each step's transient memory with torch.profiler (default: on)",
    )
    p.add_argument("--_child", nargs=2, metavar=("IMPL", "SIZE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    steps = a.steps or (3 if a.quick else 10)
    rounds = a.rounds or (1 if a.quick else 5)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    memory = a.memory
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    impls = [s.strip() for s in a.impls.split(",") if s.strip()]
    if not a.jax:
        impls = [i for i in impls if i != "jax"]
    for name in sizes:
        if name not in SIZES:
            p.error(f"unknown size {name!r}; choose from {', '.join(SIZES)}")
    for name in impls:
        if name not in IMPLS:
            p.error(f"unknown implementation {name!r}; choose from {', '.join(IMPLS)}")

    if a._child:
        key, size = a._child
        (row,) = _time_impls(size, [key], steps, rounds, warmup, memory=False)
        print(json.dumps(dataclasses.asdict(row)))
        return [row]

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()} "
        f"{_cpu_name()}, Python {platform.python_version()}; AdamW lr={LR} wd={WEIGHT_DECAY}; "
        f"{steps} steps x {rounds} rounds after {warmup} warm-up"
    )
    for s in sizes:
        print("  " + describe_size(s))
    rows: list[Row] = []
    for s in sizes:
        rows += bench_size(s, impls, steps, rounds, warmup, memory)
    print(format_table(rows))
    return rows


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


if __name__ == "__main__":
    main()
