"""Models against their PyTorch twins in float64: the loss, every gradient and one Adam step (relative 1e-10),
and state_dicts both ways (the twin's attribute names are gpucnn's dotted names)."""
import numpy
import pytest

import gpucnn
from gpucnn.nn.layers import BatchNorm2D, Concatenate, Conv2D, Dense, Flatten, GlobalAvgPool2D, ReLU
from gpucnn.nn.losses import SoftmaxCrossEntropy
from gpucnn.nn.resnet import basic_block, resnet8
from gpucnn.compile.verify import relative_error
from gpucnn.optim import Adam

torch = pytest.importorskip("torch")
nn = torch.nn
F64 = numpy.float64


class TorchBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class TorchResNet(nn.Module):
    def __init__(self, blocks, cin, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        channels = 16
        for stage, width in enumerate((16, 32, 64), start=1):
            layers = []
            for i in range(blocks):
                layers.append(TorchBlock(channels, width, 2 if stage > 1 and i == 0 else 1))
                channels = width
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.layer3(self.layer2(self.layer1(h)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


class TorchConcatBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        h = torch.cat([torch.relu(self.bn1(self.conv1(x))), x], dim=1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def gpucnn_concat_block():
    x = gpucnn.Input((2, 6, 6), dtype=F64)
    h = ReLU()(BatchNorm2D(3, dtype=F64, name="bn1")(Conv2D(2, 3, 3, padding=1, dtype=F64, rng=0, name="conv1")(x)))
    h = Concatenate(axis=1)([h, x])
    return gpucnn.Model(x, Dense(5, 4, dtype=F64, rng=1, name="fc")(Flatten()(GlobalAvgPool2D()(h))))


CASES = {
    "basic block with a projection": (lambda: basic_block(3, 8, 2, (6, 6), dtype=F64, rng=0),
                                      lambda: TorchBlock(3, 8, 2), (4, 3, 6, 6), None),
    "resnet8": (lambda: resnet8(in_channels=3, num_classes=10, input_size=12, dtype=F64, rng=0),
                lambda: TorchResNet(1, 3, 10), (4, 3, 12, 12), 10),
    "a block with Concatenate": (gpucnn_concat_block, TorchConcatBlock, (4, 2, 6, 6), 4),
}


def _to_torch(model, twin):
    missing, unexpected = twin.load_state_dict({k: torch.from_numpy(numpy.array(v)) for k, v in
                                                model.state_dict().items()}, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)


def _rel(a, b, floor=0.0):
    """The verifier's rule; ``floor``: a gradient that is zero in exact arithmetic (a bias before BatchNorm) is
    rounding noise on both sides, measured against the model's largest gradient."""
    return relative_error(a, b, scale_floor=floor)


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_gradients_and_one_adam_step_match_pytorch(case):
    build, build_twin, shape, classes = CASES[case]
    model, twin = build(), build_twin().double()
    _to_torch(model, twin)
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal(shape)
    out = model.forward(x)
    labels = rng.integers(0, out.shape[1], shape[0])
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(out.reshape(shape[0], -1) if out.ndim > 2 else out, labels) if classes else None
    t_out = twin(torch.from_numpy(x))
    if classes:
        t_loss = nn.functional.cross_entropy(t_out, torch.from_numpy(labels))
        assert abs(float(loss) - t_loss.item()) <= 1e-10 * abs(t_loss.item())
        grad = loss_fn.backward()
        t_loss.backward()
    else:  # a block alone: a random projection of its output as the loss
        r = rng.standard_normal(out.shape)
        grad = r
        (t_out * torch.from_numpy(r)).sum().backward()
    assert _rel(out, t_out.detach().numpy()) <= 1e-10
    opt = Adam(model.parameters(), lr=1e-2)
    opt.zero_grad()
    model.backward(grad)
    names = [k for k, _ in twin.named_parameters()]
    params = dict(twin.named_parameters())
    largest = max(float(numpy.abs(p.grad.numpy()).max()) for p in params.values())
    for (name, p) in zip(names, model.parameters()):
        assert _rel(p.grad, params[name].grad.numpy(), largest) <= 1e-10, name
    opt.step()
    t_opt = torch.optim.Adam(twin.parameters(), lr=1e-2)
    t_opt.step()
    state = model.state_dict()
    for key, value in twin.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            # floor 1: BatchNorm's weights are 1; Adam turns a bias's rounding-noise gradient (1e-17) into a
            # noise step of up to lr * |g| / eps = 1e-11 on either side
            assert _rel(state[key], value.numpy(), 1.0) <= 1e-10, key


def test_state_dict_both_ways_with_the_pytorch_twin():
    model, twin = resnet8(in_channels=1, input_size=28, dtype=F64, rng=4), TorchResNet(1, 1, 10).double()
    assert set(twin.state_dict()) - set(model.state_dict()) == {k for k in twin.state_dict()
                                                                if k.endswith("num_batches_tracked")}
    missing, unexpected = model.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()}, strict=False)
    assert not missing and all(k.endswith("num_batches_tracked") for k in unexpected)
    x = numpy.random.default_rng(0).standard_normal((2, 1, 28, 28))
    twin.eval()
    numpy.testing.assert_allclose(model.eval().forward(x), twin(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)
    assert model.summary(print_fn=None).total_params == sum(p.numel() for p in twin.parameters())


@pytest.mark.kernels
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_same_on_the_emulated_gpu(gpu, case):
    """The model on the emulated CUDA device (tests/support/emulated_cupy): loss/output and every gradient
    against the PyTorch twin on the CPU, in float64."""
    from support.emulated_cupy import to_host
    build, build_twin, shape, classes = CASES[case]
    model, twin = build(), build_twin().double()
    _to_torch(model, twin)
    model.to("cuda")
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal(shape)
    out = model.forward(gpu.cupy.asarray(x))
    t_out = twin(torch.from_numpy(x))
    assert _rel(to_host(out), t_out.detach().numpy()) <= 1e-10
    r = rng.standard_normal(tuple(out.shape))
    (t_out * torch.from_numpy(r)).sum().backward()
    model.backward(gpu.cupy.asarray(r))
    params = dict(twin.named_parameters())
    largest = max(float(numpy.abs(p.grad.numpy()).max()) for p in params.values())
    for (name, _), p in zip(twin.named_parameters(), model.parameters()):
        assert type(p.data).__module__ != "numpy"
        assert _rel(to_host(p.grad), params[name].grad.numpy(), largest) <= 1e-10, name
