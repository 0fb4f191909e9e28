"""An emulated CUDA device for gpucnn's CuPy path, on a machine without a GPU.

``make_fake_cupy()`` builds a stand-in ``cupy`` module over NumPy whose ``ndarray`` is
``DeviceArray``, a distinct subclass of ``numpy.ndarray``. ``installed(harness)`` puts it
in ``sys.modules``, re-probes ``gpucnn.backend`` (which then reports 'cuda:0' usable),
re-imports the real launchers ``gpucnn.ops.cuda.{loader,conv,pool,update,fused}`` over it, and
sends every kernel launch to ``FakeKernel`` of tests/support/kernel_harness.py, which
checks the launch and runs the kernel's body on the CPU in the nvcc-built harness.

What the emulation holds gpucnn to, as CuPy would:

- Device arrays stay device arrays: ufuncs, reductions, indexing, methods and the fake
  module's functions return ``DeviceArray``; reductions to one value and scalar indexing
  give 0-d device arrays (never NumPy scalars), as in CuPy.
- Mixing a host ``numpy.ndarray`` with device arrays in a ufunc, a NumPy function or a
  fake ``cupy`` function raises ``TypeError`` (CuPy: "Unsupported type").
- Two devices: an array lives on the device that was current when its memory was allocated
  (views: their base's device); a ufunc, reduction, advanced index, assignment, fill or kernel
  launch that touches an array of another device than the current one raises ValueError, as
  CuPy does without peer access (``DEVICE_MISMATCHES``; ``reset(strict=False)`` only records).
  ``cupy.asarray`` of another device's array copies it to the current device, as CuPy does.
- Every operation that would put work on the GPU counts as one launch (``DEVICE_OPS``): a ufunc
  or reduction (NumPy's ``mean`` is two: a sum and a division; CuPy's is one kernel, so the count
  errs high there), a NumPy or fake ``cupy`` function that computes or copies, an advanced index,
  an assignment, ``fill``, ``astype``/``copy``, ``argmax``/``argmin``, a host<->device copy, a
  random draw, and every RawKernel launch of gpucnn's launchers. Views (reshape, transpose,
  basic slicing) and ``cupy.empty`` count nothing, as on the GPU.
- Every read-back to the host counts as a synchronisation (``SYNCS``): ``float``, ``int``,
  ``bool``, ``complex``, ``operator.index``, ``item``, ``tolist``, ``get``, ``repr``/``str``/
  ``format`` of a device array, ``cupy.asnumpy`` of one and ``Device.synchronize``. Each
  event keeps the gpucnn source line that caused it.

- Streams, the memory pool, stream capture and graphs (``cupy.cuda.Stream``, ``begin_capture``,
  ``end_capture``, ``Graph.launch``, ``cupy.cuda.MemoryPool``, ``using_allocator``) are in
  tests/support/emulated_streams.py: every operation that enqueues device work goes through ``_enqueue``,
  which records it while a stream captures; what CuPy refuses during capture raises here too.

Known blind spots (an ndarray subclass cannot see them): ``numpy.asarray(device_array)``
and ``host_array[...] = device_array`` silently work here, where CuPy raises. gpucnn does
neither on device arrays (checked by reading: backend.asnumpy routes CuPy arrays through
cupy.asnumpy, losses.py calls numpy.asarray only on objects without a dtype).

The emulation's own plumbing (the harness writing kernel results back, the tests reading
values to compare them) runs under ``internal()`` and is neither counted nor checked.

The package's modules: tracking.py (the counters, the capture hooks, the devices), array.py
(``DeviceArray``, with the read-backs of readback.py), module.py (the fake ``cupy`` module) and
install.py (installing it for gpucnn). They share their underscore helpers; the names below are
the interface.
"""
from .array import DeviceArray, check_devices
from .install import Emulated, cupy_replaced_by, installed, record_launches
from .module import (CUDA_VERSION, DEVICE_PROPERTIES, CompileException, ProbeRawKernel, RandomState, make_fake_cupy,
                     to_host, uniform)
from .tracking import (DEVICE_COUNT, DEVICE_MISMATCHES, DEVICE_OPS, SYNCS, Device, DeviceMismatches, DeviceOps,
                       SyncCounter, current_device, internal)

__all__ = ["CUDA_VERSION", "DEVICE_COUNT", "DEVICE_MISMATCHES", "DEVICE_OPS", "DEVICE_PROPERTIES", "SYNCS",
           "CompileException", "Device", "DeviceArray", "DeviceMismatches", "DeviceOps", "Emulated", "ProbeRawKernel",
           "RandomState", "SyncCounter", "check_devices", "cupy_replaced_by", "current_device", "installed", "internal",
           "make_fake_cupy", "record_launches", "to_host", "uniform"]
