"""A toy data set the small training tests share: learnable in a few epochs, made in microseconds."""
import numpy

__all__ = ["quadrant_images"]


def quadrant_images(n, seed=0):
    """(x, y): (n, 1, 8, 8) float32 images whose class (0..3) is the quadrant holding the bright square."""
    rng = numpy.random.default_rng(seed)
    x = rng.random((n, 1, 8, 8), dtype=numpy.float32) * 0.1
    y = rng.integers(0, 4, n)
    for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        x[y == k, 0, r:r + 4, c:c + 4] += 1.0
    return x, y
