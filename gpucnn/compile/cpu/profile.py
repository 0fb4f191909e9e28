"""Where a fast-path step spends its time, node type by node type (scripts/bench_resnet.py's breakdown).

Inside ``with node_times() as times:`` the graph runner times every stage call of the chunk the calling
thread runs (chunk 0; the other chunks run the same stages at the same time on the other threads, so chunk
0's times are the stages' share of the step's wall time), every layout conversion, and every node that runs
as itself (fallback, whole batch). Outside it nothing is timed and nothing is kept.
"""
import contextlib
import time

__all__ = ["NodeTimes", "node_times", "active", "kind_of"]


class NodeTimes:
    """{(kind, 'forward' | 'backward'): [seconds, calls]}, summed over the steps run inside the context."""

    def __init__(self):
        self.totals = {}

    def add(self, kind, direction, seconds):
        entry = self.totals.setdefault((kind, direction), [0.0, 0])
        entry[0] += seconds
        entry[1] += 1

    def timed(self, kind, direction, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        self.add(kind, direction, time.perf_counter() - start)
        return result


_active = None


def active():
    """The NodeTimes being filled, or None."""
    return _active


@contextlib.contextmanager
def node_times():
    global _active
    before, _active = _active, NodeTimes()
    try:
        yield _active
    finally:
        _active = before


def kind_of(stage):
    """A node type's name: its layers' class names ('Conv2D+ReLU', 'BatchNorm2D', 'Add')."""
    return "+".join(type(layer).__name__ for layer in stage.layers)
