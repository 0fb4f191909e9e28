"""ONNX's own backend node tests (onnx.backend.test.BackendTest) run against gpucnn.onnx.backend.

The tests are ONNX's: each is one node (or a few) with inputs and the outputs ONNX's reference computes, made by
ONNX's generator from the installed wheel (onnx/backend/test/case/node) as the runner starts. Those whose graphs
use only the ops gpucnn imports (gpucnn/io/onnx_ops.py) run here, on every device the backend supports; the
ones gpucnn refuses by design are skipped by EXCLUDED below, each with its reason.
"""
import re
import unittest
import warnings

import numpy
import pytest

import gpucnn
from gpucnn import backend

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")
from onnx.backend.test import BackendTest  # noqa: E402
from onnx.backend.test.loader import load_model_tests  # noqa: E402

from gpucnn.io.onnx_backend import GpucnnBackend  # noqa: E402
from gpucnn.nn import layers as L  # noqa: E402
from gpucnn.io.onnx_ops import OPS  # noqa: E402

#: test name pattern -> why gpucnn refuses it, by design (the categories of the README's count)
EXCLUDED = {
    # 1-D and 3-D: gpucnn's convolutions and pools are 2-D
    r"^test_(maxpool|averagepool)_(1d|3d)_\w*": "1-D or 3-D pooling (gpucnn's pools are 2-D)",
    # integer types: gpucnn computes in float32 and float64
    r"^test_(add_u?int\d+|maxpool_2d_uint8|clip_default_int8_inbounds_expanded)_": "integer element types",
    # training-mode semantics: the import is the inference form (fit trains it)
    r"^test_batchnorm_\w+_training_mode_": "training-mode BatchNormalization (the batch's statistics as outputs)",
    r"^test_training_dropout_\w*": "training-mode Dropout (a random mask at inference)",
    r"^test_dropout_default_mask_(ratio_)?": "Dropout's mask output (training-mode semantics)",
    # the batch: a gpucnn model maps a batch of samples to a batch; dimension 0 is the batch
    r"^test_(leakyrelu_example|sigmoid_example|tanh_example|dropout_default_old|clip_default_inbounds_expanded|"
    r"concat_1d_\w+|matmul_1d_\w+)_": "rank-1 inputs (dimension 0 is the batch; a sample needs a shape)",
    r"^test_(concat_\dd_axis_0|concat_2d_axis_negative_2|concat_3d_axis_negative_3|softmax_axis_0|flatten_axis0|"
    r"flatten_negative_axis4)_": "along axis 0, the batch",
    r"^test_(flatten_axis[23]|flatten_negative_axis[12]|reshape_(allowzero_reordered|negative_dim|"
    r"negative_extended_dims|one_dim|reordered_all_dims|zero_and_negative_dim))_":
        "a Flatten or Reshape that mixes samples of the batch",
    r"^test_(matmul_(3d|4d|4d_1d|bcast)|add_bcast)_": "batched MatMul or broadcasting (Dense takes (N, K) by (K, M))",
    r"^test_gemm_(transposeA|all_attributes)_": "Gemm with transA=1 (the batch along A's columns)",
    r"^test_gemm_default_matrix_bias_": "Gemm with a bias per sample (C of shape (M, N))",
    r"^test_(maxpool_2d_pads|averagepool_2d_pads|averagepool_2d_pads_count_include_pad)_":
        "pool padding over half the kernel (refused by gpucnn's pools, as by PyTorch's)",
    r"^test_maxpool_with_argmax_\w+_": "MaxPool's Indices output",
    r"^test_constant_": "a graph without an input (gpucnn models compute outputs from inputs)",
    r"^test_identity_(opt|sequence)_": "optional and sequence types (not tensors)",
}


def _takes(make):
    try:
        make()
        return True
    except (TypeError, ValueError, AttributeError):
        return False


#: test name pattern -> the layer option it needs, while gpucnn's layers lack that option (other issues add them)
PENDING = {
    r"^test_maxpool_2d_(same_lower|same_upper|precomputed_same_upper)_":
        ("asymmetric MaxPool2D padding", lambda: L.MaxPool2D(2, padding=((0, 1), (0, 1)))),
    r"^test_averagepool_2d_(same_lower|same_upper|precomputed_same_upper)_":
        ("asymmetric AvgPool2D padding", lambda: L.AvgPool2D(2, padding=((0, 1), (0, 1)))),
    r"^test_maxpool_2d_ceil_": ("MaxPool2D(ceil_mode=True)", lambda: L.MaxPool2D(2, ceil_mode=True)),
    r"^test_averagepool_2d_ceil_": ("AvgPool2D(ceil_mode=True)", lambda: L.AvgPool2D(2, ceil_mode=True)),
    r"^test_maxpool_2d_dilations_": ("MaxPool2D(dilation=2)", lambda: L.MaxPool2D(2, dilation=2)),
    r"^test_averagepool_2d_dilations_": ("AvgPool2D(dilation=2)", lambda: L.AvgPool2D(2, dilation=2)),
    r"^test_averagepool_2d_(precomputed_pads|same_lower|same_upper|precomputed_same_upper)_":
        ("AvgPool2D(count_include_pad=False)", lambda: L.AvgPool2D(3, padding=1, count_include_pad=False)),
    r"^test_globalmaxpool_(precomputed_)?": ("a GlobalMaxPool2D layer", lambda: L.GlobalMaxPool2D()),
}
EXCLUDED.update({pattern: f"needs {what}, which gpucnn's layers lack yet" for pattern, (what, make) in PENDING.items()
                 if not _takes(make)})


#: the ops whose node tests run: Shape, Gather and Unsqueeze are followed only as the shape arithmetic before a
#: Reshape (gpucnn/io/onnx_shape_ops.py), not imported as layers
IMPORTED_OPS = set(OPS) - {"Shape", "Gather", "Unsqueeze"}


def supported_node_tests():
    """The names of ONNX's node tests whose graphs hold only ops that gpucnn imports."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generator's own overflow warnings (Cast cases)
        cases = load_model_tests(kind="node")
    return sorted(case.name for case in cases if {n.op_type for n in case.model.graph.node} <= IMPORTED_OPS)


SUPPORTED = supported_node_tests()


def _node_test_class():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner = BackendTest(GpucnnBackend, __name__)
    for name in SUPPORTED:
        runner.include(rf"^{re.escape(name)}_(cpu|cuda)$")
    cls = runner.test_cases["OnnxBackendNodeModelTest"]
    wanted = re.compile("|".join(rf"^{re.escape(name)}_(cpu|cuda)$" for name in SUPPORTED))
    for attr in [a for a in vars(cls) if a.startswith("test_")]:
        reasons = [why for pattern, why in EXCLUDED.items() if excluded(pattern, attr)]
        if not wanted.match(attr):
            delattr(cls, attr)  # the node tests of other ops: not collected at all
        elif reasons:
            setattr(cls, attr, unittest.skip(f"excluded: {reasons[0]}")(getattr(cls, attr)))
    return cls


def excluded(pattern, test):
    """Whether ``pattern`` (up to the device suffix) names the whole test name ``test``."""
    return re.match(rf"{pattern}(cpu|cuda)$", test) is not None


OnnxBackendNodeModelTest = _node_test_class()


def test_the_exclusions_name_real_tests():
    for pattern in EXCLUDED:
        assert any(excluded(pattern, f"{name}_cpu") for name in SUPPORTED), pattern


def test_run_model_and_supports_device():
    proto = gpucnn.onnx.to_onnx(gpucnn.models.lenet5(rng=0), (1, 28, 28))
    x = numpy.random.default_rng(0).random((2, 1, 28, 28), dtype=numpy.float32)
    (y,) = GpucnnBackend.run_model(proto, x)
    assert y.dtype == numpy.float32 and y.shape == (2, 10)
    numpy.testing.assert_allclose(y, gpucnn.onnx.load(proto).predict(x), rtol=1e-6)
    assert gpucnn.onnx.backend is GpucnnBackend
    assert GpucnnBackend.supports_device("CPU")
    assert GpucnnBackend.supports_device("CUDA") == (backend.gpu_unavailable_reason() is None)
