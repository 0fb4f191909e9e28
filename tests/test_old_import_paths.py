"""The module paths users import from before the re-layout keep working (gpucnn.MOVED), as the same objects."""
import importlib
import subprocess
import sys

import pytest

import gpucnn


@pytest.mark.parametrize("old", sorted(gpucnn.MOVED))
def test_every_moved_module_imports_by_its_old_name_as_the_same_module(old):
    new = importlib.import_module(f"gpucnn.{gpucnn.MOVED[old]}")
    assert importlib.import_module(f"gpucnn.{old}") is new
    assert getattr(gpucnn, old) is new
    assert new.__spec__.name == new.__name__  # relative imports inside it still resolve from its real place


def test_the_users_import_lines_of_the_readme_work_in_a_fresh_interpreter():
    code = ("import gpucnn, gpucnn.losses, gpucnn.onnx\n"
            "from gpucnn.layers import Conv2D, MaxPool2D, ReLU, Flatten, Dense\n"
            "from gpucnn.layers.conv import Conv2D as C\n"
            "from gpucnn.train import evaluate, fit\n"
            "from gpucnn.data import load_fashion_mnist\n"
            "from gpucnn.models import fashion_cnn\n"
            "from gpucnn.optim import Adam, StepLR\n"
            "from gpucnn.fast import runner_for\n"
            "from gpucnn.architecture import build\n"
            "assert C is Conv2D and gpucnn.compile_step and gpucnn.Sequential\n"
            "print(gpucnn.functional.softmax.__module__, gpucnn.gradcheck.check_layer.__module__)\n")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["gpucnn.nn.functional", "gpucnn.nn.gradcheck"]


def test_a_name_that_never_existed_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("gpucnn.layers.no_such_module")
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        gpucnn.nonsense
