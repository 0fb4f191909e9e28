"""CUDA twin of ``gpucnn.ops.update``: fused in-place SGD and Adam/AdamW steps for CuPy arrays.

One kernel launch per parameter does the whole step (weight decay, moments, bias
correction, the update) in a single pass over memory. The scalar arithmetic that does not
depend on the element (1 - dampening, lr / (1 - beta1**step), ...) is done here in Python
floats and handed to the kernel converted to the parameter's dtype, as NumPy converts a
Python float that meets an array. No host copies, no synchronisation.

Arrays updated in place (param and the optimizer state) may be non-contiguous views:
the kernel then works on a contiguous copy that is written back into the view.
"""
import math

import cupy
import numpy

from . import loader

__all__ = ["sgd_update", "adam_update"]

_FILE = "update.cu"
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))

# Must equal the GPUCNN_SGD_* / GPUCNN_ADAM_* values of gpucnn/kernels/update_body.cuh.
SGD_WEIGHT_DECAY, SGD_MOMENTUM, SGD_NESTEROV, SGD_FIRST_STEP = 1, 2, 4, 8
ADAM_NO_DECAY, ADAM_L2, ADAM_DECOUPLED = 0, 1, 2


def _check(arrays, what, op):
    for name, a in zip(what, arrays):
        if not isinstance(a, cupy.ndarray):
            raise TypeError(f"{op} (CUDA): {name} must be a CuPy array, got {type(a).__name__}")
    dtypes = {numpy.dtype(a.dtype) for a in arrays}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOATS:
        names = ", ".join(f"{name} {a.dtype}" for name, a in zip(what, arrays))
        raise TypeError(f"{op} (CUDA): expected float32 or float64 arrays of one dtype, got {names}")
    shape = tuple(arrays[0].shape)
    for name, a in zip(what[1:], arrays[1:]):
        if tuple(a.shape) != shape:
            raise ValueError(f"{op} (CUDA): {name} has shape {tuple(a.shape)}, "
                             f"expected the parameter's {shape}")
    return next(iter(dtypes))


def _inplace(a):
    """A C-contiguous array to update: ``a`` itself, or a copy to write back afterwards."""
    return a if a.flags.c_contiguous else cupy.ascontiguousarray(a)


def _write_back(pairs):
    for view, work in pairs:
        if work is not view:
            view[...] = work


@loader.on_device_of_first_argument
def sgd_update(param, grad, momentum_buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """One SGD step in place; see ``gpucnn.ops.update.sgd_update``."""
    arrays, what = [param, grad], ["param", "grad"]
    if momentum:
        arrays.append(momentum_buf)
        what.append("momentum_buf")
    dtype = _check(arrays, what, "sgd_update")
    flags = ((SGD_WEIGHT_DECAY if weight_decay else 0) | (SGD_MOMENTUM if momentum else 0)
             | (SGD_NESTEROV if nesterov else 0) | (SGD_FIRST_STEP if first_step else 0))
    if param.size == 0:
        return
    p = _inplace(param)
    g = cupy.ascontiguousarray(grad)
    buf = _inplace(momentum_buf) if momentum else p  # any valid pointer when unused
    loader.launch(_FILE, "sgd_update", dtype,
                  (p, g, buf, lr, momentum, 1.0 - dampening, weight_decay, flags, p.size))
    _write_back([(param, p)] + ([(momentum_buf, buf)] if momentum else []))


@loader.on_device_of_first_argument
def adam_update(param, grad, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """One Adam (or AdamW when ``decoupled``) step in place; see ``gpucnn.ops.update.adam_update``."""
    dtype = _check([param, grad, exp_avg, exp_avg_sq], ["param", "grad", "exp_avg", "exp_avg_sq"],
                   "adam_update")
    if step < 1:
        raise ValueError(f"adam_update: step counts from 1, got {step}")
    if param.size == 0:
        return
    if not weight_decay:
        mode = ADAM_NO_DECAY
    else:
        mode = ADAM_DECOUPLED if decoupled else ADAM_L2
    step_size = lr / (1.0 - beta1 ** step)
    bias2_sqrt = math.sqrt(1.0 - beta2 ** step)
    p, m, v = _inplace(param), _inplace(exp_avg), _inplace(exp_avg_sq)
    g = cupy.ascontiguousarray(grad)
    loader.launch(_FILE, "adam_update", dtype,
                  (p, g, m, v, beta1, 1.0 - beta1, beta2, 1.0 - beta2, step_size, bias2_sqrt, eps,
                   weight_decay, 1.0 - lr * weight_decay, mode, p.size))
    _write_back([(param, p), (exp_avg, m), (exp_avg_sq, v)])
