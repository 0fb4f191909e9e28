"""The graph rows of ``gpucnn bench --graph``: the captured step against PyTorch, eager and captured by hand.

For each CUDA device and batch size, run in the same process and timed in alternating
blocks (``timing.timed_alternating``):
- gpucnn graph: ``gpucnn.compile_step`` of the reference network with SoftmaxCrossEntropy and
  Adam (one graph launch per step: fused layers, the one-launch loss kernel, the
  multi-tensor Adam update);
- PyTorch eager (cuDNN): the same network and Adam, as ``bench_steps.torch_step``;
- PyTorch graph: the same step captured by hand in a ``torch.cuda.CUDAGraph`` (PyTorch's
  recipe: static input tensors, three warm-up steps on a side stream, Adam(capturable=True)).
Also reported: kernel launches per step (the gpucnn graph's kernel nodes, from CuPy's
``Graph.debug_dot_str``; PyTorch's from its profiler), and the warm epoch time of a
Fashion-MNIST-sized epoch (60,000 random images): measured end to end for gpucnn
(``run_epoch``, one host read), and steps x step time for PyTorch (marked as derived).

Nothing here runs without a CUDA device: on the CPU every row says why it is unavailable.
"""
import re
import time

import numpy

from .. import backend
from ..nn.losses import SoftmaxCrossEntropy
from ..nn.models import fashion_cnn
from ..optim.optimizers import Adam
from .bench_steps import torch_network, torch_step
from .timing import synchronizer, timed_alternating

__all__ = ["graph_rows", "gpucnn_graph_step", "torch_graph_step", "count_kernel_nodes", "EPOCH_IMAGES"]

EPOCH_IMAGES = 60000


def count_kernel_nodes(dot):
    """Kernel nodes in a CUDA graph's DOT description (cudaGraphDebugDotPrint): nodes labelled KERNEL."""
    return len(re.findall(r"\bKERNEL\b", dot or ""))


def gpucnn_graph_step(device, batch, images=None, graph_options=None):
    """(launch, synchronize, info) of the captured reference step on ``device``; info holds 'launches'
    (kernel nodes, or None where CuPy cannot say) and 'epoch_s' (a warm epoch over ``images`` samples).

    The step is the one ``gpucnn train --graph`` runs: SoftmaxCrossEntropy's one-launch kernel and Adam's
    multi-tensor update, captured with the fused layers; ``graph_options`` (compile_step's loss, update,
    verify, verify_every) can replace them. NotImplementedError where compile_step cannot capture them.
    """
    from ..compile.cuda_graph.step import compile_step

    images = EPOCH_IMAGES if images is None else int(images)
    rng = numpy.random.default_rng(batch)
    x = backend.to_device(rng.random((images, 1, 28, 28), dtype=numpy.float32), device)
    y = backend.to_device(rng.integers(0, 10, images), device)
    model = fashion_cnn(rng=0).to(device)
    loss_fn, optimizer = SoftmaxCrossEntropy(), Adam(model.parameters())
    step = compile_step(model, loss_fn, optimizer, batch, **(graph_options or {"verify": True}))
    step.bind(x, y)
    order = rng.permutation(images)
    step.run_epoch(order)  # capture, verify, and a first (cold) epoch
    started = time.perf_counter()
    step.run_epoch(order)  # the warm epoch: ends with its one host read
    epoch_s = time.perf_counter() - started
    step.start(order)
    debug = getattr(step.graph, "debug_dot_str", None)
    launches = count_kernel_nodes(debug()) if debug is not None else None
    if launches is None and step.captured is not None:  # the emulated CuPy names every captured launch
        launches = len(step.captured)
    return step.launch, step.synchronize, {"launches": launches, "epoch_s": epoch_s, "eager": step.eager}


def torch_graph_step(device, batch, warmup_steps=3):
    """(replay, info) of the PyTorch step captured by hand in a torch.cuda.CUDAGraph, or None without
    torch or its GPU."""
    try:
        import torch
    except ImportError:
        return None
    if device == "cpu" or not torch.cuda.is_available():
        return None
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    model = torch_network(torch, dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    gen = torch.Generator().manual_seed(batch)
    static_x = torch.rand((batch, 1, 28, 28), generator=gen).to(dev)
    static_y = torch.randint(0, 10, (batch,), generator=gen).to(dev)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        for _ in range(warmup_steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(static_x), static_y).backward()
            opt.step()
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = torch.nn.functional.cross_entropy(model(static_x), static_y)
        static_loss.backward()
        opt.step()
    return graph.replay, {"version": torch.__version__}


def torch_kernels_per_step(step, device):
    """CUDA kernels one call of ``step`` launches, from torch.profiler (None where it cannot tell)."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    if device == "cpu" or not torch.cuda.is_available():
        return None
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA"))


def graph_rows(device, batch, repeats, warmup, with_torch=True, images=None, graph_options=None):
    """{'gpucnn_graph', 'torch_eager', 'torch_graph'}: each {'step_s', 'launches', 'epoch_s', ...} or
    {'unavailable': why}. Times are medians over alternating blocks, in seconds."""
    unavailable = "graph rows need a CUDA device" if device == "cpu" else None
    rows = {name: {"unavailable": unavailable} for name in ("gpucnn_graph", "torch_eager", "torch_graph")}
    if unavailable:
        return rows
    fns, syncs = {}, [synchronizer(device)]
    try:
        launch, sync, info = gpucnn_graph_step(device, batch, images, graph_options)
        fns["gpucnn_graph"], rows["gpucnn_graph"] = launch, info
        syncs.append(sync)
    except NotImplementedError as exc:
        rows["gpucnn_graph"] = {"unavailable": str(exc)}
    if with_torch:
        eager = torch_step(device, batch)
        captured = torch_graph_step(device, batch)
        if eager is None or captured is None:
            rows["torch_eager"] = rows["torch_graph"] = {"unavailable": "torch with CUDA is not importable"}
        else:
            import torch
            syncs.append(torch.cuda.synchronize)
            fns["torch_eager"], fns["torch_graph"] = eager[0], captured[0]
            rows["torch_eager"] = {"launches": torch_kernels_per_step(eager[0], device), **eager[2]}
            rows["torch_graph"] = {"launches": rows["torch_eager"]["launches"], **captured[1]}
    else:
        rows["torch_eager"] = rows["torch_graph"] = {"unavailable": "--no-torch"}
    if fns:
        times = timed_alternating(fns, lambda: [s() for s in syncs], repeats, warmup)
        steps = -(-(EPOCH_IMAGES if images is None else images) // batch)
        for name, seconds in times.items():
            rows[name]["step_s"] = seconds
            if name != "gpucnn_graph":
                rows[name]["epoch_s_derived"] = steps * seconds
    return rows


def print_graph_rows(report):
    """The table of the graph rows of a bench report."""
    print(f"{'device':8} {'batch':>5} {'row':14} {'step ms':>8} {'img/s':>9} {'launches':>8} {'epoch s':>9}  note")
    for r in report["results"]:
        for name, row in r.get("graph", {}).items():
            if "unavailable" in row or "step_s" not in row:
                print(f"{r['device']:8} {r['batch']:5d} {name:14} {'-':>8} {'-':>9} {'-':>8} {'-':>9}  "
                      f"{row.get('unavailable', 'not timed')}")
                continue
            launches = "?" if row.get("launches") is None else str(row["launches"])
            epoch = row.get("epoch_s", row.get("epoch_s_derived"))
            note = "epoch = steps x step time" if "epoch_s_derived" in row else ""
            if row.get("eager"):
                note = "verify failed: ran eagerly"
            print(f"{r['device']:8} {r['batch']:5d} {name:14} {1000 * row['step_s']:8.3f} "
                  f"{r['batch'] / row['step_s']:9.0f} {launches:>8} {epoch:9.3f}  {note}")
