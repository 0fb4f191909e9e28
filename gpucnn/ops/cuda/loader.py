"""Build our CUDA kernels with CuPy (NVRTC) on first use, and launch them with exact C types.

Each ``gpucnn/kernels/<file>.cu`` holds template kernels; ``SIGNATURES`` below declares,
for every kernel, the C type of each parameter in order. ``T`` is the float type; ``I``
marks a kernel templated on its index type too (``int`` or ``long long``, see
``index_type``). From the table come

- the NVRTC name expressions (``"row_sum<float>"``, ``"im2col<float, int>"``,
  ``"im2col<float, long long>"``, ...) that ``cupy.RawModule`` instantiates, and
- the packing of launch arguments: every scalar is converted to the numpy type of its
  declared C type (``int`` -> numpy.int32, ``long long`` -> numpy.int64, ``T`` -> the
  array dtype, ``I`` -> that of the index type launched), and every pointer is checked to
  be a C-contiguous array of the declared element type. A Python int passed to a CuPy
  kernel would otherwise travel as a 64-bit value into a 32-bit parameter and shift every
  later argument.

  Both are planned once per (kernel, float type, index type) and reused (``launch_plan``,
  launch_plan.py); the checks run on every launch (gpucnn/perf/host.py times it).

Index width: 32-bit index arithmetic is several times cheaper on the GPU than 64-bit (a 64-bit division by a
runtime divisor is a subroutine call), so the launchers pass every array size a kernel touches to ``index_type``
and launch the ``int`` instantiation when they all fit, the ``long long`` one otherwise.

tests/kernels/test_compile.py holds this table equal to the signatures the compilers actually produce (the mangled
kernel names), so the two cannot drift apart.

Modules are compiled lazily, for the one float type in use, and cached per (file, float
type, index type, device id): a float32 run never waits for the float64 instantiations,
and the 64-bit index instantiations (a module of their own per file) are compiled only
when a tensor too large for 32-bit indices first shows up; the 32-bit module also holds
the kernels that have no index type (``name_expressions``). CuPy also keeps
the compiled binary in its on-disk cache (``kernel_cache_dir()``), so a second process
loads instead of compiling; ``compile_all`` builds every file's 32-bit module up front (the
warm-up before training, the cold-compile figure of the benchmark, the doctor's compile
check), and its ``index_types`` argument the 64-bit ones too. This module imports without CuPy (CuPy is
imported at the first compile), so the tables are usable on a machine without it.
"""
import contextlib
import functools
import hashlib
import os
import re
import threading

import numpy

from .launch_plan import LaunchPlan

__all__ = ["KERNELS_DIR", "BLOCK", "MAX_BLOCKS", "SIGNATURES", "FLOAT_TYPES", "INDEX_TYPES", "INT32_INDEX_LIMIT",
           "index_type", "has_index_type", "resolved_signature", "name_expressions", "name_expression", "kernel_source",
           "compile_options", "get_module", "get_kernel", "pack_args", "grid_for", "launch", "launch_plan",
           "clear_launch_plans", "POINTER_DTYPES", "on_device_of_first_argument", "compile_all", "kernel_cache_dir"]

KERNELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "kernels")

# Threads per block: GPUCNN_BLOCK in gpucnn/kernels/common.cuh (checked by the tests).
BLOCK = 256
_BLOCK_SHAPE = (BLOCK,)
# Grid cap for the grid-stride kernels (any cap is correct; this one keeps every
# realistic size at one element per thread).
MAX_BLOCKS = 1 << 20

# C type of the element, per dtype: the template argument of the name expressions.
FLOAT_TYPES = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}

# Index types of the kernels templated on one: the second template argument of their name expressions.
INDEX_TYPES = ("int", "long long")
# The largest array size (elements) for which the launchers pick 32-bit indices: every index
# a kernel forms is below the size of an array it touches, and the grid-stride loop's index
# may run one grid (at most MAX_BLOCKS * BLOCK threads) past its count before it stops.
INT32_INDEX_LIMIT = 2 ** 31 - 1 - MAX_BLOCKS * BLOCK

_I, _L, _T, _X = "int", "long long", "T", "I"
_WINDOW = (_I,) * 8  # kh, kw, sy, sx, pt, pl, oh, ow
_CONV_WINDOW = (_I,) * 10  # kh, kw, sy, sx, pt, pl, dy, dx, oh, ow
_POOL_WINDOW = (_I,) * 12  # kh, kw, sy, sx, dy, dx, pt, pb, pl, pr, oh, ow (pool.cu)
_FUSED_CONV = (_I,) * 5 + _WINDOW  # N, C, H, W, O, then the window (fused_conv.cu: GPUCNN_CONV_GEOMETRY_PARAMS)
_POOLED = ("const T*", "const unsigned char*", "const T*")  # grad_pool, argmax, x

# Parameter C types of every kernel, in order; "T" is the template float type, "I" the template index type.
SIGNATURES = {
    "conv.cu": {
        "im2col": ("const T*", "T*", _I, _I, _I, _I) + _CONV_WINDOW + (_X,),
        "col2im": ("const T*", "T*", _I, _I, _I, _I) + _CONV_WINDOW + (_X,),
        "conv_direct": ("const T*", "const T*", "const T*", "T*", _I, _I, _I, _I, _I) + _CONV_WINDOW
        + (_I, _I, _I, _X),
        "transpose01": ("const T*", "const T*", "T*", _I, _I, _X, _I, _X),
        "row_sum": ("const T*", "T*", _I, _L, _L),
    },
    "pool.cu": {
        # H, W, then _POOL_WINDOW; the average kernels' count_include_pad (0 or 1) before the count
        "max_pool_fwd": ("const T*", "T*", "int*", _I, _I) + _POOL_WINDOW + (_X,),
        "max_pool_bwd": ("const T*", "const int*", "T*", _I, _I) + _POOL_WINDOW + (_X,),
        "avg_pool_fwd": ("const T*", "T*", _I, _I) + _POOL_WINDOW + (_I, _X),
        "avg_pool_bwd": ("const T*", "T*", _I, _I) + _POOL_WINDOW + (_I, _X),
    },
    "loss.cu": {
        # logits, labels | targets, weight, grad, loss, counts, N, K, weighted, [ignore_index, ignoring,]
        # smoothing, reduction, accumulate
        "softmax_xent": ("const T*", "const long long*", "const T*", "T*", "T*", "int*", _I, _I, _I, _L, _I, _T, _I,
                         _I),
        "softmax_xent_soft": ("const T*", "const T*", "const T*", "T*", "T*", "int*", _I, _I, _I, _T, _I, _I),
    },
    "multi_update.cu": {
        "step_scalars": ("double*", "double", "double", "double"),
        "multi_sgd_update": ("T*", "const T*", "T*", "const double*", _T, _T, _T, _I, _L),
        "multi_adam_update": ("T*", "const T*", "T*", "T*", "const double*") + (_T,) * 6 + (_I, _L),
    },
    "update.cu": {
        "sgd_update": ("T*", "const T*", "T*", _T, _T, _T, _T, _I, _L),
        "adam_update": ("T*", "const T*", "T*", "T*") + (_T,) * 9 + (_I, _L),
    },
    # Fused kernels (the graph-captured step): 32-bit sizes; the GEMMs take their tile last (gemm_plan.GEMM_TILES)
    "fused_conv.cu": {
        "conv_fwd_fused": ("const T*", "const T*", "const T*", "T*") + _FUSED_CONV + (_I, _I),
        # conv_fwd_fused, the max-pool in its epilogue: ..., y, argmax (uint8), conv geometry, ph, pw, flags, tile
        "conv_fwd_pool_fused": ("const T*",) * 3 + ("T*", "unsigned char*") + _FUSED_CONV + (_I,) * 4,
        "conv_dgrad_fused": ("const T*", "const T*", "const T*", "T*") + _FUSED_CONV + (_I, _I),
        "conv_wgrad_fused": ("const T*", "const T*", "T*", "T*") + _FUSED_CONV + (_I, _I),
        # split-K of conv_wgrad_fused (fused_splitk.cuh): partial sums per k-slice, then their fixed-order sum
        "conv_wgrad_partial_fused": ("const T*", "const T*", "T*") + _FUSED_CONV + (_I, _I, _I),
        "conv_wgrad_reduce_fused": ("const T*", "T*", "T*", _I, _I, _I, _I),
        # conv_wgrad_* from the max-pool's gradient and argmax: grad_pool, argmax, x, ..., ph, pw, flags[, slices], tile
        "conv_wgrad_pooled_fused": _POOLED + ("T*", "T*") + _FUSED_CONV + (_I,) * 4,
        "conv_wgrad_pooled_partial_fused": _POOLED + ("T*",) + _FUSED_CONV + (_I,) * 5,
    },
    "fused_dense.cu": {
        "dense_fwd_fused": ("const T*",) * 3 + ("T*",) + (_I,) * 5,
        "dense_dgrad_fused": ("const T*",) * 3 + ("T*",) + (_I,) * 5,
        "dense_wgrad_fused": ("const T*", "const T*", "const T*", "T*", "T*", _I, _I, _I, _I, _I),
        "dense_wgrad_partial_fused": ("const T*", "const T*", "const T*", "T*", _I, _I, _I, _I, _I, _I),
        "dense_wgrad_reduce_fused": ("const T*", "T*", "T*", _I, _I, _I, _I),
        # split-K of dense_fwd_fused: x, weight, partial, N, I, O, slices, tile; partial, bias, y, slices, O, flags, total
        "dense_fwd_partial_fused": ("const T*", "const T*", "T*", _I, _I, _I, _I, _I),
        "dense_fwd_reduce_fused": ("const T*", "const T*", "T*", _I, _I, _I, _I),
    },
    "fused_pool.cu": {
        # x, y, argmax, H, W, window, flags (MASK: argmax 255 where !(y > 0)), total; grad_y, argmax, grad_x, H, W,
        # window, total (no x: the ReLU mask is in the argmax)
        "max_pool_u8_fwd": ("const T*", "T*", "unsigned char*", _I, _I) + _WINDOW + (_I, _I),
        "max_pool_u8_bwd": ("const T*", "const unsigned char*", "T*", _I, _I) + _WINDOW + (_I,),
    },
    # training-mode batch norm (compile/cuda_graph/launch_batchnorm.py): C*S blocks; N, C, HW, slices[, flags]
    "fused_batchnorm.cu": {
        "bn_stats_partial_fused": ("const T*", "T*", _I, _I, _I, _I),
        "bn_forward_apply_fused": ("const T*",) * 4 + ("T*",) * 5 + (_T, _T, _I, _I, _I, _I, _I),
        "bn_grad_partial_fused": ("const T*",) * 5 + ("T*", _I, _I, _I, _I, _I),
        "bn_backward_apply_fused": ("const T*",) * 7 + ("T*",) * 3 + (_I, _I, _I, _I, _I),
    },
    # the graph step's batch gather and step end (compile/cuda_graph/step.py): order and counter on the device
    "step_batch.cu": {
        "gather_rows": ("const T*", "const long long*", "const long long*", "T*", _I, _I, _I),
        "gather_rows_labels": ("const T*",) + ("const long long*",) * 3 + ("T*", "long long*", _I, _I, _I),
        "step_end": ("const T*", "const int*", "double*", "long long*", _I),
    },
}

_INT32 = numpy.dtype(numpy.int32)
# Element types of pointer parameters that are not T, by the C type they point to.
POINTER_DTYPES = {"int": _INT32, "unsigned char": numpy.dtype(numpy.uint8), "long long": numpy.dtype(numpy.int64),
                  "double": numpy.dtype(numpy.float64)}

_lock = threading.Lock()
_modules = {}
_kernels = {}


def index_type(*sizes):
    """'int' when every size (the element counts of the arrays a kernel touches, and its count of
    work items) is at most INT32_INDEX_LIMIT, else 'long long': the index type to launch with."""
    return "int" if max(sizes) <= INT32_INDEX_LIMIT else "long long"


def has_index_type(file, name):
    """Whether kernel ``name`` of ``file`` is templated on an index type (an "I" parameter)."""
    return _X in SIGNATURES[file][name]


def _expression(name, ctype, index):
    return f"{name}<{ctype}, {index}>" if index is not None else f"{name}<{ctype}>"


def name_expression(name, dtype, index=None):
    """``"name<float>"`` for a float dtype, or ``"name<float, int>"`` given an index type."""
    return _expression(name, FLOAT_TYPES[numpy.dtype(dtype)], index)


def name_expressions(file, ctype=None, index=None):
    """The instantiations that ``file`` provides, in a fixed order: all of them, or only those for the
    C float type ``ctype`` ('float' or 'double') and the index type ``index`` ('int' or 'long long')
    when given. The kernels without an index type count as 'int' ones: they are compiled with the
    32-bit module, and the 'long long' module holds only the 64-bit instantiations."""
    ctypes = FLOAT_TYPES.values() if ctype is None else (ctype,)
    out = []
    for name in SIGNATURES[file]:
        indices = INDEX_TYPES if has_index_type(file, name) else (None,)
        for c in ctypes:
            for i in indices:
                if index is None or i == index or (i is None and index == "int"):
                    out.append(_expression(name, c, i))
    return out


def _template_arguments(expression):
    """('float', None) from 'row_sum<float>', ('float', 'long long') from 'im2col<float, long long>'."""
    inner = expression[expression.index("<") + 1:expression.rindex(">")]
    ctype, _, index = (part.strip() for part in inner.partition(","))
    return ctype, index or None


def _local_headers(text, seen=None):
    """Our own headers that ``text`` includes, transitively, in first-seen order."""
    seen = [] if seen is None else seen
    for header in re.findall(r'^\s*#\s*include\s*"([^"]+)"', text, flags=re.M):
        path = os.path.join(KERNELS_DIR, header)
        if header not in seen and os.path.isfile(path):
            seen.append(header)
            with open(path, encoding="utf-8") as f:
                _local_headers(f.read(), seen)
    return seen


def kernel_source(file):
    """Source of ``gpucnn/kernels/<file>``, headed by a digest of the headers it includes.

    NVRTC reads the headers through ``-I``, but CuPy's kernel cache is keyed by the source
    text only: the digest line makes an edited header yield a new key instead of a stale
    binary.
    """
    with open(os.path.join(KERNELS_DIR, file), encoding="utf-8") as f:
        text = f.read()
    digest = hashlib.sha256()
    for header in _local_headers(text):
        with open(os.path.join(KERNELS_DIR, header), "rb") as f:
            digest.update(header.encode() + b"\0" + f.read() + b"\0")
    return f"// gpucnn headers sha256 {digest.hexdigest()}\n{text}"


def compile_options():
    """NVRTC options: C++17 and our kernels folder on the include path."""
    return ("-std=c++17", "-I" + KERNELS_DIR)


def get_module(file, ctype, index="int"):
    """The ``cupy.RawModule`` of ``file``'s instantiations for ``ctype`` ('float' or 'double') and
    ``index`` ('int', with the kernels that have no index type, or 'long long') for the current
    device (built once per device)."""
    import cupy

    key = (file, ctype, index, cupy.cuda.runtime.getDevice())
    module = _modules.get(key)
    if module is None:
        with _lock:
            module = _modules.get(key)
            if module is None:
                expressions = name_expressions(file, ctype, index)
                module = cupy.RawModule(code=kernel_source(file), options=compile_options(),
                                        name_expressions=expressions)
                # RawModule compiles lazily; ask for one kernel so the compile (or the load from
                # CuPy's disk cache) happens here, where compile_all can time it.
                module.get_function(expressions[0])
                _modules[key] = module
    return module


def get_kernel(file, expression):
    """The ``cupy.RawKernel`` for a name expression such as ``"im2col<float, int>"`` on the current device."""
    import cupy

    key = (file, expression, cupy.cuda.runtime.getDevice())
    kernel = _kernels.get(key)
    if kernel is None:
        ctype, index = _template_arguments(expression)
        module = get_module(file, ctype, index or "int")
        with _lock:
            kernel = _kernels.get(key)
            if kernel is None:
                kernel = module.get_function(expression)
                _kernels[key] = kernel
    return kernel


# LaunchPlans: by (signature, dtype) for pack_args, by (file, name, dtype, index) for launch.
_packing_plans = {}
_launch_plans = {}


def pack_args(signature, dtype, args):
    """``args`` converted to the exact types of ``signature`` (see the module docstring).

    A pointer parameter must get a C-contiguous array of the declared element type; any
    mismatch is a bug in a launcher and raises before anything is launched.
    """
    plan = _packing_plans.get((signature, dtype))
    if plan is None:
        plan = _packing_plans[(signature, dtype)] = LaunchPlan(signature, numpy.dtype(dtype), POINTER_DTYPES, None,
                                                               grid_for)
    return plan.pack(args)[0]


def grid_for(total):
    """Blocks for a grid-stride kernel over ``total`` elements (at least 1)."""
    return max(1, min((total + BLOCK - 1) // BLOCK, MAX_BLOCKS))


def resolved_signature(file, name, index=None):
    """The kernel's parameter C types with "I" replaced by ``index``; ValueError when a kernel with an
    index type gets none (or one without gets one)."""
    signature = SIGNATURES[file][name]
    if has_index_type(file, name) != (index is not None):
        raise ValueError(f"kernel {name} of {file}: index type {index!r} given, "
                         f"{'one of ' + repr(INDEX_TYPES) if has_index_type(file, name) else 'none'} expected")
    if index is None:
        return signature
    if index not in INDEX_TYPES:
        raise ValueError(f"index type must be one of {INDEX_TYPES}, got {index!r}")
    return tuple(index if ctype == _X else ctype for ctype in signature)


def launch_plan(file, name, dtype, index=None):
    """The ``LaunchPlan`` of kernel ``name`` of ``file`` for ``dtype`` and ``index``, made at the first launch and
    reused by every later one (see gpucnn/ops/cuda/launch_plan.py)."""
    key = (file, name, dtype, index)
    plan = _launch_plans.get(key)
    if plan is None:
        signature = resolved_signature(file, name, index)
        if numpy.dtype(dtype) not in FLOAT_TYPES:
            raise TypeError(f"kernel {name} of {file}: float type must be float32 or float64, got {numpy.dtype(dtype)}")
        plan = _launch_plans[key] = LaunchPlan(signature, numpy.dtype(dtype), POINTER_DTYPES,
                                               name_expression(name, dtype, index), grid_for, f"kernel {name}")
    return plan


def launch(file, name, dtype, args, grid=None, index=None):
    """Launch kernel ``name`` of ``file`` for ``dtype`` (and the index type ``index``, 'int' or
    'long long', for the kernels that have one) on the current stream.

    ``grid`` (blocks: an int or a tuple) defaults to ``grid_for(args[-1])``: the grid-stride
    kernels take their count of work items as last argument. Blocks are always ``BLOCK`` threads.
    Signature, name expression and argument conversions: the launch's plan (``launch_plan``).
    """
    plan = _launch_plans.get((file, name, dtype, index)) or launch_plan(file, name, dtype, index)
    packed, default_grid = plan.pack(args)
    if grid is None:
        grid = default_grid or (grid_for(args[-1]),)
    elif not isinstance(grid, tuple):
        grid = tuple(grid) if isinstance(grid, list) else (grid,)
    get_kernel(file, plan.expression)(grid, _BLOCK_SHAPE, packed)


def clear_launch_plans():
    """Forget every launch plan (the next launch of each kernel plans again)."""
    _launch_plans.clear()
    _packing_plans.clear()


def on_device_of_first_argument(func):
    """Decorator: run ``func`` with the device of its first argument (a CuPy array) current.

    CuPy allocates (``cupy.empty``), runs cuBLAS and launches our kernels on the *current*
    device, not on the device of the arrays: a model moved to 'cuda:1' while device 0 is
    current would get its outputs on device 0 and kernels reading device-1 memory. Each
    public launcher therefore runs under ``with x.device:`` (a no-op for anything that is
    not a CuPy array, such as the NumPy stand-ins of the CPU tests).
    """
    @functools.wraps(func)
    def wrapper(first, *args, **kwargs):
        device = getattr(first, "device", None)
        with device if hasattr(device, "__enter__") else contextlib.nullcontext():
            return func(first, *args, **kwargs)
    return wrapper


def compile_all(dtype, device=None, index_types=("int",)):
    """Build (or load from CuPy's disk cache) every kernel file's ``dtype`` instantiations on ``device``
    (a CUDA device index; default the current one): the 32-bit-index ones (with the kernels that
    have no index type) by default, the 64-bit ones too with ``index_types=INDEX_TYPES``.
    Returns {file: seconds}."""
    import time

    import cupy

    ctype = FLOAT_TYPES[numpy.dtype(dtype)]
    seconds = {}
    with cupy.cuda.Device(device) if device is not None else contextlib.nullcontext():
        for file in SIGNATURES:
            start = time.perf_counter()
            for index in index_types:
                if index == "int":
                    get_module(file, ctype)
                elif name_expressions(file, ctype, index):  # (a file may have no 64-bit instantiations)
                    get_module(file, ctype, index)
            seconds[file] = time.perf_counter() - start
    return seconds


def kernel_cache_dir():
    """Where CuPy keeps compiled kernels on disk: $CUPY_CACHE_DIR, else ~/.cupy/kernel_cache."""
    return os.environ.get("CUPY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cupy", "kernel_cache")
