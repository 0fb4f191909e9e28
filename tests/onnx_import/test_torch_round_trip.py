"""PyTorch -> ONNX (torch.onnx.export, opset 17) -> gpucnn.onnx.load: the same outputs as PyTorch."""
import io
import warnings

import numpy
import pytest

import gpucnn

from .support import assert_close

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install 'gpucnn[onnx]')")
torch = pytest.importorskip("torch")
nn = torch.nn


def lenet5():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.Tanh(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                         nn.Linear(84, 10))


def fashion_cnn():
    """gpucnn's reference network (gpucnn.models.fashion_cnn) in PyTorch."""
    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
                         nn.Linear(128, 10))


class BasicBlock(nn.Module):
    """A ResNet basic block (He et al.) with a projection shortcut, as torchvision writes it."""

    def __init__(self, cin=4, cout=8, stride=2):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class SmallNet(nn.Module):
    """Each op PyTorch writes that gpucnn reads: padded, strided, dilated, grouped convolutions, both pools, a
    global average pool, LeakyReLU, Sigmoid, Dropout, concatenation, BatchNorm1d, Softmax."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, stride=2, padding=1, dilation=1, groups=3)
        self.c2 = nn.Conv2d(6, 6, 3, padding=2, dilation=2)
        self.pool_max, self.pool_avg = nn.MaxPool2d(3, stride=2, padding=1), nn.AvgPool2d(2)
        self.drop, self.bn = nn.Dropout(0.2), nn.BatchNorm1d(12)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        h = nn.functional.leaky_relu(self.c1(x), 0.1)
        h = torch.cat([torch.sigmoid(self.c2(h)), h], dim=1)
        h = self.pool_avg(self.pool_max(h))
        h = torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)
        return torch.softmax(self.fc(self.bn(self.drop(h))), dim=1)


class ViewNet(nn.Module):
    """``x.view(x.size(0), -1)``: with a dynamic batch PyTorch writes Shape, Gather, Unsqueeze, Concat, Reshape."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(2, 4, 3), nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def exported(module, shape, **options):
    """The ONNX bytes of ``module`` (eval mode, moved BatchNorm statistics), dynamic batch, opset 17."""
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(module, torch.zeros((2,) + shape), buffer, opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **options)
    return buffer.getvalue()


CASES = {
    "lenet5": (lenet5, (1, 28, 28), {}),
    "fashion_cnn": (fashion_cnn, (1, 28, 28), {}),
    "basic_block": (BasicBlock, (4, 10, 10), {}),
    # BatchNormalization kept as a node (not folded into the convolutions): gpucnn's BatchNorm2D
    "basic_block_bn": (BasicBlock, (4, 10, 10), {"training": torch.onnx.TrainingMode.PRESERVE,
                                                 "do_constant_folding": False}),
    "small_net": (SmallNet, (3, 16, 16), {}),
    "view_flatten": (ViewNet, (2, 8, 8), {}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_gpucnn_gives_pytorchs_outputs(name):
    make, shape, options = CASES[name]
    torch.manual_seed(1)
    module = make()
    data = exported(module, shape, **options)
    model = gpucnn.onnx.load(data)
    x = numpy.random.default_rng(2).standard_normal((5,) + shape).astype(numpy.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    for batch in (5, 1):  # the batch is dynamic
        assert_close(model.predict(x[:batch]), want[:batch], 1e-5)
    if name == "basic_block_bn":
        assert sum(type(layer).__name__ == "BatchNorm2D" for layer in model.leaf_layers()) == 3
    ops = {node.op_type for node in onnx.load_model_from_string(data).graph.node}
    assert ops <= set(gpucnn.io.onnx_ops.OPS)
    if name == "view_flatten":
        assert {"Shape", "Gather", "Unsqueeze", "Reshape"} <= ops
        assert [type(layer).__name__ for layer in model.leaf_layers()] == ["Conv2D", "ReLU", "Flatten", "Dense"]


def test_pytorchs_names_are_in_the_state_dict():
    model = gpucnn.onnx.load(exported(BasicBlock(), (4, 10, 10), training=torch.onnx.TrainingMode.PRESERVE,
                                      do_constant_folding=False))
    keys = set(model.state_dict())
    assert {"conv1_Conv.weight", "bn1_BatchNormalization.running_mean", "shortcut_shortcut_0_Conv.weight"} <= keys


def test_a_float64_import_of_pytorch_agrees_to_float64_rounding():
    torch.manual_seed(1)
    module = lenet5()
    model = gpucnn.onnx.load(exported(module, (1, 28, 28)), dtype=numpy.float64)
    x = numpy.random.default_rng(2).standard_normal((3, 1, 28, 28))
    with torch.no_grad():
        want = module.double()(torch.from_numpy(x)).numpy()
    assert_close(model.predict(x), want, 1e-12)


@pytest.mark.parametrize("name", ["lenet5", "basic_block_bn"])
def test_the_gradients_of_an_import_are_pytorchs_in_float64(name):
    """Trainable as imported: dL/dx and every parameter's gradient equal PyTorch's (eval mode, float64)."""
    make, shape, options = CASES[name]
    torch.manual_seed(1)
    module = make()
    model = gpucnn.onnx.load(exported(module, shape, **options), dtype=numpy.float64)
    module.double()
    rng = numpy.random.default_rng(4)
    x = rng.standard_normal((3,) + shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    g = rng.standard_normal(tuple(ty.shape))
    ty.backward(torch.from_numpy(g))
    y = model.forward(x)
    grad_x = model.backward(g)
    assert_close(y, ty.detach().numpy(), 1e-12)
    assert_close(grad_x, tx.grad.numpy(), 1e-10)
    theirs = [p for p in module.parameters()]
    assert [p.data.shape for p in model.parameters()] == [tuple(p.shape) for p in theirs]
    for mine, their in zip(model.parameters(), theirs):
        assert_close(mine.grad, their.grad.numpy(), 1e-10)
