"""The peer benchmark suite: one optimizer step of optax_torch and of its peers.

Usage::

    python benchmarks/suite.py                          # every case on big, tf, small (long)
    python benchmarks/suite.py --sets tf,small --rounds 3
    python benchmarks/suite.py --cases adamw,lion --sets small --no-jax
    python benchmarks/suite.py --quick                  # tiny sets, 2 steps, 1 round: < 60 s
    python benchmarks/suite.py --device cuda            # where CUDA exists

Cases (``--cases``): adamw, sgdm, lamb, lion, adafactor, rmsprop, clip+adamw. Sets (``--sets``):
big (50 M float32 params in 10 tensors), tf (20.7 M in 100 transformer-shaped tensors), small
(0.5 M in 1,000 tensors). Implementations (``--impls``): ours (functional, adapter, dropin,
dropin-timm, compiled, functional-compiled) and peers (torch.optim for-loop / foreach / fused,
torch.compile of torch's foreach step, timm, pytorch_optimizer, torchopt, heavyball, optax under
jax.jit), each only where installed and supported; a skipped one is listed with its reason.

Method: one process per (case, set) (``--one CASE SET``, which prints one JSON line), in which the
implementations run in alternating rounds after a warm-up; optax/JAX runs in a second process
of its own. Each step is timed alone (synchronised on CUDA). Output: ``docs/benchmarks.md``,
``docs/benchmarks.png`` and ``benchmarks/results.json``. Details in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
SHIM_ENV = "BENCH_TORCHVISION_SHIM"


def _torchvision_shim() -> None:
    """timm imports torchvision; where torchvision's compiled ops do not load next to this torch
    (a wheel built for another torch), define the two operator schemas it registers fake kernels
    for, so that ``import timm`` works (as tests/conftest.py does). Decided once by the parent."""
    if os.environ.get(SHIM_ENV) == "1":
        import torch

        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        globals()["_SHIM_LIB"] = lib  # kept alive


def _needs_torchvision_shim() -> bool:
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return False
    probe = subprocess.run(
        [sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=300
    )
    return probe.returncode != 0 and "torchvision::nms" in probe.stderr


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "optax_torch",
        "timm",
        "pytorch_optimizer",
        "torchopt",
        "heavyball",
        "jax",
        "optax",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    from _cases import CASES, IMPLS
    from _measure import SETS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"of {', '.join(CASES)}")
    p.add_argument("--sets", default=None, help=f"of {', '.join(SETS)} (default: all; --quick: tf)")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"of {', '.join(IMPLS)}")
    p.add_argument("--steps", type=int, default=None, help="timed steps per round (default 10)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sets, 2 steps, 1 round, no JAX, nothing compiled: a smoke run",
    )
    p.add_argument(
        "--tiny", action="store_true", help="the tiny sets of --quick, with everything else"
    )
    p.add_argument("--jax", action=argparse.BooleanOptionalAction, default=True, help="optax/JAX")
    p.add_argument(
        "--torch-compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="peers compiled with torch.compile (torch's foreach step, heavyball)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="optax_torch's compiled entries (compiled, functional-compiled)",
    )
    p.add_argument(
        "--torch-compile-max-tensors",
        type=int,
        default=200,
        help="skip torch.compile peers on sets with more tensors (compiling torch's foreach\n"
        "AdamW over 1,000 tensors took 269 s on 2 cores); default 200",
    )
    p.add_argument(
        "--compile-max-tensors",
        type=int,
        default=None,
        help="skip optax_torch's compiled entries on sets with more tensors (default: no limit)",
    )
    p.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="keep torch.compile's on-disk caches (default: every process gets empty ones,\n"
        "so that `compile s` is a cold compile)",
    )
    p.add_argument(
        "--skip",
        default="",
        help="comma-separated IMPL:SET pairs not to run, e.g. functional-compiled:small",
    )
    p.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure each step's peak transient memory (default: on)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch / OpenMP / XLA threads per process (default: torch's default). On a machine\n"
        "other work shares, use 1: a parallel region waits for its slowest thread, and a\n"
        "thread descheduled by other work stalls it for a time slice",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1200,
        help="seconds per process (default 1200); one that overruns or crashes is run again\n"
        "without its compiled entries, which are reported as timed out / failed",
    )
    p.add_argument(
        "--jobs", type=int, default=None, help="processes at once (default 1; --quick: 2)"
    )
    p.add_argument("--out-md", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--out-png", default=str(ROOT / "docs" / "benchmarks.png"))
    p.add_argument("--out-json", default=str(HERE / "results.json"))
    p.add_argument(
        "--render",
        metavar="JSON",
        help="only write --out-md and --out-png again from a results.json (no measuring)",
    )
    p.add_argument("--one", nargs=2, metavar=("CASE", "SET"), help="internal: one process' work")
    a = p.parse_args(argv)

    a.tiny = a.tiny or a.quick
    if a.quick and a.sets is None:
        a.sets = "tf"
    if a.jobs is None:
        a.jobs = 2 if a.quick else 1
    a.steps = a.steps or (2 if a.quick else 10)
    a.rounds = a.rounds or (1 if a.quick else 5)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    a.cases = [s.strip() for s in a.cases.split(",") if s.strip()]
    a.sets = [s.strip() for s in (a.sets or ",".join(SETS)).split(",") if s.strip()]
    a.impls = [s.strip() for s in a.impls.split(",") if s.strip()]
    for what, names, known in (
        ("case", a.cases, CASES),
        ("set", a.sets, SETS),
        ("impl", a.impls, IMPLS),
    ):
        for n in names:
            if n not in known:
                p.error(f"unknown {what} {n!r}; choose from {', '.join(known)}")
    return a


def _child_cmd(a: argparse.Namespace, case: str, set_name: str, impls: list[str]) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", case, set_name]
    cmd += ["--impls", ",".join(impls), "--steps", str(a.steps), "--rounds", str(a.rounds)]
    cmd += ["--warmup", str(a.warmup), "--device", a.device]
    cmd += ["--memory" if a.memory else "--no-memory"]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.quick:
        cmd.append("--quick")
    elif a.tiny:
        cmd.append("--tiny")
    return cmd


def _plan(a: argparse.Namespace) -> tuple[list[tuple[str, str, list[str]]], list[dict[str, Any]]]:
    """The processes to run ``(case, set, impls)`` and the rows skipped up front."""
    from _cases import ISOLATED, OUR_COMPILED, TORCH_COMPILE_PEERS
    from _measure import shapes_of

    jobs, skipped = [], []
    skip = {x.strip() for x in a.skip.split(",") if x.strip()}
    for set_name in a.sets:
        n_tensors = len(shapes_of(set_name, a.tiny))
        for case in a.cases:
            keep: list[str] = []
            for k in a.impls:
                why = None
                if f"{k}:{set_name}" in skip:
                    why = f"--skip {k}:{set_name}"
                elif k in ISOLATED and (a.quick or not a.jax):
                    why = "quick mode" if a.quick else "--no-jax"
                elif k in TORCH_COMPILE_PEERS and (a.quick or not a.torch_compile):
                    why = "quick mode" if a.quick else "--no-torch-compile"
                elif k in TORCH_COMPILE_PEERS and n_tensors > a.torch_compile_max_tensors:
                    why = (
                        f"{n_tensors} tensors > --torch-compile-max-tensors "
                        f"{a.torch_compile_max_tensors} (compile time)"
                    )
                elif k in OUR_COMPILED and (a.quick or not a.compile):
                    why = "quick mode" if a.quick else "--no-compile"
                elif (
                    k in OUR_COMPILED
                    and a.compile_max_tensors is not None
                    and n_tensors > a.compile_max_tensors
                ):
                    why = (
                        f"{n_tensors} tensors > --compile-max-tensors {a.compile_max_tensors} "
                        "(compile time)"
                    )
                if why:
                    skipped.append(dict(case=case, set=set_name, key=k, skipped=why))
                else:
                    keep.append(k)
            local = [k for k in keep if k not in ISOLATED]
            if local:
                jobs.append((case, set_name, local))
            jobs += [(case, set_name, [k]) for k in keep if k in ISOLATED]
    return jobs, skipped


def _run_jobs(a, jobs) -> list[dict[str, Any]]:
    """Runs the child processes (``--jobs`` at a time) and collects their JSON."""
    from _cases import OUR_COMPILED, TORCH_COMPILE_PEERS

    env = dict(os.environ)
    if a.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(a.threads)
        if a.threads == 1:
            flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
    if any(c in ("lamb", "lion", "adafactor") for c in a.cases):
        env[SHIM_ENV] = "1" if _needs_torchvision_shim() else "0"
    results: list[dict[str, Any]] = []
    pending = list(jobs)
    running: list[tuple[Any, ...]] = []
    while pending or running:
        while pending and len(running) < max(a.jobs, 1):
            job = pending.pop(0)
            case, set_name, impls = job
            print(
                f"[{time.strftime('%H:%M:%S')}] {case} / {set_name}: {', '.join(impls)}",
                file=sys.stderr,
                flush=True,
            )
            child_env = dict(env)
            cache = None
            if not a.warm_compile_cache:  # cold compiles: empty inductor / triton caches
                cache = tempfile.mkdtemp(prefix="bench-compile-cache-")
                child_env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(cache, "inductor")
                child_env["TRITON_CACHE_DIR"] = os.path.join(cache, "triton")
            # Files, not pipes: a child's chatter (compiler warnings) must not fill a pipe.
            out_f = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed when the child ends)
            err_f = tempfile.TemporaryFile("w+")  # noqa: SIM115
            proc = subprocess.Popen(
                _child_cmd(a, case, set_name, impls),
                stdout=out_f,
                stderr=err_f,
                text=True,
                env=child_env,
                cwd=str(ROOT),
            )
            running.append((proc, job, time.monotonic(), out_f, err_f, cache))
        time.sleep(0.05)
        for item in list(running):
            proc, (case, set_name, impls), t0, out_f, err_f, cache = item
            if proc.poll() is None and time.monotonic() - t0 < a.timeout:
                continue
            running.remove(item)
            why = None
            if proc.poll() is None:
                proc.kill()
                why = f"process timed out after {a.timeout:.0f} s"
            proc.wait()
            if cache is not None:
                shutil.rmtree(cache, ignore_errors=True)
            out_f.seek(0)
            err_f.seek(0)
            out, err = out_f.read(), err_f.read()
            out_f.close()
            err_f.close()
            if not a.quick:
                sys.stderr.write(err)
            lines = [ln for ln in (out or "").strip().splitlines() if ln.startswith("{")]
            if why is None and proc.returncode == 0 and lines:
                results.append(json.loads(lines[-1]))
                continue
            if why is None:
                tail = (err or out or "?").strip().splitlines()[-1:] or ["?"]
                why = f"process failed (rc {proc.returncode}): {tail[0][:200]}"
            # A compile that never ends (or crashes) must not cost the eager rows: run the
            # process again without the compiled entries.
            slow = [k for k in impls if k in OUR_COMPILED + TORCH_COMPILE_PEERS]
            if slow and len(slow) < len(impls):
                why += "; the process was run again without the compiled entries"
                pending.insert(0, (case, set_name, [k for k in impls if k not in slow]))
            else:
                slow = impls
            results.append(
                dict(
                    case=case,
                    set=set_name,
                    rows=[dict(case=case, set=set_name, key=k, skipped=why) for k in slow],
                )
            )
    return results


def _complete(row: dict[str, Any]) -> dict[str, Any]:
    base = dict(
        label=row["key"],
        median_ms=float("nan"),
        min_ms=float("nan"),
        iqr_ms=float("nan"),
        first_step_s=float("nan"),
        compiled=False,
        state_bytes=0,
        peak_bytes=None,
        ratio=float("nan"),
        passes=float("nan"),
        skipped=None,
        applicable=True,
    )
    return {**base, **row}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = _parse(argv)
    if a.one:
        _torchvision_shim()
        import torch

        if a.threads:
            torch.set_num_threads(a.threads)
        from _measure import run_one

        out = run_one(
            a.one[0],
            a.one[1],
            a.impls,
            steps=a.steps,
            rounds=a.rounds,
            warmup=a.warmup,
            memory=a.memory,
            quick=a.tiny,
            device=torch.device(a.device),
        )
        print(json.dumps(out), flush=True)
        return out

    import torch
    from _cases import CASES, baseline_key
    from _measure import describe_set
    from _report import chart, markdown

    if a.render:
        results = json.loads(Path(a.render).read_text())
        Path(a.out_md).write_text(markdown(results))
        why = chart(results, Path(a.out_png))
        print(f"wrote {a.out_md}" + (f" (no chart: {why})" if why else f", {a.out_png}"))
        return results

    started, t0, load_before = time.strftime("%Y-%m-%d %H:%M %Z"), time.monotonic(), _load()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available here")
    jobs, skipped = _plan(a)
    procs = _run_jobs(a, jobs)

    rows = [_complete(r) for p in procs for r in p["rows"]] + [_complete(r) for r in skipped]
    for r in rows:  # ratios to the case's baseline, taken from the same set
        b = baseline_key(CASES[r["case"]])
        r["baseline"] = b
        base = [x for x in rows if (x["case"], x["set"], x["key"]) == (r["case"], r["set"], b)]
        if r["skipped"] is None and base and base[0]["skipped"] is None:
            r["ratio"] = r["median_ms"] / base[0]["median_ms"]
    bws = [p["bandwidth_Bps"] for p in procs if "bandwidth_Bps" in p]
    machine = dict(
        cpu=_cpu_name(),
        cores=os.cpu_count(),
        machine=platform.machine(),
        gpu=torch.cuda.get_device_name() if a.device.startswith("cuda") else None,
        torch=torch.__version__,
        threads=procs[0].get("threads", torch.get_num_threads()) if procs else "?",
        python=platform.python_version(),
        versions=_versions(),
        bandwidth_GBps=statistics.median(bws) / 1e9 if bws else float("nan"),
        started=started,
        elapsed_s=time.monotonic() - t0,
        load_before=load_before,
        load_after=_load(),
    )
    config = {
        k: getattr(a, k)
        for k in (
            "cases",
            "sets",
            "impls",
            "steps",
            "rounds",
            "warmup",
            "device",
            "quick",
            "tiny",
            "threads",
            "jax",
            "torch_compile",
            "torch_compile_max_tensors",
            "compile",
            "compile_max_tensors",
            "warm_compile_cache",
            "skip",
            "memory",
        )
    }
    command = " ".join(["python benchmarks/suite.py", *(sys.argv[1:] if argv is None else argv)])
    results = dict(
        command=command,
        machine=machine,
        config=config,
        sets={s: describe_set(s, a.tiny) for s in a.sets},
        memory_method=(
            "torch.cuda.max_memory_allocated above the level before the step"
            if a.device.startswith("cuda")
            else "torch.profiler(profile_memory=True): the running sum of the CPU allocator's "
            "allocation and free events of one step, its maximum; not measured for JAX"
        ),
        rows=rows,
        processes=[{k: v for k, v in p.items() if k != "rows"} for p in procs],
    )
    Path(a.out_json).write_text(json.dumps(results, indent=1) + "\n")
    Path(a.out_md).write_text(markdown(results))
    why = chart(results, Path(a.out_png))
    print(f"wrote {a.out_md}, {a.out_json}" + (f" (no chart: {why})" if why else f", {a.out_png}"))
    return results


if __name__ == "__main__":
    main()
