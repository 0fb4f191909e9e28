"""Multi-tensor optimizer steps: one update over a flat buffer that holds many parameters.

The per-step scalars (learning rate, step count, bias corrections) live in ``hyper``, a
small float64 array on the parameters' device, so that the update needs nothing from the
host and a captured CUDA graph replays it correctly. Layout (``HYPER_*`` below, equal to
the GPUCNN_HYPER_* values of gpucnn/kernels/multi_update_body.cuh):

    hyper[HYPER_LR]           learning rate, written by the host when it changes
    hyper[HYPER_STEP]         steps taken; each call first adds one
    hyper[HYPER_STEP_SIZE]    Adam: lr / (1 - beta1**step)
    hyper[HYPER_BIAS2_SQRT]   Adam: sqrt(1 - beta2**step)
    hyper[HYPER_DECAY]        1 - lr * weight_decay (AdamW)
    hyper[HYPER_FIRST]        1.0 on the first step (SGD's momentum buffer starts there)

The NumPy code below is the reference, composed from ``gpucnn.ops.update`` (the update
of every element is the per-parameter rule, so a flat buffer gives the same numbers as
one call per parameter); CuPy arrays go to ``gpucnn.ops.cuda.multi_update``: two
launches (the scalars, then every element) whatever the number of parameters.
"""
import numpy

from ..backend import get_array_module
from .update import adam_update, sgd_update

__all__ = ["HYPER_LR", "HYPER_STEP", "HYPER_SIZE", "make_hyper", "step_scalars", "multi_sgd_update",
           "multi_adam_update"]

HYPER_LR, HYPER_STEP, HYPER_STEP_SIZE, HYPER_BIAS2_SQRT, HYPER_DECAY, HYPER_FIRST, HYPER_SIZE = 0, 1, 2, 3, 4, 5, 6


def make_hyper(lr, steps):
    """A NumPy ``hyper`` array for learning rate ``lr`` after ``steps`` steps (move it to the parameters' device)."""
    hyper = numpy.zeros(HYPER_SIZE, dtype=numpy.float64)
    hyper[HYPER_LR], hyper[HYPER_STEP] = lr, steps
    return hyper


def step_scalars(hyper, beta1, beta2, weight_decay):
    """Advance hyper's step count by one and compute the step's scalars (NumPy ``hyper``)."""
    step = hyper[HYPER_STEP] + 1.0
    lr = hyper[HYPER_LR]
    hyper[HYPER_STEP] = step
    hyper[HYPER_STEP_SIZE] = lr / (1.0 - beta1 ** step)
    hyper[HYPER_BIAS2_SQRT] = numpy.sqrt(1.0 - beta2 ** step)
    hyper[HYPER_DECAY] = 1.0 - lr * weight_decay
    hyper[HYPER_FIRST] = 1.0 if step == 1.0 else 0.0


def multi_sgd_update(param, grad, momentum_buf, hyper, momentum, dampening, nesterov, weight_decay):
    """One SGD step (``gpucnn.ops.update.sgd_update``) of flat ``param`` with lr and step count from ``hyper``."""
    if get_array_module(param) is not numpy:
        from .cuda import multi_update as cuda_multi
        return cuda_multi.multi_sgd_update(param, grad, momentum_buf, hyper, momentum, dampening, nesterov,
                                           weight_decay)
    step_scalars(hyper, 0.0, 0.0, weight_decay)
    sgd_update(param, grad, momentum_buf, float(hyper[HYPER_LR]), momentum, dampening, nesterov, weight_decay,
               hyper[HYPER_FIRST] != 0.0)


def multi_adam_update(param, grad, exp_avg, exp_avg_sq, hyper, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam / AdamW step (``gpucnn.ops.update.adam_update``) of flat ``param`` with lr and step count from
    ``hyper``."""
    if get_array_module(param) is not numpy:
        from .cuda import multi_update as cuda_multi
        return cuda_multi.multi_adam_update(param, grad, exp_avg, exp_avg_sq, hyper, beta1, beta2, eps,
                                            weight_decay, decoupled)
    step_scalars(hyper, beta1, beta2, weight_decay)
    adam_update(param, grad, exp_avg, exp_avg_sq, float(hyper[HYPER_LR]), beta1, beta2, eps, weight_decay,
                int(hyper[HYPER_STEP]), decoupled)
