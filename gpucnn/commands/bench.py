"""Device timings of the reference network (Fashion-MNIST CNN), per layer and per training step.

    gpucnn bench                          # every usable device, batch 64, 128, 256, 1024
    gpucnn bench --device cpu --batch-sizes 128 --json
    gpucnn bench --device cpu --path fast  # only the fast CPU path (default: both CPU paths, side by side)

Method: warm-up runs first, the device is synchronised around every timed region,
the figure is the median of --repeats runs, inputs are random; gpucnn and PyTorch run in
alternating blocks (four rounds), so that drift in the machine's speed hits both. With torch importable,
the same network runs in PyTorch on the same device in the same process (cuDNN on the
GPU) and the table gains its columns. "peak" is the achieved GFLOP/s of a large
single-precision matrix product on that device, measured here, so "% peak" says how
close a step comes to what the device's matrix unit delivers to NumPy/CuPy.

Precision is like for like: by default both sides compute in strict FP32 (CuPy's float32
compute type FP32; PyTorch's allow_tf32 flags off, for cuBLAS and cuDNN). ``--tf32`` runs both
sides with TF32 tensor-core matrix products, and the rows say so. No timed gpucnn step reads
back to the host: the labels are checked once, before timing, as fit does. On a GPU the
cold compile (every kernel file, empty cache, in a fresh process) and the load from CuPy's
disk cache are timed apart from the warm steps.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy

from .. import backend
from ..compile import cpu as fast
# The timing and the timed steps live in modules of their own, which bench_graph and bench_distributed
# import too; the names stay importable from here.
from .bench_steps import gpucnn_step, on_path, per_layer_times, torch_network, torch_step, train_step_flops
from .timing import batch_sizes, matmul_peak, synchronizer, timed, timed_alternating

__all__ = ["main", "compare", "cold_compile_seconds", "cpu_model", "print_row", "gpucnn_step", "torch_step",
           "torch_network", "train_step_flops", "per_layer_times", "on_path", "synchronizer", "timed",
           "timed_alternating", "matmul_peak"]


def cpu_model():
    """The CPU's model name (lscpu's 'Model name', read from /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compare(device, batch, repeats, warmup, per_layer, with_torch, tf32=False, paths=("fast",)):
    """Time gpucnn and PyTorch in alternating blocks, so that a machine whose speed drifts during
    the run slows both sides alike. On the CPU each of ``paths`` ('fast', 'reference') is a side."""
    sync = synchronizer(device)
    if device != "cpu":
        paths = ("reference",)  # one path on the GPU; the fast path is the CPU's
    ours_step, ours_forward, flops, (model, x) = gpucnn_step(device, batch)
    theirs = torch_step(device, batch, tf32) if with_torch else None
    if theirs is not None and device != "cpu":
        import torch
        torch_sync = torch.cuda.synchronize
        both_sync = lambda: (sync(), torch_sync())  # noqa: E731
    else:
        both_sync = sync
    fns = {"step": on_path(paths[0], ours_step), "forward": on_path(paths[0], ours_forward)}
    for path in paths[1:]:
        other_step, other_forward = gpucnn_step(device, batch)[:2]
        fns.update({f"{path}_step": on_path(path, other_step), f"{path}_forward": on_path(path, other_forward)})
    if theirs is not None:
        fns.update({"torch_step": theirs[0], "torch_forward": theirs[1]})
    times = timed_alternating(fns, both_sync, repeats, warmup)
    result = {"gpucnn": {"step_s": times["step"], "forward_s": times["forward"], "flops": flops, "path": paths[0]},
              "torch": None}
    for path in paths[1:]:
        result[f"gpucnn_{path}"] = {"step_s": times[f"{path}_step"], "forward_s": times[f"{path}_forward"],
                                    "flops": flops, "path": path}
    if theirs is not None:
        result["torch"] = {"step_s": times["torch_step"], "forward_s": times["torch_forward"], **theirs[2]}
    if device != "cpu":
        from .launch_count import count_launches
        result["gpucnn"]["launches_per_step"], result["gpucnn"]["launches_counted_by"] = \
            count_launches(ours_step, sync)
    if per_layer:
        with backend.device_scope(x):  # single layers, unlike Sequential, leave the device to the caller
            result["gpucnn"]["layers"] = per_layer_times(model, x, sync, repeats, warmup)
    return result


def cold_compile_seconds(device, dtype="float32"):
    """{'cold_s': compile of every kernel file with an empty kernel cache, 'cached_s': the same from
    the disk cache}, each in a fresh process (CUDA context and CuPy import excluded), or None on the CPU."""
    if device == "cpu":
        return None
    code = ("import json, sys, time\n"
            "from gpucnn.ops.cuda import loader\n"
            "import cupy\n"
            f"cupy.cuda.Device({int(device.split(':')[1])}).use(); cupy.zeros(1)\n"
            "start = time.perf_counter()\n"
            f"loader.compile_all({dtype!r})\n"
            "print(json.dumps(time.perf_counter() - start))\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = {}
    with tempfile.TemporaryDirectory(prefix="gpucnn-kernel-cache-") as cache:
        env = dict(os.environ, CUPY_CACHE_DIR=cache, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for key in ("cold_s", "cached_s"):
            done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"compiling the kernels in a fresh process failed: {done.stderr.strip()[-400:]}")
            result[key] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default in --help."""


def _parser(prog):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--device", action="append",
                   help="cpu, cuda or cuda:N (repeatable); None means every usable one")
    p.add_argument("--batch-sizes", type=batch_sizes, default="64,128,256,1024", help="comma-separated")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per figure (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    p.add_argument("--per-layer", action="store_true", help="also time each layer's forward and backward")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--path", choices=["fast", "reference", "both"], default="both",
                   help="CPU path(s) to time (gpucnn.config.path); both: fast and reference in the same run")
    p.add_argument("--tf32", action="store_true",
                   help="both sides use TF32 tensor-core matrix products (default: strict FP32 on both sides)")
    p.add_argument("--distributed", action="store_true",
                   help="under mpirun: data-parallel steps against one process, same global batch "
                        "(gpucnn/commands/bench_distributed.py)")
    p.add_argument("--graph", action="store_true",
                   help="add the graph rows on CUDA devices: gpucnn graph, PyTorch eager, PyTorch CUDA graph "
                        "(gpucnn/commands/bench_graph.py)")
    p.add_argument("--estimate", action="store_true",
                   help="no GPU needed: a performance model of one step, every launch, with its own options "
                        "--gpu, --model, --batch-sizes, --json FILE (gpucnn/commands/estimate.py)")
    return p


def main(argv=None, prog=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--estimate" in argv:  # its own options (--json takes a FILE there)
        from . import estimate
        return estimate.main([a for a in argv if a != "--estimate"], prog=f"{prog or 'gpucnn bench'} --estimate")
    p = _parser(prog)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    backend.set_tf32(args.tf32)  # before any CuPy matrix product
    if args.distributed:
        from . import bench_distributed
        return bench_distributed.main(args)
    try:
        devices = args.device or (["cpu", "cuda:0"] if backend.gpu_available() else ["cpu"])
        devices = [backend.resolve_device(d) for d in devices]
    except (RuntimeError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return _bench(args, devices, args.batch_sizes)
    except MemoryError as exc:
        batch = getattr(exc, "batch", None)
        print(f"error: out of memory at batch size {batch}; try smaller batch sizes, e.g. --batch-sizes "
              f"{max((batch or 2) // 2, 1)} ({exc})", file=sys.stderr)
    except OSError as exc:  # e.g. a kernel cache that cannot be written
        print(f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
    except RuntimeError as exc:  # e.g. the kernels failed to compile in the cold-compile process
        print(f"error: {exc}", file=sys.stderr)
    return 2


def print_row(r, ours, tag, cpu_rate):
    theirs = r["torch"]
    rate = r["batch"] / ours["step_s"]
    gflops = ours["flops"] / ours["step_s"] / 1e9
    on_gpu = r["device"] != "cpu" and r["batch"] in cpu_rate
    vs_cpu = f"{rate / cpu_rate[r['batch']]:7.1f}" if on_gpu else f"{'-':>7}"
    t_rate = r["batch"] / theirs["step_s"] if theirs else None
    path = ours["path"] if r["device"] == "cpu" else "-"
    print(f"{r['device']:8} {path:>9} {tag:>4} {r['batch']:5d} {1000 * ours['step_s']:8.2f} {rate:8.0f} {gflops:8.1f} "
          f"{100 * gflops / r['peak_gflops']:6.1f}% {vs_cpu} "
          + (f"{t_rate:11.0f} {rate / t_rate:10.2f}" if theirs else f"{'-':>11} {'-':>10}")
          + f" {60000 / rate:8.2f}")


def _bench(args, devices, batches):
    precision = ("TF32 matrix products on both sides (CUPY_TF32=1; torch allow_tf32 flags on)" if args.tf32 else
                 "strict FP32 on both sides (CuPy compute type FP32; torch allow_tf32 flags off)")
    paths = ("fast", "reference") if args.path == "both" else (args.path,)
    report = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus", "cpu": cpu_model(),
              "fast_threads": fast.num_threads(), "blas_threads": fast.blas_control().describe(),
              "numpy": numpy.__version__, "precision": precision, "results": [], "compile": {}}
    if backend.gpu_available():
        cupy = backend.cupy_or_none()
        props = cupy.cuda.runtime.getDeviceProperties(0)
        report["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        report["cupy"] = cupy.__version__
        report["driver"] = cupy.cuda.runtime.driverGetVersion()
    for device in devices:
        compile_times = cold_compile_seconds(device)
        if compile_times is not None:
            report["compile"][device] = compile_times
    peaks = {d: matmul_peak(d, synchronizer(d)) for d in devices}
    for device in devices:
        for batch in batches:
            try:
                result = compare(device, batch, args.repeats, args.warmup, args.per_layer, not args.no_torch, args.tf32,
                                 paths)
            except Exception as exc:
                if isinstance(exc, MemoryError) or backend.is_out_of_memory(exc):
                    error = MemoryError(str(exc))
                    error.batch = batch
                    raise error from exc
                raise
            if args.graph:
                from .bench_graph import graph_rows
                result["graph"] = graph_rows(device, batch, args.repeats, args.warmup, not args.no_torch)
            report["results"].append({"device": device, "batch": batch, **result, "peak_gflops": peaks[device]})
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    gpu = f", GPU {report['gpu']}, cupy {report['cupy']}, driver {report['driver']}" if "gpu" in report else ""
    print(f"# {report['machine']}, CPU {report['cpu']}, numpy {report['numpy']}{gpu}")
    print(f"# CPU fast path: {report['fast_threads']} thread(s); BLAS threads {report['blas_threads']}")
    print(f"# precision: {precision}")
    for device, times in report["compile"].items():
        print(f"# {device}: cold compile of every kernel file {times['cold_s']:.2f} s (empty cache, fresh process); "
              f"load from the disk cache {times['cached_s']:.2f} s")
    cpu_rate = {r["batch"]: r["batch"] / r["gpucnn"]["step_s"] for r in report["results"] if r["device"] == "cpu"}
    tag = "tf32" if args.tf32 else "fp32"
    header = (f"{'device':8} {'path':>9} {'prec':>4} {'batch':>5} {'step ms':>8} {'img/s':>8} {'GFLOP/s':>8} "
              f"{'% peak':>7} {'vs cpu':>7} {'torch img/s':>11} {'ours/torch':>10} {'epoch s':>8}")
    print(header)
    for r in report["results"]:
        for ours in [r["gpucnn"]] + [r[k] for k in sorted(r) if k.startswith("gpucnn_")]:
            print_row(r, ours, tag, cpu_rate)
        if r["gpucnn"].get("launches_per_step") is not None:
            print(f"    launches per eager step: {r['gpucnn']['launches_per_step']} "
                  f"({r['gpucnn']['launches_counted_by']})")
        for layer in r["gpucnn"].get("layers", []):
            print(f"    {layer['layer']:10} {str(tuple(layer['shape'])):>20} "
                  f"forward {1000 * layer['forward_s']:7.2f} ms  backward {1000 * layer['backward_s']:7.2f} ms")
    if args.graph:
        from .bench_graph import print_graph_rows
        print_graph_rows(report)
    print("peak = measured float32 matmul GFLOP/s: " + ", ".join(f"{d} {v:.0f}" for d, v in peaks.items()))
    return 0
