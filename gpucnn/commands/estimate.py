"""``gpucnn bench --estimate``: a performance model of one training step that needs no GPU. Every figure is an estimate.

    gpucnn bench --estimate                                   # fashion_cnn, batch 256, H100 SXM5
    gpucnn bench --estimate --gpu a100 --batch-sizes 64,256,512 --model lenet5 --json estimate.json

For a named model (gpucnn.models.MODELS) it lists every launch of the eager step and of the graph step
(gpucnn/perf/eager.py, graph.py: written from the launchers, with their own grid arithmetic): kernel,
shape (M x N x K for GEMMs), grid and block, registers and static shared memory (ptxas, via nvcc or NVRTC,
cached; 'unknown' without either), resident blocks per SM and waves on the GPU's SMs, FLOPs and
compulsory DRAM bytes, the estimated time from the roofline of gpucnn/perf/roofline.py and the bound
that applies; then each step's total, and for the eager step the host time of our launches measured on
this CPU (gpucnn/perf/host.py). The GPUs' figures and their sources: gpucnn/perf/gpus.py.
"""
import argparse
import json
import math
import sys

from .timing import batch_sizes

__all__ = ["main", "estimate", "format_report"]

DEFAULT_BATCHES = "256"


def _parser(prog):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", default="h100-sxm", help="h100-sxm, h200 or a100 (default h100-sxm)")
    p.add_argument("--batch-sizes", type=batch_sizes, default=DEFAULT_BATCHES, help="comma-separated (default 256)")
    p.add_argument("--model", default="fashion_cnn", help="a name of gpucnn.models.MODELS (default fashion_cnn)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--no-host-timing", action="store_true", help="skip timing loader.launch on this CPU")
    return p


def estimate(model_name, batch, gpu, resources, host_timing=True):
    """{'model', 'batch', 'steps': {'eager': {...}, 'graph': {...}}} of one model and batch size on ``gpu``."""
    from ..nn.models import INPUT_SHAPES, MODELS
    from ..perf import eager, graph, host, roofline

    model = MODELS[model_name]()
    shape = (batch,) + tuple(INPUT_SHAPES[model_name])
    steps = {}
    for kind in ("eager", "graph"):
        try:
            listed = eager.eager_step(model, shape, gpu.sms) if kind == "eager" else graph.graph_step(model, shape, gpu.sms)
        except NotImplementedError as exc:  # a layer this step's launch list does not cover: say so, list the other
            steps[kind] = {"launches": [], "not_modelled": str(exc)}
            continue
        launches = [roofline.annotate(launch, gpu, resources) for launch in listed]
        summary = roofline.totals(launches)
        if kind == "eager" and host_timing:
            seconds = host.host_launch_seconds(launches)
            for launch in launches:
                if launch["kind"] == "ours":
                    launch["host_us"] = seconds[(launch["file"], launch["name"])] * 1e6
            summary["host_ms"] = sum(launch.get("host_us", 0.0) for launch in launches) / 1000
            summary["est_step_ms_with_host"] = max(summary["est_step_ms"], summary["host_ms"])
        steps[kind] = {"launches": launches, **summary}
    if all("not_modelled" in step for step in steps.values()):
        raise NotImplementedError(steps["graph"]["not_modelled"])
    return {"model": model_name, "batch": batch, "steps": steps}


def _fmt(value, spec, unknown="unknown"):
    return unknown if value is None else format(value, spec)


def _row(launch):
    grid = "x".join(str(g) for g in launch["grid"]) if launch["grid"] else "cupy"
    block = str(launch["block"][0]) if launch["block"] else "-"
    if launch["kind"] == "cublas":
        grid += " tiles"
    share = f"{launch['ffma_share']:.2f}" if launch["flops"] else "-"
    tile = "x".join(str(t) for t in launch["tile"][:3]) if launch.get("tile") else "-"
    peak = f"{launch['pct_of_peak']:.1f}" if launch["flops"] else "-"
    host = f" {launch['host_us']:6.1f}" if "host_us" in launch else f" {'-':>6}"
    return (f"estimate {launch['phase'][:10]:10} {launch['layer'][:24]:24} {launch['name'][:30]:30} "
            f"{launch['shape'][:24]:>24} {grid:>12} {block:>5} {_fmt(launch['registers'], 'd', '?'):>4} "
            f"{_fmt(launch['smem'], 'd', '?'):>5} {_fmt(launch['blocks_per_sm'], 'd', '?'):>3} "
            f"{_fmt(launch['waves'], 'd', '?'):>5} {launch['flops'] / 1e9:8.4f} {launch['bytes'] / 1e6:8.3f} "
            f"{share:>5} {tile:>9} {peak:>5} {launch['est_us']:9.2f} {launch['bound']:>7}" + host)


HEADER = (f"estimate {'phase':10} {'layer':24} {'kernel':30} {'shape (MxNxK)':>24} {'grid':>12} {'block':>5} "
          f"{'regs':>4} {'smem':>5} {'b/SM':>3} {'waves':>5} {'GFLOP':>8} {'MB':>8} {'share':>5} {'tile':>9} "
          f"{'%peak':>5} {'est us':>9} {'bound':>7} {'host us':>6}")


def format_report(report):
    """The report as lines of text, every one of them labelled 'estimate'."""
    gpu, lines = report["gpu"], []
    lines.append(f"# estimate: a model, not a measurement: nothing ran on a GPU. {report['gpu_text']}")
    lines.append(f"# estimate: registers and shared memory from {report['resources_note']}")
    lines.append(f"# estimate: roofline {report['assumptions']}")
    for run in report["runs"]:
        for kind in ("eager", "graph"):
            step = run["steps"][kind]
            lines.append("")
            lines.append(f"# estimate: {run['model']}, batch {run['batch']}, {kind} step on {gpu['name']}")
            if "not_modelled" in step:
                lines.append(f"estimate {kind} step: not modelled ({step['not_modelled']})")
                continue
            lines.append(HEADER)
            lines.extend(_row(launch) for launch in step["launches"])
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(step["launches_by_kind"].items()))
            bounds = ", ".join(f"{b} {ms:.3f} ms" for b, ms in sorted(step["est_ms_by_bound"].items()))
            lines.append(f"estimate {kind} step total: {step['est_step_ms']:.3f} ms per step on the device "
                         f"({step['launch_count']} launches: {kinds}; {step['flops'] / 1e9:.3f} GFLOP, "
                         f"{step['bytes'] / 1e6:.1f} MB; by bound: {bounds})")
            if "host_ms" in step:
                ours = sum(1 for launch in step["launches"] if launch["kind"] == "ours")
                lines.append(f"estimate {kind} step host: {step['host_ms']:.3f} ms for our {ours} launches "
                             f"(Python side of loader.launch measured on this CPU, device work left out; CuPy's "
                             f"and cuBLAS's launches not counted); step at least "
                             f"{step['est_step_ms_with_host']:.3f} ms")
        lines.append(f"estimate model arithmetic: {run['model_flops'] / 1e9:.3f} GFLOP per step "
                     f"(forward 2 x multiply-adds, backward 2 x forward)")
    return lines


def model_flops(model_name, batch):
    """3 x the forward pass's 2 x multiply-adds of the conv and dense layers (bench_steps.train_step_flops), from
    the shapes of the model's graph program (a Sequential or a Model)."""
    from ..compile.cuda_graph.plan import build_program
    from ..nn.layers import Conv2D, Dense
    from ..nn.models import INPUT_SHAPES, MODELS
    from ..perf.graph import shape_after, stage_shape

    program = build_program(MODELS[model_name]())
    shapes = {program.INPUT: (batch,) + tuple(INPUT_SHAPES[model_name])}
    total = 0
    for node in program.nodes:
        layer, ins = node.stage.layer, [shapes[k] for k in node.inputs]
        out = shape_after(layer, ins)  # the layer's own (a Conv2D's before the pool its stage may hold)
        shapes[node.output] = stage_shape(node.stage, ins)
        if isinstance(layer, Conv2D):
            taps = ins[0][1] // layer.groups * layer.window.kh * layer.window.kw
            total += 2 * math.prod(out) * taps
        elif isinstance(layer, Dense):
            total += 2 * batch * layer.in_features * layer.out_features
    return 3 * total


def _resources(gpu):
    from ..perf import resources
    try:
        return resources.kernel_resources(gpu.arch)
    except (OSError, RuntimeError, ValueError) as exc:  # a compiler that fails: the resources are unknown
        return {}, f"nothing: compiling for {gpu.arch} failed ({str(exc)[:200]}); registers unknown"


def main(argv=None, prog=None):
    args = _parser(prog).parse_args(argv)
    from ..nn.models import MODELS
    from ..perf import gpus, roofline

    if args.gpu not in gpus.GPUS:
        print(f"error: unknown --gpu {args.gpu!r}; the model knows {gpus.gpu_names()}", file=sys.stderr)
        return 2
    if args.model not in MODELS:
        print(f"error: unknown --model {args.model!r}; named models: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    gpu = gpus.GPUS[args.gpu]
    try:
        resources, note = _resources(gpu)
        runs = []
        for batch in args.batch_sizes:
            run = estimate(args.model, batch, gpu, resources, host_timing=not args.no_host_timing)
            run["model_flops"] = model_flops(args.model, batch)
            runs.append(run)
    except NotImplementedError as exc:  # a layer the launch lists do not cover (BatchNorm, Add, ...)
        print(f"error: {exc} (model {args.model!r}; the estimate covers the layers of the graph step: Conv2D, Dense, "
              f"ReLU, Tanh, MaxPool2D, AvgPool2D, Flatten, BatchNorm2D, Add, Concatenate, GlobalAvgPool2D)",
              file=sys.stderr)
        return 2
    except ImportError as exc:  # the launch modules import CuPy (no GPU needed)
        print(f"error: the estimate reads the launchers' grid arithmetic, which needs CuPy installed "
              f"(no GPU needed): {exc}", file=sys.stderr)
        return 2
    assumptions = (f"cuBLAS at {roofline.CUBLAS_EFFICIENCY:g} of peak on 128x128 tiles (assumption), "
                   f"{roofline.LAUNCH_GAP_S * 1e6:g} us launch gap (assumption), FFMA share from SASS "
                   f"(fixed {roofline.FIXED_FFMA_SHARE:g} where none; a tiled GEMM: its tile's k-loop, "
                   f"FLOPs with the tile's padding; %peak = FLOPs / (peak x estimate))")
    report = {"estimate": True, "gpu": gpu.as_dict(), "gpu_text": gpu.describe(), "resources_note": note,
              "assumptions": assumptions, "runs": runs}
    print("\n".join(format_report(report)))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
        print(f"# estimate: written to {args.json}")
    return 0
