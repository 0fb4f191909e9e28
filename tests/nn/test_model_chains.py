"""Inside a Model, consecutive one-input layers run as one chain (a Sequential) on the reference path; the CPU fast
path plans the whole graph (its chains as any chain): the same numbers as the reference path."""
import numpy

import gpucnn
from gpucnn.nn.resnet import basic_block, resnet8


def test_a_block_runs_its_main_path_as_one_chain_and_its_joins_alone():
    block = basic_block(3, 8, 2, (6, 6), rng=0)
    main, shortcut, add, relu = block.steps
    assert [type(layer).__name__ for layer in main.runner.layers] == ["Conv2D", "BatchNorm2D", "ReLU", "Conv2D",
                                                                      "BatchNorm2D"]
    assert shortcut.runner is dict(block.named_children())["shortcut"]  # a node of its own: a Sequential the user made
    assert [type(add.runner).__name__, type(relu.runner).__name__] == ["Add", "ReLU"]


def test_the_fast_path_gives_the_reference_paths_numbers_for_a_resnet():
    x = numpy.random.default_rng(0).standard_normal((4, 1, 28, 28))
    g = numpy.random.default_rng(1).standard_normal((4, 10))
    results = {}
    for path in ("reference", "fast"):
        gpucnn.config.path = path
        model = resnet8(in_channels=1, input_size=28, dtype=numpy.float64, rng=0)
        y = model.forward(x)
        grad_x = model.backward(g)
        results[path] = (y, grad_x, [p.grad.copy() for p in model.parameters()])
    (y_ref, gx_ref, grads_ref), (y_fast, gx_fast, grads_fast) = results["reference"], results["fast"]
    numpy.testing.assert_allclose(y_fast, y_ref, rtol=1e-10)
    numpy.testing.assert_allclose(gx_fast, gx_ref, rtol=1e-9, atol=1e-12)
    largest = max(float(numpy.abs(q).max()) for q in grads_ref)
    for p, q in zip(grads_fast, grads_ref):
        numpy.testing.assert_allclose(p, q, rtol=0, atol=1e-9 * largest)


def test_verify_mode_checks_the_models_graph(monkeypatch):
    """The fast path runs the whole graph (gpucnn/compile/cpu/graph_runner.py); verify mode holds it against the
    reference path's step."""
    monkeypatch.setattr(gpucnn.config, "path", "fast")
    monkeypatch.setattr(gpucnn.config, "verify", "raise")
    model = resnet8(in_channels=1, input_size=12, rng=0)
    x = numpy.random.default_rng(0).standard_normal((3, 1, 12, 12)).astype(numpy.float32)
    y = model.forward(x)
    model.backward(numpy.ones_like(y))
    assert model._fast is not None and model._fast.verified == {((3, 1, 12, 12),)}
