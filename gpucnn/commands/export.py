"""Export a saved model or a training checkpoint to ONNX (opset 17, dynamic batch).

    gpucnn export runs/fashion_cnn/model.npz fashion_cnn.onnx
    gpucnn export runs/fashion_cnn/checkpoint.npz out.onnx --input-shape 1,28,28
    gpucnn export old.npz out.onnx --model lenet5

The model is rebuilt from the file: files written by Sequential.save and by fit's checkpoints
record their architecture (and the input shape once the model has seen data). For a file
without one, --model names the architecture (fashion_cnn, lenet5); without --model, the named
model whose weight shapes match the file is used. Needs the onnx package (pip install 'gpucnn[onnx]').
"""
import argparse
import sys

from ..nn import architecture
from ..io.arrays import CheckpointError, load_arrays
from ..nn.models import INPUT_SHAPES, MODELS
from ..train.checkpoint import FORMAT as TRAINING_FORMAT

SAVED_FORMAT = "gpucnn.Sequential/1"
SAVED_FORMATS = (SAVED_FORMAT, "gpucnn.Model/1")  # Sequential.save, Model.save (a graph: a ResNet, an import)


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_file", metavar="MODEL.npz",
                   help="a file written by Sequential.save, Model.save (gpucnn import) or a training checkpoint")
    p.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--model", choices=sorted(MODELS), default=None,
                   help="the named architecture of the weights (default: the one recorded in the file)")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="one sample's shape (default: recorded in the file, or the named model's)")
    args = p.parse_args(argv)
    if args.input_shape is not None:
        try:
            args.input_shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            p.error(f"--input-shape must be comma-separated ints such as 1,28,28, got {args.input_shape!r}")
        if not args.input_shape or min(args.input_shape) < 1:
            p.error(f"--input-shape must be positive ints such as 1,28,28, got {args.input_shape}")
    return args


def read_weights(path):
    """(weights {'0.weight': array}, meta) from a saved model or a training checkpoint."""
    arrays, meta = load_arrays(path)
    if meta.get("format") in SAVED_FORMATS:
        return arrays, meta
    if meta.get("format") == TRAINING_FORMAT:
        return {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}, meta
    raise CheckpointError(f"{path}: not a saved model or a training checkpoint (format {meta.get('format')!r})")


def _shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def rebuild(weights, meta, name=None, source="the file"):
    """(model with the weights loaded, input shape or None, how the architecture was found)."""
    spec = meta.get("architecture")
    if name is None and spec:
        model = architecture.build(spec)
        shape = tuple(spec["input_shape"]) if spec.get("input_shape") else None
        how = "the architecture recorded in the file"
    else:
        if name is None:
            wanted = _shapes(weights)
            matches = [n for n, make in MODELS.items() if _shapes(make().named_state()) == wanted]
            if len(matches) != 1:
                raise CheckpointError("the file records no architecture and its weights match "
                                      + (f"several named models ({', '.join(matches)})" if matches else
                                         f"none of the named models ({', '.join(sorted(MODELS))})")
                                      + "; give --model NAME, or export from Python with gpucnn.onnx.export")
            name, how = matches[0], f"the named model {matches[0]} (its weight shapes match the file)"
        else:
            how = f"the named model {name} (--model)"
        model, shape = MODELS[name](), INPUT_SHAPES.get(name)
    try:
        model.load_state(weights, source=source)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; architecture from {how}") from None
    return model, shape, how


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    try:
        from ..io import onnx as gpucnn_onnx
        weights, meta = read_weights(args.model_file)
        model, shape, how = rebuild(weights, meta, args.model, source=args.model_file)
        shape = args.input_shape or shape
        if shape is None:
            raise ValueError("the file does not record the input shape; give --input-shape C,H,W")
        gpucnn_onnx.export(model.eval(), args.output, shape)
    except (OSError, ImportError, ValueError) as exc:  # CheckpointError, ArchitectureError, ExportError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    params = sum(p.data.size for p in model.parameters())
    print(f"wrote {args.output}: {len(model.layers)} layers, {params:,} parameters, input (batch, "
          f"{', '.join(map(str, shape))}), opset {gpucnn_onnx.OPSET}; architecture from {how}")
    return 0
