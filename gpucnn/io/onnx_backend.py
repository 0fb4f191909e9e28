"""``gpucnn.onnx.backend``: gpucnn as an ONNX backend (``onnx.backend.base.Backend``), so that ONNX's own test
runner, ``onnx.backend.test.BackendTest``, runs its node tests against gpucnn (tests/onnx_import/test_backend.py).

    rep = gpucnn.onnx.backend.prepare(model_proto, "CPU")
    outputs = rep.run([x])                       # or gpucnn.onnx.backend.run_model(model_proto, [x])

``prepare`` imports the graph with ``gpucnn.onnx.load`` (gpucnn/io/onnx_import.py) in the graph input's
precision (float or double) and puts the model in eval mode. ONNX's node tests feed a node's weights as
graph inputs; gpucnn holds them as parameters, so the inputs that the nodes read as parameters (a Conv's
W, a Gemm's B and C...) are bound as constants when ``run`` receives them, and the model is built then.
"""
import numpy
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from ..backend import asnumpy, gpu_unavailable_reason, to_device
from .onnx_import import FLOAT_TYPES, OnnxImportError, build, parameter_inputs

__all__ = ["GpucnnBackend", "GpucnnBackendRep"]


def _device_name(device):
    return "cpu" if Device(device).type == DeviceType.CPU else f"cuda:{Device(device).device_id or 0}"


class GpucnnBackendRep(BackendRep):
    """A prepared model: ``run(inputs)`` returns its outputs as NumPy arrays of the graph's element types."""

    def __init__(self, proto, device="CPU"):
        self.proto, self.device = proto, _device_name(device)
        graph = proto.graph
        constants = {init.name for init in graph.initializer}
        self.input_names = [v.name for v in graph.input if v.name not in constants]
        self.bound = [name for name in parameter_inputs(proto) if name in self.input_names]
        self.data_names = [name for name in self.input_names if name not in self.bound]
        types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
        floats = [types[name] for name in self.data_names if types[name] in FLOAT_TYPES]
        self.dtype = numpy.dtype(FLOAT_TYPES[floats[0]] if floats else numpy.float32)
        self.output_types = [v.type.tensor_type.elem_type for v in graph.output]
        self.model = None if self.bound else self._build({})  # refused ops are refused here, at prepare

    def _build(self, bound):
        model = build(self.proto, self.dtype, bound)
        return model.to(self.device).eval()

    def run(self, inputs, **kwargs):
        arrays = list(inputs.values()) if isinstance(inputs, dict) else \
            list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if len(arrays) != len(self.input_names):
            raise ValueError(f"gpucnn backend: the model takes {len(self.input_names)} inputs "
                             f"({', '.join(self.input_names)}), got {len(arrays)}")
        named = dict(zip(self.input_names, arrays))
        model = self.model or self._build({name: named[name] for name in self.bound})
        data = [to_device(numpy.asarray(named[name]).astype(self.dtype, copy=False), self.device)
                for name in self.data_names]
        outputs = model.forward(data if len(data) > 1 else data[0])
        outputs = outputs if isinstance(outputs, list) else [outputs]
        return tuple(asnumpy(y).astype(onnx.helper.tensor_dtype_to_np_dtype(t), copy=False)
                     for y, t in zip(outputs, self.output_types))


class GpucnnBackend(Backend):
    """gpucnn behind ONNX's backend interface: ``prepare``, ``run_model`` (the base class's: prepare, then
    run) and ``supports_device`` ('CPU' always, 'CUDA' where a GPU is usable)."""

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        super().prepare(model, device, **kwargs)  # onnx.checker
        try:
            return GpucnnBackendRep(model, device)
        except OnnxImportError:
            raise
        except (TypeError, ValueError) as exc:
            raise OnnxImportError(f"gpucnn.onnx.backend: {exc}") from None

    @classmethod
    def supports_device(cls, device):
        kind = Device(device).type
        return kind == DeviceType.CPU or (kind == DeviceType.CUDA and gpu_unavailable_reason() is None)
