"""Global settings in one small object, changed through functions, never by editing source."""
import numpy

__all__ = ["config", "seed"]


class Config:
    """``rng``: the generator that layers draw their initial weights from when given no ``rng``.

    ``multi_tensor_optimizer``: on the GPU, optimizers gather the parameters of one device and
    dtype into flat buffers and step them all with one update launch (``gpucnn.optim_flat``);
    False steps each parameter with its own launch (the per-parameter path, always used on the CPU).
    """

    def __init__(self):
        self.rng = numpy.random.default_rng()
        self.multi_tensor_optimizer = True


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
