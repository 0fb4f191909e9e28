"""Global settings in one small object, changed through functions, never by editing source."""
import numpy

__all__ = ["config", "seed", "PATHS"]

#: the two ways a Sequential model computes on the CPU (see gpucnn/compile/cpu/__init__.py)
PATHS = ("reference", "fast")


class Config:
    """``rng``: the generator that layers draw their initial weights from when given no ``rng``.

    ``multi_tensor_optimizer``: on the GPU, optimizers gather the parameters of one device and
    dtype into flat buffers and step them all with one update launch (``gpucnn.optim.flat``);
    False steps each parameter with its own launch (the per-parameter path, always used on the CPU).
    ``path``: 'fast' (default) runs NumPy models through ``gpucnn.compile.cpu`` (threads, a channel-major layout,
    reused buffers); 'reference' runs the readable per-layer ops. Both give the same numbers up to float
    rounding; GPU models and layers the fast path does not know always take the reference path.
    ``verify``: False, 'raise' (or True) or 'warn': on the first step of each batch shape, run both paths
    and compare them, raising ``gpucnn.compile.cpu.FastPathMismatch`` (or warning) when they disagree.
    ``num_threads``: worker threads of the fast path; None reads GPUCNN_NUM_THREADS, else the usable cores.
    """

    def __init__(self):
        self.rng = numpy.random.default_rng()
        self.multi_tensor_optimizer = True
        self.path = "fast"
        self.verify = False
        self.num_threads = None


config = Config()


def seed(value):
    """Seed the default generator, so that models built afterwards start from the same weights."""
    config.rng = numpy.random.default_rng(value)


def make_rng(rng):
    """A numpy Generator from None (the global one), an int seed, or a Generator."""
    if rng is None:
        return config.rng
    if isinstance(rng, numpy.random.Generator):
        return rng
    return numpy.random.default_rng(rng)
