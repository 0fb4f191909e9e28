"""The one verifier: how a fast path's numbers are held against the reference's.

One rule: the error of a tensor is ``max |actual - expected|`` over the entries where the reference is
finite, divided by the reference's largest finite magnitude (or by ``scale_floor`` when that is
larger: a gradient that is zero in exact arithmetic is rounding noise, measured against the
model's largest gradient). NaN and infinity must sit in the same places on both sides, and the
shapes must agree; otherwise the error is infinite. One table of tolerances, per dtype and
precision mode, serves every caller: ``gpucnn.config.verify`` (the CPU fast path), ``compile_step``'s
verify mode (the CUDA graph) and ``gpucnn doctor`` (every kernel against its NumPy twin).

Why these numbers: the fast paths sum in other orders than the reference (chunks of the batch,
tiled GEMMs, FMA contraction and flush-to-zero on the GPU), which moves float32 results by a few
ulps times the square root of the summed length, far inside 1e-4 of the largest magnitude; float64 by
about 1e-13. TF32 tensor cores round the inputs of every product to 10 mantissa bits (relative
error about 5e-4 each), hence 1e-2 when the precision mode is 'tf32'.
"""
import os

import numpy

__all__ = ["TOLERANCES", "tolerance", "precision_mode", "relative_error", "describe_difference"]

#: (dtype name, precision mode) -> relative tolerance
TOLERANCES = {
    ("float32", "fp32"): 1e-4,
    ("float32", "tf32"): 1e-2,
    ("float64", "fp32"): 1e-10,
    ("float64", "tf32"): 1e-10,  # TF32 affects float32 products only
}


def tolerance(dtype, precision="fp32"):
    """The relative tolerance for ``dtype`` ('float32', numpy.float64, ...) in ``precision`` ('fp32' or 'tf32')."""
    key = (numpy.dtype(dtype).name, precision)
    if key not in TOLERANCES:
        raise ValueError(f"verify: no tolerance for dtype {key[0]} in precision {precision!r} "
                         f"(known: {sorted(TOLERANCES)})")
    return TOLERANCES[key]


def precision_mode():
    """'tf32' when CuPy's float32 matrix products run on TF32 tensor cores (``gpucnn.backend.set_tf32``), else
    'fp32'."""
    return "tf32" if os.environ.get("CUPY_TF32") == "1" else "fp32"


def _host(a):
    get = getattr(a, "get", None)  # a CuPy array: one copy to the host
    return numpy.asarray(get() if callable(get) and not isinstance(a, numpy.ndarray) else a, dtype=numpy.float64)


def relative_error(actual, expected, scale_floor=0.0):
    """The error of ``actual`` against ``expected`` under the rule above (NumPy or CuPy arrays, or scalars)."""
    actual, expected = _host(actual), _host(expected)
    if actual.shape != expected.shape:
        return float("inf")
    if not (numpy.array_equal(numpy.isnan(actual), numpy.isnan(expected))
            and numpy.array_equal(numpy.isposinf(actual), numpy.isposinf(expected))
            and numpy.array_equal(numpy.isneginf(actual), numpy.isneginf(expected))):
        return float("inf")
    finite = numpy.isfinite(expected)
    if not finite.any():
        return 0.0
    scale = max(float(numpy.max(numpy.abs(expected[finite]))), scale_floor, numpy.finfo(numpy.float64).tiny)
    return float(numpy.max(numpy.abs(actual[finite] - expected[finite]))) / scale


def describe_difference(what, error, limit):
    """One phrase for a message: what differs, by how much, against which tolerance."""
    if error == float("inf"):
        return f"{what}: shapes, NaN or infinities in different places"
    return f"{what}: relative error {error:.3g} > {limit:g} of its largest magnitude"
