"""The fast CPU path: the same models and numbers as the readable path, at PyTorch's pace.

``gpucnn.config.path = 'fast'`` (the default) runs NumPy models through this package;
``'reference'`` runs the readable per-layer ops (gpucnn/ops, gpucnn/layers), which stay the
reference: ``gpucnn.config.verify = 'raise'`` runs both on the first step of each batch shape
and compares them. Sequential hands over to ``runner_for`` in forward and backward.

What makes it fast (each measured in docs/benchmarks.md):
- threads.py: the batch split over worker threads, BLAS at one thread each;
- chwn.py: a channel-major layout (C, H, W, N) inside conv/pool chains, no transposes;
- arena.py: buffers reused from step to step, dead forward buffers reused for gradients;
- stages.py: the conv -> ReLU -> max-pool rewrite (max pooling before bias and ReLU);
- runner.py: segments and fallback: layers it does not know run on the reference path.
"""
from .runner import FastPathMismatch, FastRunner, runner_for
from .threads import blas_control, num_threads

__all__ = ["FastPathMismatch", "FastRunner", "runner_for", "blas_control", "num_threads"]
