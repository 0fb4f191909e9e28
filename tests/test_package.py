"""What `import gpucnn` gives: the subpackages on first use, one version."""
import configparser
import fnmatch
import os
import subprocess
import sys

import gpucnn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_subpackages_are_reachable_from_the_top():
    code = ("import gpucnn, sys; assert 'gpucnn.onnx' not in sys.modules and 'onnx' not in sys.modules; "
            "print(gpucnn.data.load_fashion_mnist.__name__, gpucnn.train.fit.__name__, "
            "gpucnn.functional.softmax.__name__, sorted(gpucnn.commands.SUBCOMMANDS))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.startswith("load_fashion_mnist fit softmax ['bench', 'doctor', 'export', 'import', 'report', 'train']")
    assert {"data", "train", "onnx", "commands"} <= set(dir(gpucnn))


def test_the_version_is_written_once():
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    assert config["metadata"]["version"] == "attr: gpucnn.__version__"
    assert gpucnn.__version__.count(".") == 2


def test_every_kernel_file_is_declared_package_data():
    """A non-editable install (pip install .) carries only the files that setup.cfg declares."""
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    patterns = [p.strip() for p in config["options.package_data"]["gpucnn"].split(",")]
    kernels = os.listdir(os.path.join(ROOT, "gpucnn", "kernels"))
    assert kernels
    for name in kernels:
        assert any(fnmatch.fnmatch(f"kernels/{name}", pattern) for pattern in patterns), name
