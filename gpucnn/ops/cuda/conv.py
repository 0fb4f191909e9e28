"""CUDA twin of ``gpucnn.ops.conv``: same functions, same arguments, same results, for CuPy arrays.

A convolution with dilation 1 and one group whose tensors fit 32-bit indices runs on the fused implicit-GEMM
kernels of the graph step (``gpucnn.ops.cuda.fused``, issue 16): forward ``conv_fwd_fused`` (no im2col
matrix, the bias in its epilogue); backward dW and db as one GEMM (``conv_wgrad_fused``, split-K where its
tiles alone leave SMs idle), dX as ``conv_dgrad_fused``. ``saved`` then keeps x, as the direct path does.
Every other convolution takes the path below.

Forward, lowered to one matrix product as on the CPU:

    cols = im2col(x)                    (K, N*oh*ow), K = C*kh*kw, columns ordered (n, oy, ox)
    y_mat = W.reshape(O, K) @ cols      (O, N*oh*ow)   one cuBLAS GEMM (cupy.matmul)
    y = transpose01(y_mat) + bias       (N, O, oh, ow) one kernel swaps O and N and adds the bias

With G groups each product is one per group (``gpucnn.ops.linear.grouped_matmul``: a batched
GEMM of G blocks, rows of cols and of W split by group); im2col, col2im and the axis swap
do not change. Dilation only changes which input element a tap reads (im2col, col2im and
the direct kernel take (dy, dx)).

When K per group is small (the first layer of a CNN: K = 9 for a 1-channel 3x3 filter; a
depthwise 3x3 layer) a direct kernel computes y in one pass instead (``DIRECT_MAX_K``): the
GEMM would be bound by memory traffic on cols and y_mat, three times the size of y.

Backward:

    gy_mat = transpose01(grad_y)        (O, N*oh*ow)
    grad_b = row_sum(gy_mat)            blocks over (channel, chunk of the row), then over the chunks
    grad_w = gy_mat @ cols.T            one GEMM (per group)
    grad_cols = W_mat.T @ gy_mat        one GEMM (per group)
    grad_x = col2im(grad_cols)          a gather: each thread owns one input element

Every per-element kernel is launched with 32-bit indices when the sizes it touches allow
(``loader.index_type``), with 64-bit ones otherwise.

Nothing here copies to the host or synchronises; all kernels are deterministic, so two
backward passes give bitwise identical gradients. ``saved`` is this module's own tuple
(cols or None, x or None, x_shape, weight, window, groups): the im2col path keeps its
columns, the direct path a private copy of x to rebuild them from.
"""
import cupy
import numpy

from . import fused, loader
from ..linear import grouped_matmul

__all__ = ["conv2d_forward", "conv2d_backward", "runs_fused", "DIRECT_MAX_K"]

# Use the direct kernel when C/groups*kh*kw is at most this (im2col + GEMM above it).
DIRECT_MAX_K = 32
# Elements of a row that one block of the row-sum kernel adds up (16 per thread).
ROW_SUM_CHUNK = 16 * loader.BLOCK
_MAX_GRID_Y = 65535

_FILE = "conv.cu"
_FLOATS = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def _check_float(arrays, what):
    dtypes = {numpy.dtype(a.dtype) for a in arrays}
    if len(dtypes) != 1 or next(iter(dtypes)) not in _FLOATS:
        names = ", ".join(f"{name} {a.dtype}" for name, a in zip(what, arrays))
        raise TypeError(f"conv2d (CUDA): expected float32 or float64 arrays of one dtype, got {names}")
    return next(iter(dtypes))


def _check_device(arrays, what):
    for name, a in zip(what, arrays):
        if not isinstance(a, cupy.ndarray):
            raise TypeError(f"conv2d (CUDA): {name} must be a CuPy array, got {type(a).__name__}")


def _window_args(window, oh, ow):
    return (window.kh, window.kw, window.sy, window.sx, window.pt, window.pl, window.dy, window.dx, oh, ow)


def runs_fused(window, groups, *sizes):
    """Whether the fused kernels take this convolution: dilation 1, one group, every size fits 32-bit indices."""
    return groups == 1 and window.dy == 1 and window.dx == 1 and loader.index_type(*sizes) == "int"


def _launch(name, dtype, args, sizes):
    """Launch a per-element kernel of conv.cu with the index type that ``sizes`` (element counts) allow."""
    loader.launch(_FILE, name, dtype, args, index=loader.index_type(*sizes))


@loader.on_device_of_first_argument
def conv2d_forward(x, weight, bias, window, groups=1):
    """y = conv2d(x, weight) + bias for CuPy arrays; see ``gpucnn.ops.conv.conv2d_forward``."""
    arrays, what = [x, weight], ["x", "weight"]
    if bias is not None:
        arrays.append(bias)
        what.append("bias")
    _check_device(arrays, what)
    dtype = _check_float(arrays, what)
    if x.ndim != 4:
        raise ValueError(f"{window.layer}: expected a 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if weight.ndim != 4:
        raise ValueError(f"{window.layer}: expected 4-D weights (O, C, kh, kw), "
                         f"got shape {tuple(weight.shape)}")
    n, c, h, w = (int(s) for s in x.shape)
    out_c = int(weight.shape[0])
    if groups < 1 or c % groups or out_c % groups:
        raise ValueError(f"{window.layer}: groups={groups} must divide both the input's {c} channels and "
                         f"the {out_c} filters")
    if tuple(weight.shape[1:]) != (c // groups, window.kh, window.kw):
        raise ValueError(f"{window.layer}: weights of shape {tuple(weight.shape)} do not fit an input "
                         f"with {c} channels in {groups} group(s) and a {window.kh}x{window.kw} window")
    if bias is not None and tuple(bias.shape) != (out_c,):
        raise ValueError(f"{window.layer}: bias must have shape ({out_c},), got {tuple(bias.shape)}")
    oh, ow = window.output_size(h, w)
    x_in = x
    x = cupy.ascontiguousarray(x)
    weight = cupy.ascontiguousarray(weight)
    has_bias = bias is not None
    bias_arg = cupy.ascontiguousarray(bias) if has_bias else weight  # any valid pointer when unused
    k = c // groups * window.kh * window.kw  # rows of cols per group
    p = oh * ow
    y = cupy.empty((n, out_c, oh, ow), dtype=dtype)
    if y.size == 0:
        return y, (None, None, x.shape, weight, window, groups)
    if runs_fused(window, groups, x.size, weight.size, y.size):
        y = fused.conv2d_forward(x, weight, bias_arg if has_bias else None, window)
        return y, (None, x.copy() if x is x_in else x, x.shape, weight, window, groups)  # (see the direct path)
    if k <= DIRECT_MAX_K:
        _launch("conv_direct", dtype, (x, weight, bias_arg, y, n, c, h, w, out_c) + _window_args(window, oh, ow)
                + (c // groups, out_c // groups, int(has_bias), y.size), (x.size, weight.size, y.size))
        # Backward rebuilds the columns from x, so keep x as it is now (the caller may
        # reuse its buffer), as the im2col path keeps its own cols.
        return y, (None, x.copy() if x is x_in else x, x.shape, weight, window, groups)
    cols = _im2col(x, window, oh, ow, dtype)
    # (O, N*P), columns (n, p)
    y_mat = cupy.ascontiguousarray(grouped_matmul(weight.reshape(groups, out_c // groups, k),
                                                  cols.reshape(groups, k, n * p)))
    _launch("transpose01", dtype, (y_mat, bias_arg, y, out_c, n, p, int(has_bias), y.size), (y.size,))
    return y, (cols, None, x.shape, weight, window, groups)


def _im2col(x, window, oh, ow, dtype):
    n, c, h, w = (int(s) for s in x.shape)
    cols = cupy.empty((c * window.kh * window.kw, n * oh * ow), dtype=dtype)
    work_items = c * n * oh * ow  # one per (channel, column): kh*kw elements each
    _launch("im2col", dtype, (x, cols, n, c, h, w) + _window_args(window, oh, ow) + (work_items,),
            (x.size, cols.size))
    return cols


def _row_sums(mat, dtype, out=None):
    """Sums of the rows of a C-contiguous (rows, L) matrix, deterministically.

    Block (r, s) of the row_sum kernel sums chunk s of row r; when a row needs several
    chunks (so that long rows keep every SM busy) their partial sums, a (rows, chunks)
    matrix, are summed again the same way. The chunking depends on the shape only.
    """
    rows, length = (int(v) for v in mat.shape)
    if length == 0:
        if out is None:
            return cupy.zeros((rows,), dtype=dtype)
        out.fill(0)
        return out
    chunk = max(ROW_SUM_CHUNK, -(-length // _MAX_GRID_Y))
    chunks = -(-length // chunk)
    sums = cupy.empty((rows, chunks), dtype=dtype) if chunks > 1 or out is None else out.reshape(rows, 1)
    loader.launch(_FILE, "row_sum", dtype, (mat, sums, rows, length, chunk), grid=(rows, chunks))
    if chunks > 1:
        return _row_sums(sums, dtype, out)
    return out if out is not None else sums.reshape(rows)


@loader.on_device_of_first_argument
def conv2d_backward(grad_y, saved, need_bias=True, need_input_grad=True, grad_weight_out=None,
                    grad_bias_out=None):
    """(grad_x, grad_w, grad_b) for CuPy arrays; see ``gpucnn.ops.conv.conv2d_backward``.

    With ``grad_weight_out`` / ``grad_bias_out`` (C-contiguous, of the weight's / bias's shape
    and dtype) the GEMM and the last row-sum pass write there: no temporary, no copy.
    """
    cols, x, x_shape, weight, window, groups = saved
    _check_device([grad_y], ["grad_y"])
    dtype = _check_float([grad_y, weight], ["grad_y", "weight"])
    n, c, h, w = (int(s) for s in x_shape)
    out_c = int(weight.shape[0])
    oh, ow = window.output_size(h, w)
    if tuple(grad_y.shape) != (n, out_c, oh, ow):
        raise ValueError(f"{window.layer}: grad_y must have the output's shape {(n, out_c, oh, ow)}, "
                         f"got {tuple(grad_y.shape)}")
    grad_y = cupy.ascontiguousarray(grad_y)
    k = c // groups * window.kh * window.kw
    p = oh * ow
    for name, out, shape in (("grad_weight_out", grad_weight_out, tuple(weight.shape)),
                             ("grad_bias_out", grad_bias_out, (out_c,))):
        if out is not None and (not isinstance(out, cupy.ndarray) or tuple(out.shape) != shape
                                or out.dtype != dtype or not out.flags.c_contiguous):
            raise ValueError(f"{window.layer}: {name} must be a C-contiguous {dtype} CuPy array of shape {shape}")
    if grad_y.size == 0:
        grad_x = cupy.zeros((n, c, h, w), dtype=dtype)
        grad_w = cupy.zeros(weight.shape, dtype=dtype)
        if grad_weight_out is not None:
            grad_weight_out.fill(0)
            grad_w = grad_weight_out
        grad_b = None
        if need_bias:
            grad_b = cupy.zeros((out_c,), dtype=dtype) if grad_bias_out is None else grad_bias_out
            grad_b.fill(0)
        return grad_x, grad_w, grad_b
    if cols is None and runs_fused(window, groups, x.size, weight.size, grad_y.size):
        grad_w, grad_b = fused.conv2d_weight_grad(grad_y, x, weight.shape, window, need_bias,
                                                  grad_weight_out=grad_weight_out, grad_bias_out=grad_bias_out)
        grad_x = fused.conv2d_data_grad(grad_y, weight, x_shape, window) if need_input_grad else None
        return grad_x, grad_w, grad_b
    if cols is None:  # direct forward path: the columns are needed now
        cols = _im2col(x, window, oh, ow, dtype)
    gy_mat = cupy.empty((out_c, n * p), dtype=dtype)
    _launch("transpose01", dtype, (grad_y, grad_y, gy_mat, n, out_c, p, 0, gy_mat.size), (gy_mat.size,))
    grad_b = _row_sums(gy_mat, dtype, grad_bias_out) if need_bias else None
    gy_groups = gy_mat.reshape(groups, out_c // groups, n * p)
    cols_groups = cols.reshape(groups, k, n * p)
    if grad_weight_out is not None:
        grouped_matmul(gy_groups, cols_groups.transpose(0, 2, 1), out=grad_weight_out)
        grad_w = grad_weight_out
    else:
        grad_w = cupy.ascontiguousarray(grouped_matmul(gy_groups, cols_groups.transpose(0, 2, 1))).reshape(weight.shape)
    if not need_input_grad:
        return None, grad_w, grad_b
    weight_groups = weight.reshape(groups, out_c // groups, k)
    grad_cols = cupy.ascontiguousarray(grouped_matmul(weight_groups.transpose(0, 2, 1), gy_groups))  # (C*kh*kw, N*P)
    grad_x = cupy.empty((n, c, h, w), dtype=dtype)
    _launch("col2im", dtype, (grad_cols, grad_x, n, c, h, w) + _window_args(window, oh, ow) + (grad_x.size,),
            (grad_cols.size, grad_x.size))
    return grad_x, grad_w, grad_b
