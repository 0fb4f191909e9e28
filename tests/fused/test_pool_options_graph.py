"""The graph step refuses the pooling options its fused kernels do not take, naming the layer and the option
(fit then trains eagerly, gpucnn/train/graph_step.py); the default geometry and a Conv2D's unequal 'same'
padding at stride 1 still capture as before."""
import pytest

from gpucnn.compile.cuda_graph.plan import take
from gpucnn.compile.plan import plan
from gpucnn.nn.layers import AvgPool2D, Conv2D, MaxPool2D

REFUSED = [
    (lambda: MaxPool2D(2, dilation=2), "dilation"),
    (lambda: MaxPool2D(3, 2, ceil_mode=True), "ceil_mode=True"),
    (lambda: MaxPool2D(2, 2, ((0, 1), (0, 1))), "asymmetric padding"),
    (lambda: MaxPool2D(3, 2, "same"), "padding='same' at a stride above 1"),
    (lambda: AvgPool2D(3, 2, 1, count_include_pad=False), "count_include_pad=False"),
    (lambda: AvgPool2D(2, ceil_mode=True), "ceil_mode=True"),
    (lambda: Conv2D(1, 1, 3, stride=2, padding="same"), "padding='same' at a stride above 1"),
]


@pytest.mark.parametrize("build, option", REFUSED, ids=[o for _, o in REFUSED])
def test_the_planner_refuses_naming_layer_and_option(build, option):
    layer = build()
    with pytest.raises(NotImplementedError) as info:
        plan([layer], take, 4)
    message = str(info.value)
    assert f"layer 0 ({layer!r}) has {option}" in message and "eager" in message and "\n" not in message


@pytest.mark.parametrize("layer", [MaxPool2D(2), AvgPool2D(3, 1, 1), Conv2D(1, 1, 2, padding="same")], ids=repr)
def test_the_default_geometry_is_still_planned(layer):
    assert plan([layer], take, 4)[0].match is not None


# compile_step's refusal on the emulated GPU, and fit's fallback: tests/fused/test_pool_padding_graph.py
