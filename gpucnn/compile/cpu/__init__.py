"""The fast CPU path: the same models and numbers as the readable path, at PyTorch's pace.

``gpucnn.config.path = 'fast'`` (the default) runs NumPy models through this package;
``'reference'`` runs the readable per-layer ops (gpucnn/ops, gpucnn/layers), which stay the
reference: ``gpucnn.config.verify = 'raise'`` runs both on the first step of each batch shape
and compares them. Sequential hands over to ``runner_for`` in forward and backward, Model to
``graph_runner_for`` (graph_runner.py: the whole graph, nested blocks opened up, in the internal layout across
its joins).

What makes it fast (each measured in docs/benchmarks.md):
- threads.py: the batch split over worker threads, BLAS at one thread each;
- chwn.py: a channel-major layout (C, H, W, N) inside conv/pool chains, no transposes;
- arena.py: buffers reused from step to step, dead forward buffers reused for gradients;
- stages.py: the conv -> ReLU -> max-pool rewrite (max pooling before bias and ReLU);
- runner.py: segments and fallback: layers it does not know run on the reference path;
- graph_plan.py, graph_segment.py, merge_stages.py: a Model's graph as segments of stages, Add, Concatenate and
  GlobalAvgPool2D among them, so that a ResNet changes layout only at its input and output.
"""
from .runner import FastPathMismatch, FastRunner, runner_for
from .threads import blas_control, num_threads

__all__ = ["FastPathMismatch", "FastRunner", "runner_for", "blas_control", "num_threads"]
