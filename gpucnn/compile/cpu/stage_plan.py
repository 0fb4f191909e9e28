"""What the CPU fast path takes of the one planner's matches (gpucnn/compile/plan.py), the stage it makes of each,
and the two layouts: the public (N, C, H, W) / (N, F) and the internal (C, H, W, n) / (F, n) of its stages. Shared
by the chain runner (runner.py) and the graph runner (graph_plan.py, graph_segment.py).
"""
from ...nn.layers import MaxPool2D, ReLU
from ...ops.geometry import Window2D
from .batchnorm_stage import BatchNormStage
from .stages import ActivationStage, ConvStage, DenseStage, FlattenStage, PoolStage

__all__ = ["take", "stage_for", "internal", "public_into"]


def _plain_window(layer):
    """Windows the fast path computes: no dilation, padding fixed by the layer (before and after may differ; not
    'same' at a stride above 1), no ceil mode, an average pool counting its padding, and for a convolution one
    group; any other layer runs as its reference layer (the per-segment fallback)."""
    w = layer.window
    return (isinstance(w, Window2D) and not w.dilated and not w.ceil_mode
            and getattr(layer, "count_include_pad", True) and getattr(layer, "groups", 1) == 1)


def internal(a):
    """The internal layout of a public (N, C, H, W) or (N, F) array: a view, no copy."""
    return a.transpose(1, 2, 3, 0) if a.ndim == 4 else a.T


def public_into(a, out):
    """``out`` (public layout) = the internal-layout array ``a``."""
    out[...] = a.transpose(3, 0, 1, 2) if a.ndim == 4 else a.T


def take(match, rank):
    """What this executor runs of a planner match (gpucnn/compile/plan.py): plain windows (no dilation, one
    group), in the rank each stage is written for; max pooling folds into the convolution when unpadded."""
    layers, first = match.layers, match.layers[0]
    if match.kind == "conv":
        if rank != 4 or not _plain_window(first):
            return 0
        pool = layers[-1] if type(layers[-1]) is MaxPool2D else None
        folds = pool is not None and not pool.window.padded and _plain_window(pool)
        return len(layers) if folds or pool is None else len(layers) - 1
    if match.kind == "pool":
        return int(rank == 4 and _plain_window(first))
    if match.kind == "dense":
        return int(rank == 2)  # its ReLU runs as an activation stage of its own
    if match.kind == "batchnorm":
        return int(rank == 4)
    return int(rank in (2, 4))  # elementwise, flatten


def stage_for(index, match):
    """The stage that runs a planner match ``take`` took."""
    kind, layers = match.kind, match.layers
    if kind == "conv":
        relu = layers[1] if len(layers) > 1 and type(layers[1]) is ReLU else None
        pool = layers[-1] if type(layers[-1]) is MaxPool2D else None
        return ConvStage(index, layers[0], relu, pool)
    return {"pool": PoolStage, "elementwise": ActivationStage, "flatten": FlattenStage,
            "dense": DenseStage, "batchnorm": BatchNormStage}[kind](index, layers[0])
