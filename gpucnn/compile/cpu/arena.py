"""Buffers kept from one step to the next, so that a training step allocates (and page-faults) nothing.

One arena per chunk of a batch shape: the same (stage, name) asks for the same shape every step and
gets the same array back. A buffer made with ``zeros=True`` is zeroed once, when it is made: padded
inputs rely on their borders staying zero, so nothing but their interior is ever written.
"""
import numpy

__all__ = ["Arena"]


class Arena:
    """{key: array}, handed out again while the shape and dtype asked for stay the same."""

    def __init__(self):
        self._buffers = {}

    def get(self, key, shape, dtype, zeros=False):
        shape = tuple(int(s) for s in shape)
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = numpy.zeros(shape, dtype) if zeros else numpy.empty(shape, dtype)
            self._buffers[key] = buf
        return buf

    def nbytes(self):
        return sum(b.nbytes for b in self._buffers.values())
