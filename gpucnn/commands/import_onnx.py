"""Import an ONNX model (from PyTorch, Keras, ... through their ONNX exporters) as a gpucnn model file.

    gpucnn import lenet5.onnx lenet5.npz
    gpucnn import resnet.onnx resnet.npz --dtype float64

The network is read by gpucnn.onnx.load (gpucnn/io/onnx_import.py): each supported operator becomes one of
gpucnn's layers, the initializers their parameters and buffers, named after the nodes. OUT.npz is what
Model.save writes: the weights and the architecture, so that gpucnn rebuilds the model from the file alone
(gpucnn.architecture.build, then Model.load). To fine-tune the ONNX model, train
from it: gpucnn train --init-from MODEL.onnx. An operator gpucnn has no layer for is
refused in one line naming it, its node and the opset, and nothing is written. Needs the onnx package.
"""
import argparse
import sys

import numpy

from ..io.arrays import load_arrays
from ..nn import architecture

__all__ = ["main", "parse_args"]


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_file", metavar="MODEL.onnx", help="the ONNX file to read")
    p.add_argument("output", metavar="OUT.npz", help="the gpucnn model file to write")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="the dtype of every layer")
    return p.parse_args(argv)


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    try:
        from ..io.onnx_import import load
        model = load(args.model_file, dtype=numpy.dtype(args.dtype))
        model.save(args.output)
        rebuilt = architecture.build(load_arrays(args.output)[1]["architecture"]).load(args.output)
    except (OSError, ImportError, ValueError) as exc:  # OnnxImportError, CheckpointError, ArchitectureError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    params = sum(int(p.data.size) for p in rebuilt.parameters())
    shapes = "; ".join(f"(batch, {', '.join(map(str, t.shape))})" for t in rebuilt.inputs)
    print(f"wrote {args.output}: {len(rebuilt.leaf_layers())} layers, {params:,} parameters, {args.dtype}, input "
          f"{shapes}; from {args.model_file} ({len(model.nodes)} nodes imported)")
    return 0
