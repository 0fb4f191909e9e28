"""The verify mode of the graph step (``compile_step(verify=True)``, ``verify_every=N``): one step on the eager
path, the same step replayed from the graph from the same state, compared by the one verifier
(gpucnn/compile/verify.py: its relative-error rule and tolerance table).

What is compared, and why not more: the loss, every gradient and the running statistics (BatchNorm2D) against
the eager step's; every updated parameter against the eager optimizer's step taken from the same state with the graph's own gradients.
Adam maps a gradient g to about lr g / (|g| + eps), so two gradients that agree to fp32 rounding can give
updates that differ by up to lr where |g| is near eps (seen: 2.2e-4 relative on a Dense weight); the update
is compared like with like, the gradients that feed it are compared above. Between the runs the
parameters and the optimizer's state are restored in place (``GraphStep.snapshot`` / ``restore``), so
that every address the graph holds stays valid.
"""
import warnings

import numpy

from ..verify import precision_mode, relative_error
from ..verify import tolerance as verify_tolerance
from .snapshot import param_name

__all__ = ["GraphMismatchWarning", "verify_replay"]


class GraphMismatchWarning(UserWarning):
    """The captured step disagreed with the eager step; training goes on eagerly."""


def verify_replay(step, index):
    """Step ``index`` of the epoch of ``step`` (a GraphStep, inside its device and stream scope, its order
    loaded) on the eager path, then replayed from the graph from the same state; compare (the module
    docstring). Returns True when they agree; else warns ``GraphMismatchWarning`` naming the first tensor
    that differs, restores the state, sets ``step.mismatch`` and ``step.eager`` and returns False."""
    cp = step.cupy
    start, stop = index * step.batch_size, (index + 1) * step.batch_size
    saved = step.snapshot()
    stats_before = cp.asnumpy(step.stats)
    step.eager_step(start, stop)
    stats_eager = cp.asnumpy(step.stats)
    names = [param_name(step.model, p) for p in step.params]
    expected = [("loss", numpy.array((stats_eager[0] - stats_before[0]) / step.batch_size))]
    expected += [(f"{name}.grad", cp.asnumpy(p.grad)) for name, p in zip(names, step.params)]
    buffers_eager = [cp.asnumpy(b) for b in step.buffers]  # BatchNorm2D's running statistics after the step
    step.restore(saved)
    step.stats[...] = cp.asarray(stats_before)
    step.counter.fill(index)
    step.replay()
    stats_graph = cp.asnumpy(step.stats)
    actual = [numpy.array((stats_graph[0] - stats_before[0]) / step.batch_size)]
    graph_grads = [g.copy() for g in step.grads]  # they may be the optimizer's own gradient slots
    actual += [cp.asnumpy(g) for g in graph_grads] + [cp.asnumpy(p.data) for p in step.params]
    actual += [cp.asnumpy(b) for b in step.buffers]
    after_graph = step.snapshot()
    step.restore(saved)  # the eager update from the same state, with the graph's gradients
    step.optimizer.zero_grad()
    for p, grad in zip(step.params, graph_grads):
        p.accumulate_grad(grad)
    step.optimizer.step()
    expected += [(name, cp.asnumpy(p.data)) for name, p in zip(names, step.params)]
    expected += [(f"running statistics {k}", b) for k, b in enumerate(buffers_eager)]
    step.restore(after_graph)
    tolerance = verify_tolerance(step.dtype, precision_mode())
    # a gradient that is zero in exact arithmetic (a convolution's bias before a BatchNorm2D) is rounding noise:
    # measured against the model's largest gradient, the one verifier's scale floor
    largest = max((float(numpy.abs(g[numpy.isfinite(g)]).max(initial=0.0)) for name, g in expected
                   if name.endswith(".grad")), default=0.0)
    for (name, want), got in zip(expected, actual):
        error = relative_error(got, want, largest if name.endswith(".grad") else 0.0)
        if not error <= tolerance:
            step.mismatch = (name, error)
            warnings.warn(GraphMismatchWarning(
                f"compile_step verify: the captured step disagrees with the eager step at step {index} of the "
                f"epoch: first differing tensor {name!r} (relative error {error:.3g} > {tolerance:g} of its "
                f"largest magnitude); training continues on the eager path"), stacklevel=3)
            step.restore(saved)
            step.stats[...] = cp.asarray(stats_before)
            step.eager = True
            return False
    return True
