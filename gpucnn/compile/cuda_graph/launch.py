"""The fused kernels' launchers under their old name: this module *is* ``gpucnn.ops.cuda.fused``.

They moved down to gpucnn/ops/cuda/fused.py when the eager CUDA Conv2D and Dense started to run on them
(ops must not import compile). ``from . import launch as fused`` and ``from .launch import check_int32``
keep working and get the very same objects: importing this name puts that module in its place.
"""
import sys

from ...ops.cuda import fused

sys.modules[__name__] = fused
