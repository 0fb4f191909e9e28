"""The ``gpucnn`` command line: one entry point, one module per subcommand.

    gpucnn train ...      train a named model on a data set (gpucnn/commands/train.py)
    gpucnn bench ...      time training steps per device, beside PyTorch (gpucnn/commands/bench.py)
    gpucnn doctor         versions, devices, and every kernel checked against NumPy (gpucnn/commands/doctor.py)
    gpucnn export ...     write a saved model or checkpoint as ONNX (gpucnn/commands/export.py)
    gpucnn import ...     read an ONNX file into a gpucnn model file (gpucnn/commands/import_onnx.py)
    gpucnn report RUN     rebuild a run's report.html from its files (gpucnn/commands/report.py)

Each subcommand module has ``main(argv, prog) -> exit status``; ``python -m gpucnn`` and the
thin wrappers in ``scripts/`` call the same functions.
"""
import importlib
import sys

__all__ = ["main", "SUBCOMMANDS"]

# name -> (module, one-line description); modules are imported only when their subcommand runs.
SUBCOMMANDS = {
    "train": ("gpucnn.commands.train", "train a model and record the run (metrics, curves, checkpoints)"),
    "bench": ("gpucnn.commands.bench", "time training steps on each device, beside PyTorch"),
    "doctor": ("gpucnn.commands.doctor", "say whether the GPU path works here: versions, devices, kernel checks"),
    "export": ("gpucnn.commands.export", "write a saved model or a training checkpoint as an ONNX file"),
    "import": ("gpucnn.commands.import_onnx", "read an ONNX file (from PyTorch, Keras, ...) into a gpucnn model file"),
    "report": ("gpucnn.commands.report", "rebuild a run's report.html (curves, confusion matrix, filters, ...)"),
}


def _usage():
    width = max(len(name) for name in SUBCOMMANDS)
    lines = ["usage: gpucnn <command> [options]   (gpucnn <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """Run ``gpucnn <command> ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from .. import __version__
        print(f"gpucnn {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.main(rest, prog=f"gpucnn {name}")
