"""Installing the emulated CuPy for gpucnn: ``installed(harness, FakeKernel)`` (the ``gpu`` fixture of
tests/conftest.py), ``cupy_replaced_by(fake)`` and ``record_launches(loader)``.

Part of the emulated CuPy (tests/support/emulated_cupy/__init__.py says what it holds gpucnn to).
"""
import contextlib
import importlib
import sys
import types

from .. import emulated_streams as streams
from .array import _plain, check_devices
from .module import make_fake_cupy
from .tracking import DEVICE_MISMATCHES, DEVICE_OPS, SYNCS, Device, _capturing, _enqueue, internal


# ----------------------------------------------------------------------------- installing it

class Emulated(types.SimpleNamespace):
    """What ``installed`` yields: cupy (the fake), loader/conv/pool/update/loss/multi_update (the real launchers),
    launches (every (file, kernel) launched), syncs (the SyncCounter), device_ops (DeviceOps: every
    launch, CuPy's included)."""


# the modules that import cupy when imported: re-imported over the stand-in
_ON_CUPY = ("gpucnn.ops.cuda", "gpucnn.compile.cuda_graph.launch", "gpucnn.compile.cuda_graph.step_batch")


@contextlib.contextmanager
def cupy_replaced_by(fake):
    """``fake`` as the ``cupy`` module, with gpucnn.ops.cuda re-imported over it; all restored after."""
    import gpucnn.ops as ops_package

    saved_modules = {name: mod for name, mod in sys.modules.items() if name == "cupy" or name.startswith(_ON_CUPY)}
    had_attr, old_attr = hasattr(ops_package, "cuda"), getattr(ops_package, "cuda", None)
    for name in saved_modules:
        del sys.modules[name]
    sys.modules["cupy"] = fake
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n == "cupy" or n.startswith(_ON_CUPY)]:
            del sys.modules[name]
        sys.modules.update(saved_modules)
        if had_attr:
            ops_package.cuda = old_attr
        elif hasattr(ops_package, "cuda"):
            del ops_package.cuda


def record_launches(loader, setattr_=setattr):
    """Wrap ``loader.launch`` so that every launch appends (file, kernel) to the returned list."""
    launches = []
    real_launch = loader.launch

    def recording_launch(*args, **kwargs):
        launches.append(args[:2])
        return real_launch(*args, **kwargs)

    setattr_(loader, "launch", recording_launch)
    return launches


@contextlib.contextmanager
def installed(harness, kernel_class):
    """Install the fake CuPy for gpucnn and route kernel launches to ``kernel_class`` (FakeKernel)."""
    from gpucnn import backend

    saved_stack = list(Device._stack)
    fake = make_fake_cupy()
    with cupy_replaced_by(fake):
        backend._probe_cupy.cache_clear()
        try:
            assert backend.gpu_unavailable_reason() is None, backend.gpu_unavailable_reason()
            assert backend.cupy_or_none() is fake
            loader = importlib.import_module("gpucnn.ops.cuda.loader")
            modules = {name: importlib.import_module(f"gpucnn.ops.cuda.{name}")
                       for name in ("conv", "pool", "update", "loss", "multi_update")}
            modules["fused"] = importlib.import_module("gpucnn.compile.cuda_graph.launch")
            for name in ("launch_batchnorm", "step_batch"):  # re-imported over the fake (their package attributes)
                importlib.import_module(f"gpucnn.compile.cuda_graph.{name}")
            launches = record_launches(loader)

            class Kernel(kernel_class):
                def __call__(self, grid, block, args, *rest, **kwargs):
                    check_devices(list(args), f"kernel {self.name}")  # a RawKernel runs on the current device
                    run = super().__call__
                    result = None
                    if not _capturing():  # a capture records the launch and runs nothing
                        with internal():  # the harness writes results back with host arrays
                            result = run(grid, block, args, *rest, **kwargs)
                    views = {id(a): _plain(a) for a in args}  # one view per array: the harness dedups by identity
                    plain_args = tuple(views[id(a)] for a in args)
                    _enqueue(f"kernel {self.name}", lambda: run(grid, block, plain_args, *rest, **kwargs))
                    return result

            loader.get_kernel = lambda file, expression: Kernel(loader, harness, file, expression)
            # "Compiling" a kernel file means the harness holds it: nvcc built the harness from the same headers.
            loader.get_module = lambda file, ctype: harness
            SYNCS.reset()
            DEVICE_MISMATCHES.reset()
            streams.reset()
            DEVICE_OPS.reset()
            yield Emulated(devices=DEVICE_MISMATCHES, device_ops=DEVICE_OPS, cupy=fake, loader=loader,
                           launches=launches, syncs=SYNCS, streams=streams, **modules)
        finally:
            Device._stack[:] = saved_stack
            backend._probe_cupy.cache_clear()  # the next probe sees the real CuPy (or its absence) again
            streams.reset()
            SYNCS.reset()
            DEVICE_MISMATCHES.reset()
