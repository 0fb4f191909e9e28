"""The report's own PNG encoder, figure assembly and SVG charts, against independent readings."""
import base64
import html.parser

import numpy
import pytest

from gpucnn.report import analysis, figures, sections
from gpucnn.report.charts import line_chart, nice_ticks
from gpucnn.report.png import data_uri, encode_png
from support.png import read_png


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (9, 4, 3)])
def test_png_round_trip(shape):
    pixels = numpy.random.default_rng(0).integers(0, 256, shape).astype(numpy.uint8)
    width, height, colour, read = read_png(encode_png(pixels))
    assert (width, height, colour) == (shape[1], shape[0], 0 if len(shape) == 2 else 2)
    assert (read == pixels).all()
    assert base64.b64decode(data_uri(pixels)[len("data:image/png;base64,"):]) == encode_png(pixels)


def test_png_refuses_what_it_cannot_write():
    with pytest.raises(TypeError, match="pixels must be uint8, got float32"):
        encode_png(numpy.zeros((2, 2), numpy.float32))
    with pytest.raises(ValueError, match=r"must be \(H, W\) or \(H, W, 3\), got shape \(2, 2, 4\)"):
        encode_png(numpy.zeros((2, 2, 4), numpy.uint8))
    with pytest.raises(ValueError, match="at least one pixel"):
        encode_png(numpy.zeros((0, 3), numpy.uint8))


@pytest.mark.parametrize("tiles_shape", [(7, 3, 4), (5, 2, 3, 3)])
def test_tile_puts_tile_k_in_row_k_over_columns(tiles_shape):
    tiles = numpy.random.default_rng(1).integers(0, 200, tiles_shape).astype(numpy.uint8)
    grid = figures.tile(tiles, columns=3, pad=2, fill=255)
    n, h, w = tiles_shape[:3]
    rows = -(-n // 3)
    assert grid.shape[:2] == (rows * (h + 2) + 2, 3 * (w + 2) + 2)
    for k in range(n):  # the oracle: each tile where a loop over the grid puts it
        r, c = divmod(k, 3)
        assert (grid[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w] == tiles[k]).all()
    assert (grid[:2] == 255).all() and (grid[:, :2] == 255).all()
    assert (grid[2 + (rows - 1) * (h + 2):, 2 + (n - (rows - 1) * 3) * (w + 2):] == 255).all()  # empty slots


def test_colour_maps_upscaling_and_scaling():
    assert (figures.colormap(numpy.array([0.0, 1.0])) == numpy.array([figures.VIRIDIS[0], figures.VIRIDIS[-1]])).all()
    assert (figures.colormap(numpy.array(0.5), figures.DIVERGING) == figures.DIVERGING[2]).all()
    big = figures.upscale(numpy.arange(4, dtype=numpy.uint8).reshape(1, 2, 2), 3)
    assert big.shape == (1, 6, 6) and (big[0, :3, 3:] == 1).all() and (big[0, 3:, :3] == 2).all()
    unit = figures.to_unit(numpy.array([[1.0, 3.0], [-2.0, 2.0]]), symmetric=True)
    assert numpy.allclose(unit, [[2 / 3, 1.0], [0.0, 1.0]])
    assert numpy.allclose(figures.to_unit(numpy.array([[1.0, 3.0], [5.0, 5.0]])), [[0.0, 1.0], [0.5, 0.5]])


def test_filter_and_feature_grids():
    weight = numpy.random.default_rng(2).normal(size=(8, 1, 3, 3))
    grid = figures.filter_grid(weight, target=12, columns=4)
    assert grid.shape == (2 * 15 + 3, 4 * 15 + 3, 3)
    # the largest |w| of each filter is saturated blue or red, zero would be white
    first = grid[3:15, 3:15]
    assert {tuple(first.reshape(-1, 3)[i]) for i in range(144)} & {figures.DIVERGING[0], figures.DIVERGING[-1]}
    maps = figures.feature_grid(numpy.random.default_rng(3).normal(size=(5, 7, 7)), columns=5, target=14)
    assert maps.shape == (16 + 2, 5 * 16 + 2, 3)


def test_confusion_matrix_and_the_most_confidently_wrong():
    labels = numpy.array([0, 1, 2, 2, 1])
    probs = numpy.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.05, 0.05, 0.9]])
    matrix = analysis.confusion_matrix(labels, probs.argmax(axis=1), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert analysis.confidently_wrong(probs, labels).tolist() == [4, 2]
    assert analysis.class_names("cifar10", 10)[3] == "cat" and analysis.class_names("cifar10", 4) == list("0123")


def test_nice_ticks_cover_the_data():
    for low, high in ((0.847, 1.667), (50.85, 69.06), (1e-4, 1e-3), (2431.0, 2431.0), (0.0, 1.0)):
        ticks = nice_ticks(low, high)
        assert ticks[0] <= low and ticks[-1] >= high and len(ticks) >= 2


class _Svg(html.parser.HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.polylines, self.texts = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "polyline":
            self.polylines.append([tuple(map(float, p.split(","))) for p in dict(attrs)["points"].split()])

    def handle_data(self, data):
        self.texts.append(data)


def test_line_chart_draws_every_point_inside_its_frame():
    svg = _Svg(line_chart([("train", [1, 2, 3], [2.2, 1.0, 0.7]), ("test", [1, 2, 3], [1.3, 0.8, 0.73])],
                          "Loss", "epoch", "cross-entropy", width=400, height=250))
    assert len(svg.polylines) == 2 and all(len(p) == 3 for p in svg.polylines)
    for x, y in sum(svg.polylines, []):
        assert 62 <= x <= 400 - 14 and 28 <= y <= 250 - 44
    assert {"Loss", "train", "test", "epoch", "cross-entropy"} <= set(svg.texts)
    # higher loss is drawn higher (smaller y), later epochs further right
    train = svg.polylines[0]
    assert train[0][1] < train[1][1] < train[2][1] and train[0][0] < train[1][0] < train[2][0]
    assert "no data" in line_chart([], "Empty", "x", "y")


def test_the_curves_draw_the_learning_rate_of_every_step_when_recorded():
    history = {"epoch": [1, 2], "loss": [1.0, 0.5], "accuracy": [0.5, 0.8], "val_loss": [0.9, 0.6],
               "val_accuracy": [0.6, 0.7], "lr": [0.1, 0.01]}
    per_epoch = sections.curves(history)
    assert per_epoch.count("<svg") == 3 and "per step" not in per_epoch
    steps = sections.curves(dict(history, step_lr=list(numpy.linspace(0.1, 0.001, 40))))
    assert steps.count("<svg") == 4 and "Learning rate (per step)" in steps
    assert len(_Svg(steps.split("<svg")[-1]).polylines[0]) == 40
