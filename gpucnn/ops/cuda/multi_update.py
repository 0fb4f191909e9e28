"""CUDA twin of ``gpucnn.ops.multi_update``: a whole optimizer step of a flat parameter buffer in two launches.

``step_scalars`` (one thread) advances the step count in ``hyper`` and computes the step's
scalars there; ``multi_sgd_update`` / ``multi_adam_update`` then update every element with
the per-parameter kernels' own element code (gpucnn/kernels/update_body.cuh). The host
passes only constants (betas, eps, momentum, weight decay): no host read-back, no
synchronisation, no allocation, so the pair can be captured in a CUDA graph and replayed.
"""
import cupy
import numpy

from . import loader
from .update import ADAM_DECOUPLED, ADAM_L2, ADAM_NO_DECAY, SGD_MOMENTUM, SGD_NESTEROV, SGD_WEIGHT_DECAY

__all__ = ["multi_sgd_update", "multi_adam_update"]

_FILE = "multi_update.cu"
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))
# Must equal GPUCNN_HYPER_SIZE of gpucnn/kernels/multi_update_body.cuh.
HYPER_SIZE = 6


def _check(arrays, what, hyper, op):
    for name, a in list(zip(what, arrays)) + [("hyper", hyper)]:
        if not isinstance(a, cupy.ndarray) or a.ndim != 1 or not a.flags.c_contiguous:
            raise TypeError(f"{op} (CUDA): {name} must be a flat C-contiguous CuPy array, got "
                            f"{type(a).__name__} {tuple(getattr(a, 'shape', ()))}")
    dtypes = {numpy.dtype(a.dtype) for a in arrays}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOATS:
        raise TypeError(f"{op} (CUDA): expected float32 or float64 arrays of one dtype, got "
                        + ", ".join(f"{n} {a.dtype}" for n, a in zip(what, arrays)))
    if len({a.size for a in arrays}) != 1:
        raise ValueError(f"{op} (CUDA): sizes differ: " + ", ".join(f"{n} {a.size}" for n, a in zip(what, arrays)))
    if hyper.dtype != numpy.float64 or hyper.size != HYPER_SIZE:
        raise TypeError(f"{op} (CUDA): hyper must be float64 of size {HYPER_SIZE}, got {hyper.dtype} {hyper.size}")
    return next(iter(dtypes))


@loader.on_device_of_first_argument
def multi_sgd_update(param, grad, momentum_buf, hyper, momentum, dampening, nesterov, weight_decay):
    """One SGD step of flat ``param`` in place; see ``gpucnn.ops.multi_update.multi_sgd_update``."""
    arrays, what = [param, grad], ["param", "grad"]
    if momentum:
        arrays.append(momentum_buf)
        what.append("momentum_buf")
    dtype = _check(arrays, what, hyper, "multi_sgd_update")
    flags = ((SGD_WEIGHT_DECAY if weight_decay else 0) | (SGD_MOMENTUM if momentum else 0)
             | (SGD_NESTEROV if nesterov else 0))
    loader.launch(_FILE, "step_scalars", dtype, (hyper, 0.0, 0.0, weight_decay), grid=1)
    if param.size:
        loader.launch(_FILE, "multi_sgd_update", dtype,
                      (param, grad, momentum_buf if momentum else param, hyper, momentum, 1.0 - dampening,
                       weight_decay, flags, param.size))


@loader.on_device_of_first_argument
def multi_adam_update(param, grad, exp_avg, exp_avg_sq, hyper, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam / AdamW step of flat ``param`` in place; see ``gpucnn.ops.multi_update.multi_adam_update``."""
    dtype = _check([param, grad, exp_avg, exp_avg_sq], ["param", "grad", "exp_avg", "exp_avg_sq"], hyper,
                   "multi_adam_update")
    if not weight_decay:
        mode = ADAM_NO_DECAY
    else:
        mode = ADAM_DECOUPLED if decoupled else ADAM_L2
    loader.launch(_FILE, "step_scalars", dtype, (hyper, beta1, beta2, weight_decay), grid=1)
    if param.size:
        loader.launch(_FILE, "multi_adam_update", dtype,
                      (param, grad, exp_avg, exp_avg_sq, hyper, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps,
                       weight_decay, mode, param.size))
