"""Build our CUDA kernels with CuPy (NVRTC) on first use, and launch them with exact C types.

Each ``gpucnn/kernels/<file>.cu`` holds template kernels; ``SIGNATURES`` below declares,
for every kernel, the C type of each parameter in order. From it come

- the NVRTC name expressions (``"im2col<float>"``, ``"im2col<double>"``, ...) that
  ``cupy.RawModule`` instantiates, and
- the packing of launch arguments: every scalar is converted to the numpy type of its
  declared C type (``int`` -> numpy.int32, ``long long`` -> numpy.int64, ``T`` -> the
  array dtype), and every pointer is checked to be a C-contiguous array of the declared
  element type. A Python int passed to a CuPy kernel would otherwise travel as a 64-bit
  value into a 32-bit parameter and shift every later argument.

tests/kernels/test_compile.py holds this table equal to the signatures the compilers
actually produce (the mangled kernel names), so the two cannot drift apart.

Modules are compiled lazily, for the one float type in use, and cached per (file, float
type, device id): a float32 run never waits for the float64 instantiations. CuPy also keeps
the compiled binary in its on-disk cache (``kernel_cache_dir()``), so a second process
loads instead of compiling; ``compile_all`` builds every file up front (the warm-up before
training, the cold-compile figure of the benchmark, the doctor's compile check).
This module imports without CuPy (CuPy is imported at the first compile), so the tables are
usable on a machine without it.
"""
import contextlib
import functools
import hashlib
import os
import re
import threading

import numpy

__all__ = ["KERNELS_DIR", "BLOCK", "MAX_BLOCKS", "SIGNATURES", "FLOAT_TYPES", "name_expressions",
           "name_expression", "kernel_source", "compile_options", "get_module", "get_kernel", "pack_args",
           "grid_for", "launch", "on_device_of_first_argument", "compile_all", "kernel_cache_dir"]

KERNELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "kernels")

# Threads per block: GPUCNN_BLOCK in gpucnn/kernels/common.cuh (checked by the tests).
BLOCK = 256
# Grid cap for the grid-stride kernels (any cap is correct; this one keeps every
# realistic size at one element per thread).
MAX_BLOCKS = 1 << 20

# C type of the element, per dtype: the template argument of the name expressions.
FLOAT_TYPES = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}

_I, _L, _T = "int", "long long", "T"
_WINDOW = (_I,) * 8  # kh, kw, sy, sx, pt, pl, oh, ow

# Parameter C types of every kernel, in order; "T" is the template float type.
SIGNATURES = {
    "conv.cu": {
        "im2col": ("const T*", "T*", _I, _I, _I, _I) + _WINDOW + (_L,),
        "col2im": ("const T*", "T*", _I, _I, _I, _I) + _WINDOW + (_L,),
        "conv_direct": ("const T*", "const T*", "const T*", "T*", _I, _I, _I, _I, _I) + _WINDOW + (_I, _L),
        "transpose01": ("const T*", "const T*", "T*", _I, _I, _L, _I, _L),
        "row_sum": ("const T*", "T*", _I, _L, _L),
    },
    "pool.cu": {
        "max_pool_fwd": ("const T*", "T*", "int*", _I, _I) + _WINDOW + (_L,),
        "max_pool_bwd": ("const T*", "const int*", "T*", _I, _I) + _WINDOW + (_L,),
        "avg_pool_fwd": ("const T*", "T*", _I, _I) + _WINDOW + (_T, _L),
        "avg_pool_bwd": ("const T*", "T*", _I, _I) + _WINDOW + (_T, _L),
    },
    "loss.cu": {
        "softmax_xent": ("const T*", "const long long*", "T*", "T*", "int*", _I, _I, _I),
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
}

_INT32 = numpy.dtype(numpy.int32)
_INT_RANGE = {"int": (-2 ** 31, 2 ** 31 - 1), "long long": (-2 ** 63, 2 ** 63 - 1)}
_INT_TYPES = {"int": numpy.int32, "long long": numpy.int64}
# Element types of pointer parameters that are not T ("const long long*" ends in "long").
_POINTEE = {"int": _INT32, "long": numpy.dtype(numpy.int64), "double": numpy.dtype(numpy.float64)}

_lock = threading.Lock()
_modules = {}
_kernels = {}


def name_expression(name, dtype):
    """``"name<float>"`` or ``"name<double>"`` for a float dtype."""
    return f"{name}<{FLOAT_TYPES[numpy.dtype(dtype)]}>"


def name_expressions(file, ctype=None):
    """Every instantiation that ``file`` provides, in a fixed order; only those for the C float type
    ``ctype`` ('float' or 'double') when it is given."""
    ctypes = FLOAT_TYPES.values() if ctype is None else (ctype,)
    return [f"{name}<{c}>" for name in SIGNATURES[file] for c in ctypes]


def _template_argument(expression):
    """'float' from 'im2col<float>'."""
    return expression[expression.index("<") + 1:expression.rindex(">")]


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


def get_module(file, ctype):
    """The ``cupy.RawModule`` of ``file``'s ``ctype`` ('float' or 'double') instantiations for the
    current device (built once per device)."""
    import cupy

    key = (file, ctype, cupy.cuda.runtime.getDevice())
    module = _modules.get(key)
    if module is None:
        with _lock:
            module = _modules.get(key)
            if module is None:
                module = cupy.RawModule(code=kernel_source(file), options=compile_options(),
                                        name_expressions=name_expressions(file, ctype))
                # RawModule compiles lazily; ask for one kernel so the compile (or the load from
                # CuPy's disk cache) happens here, where compile_all can time it.
                module.get_function(name_expressions(file, ctype)[0])
                _modules[key] = module
    return module


def get_kernel(file, expression):
    """The ``cupy.RawKernel`` for a name expression such as ``"im2col<float>"`` on the current device."""
    import cupy

    key = (file, expression, cupy.cuda.runtime.getDevice())
    kernel = _kernels.get(key)
    if kernel is None:
        module = get_module(file, _template_argument(expression))
        with _lock:
            kernel = _kernels.get(key)
            if kernel is None:
                kernel = module.get_function(expression)
                _kernels[key] = kernel
    return kernel


def _plan(signature, dtype):
    """Per parameter: (kind, numpy type, low, high), kind 'p' pointer, 's' float scalar, 'i' integer."""
    plan = []
    for ctype in signature:
        if ctype.endswith("*"):
            plan.append(("p", _POINTEE.get(ctype.rstrip("*").split()[-1], dtype), 0, 0))
        elif ctype == "T":
            plan.append(("s", dtype.type, 0, 0))
        elif ctype == "double":
            plan.append(("s", numpy.float64, 0, 0))
        else:
            plan.append(("i", _INT_TYPES[ctype]) + _INT_RANGE[ctype])
    return tuple(plan)


_plans = {}


def pack_args(signature, dtype, args):
    """``args`` converted to the exact types of ``signature`` (see the module docstring).

    A pointer parameter must get a C-contiguous array of the declared element type; any
    mismatch is a bug in a launcher and raises before anything is launched. Cheap (a few
    microseconds): it runs on every launch.
    """
    plan = _plans.get((signature, dtype))
    if plan is None:
        plan = _plans[(signature, dtype)] = _plan(signature, numpy.dtype(dtype))
    if len(args) != len(plan):
        raise TypeError(f"kernel takes {len(plan)} arguments, got {len(args)}")
    packed = []
    for position, ((kind, kind_type, low, high), value) in enumerate(zip(plan, args)):
        if kind == "i":
            memo = _int_memo[kind_type]
            scalar = memo.get(value)
            if scalar is None:
                if not low <= value <= high:
                    raise ValueError(f"kernel argument {position} ({signature[position]}) = {value} "
                                     f"does not fit the C type")
                if len(memo) > 4096:
                    memo.clear()
                scalar = memo[value] = kind_type(value)
            packed.append(scalar)
        elif kind == "p":
            if getattr(value, "dtype", None) != kind_type or not value.flags.c_contiguous:
                got = f"{type(value).__name__} {getattr(value, 'dtype', None)}"
                raise TypeError(f"kernel argument {position} ({signature[position]}) needs a C-contiguous "
                                f"{kind_type} array, got {got}")
            packed.append(value)
        else:
            packed.append(kind_type(value))
    return tuple(packed)


# Python int -> numpy scalar of each integer C type: shapes repeat from step to step, and
# building a numpy scalar costs more than looking one up.
_int_memo = {numpy.int32: {}, numpy.int64: {}}


def grid_for(total):
    """Blocks for a grid-stride kernel over ``total`` elements (at least 1)."""
    return max(1, min((total + BLOCK - 1) // BLOCK, MAX_BLOCKS))


def launch(file, name, dtype, args, grid=None):
    """Launch kernel ``name`` of ``file`` for ``dtype`` on the current stream.

    ``grid`` (blocks: an int or a tuple) defaults to ``grid_for(args[-1])``: the grid-stride
    kernels take their element count as last argument. Blocks are always ``BLOCK`` threads.
    """
    signature = SIGNATURES[file][name]
    packed = pack_args(signature, dtype, args)
    if grid is None:
        grid = grid_for(args[-1])
    kernel = get_kernel(file, name_expression(name, dtype))
    kernel(tuple(grid) if isinstance(grid, (tuple, list)) else (grid,), (BLOCK,), packed)


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


def compile_all(dtype, device=None):
    """Build (or load from CuPy's disk cache) every kernel file's ``dtype`` instantiations on ``device``
    (a CUDA device index; default the current one). Returns {file: seconds}."""
    import time

    import cupy

    ctype = FLOAT_TYPES[numpy.dtype(dtype)]
    seconds = {}
    with cupy.cuda.Device(device) if device is not None else contextlib.nullcontext():
        for file in SIGNATURES:
            start = time.perf_counter()
            get_module(file, ctype)
            seconds[file] = time.perf_counter() - start
    return seconds


def kernel_cache_dir():
    """Where CuPy keeps compiled kernels on disk: $CUPY_CACHE_DIR, else ~/.cupy/kernel_cache."""
    return os.environ.get("CUPY_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cupy", "kernel_cache")
