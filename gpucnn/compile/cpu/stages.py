"""The fast path's stages: what one or a few layers compute on one chunk of the batch, in the internal layout.

Internal layout: (C, H, W, n) for feature maps, (F, n) for feature vectors (the public layouts
(N, C, H, W) and (N, F) transposed). A stage reads the layers' parameters at every call (so
loading weights needs no rebuild), keeps what its backward needs in the chunk's ``saved`` and
writes its parameter gradients into the chunk's ``grads``; the segment adds every chunk's into
``Parameter.grad`` in a fixed order.

Stage                 replaces (readable ops)
ConvStage             Conv2D (gpucnn.ops.conv), with ReLU and/or MaxPool2D after it folded in
PoolStage             MaxPool2D / AvgPool2D (gpucnn.ops.pool)
ActivationStage       ReLU, LeakyReLU, Sigmoid, Tanh (gpucnn.ops.activation, called as they are)
FlattenStage          Flatten
DenseStage            Dense (gpucnn.ops.linear)

The conv -> ReLU -> max-pool rewrite (ConvStage with a pool): max pooling runs on the raw
convolution, and bias and ReLU after it, on a quarter of the numbers:
    maxpool(relu(conv(x) + b)) = relu(maxpool(conv(x)) + b)
since x -> relu(x + b) is non-decreasing for each channel. The gradient goes to the same element:
where the window's maximum is > 0 after the bias, ReLU is the identity there and the first
maximal element of conv(x) is the first maximal element of relu(conv(x) + b); where it is <= 0,
the reference's ReLU sends zero to every element of the window, and so do we. One difference is
possible, in float rounding only: two different raw values a > b whose sums a + bias and
b + bias round to the same number. The reference then gives the gradient to the first of the
two in the window, this path to the larger. The forward values are equal either way.

Pool-major columns (ConvStage._forward_pool_major): when the max pool tiles the convolution's
output exactly and the convolution has fewer column rows (c*kh*kw) than output channels (a first
layer on grey or RGB images), the columns are ordered by pooling tap, so that each tap's
convolution comes out of its matrix product as one contiguous (O, ph*pw*n) array, compared there
by the pooling and, in backward, multiplied by its mask in place: no copies of the (large) raw
convolution output to gather or scatter the taps. The column gradient, when the input gradient is
wanted, is copied back to the usual order first (cheap: it is smaller than that output).
Measured on the 2-core EPYC, fashion_cnn's bench step, A/B interleaved: batch 64 1.13x, 128 1.2x,
256 1.08x; for its second convolution (288 column rows, 64 channels) the reorder costs more than
it saves (batch 256 0.94x), hence the condition.
"""
import numpy
from numpy.lib.stride_tricks import as_strided

from ...nn.layers.activation import ReLU, check_float
from ...ops.geometry import check_input
from . import chwn

__all__ = ["ConvStage", "PoolStage", "ActivationStage", "FlattenStage", "DenseStage", "shape_probe"]


def shape_probe(shape, dtype):
    """An array of ``shape`` and ``dtype`` that costs no memory, for the layers' own input checks."""
    return as_strided(numpy.zeros((), dtype=dtype), shape=shape, strides=(0,) * len(shape))


def _tiles_exactly(h, w, window, oh, ow):
    return (not window.padded and (window.sy, window.sx) == (window.kh, window.kw)
            and oh * window.kh == h and ow * window.kw == w)


class Stage:
    layers = ()

    def __init__(self, index):
        self.index = index

    def params(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def buffer(self, ctx, name, shape, dtype, zeros=False):
        return ctx.arena.get((self.index, name), shape, dtype, zeros)

    def pool_scratch(self, ctx, x, window, oh, ow):
        """The scratch buffer of chwn.gather_taps for max pooling ``x`` (shared by forward and backward),
        or None for overlapping windows."""
        shape = chwn.pool_scratch_shape(x.shape, x.itemsize, window, oh, ow)
        return None if shape is None else self.buffer(ctx, "pool_scratch", shape, x.dtype)


class ConvStage(Stage):
    """y = conv(x) + b, then optionally ReLU, then optionally max pooling (the rewrite above)."""

    def __init__(self, index, conv, relu=None, pool=None):
        super().__init__(index)
        self.conv, self.relu, self.pool = conv, relu, pool
        self.layers = tuple(layer for layer in (conv, relu, pool) if layer is not None)

    def params(self):
        return self.conv.parameters()

    def out_shape(self, shape, dtype):
        check_input(shape_probe(shape, dtype), "Conv2D", 4, self.conv.in_channels)
        oh, ow = self.conv.window.output_size(*shape[2:])
        if self.pool is not None:
            oh, ow = self.pool.window.output_size(oh, ow)
        return (shape[0], self.conv.out_channels, oh, ow), self.conv.weight.data.dtype

    def forward(self, ctx, x):
        weight = self.conv.weight.data
        bias = self.conv.bias.data if self.conv.bias is not None else None
        win = self.conv.window
        c, h, w, n = x.shape
        out_c, dtype = weight.shape[0], weight.dtype
        oh, ow = win.output_size(h, w)
        padded = self.buffer(ctx, "padded", (c, h + win.pt + win.pb, w + win.pl + win.pr, n), dtype, zeros=True)
        padded[:, win.pt:win.pt + h, win.pl:win.pl + w, :] = x  # borders stay zero (see arena.py)
        if self._pool_major(oh, ow):
            return self._forward_pool_major(ctx, x, padded)
        cols = chwn.im2col(padded, win, oh, ow, self.buffer(ctx, "cols", (c * win.kh * win.kw, oh * ow * n), dtype))
        y = self.buffer(ctx, "y", (out_c, oh * ow * n), dtype)
        numpy.matmul(weight.reshape(out_c, -1), cols, out=y)
        y4 = y.reshape(out_c, oh, ow, n)
        saved = ctx.saved[self.index] = {"cols": cols, "y": y, "x_shape": x.shape, "padded_shape": padded.shape}
        if self.pool is None:
            if bias is not None:
                y4 += bias[:, None, None, None]
            if self.relu is not None:
                numpy.maximum(y4, 0, out=y4)
            return y4
        pwin = self.pool.window
        ph, pw = pwin.output_size(oh, ow)
        z = self.buffer(ctx, "z", (out_c, ph, pw, n), dtype)
        masks = self.buffer(ctx, "masks", (pwin.kh * pwin.kw, out_c, ph, pw, n), numpy.bool_)
        chwn.max_pool_forward(y4, pwin, ph, pw, z, masks, self.buffer(ctx, "seen", z.shape, numpy.bool_),
                              self.pool_scratch(ctx, y4, pwin, ph, pw))
        if bias is not None:
            z += bias[:, None, None, None]
        if self.relu is not None:
            numpy.maximum(z, 0, out=z)
        saved.update(z=z, masks=masks)
        return z

    def backward(self, ctx, grad, need_input_grad):
        saved = ctx.saved[self.index]
        if "pool_major" in saved:
            return self._backward_pool_major(ctx, grad, need_input_grad)
        weight = self.conv.weight.data
        out_c, dtype = weight.shape[0], weight.dtype
        win = self.conv.window
        c, h, w, n = saved["x_shape"]
        oh, ow = win.output_size(h, w)
        y = saved["y"]  # dead since the forward: it takes the gradient of the raw convolution
        y4 = y.reshape(out_c, oh, ow, n)
        if self.pool is None:
            if self.relu is not None:
                numpy.multiply(grad, y4 > 0, out=y4)
            else:
                numpy.copyto(y4, grad)
            grad_y = y
            grad_b = y.sum(axis=1) if self.conv.bias is not None else None
        else:
            z = saved["z"]
            grad_z, grad_b = self._pooled_grad(ctx, grad, z, dtype)
            pwin = self.pool.window
            chwn.max_pool_backward(grad_z, saved["masks"], pwin, z.shape[1], z.shape[2], y4,
                                   _tiles_exactly(oh, ow, pwin, z.shape[1], z.shape[2]),
                                   self.pool_scratch(ctx, y4, pwin, z.shape[1], z.shape[2]))
            grad_y = y
        grad_w = self.buffer(ctx, "grad_w", (out_c, weight[0].size), dtype)
        cols = saved.pop("cols")  # used once: it takes the column gradient below
        numpy.matmul(grad_y, cols.T, out=grad_w)
        ctx.grads[self.index] = [grad_w.reshape(weight.shape)] + ([grad_b] if grad_b is not None else [])
        if not need_input_grad:
            return None
        numpy.matmul(weight.reshape(out_c, -1).T, grad_y, out=cols)
        if chwn.same_size(win, h, w):  # contiguous adds, and a contiguous input gradient for the stage before
            return chwn.col2im_same(cols, win, h, w, self.buffer(ctx, "grad_x", (c, h, w, n), dtype))
        grad_padded = chwn.col2im(cols, win, oh, ow, self.buffer(ctx, "grad_padded", saved["padded_shape"], dtype))
        return grad_padded[:, win.pt:win.pt + h, win.pl:win.pl + w, :]

    # Pool-major columns: a convolution with few inputs per output, then max pooling. -------------

    def _pool_major(self, oh, ow):
        """Whether to order the columns by pooling tap (``_forward_pool_major``): a max pool that tiles
        the convolution's output exactly, and a convolution whose columns (c*kh*kw rows) are fewer than its
        output channels, so that reordering the column gradient costs less than the pooling copies saved."""
        if self.pool is None:
            return False
        pwin = self.pool.window
        ph, pw = pwin.output_size(oh, ow)
        return _tiles_exactly(oh, ow, pwin, ph, pw) and self.conv.weight.data[0].size <= self.conv.out_channels

    def _forward_pool_major(self, ctx, x, padded):
        """conv -> (ReLU) -> max pool with the columns in pooling-tap order: columns (c, i, j) x (tap, py,
        px, n), so that each tap's convolution, ``W @ cols[:, tap]``, is a contiguous (O, ph*pw*n) array and
        pooling compares them as they come out of the matrix products, no copy of the taps; backward
        multiplies the output gradient by each tap's mask straight into the same contiguous arrays."""
        weight = self.conv.weight.data
        bias = self.conv.bias.data if self.conv.bias is not None else None
        win, pwin = self.conv.window, self.pool.window
        c, h, w, n = x.shape
        out_c, dtype = weight.shape[0], weight.dtype
        ph, pw = pwin.output_size(*win.output_size(h, w))
        taps, m = pwin.kh * pwin.kw, ph * pw * n
        k = c * win.kh * win.kw
        cols = self.buffer(ctx, "cols", (k, taps, m), dtype)
        s_c, s_h, s_w, s_n = padded.strides
        windows = as_strided(padded, shape=(c, win.kh, win.kw, pwin.kh, pwin.kw, ph, pw, n),
                             strides=(s_c, s_h, s_w, win.sy * s_h, win.sx * s_w, win.sy * pwin.kh * s_h,
                                      win.sx * pwin.kw * s_w, s_n), writeable=False)
        numpy.copyto(cols.reshape(windows.shape), windows)
        y = self.buffer(ctx, "y", (taps, out_c, m), dtype)
        w2 = weight.reshape(out_c, k)
        for t in range(taps):
            numpy.matmul(w2, cols[:, t], out=y[t])
        z = self.buffer(ctx, "z", (out_c, ph, pw, n), dtype)
        masks = self.buffer(ctx, "masks", (taps, out_c, ph, pw, n), numpy.bool_)
        chwn.max_pool_taps(list(y.reshape(taps, out_c, ph, pw, n)), z, masks,
                           self.buffer(ctx, "seen", z.shape, numpy.bool_))
        if bias is not None:
            z += bias[:, None, None, None]
        if self.relu is not None:
            numpy.maximum(z, 0, out=z)
        ctx.saved[self.index] = {"pool_major": True, "cols": cols, "y": y, "z": z, "masks": masks,
                                 "x_shape": x.shape, "padded_shape": padded.shape}
        return z

    def _pooled_grad(self, ctx, grad, z, dtype):
        """(dL/d(pooled conv output before bias and ReLU), the bias gradient or None): ReLU's mask read from
        the stage's output z, then the bias gradient summed over everything but the channel."""
        grad_z = self.buffer(ctx, "grad_z", z.shape, dtype)
        if self.relu is not None:
            numpy.multiply(grad, z > 0, out=grad_z)
        else:
            numpy.copyto(grad_z, grad)
        grad_b = grad_z.reshape(z.shape[0], -1).sum(axis=1) if self.conv.bias is not None else None
        return grad_z, grad_b

    def _backward_pool_major(self, ctx, grad, need_input_grad):
        saved = ctx.saved[self.index]
        weight = self.conv.weight.data
        out_c, dtype = weight.shape[0], weight.dtype
        win, pwin = self.conv.window, self.pool.window
        c, h, w, n = saved["x_shape"]
        oh, ow = win.output_size(h, w)
        z, masks, cols = saved["z"], saved["masks"], saved.pop("cols")
        taps, k, m = cols.shape[1], cols.shape[0], cols.shape[2]
        grad_z, grad_b = self._pooled_grad(ctx, grad, z, dtype)
        grad_w = self.buffer(ctx, "grad_w", (out_c, k), dtype)
        if not need_input_grad:
            # One output channel at a time: its tap gradients (taps, m) in a small buffer, in cache, and its
            # weight gradient as one matrix-vector product. OpenBLAS's matrix product of (O, m) by (m, k) with
            # k this small runs far below its speed on other shapes (one matrix-vector product per row is
            # several times faster), and no (taps, O, m) array goes to memory and back. fashion_cnn's first
            # layer, 128 images, one core: 5.7 -> 4.1 ms.
            grad_z2, masks3, cols2 = grad_z.reshape(out_c, 1, m), masks.reshape(taps, out_c, m), cols.reshape(k, -1)
            part = self.buffer(ctx, "grad_y_channel", (taps, m), dtype)
            for o in range(out_c):
                numpy.multiply(grad_z2[o], masks3[:, o], out=part)
                numpy.matmul(cols2, part.reshape(-1), out=grad_w[o])
            ctx.grads[self.index] = [grad_w.reshape(weight.shape)] + ([grad_b] if grad_b is not None else [])
            return None
        grad_y = saved["y"]  # dead since the forward: each tap's gradient
        numpy.multiply(grad_z.reshape(1, out_c, m), masks.reshape(taps, out_c, m), out=grad_y)
        numpy.matmul(grad_y[0], cols[:, 0].T, out=grad_w)
        part = self.buffer(ctx, "grad_w_part", (out_c, k), dtype)
        for t in range(1, taps):  # tap order: the same sums every run
            grad_w += numpy.matmul(grad_y[t], cols[:, t].T, out=part)
        ctx.grads[self.index] = [grad_w.reshape(weight.shape)] + ([grad_b] if grad_b is not None else [])
        if not need_input_grad:
            return None
        grad_cols = self.buffer(ctx, "grad_cols", (taps, k, m), dtype)
        w2t = weight.reshape(out_c, k).T
        for t in range(taps):
            numpy.matmul(w2t, grad_y[t], out=grad_cols[t])
        ph, pw = z.shape[1], z.shape[2]
        ordered = cols.reshape(k, oh * ow * n)  # cols is dead: the column gradient in (c, i, j) x (oy, ox, n) order
        numpy.copyto(ordered.reshape(k, ph, pwin.kh, pw, pwin.kw, n).transpose(2, 4, 0, 1, 3, 5),
                     grad_cols.reshape(pwin.kh, pwin.kw, k, ph, pw, n))
        if chwn.same_size(win, h, w):
            return chwn.col2im_same(ordered, win, h, w, self.buffer(ctx, "grad_x", (c, h, w, n), dtype))
        grad_padded = self.buffer(ctx, "grad_padded", saved["padded_shape"], dtype)
        chwn.col2im(ordered, win, oh, ow, grad_padded)
        return grad_padded[:, win.pt:win.pt + h, win.pl:win.pl + w, :]


class PoolStage(Stage):
    """MaxPool2D or AvgPool2D on (C, H, W, n)."""

    def __init__(self, index, pool):
        super().__init__(index)
        self.pool = pool
        self.layers = (pool,)
        self.is_max = type(pool).__name__ == "MaxPool2D"

    def out_shape(self, shape, dtype):
        check_input(shape_probe(shape, dtype), self.pool.name, 4)
        return shape[:2] + self.pool.window.output_size(*shape[2:]), dtype

    def forward(self, ctx, x):
        win = self.pool.window
        c, h, w, n = x.shape
        oh, ow = win.output_size(h, w)
        padded = x
        if win.padded:
            padded = self.buffer(ctx, "padded", (c, h + win.pt + win.pb, w + win.pl + win.pr, n), x.dtype)
            padded.fill(-numpy.inf if self.is_max else 0)
            padded[:, win.pt:win.pt + h, win.pl:win.pl + w, :] = x
        out = self.buffer(ctx, "out", (c, oh, ow, n), x.dtype)
        saved = ctx.saved[self.index] = {"x_shape": x.shape, "padded_shape": padded.shape, "dtype": x.dtype}
        if self.is_max:
            masks = self.buffer(ctx, "masks", (win.kh * win.kw, c, oh, ow, n), numpy.bool_)
            chwn.max_pool_forward(padded, win, oh, ow, out, masks, self.buffer(ctx, "seen", out.shape, numpy.bool_),
                                  self.pool_scratch(ctx, padded, win, oh, ow))
            if win.padded:
                chwn.route_dead_windows_to_real(out, masks, win, h, w)
            saved["masks"] = masks
        else:
            chwn.avg_pool_forward(padded, win, oh, ow, out)
        return out

    def backward(self, ctx, grad, need_input_grad):
        saved = ctx.saved[self.index]
        win = self.pool.window
        c, h, w, n = saved["x_shape"]
        oh, ow = grad.shape[1:3]
        grad = grad.astype(saved["dtype"], copy=False)
        grad_padded = self.buffer(ctx, "grad_padded", saved["padded_shape"], saved["dtype"])
        if self.is_max:
            chwn.max_pool_backward(grad, saved["masks"], win, oh, ow, grad_padded, _tiles_exactly(h, w, win, oh, ow),
                                   self.pool_scratch(ctx, grad_padded, win, oh, ow))
        else:
            chwn.avg_pool_backward(grad, win, oh, ow, grad_padded)
        return grad_padded[:, win.pt:win.pt + h, win.pl:win.pl + w, :]


class ActivationStage(Stage):
    """An elementwise activation: ReLU in place in reused buffers, the others through the layer's own ops."""

    def __init__(self, index, layer):
        super().__init__(index)
        self.layer = layer
        self.layers = (layer,)

    def out_shape(self, shape, dtype):
        check_float(shape_probe(shape, dtype), self.layer.name)
        return shape, dtype

    def forward(self, ctx, x):
        if type(self.layer) is ReLU:
            y = numpy.maximum(x, 0, out=self.buffer(ctx, "y", x.shape, x.dtype))
            ctx.saved[self.index] = y
            return y
        y = self.layer._f(x)
        ctx.saved[self.index] = y if self.layer.uses_output else x
        return y

    def backward(self, ctx, grad, need_input_grad):
        saved = ctx.saved[self.index]
        if type(self.layer) is ReLU:  # saved is the output: y > 0 exactly where x > 0
            return numpy.multiply(grad, saved > 0, out=self.buffer(ctx, "grad", saved.shape, saved.dtype))
        return self.layer._df(grad, saved)


class FlattenStage(Stage):
    """(C, H, W, n) -> (C*H*W, n): the feature order of Flatten on (N, C, H, W), and a free reshape here."""

    def __init__(self, index, layer):
        super().__init__(index)
        self.layers = (layer,)

    def out_shape(self, shape, dtype):
        check_float(shape_probe(shape, dtype), "Flatten")
        return (shape[0], int(numpy.prod(shape[1:]))), dtype

    def forward(self, ctx, x):
        ctx.saved[self.index] = x.shape
        return x.reshape(-1, x.shape[-1])

    def backward(self, ctx, grad, need_input_grad):
        return grad.reshape(ctx.saved[self.index])


class DenseStage(Stage):
    """y = W x + b on (F, n): the transpose of Dense's x @ W.T + b."""

    def __init__(self, index, dense):
        super().__init__(index)
        self.dense = dense
        self.layers = (dense,)

    def out_shape(self, shape, dtype):
        check_input(shape_probe(shape, dtype), "Dense", 2, self.dense.in_features, what="input features")
        return (shape[0], self.dense.out_features), self.dense.weight.data.dtype

    def forward(self, ctx, x):
        weight = self.dense.weight.data
        x = x.astype(weight.dtype, copy=False)
        y = numpy.matmul(weight, x, out=self.buffer(ctx, "y", (weight.shape[0], x.shape[1]), weight.dtype))
        if self.dense.bias is not None:
            y += self.dense.bias.data[:, None]
        ctx.saved[self.index] = x
        return y

    def backward(self, ctx, grad, need_input_grad):
        x = ctx.saved[self.index]
        weight = self.dense.weight.data
        grad = grad.astype(weight.dtype, copy=False)
        grad_w = numpy.matmul(grad, x.T, out=self.buffer(ctx, "grad_w", weight.shape, weight.dtype))
        ctx.grads[self.index] = [grad_w] + ([grad.sum(axis=1)] if self.dense.bias is not None else [])
        if not need_input_grad:
            return None
        return numpy.matmul(weight.T, grad, out=self.buffer(ctx, "grad_x", x.shape, weight.dtype))
