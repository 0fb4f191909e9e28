"""gpucnn.ops.OP_INDEX, the index of every op's implementations: every name exists, every kernel is defined
in its file and launched by the launcher named beside it, and the package docstring is the index's text."""
import ast
import importlib
import pathlib
import re

import pytest

import gpucnn.ops as ops

ROOT = pathlib.Path(ops.__file__).resolve().parents[2]
OPS = sorted(ops.OP_INDEX)
NAME_FIELDS = ("reference", "cuda_launcher", "cpu_fast_stage", "graph_stage", "graph_launcher", "twin")
KERNEL_FIELDS = ("kernel", "graph_kernel")
ALL_FIELDS = [key for key, _ in ops.FIELDS]


def _module_file(dotted):
    """(module name, its file, the attribute path after it) for the longest module prefix of ``dotted``."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:cut])
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return ".".join(parts[:cut]), path, parts[cut:]
    raise AssertionError(f"{dotted}: no module file under {ROOT}")


def _imports_cupy(tree):
    return any(isinstance(node, (ast.Import, ast.ImportFrom)) and (
        any(a.name.split(".")[0] == "cupy" for a in node.names) if isinstance(node, ast.Import)
        else (node.module or "").split(".")[0] == "cupy") for node in tree.body)


def _defined_in_source(tree, attrs):
    """True when ``attrs`` (a name, then a method) is a top-level def/class/assignment, read with ast."""
    body = tree.body
    for depth, name in enumerate(attrs):
        found = None
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                found = node
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found = node
        if found is None or (depth < len(attrs) - 1 and not isinstance(found, ast.ClassDef)):
            return False
        body = getattr(found, "body", [])
    return True


def _names(field):
    return [(op, name) for op in OPS for name in ops.OP_INDEX[op][field]]


@pytest.mark.parametrize("op", OPS)
def test_every_entry_has_every_field(op):
    entry = ops.OP_INDEX[op]
    assert set(entry) == {"what"} | set(ALL_FIELDS), op
    assert entry["reference"], f"{op}: every op has a reference"
    for key in NAME_FIELDS + KERNEL_FIELDS:
        assert isinstance(entry[key], list) and all(isinstance(v, str) for v in entry[key]), (op, key)
    assert isinstance(entry["note"], str) and isinstance(entry["what"], str)


@pytest.mark.parametrize("op,name", [pair for field in NAME_FIELDS for pair in _names(field)])
def test_every_named_python_object_exists(op, name):
    module_name, path, attrs = _module_file(name)
    assert attrs, f"{op}: {name} names a module, not an object in it"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    assert _defined_in_source(tree, attrs), f"{op}: {'.'.join(attrs)} is not defined in {path}"
    if _imports_cupy(tree):
        return  # a CUDA launcher module: read, not imported (it imports CuPy at import time)
    obj = importlib.import_module(module_name)
    for attr in attrs:
        obj = getattr(obj, attr)
    assert callable(obj), f"{op}: {name} is not callable"


def _kernel_file_and_name(entry):
    file, _, function = entry.partition(":")
    return ROOT / file, function


@pytest.mark.parametrize("op,kernel", [pair for field in KERNEL_FIELDS for pair in _names(field)])
def test_every_kernel_function_is_defined_in_its_file(op, kernel):
    path, function = _kernel_file_and_name(kernel)
    assert path.suffix in (".cu", ".cuh") and path.is_file(), f"{op}: {path} is not a kernel file"
    pattern = rf"(?:__global__|inline)\s+[\w:<>]+\s+{re.escape(function)}\s*\("
    assert re.search(pattern, path.read_text(encoding="utf-8")), f"{op}: no {function}( defined in {path}"


@pytest.mark.parametrize("op,field,launchers", [
    (op, field, launchers) for op in OPS
    for field, launchers in (("kernel", "cuda_launcher"), ("graph_kernel", "graph_launcher"))])
def test_every_cu_kernel_is_launched_by_a_launcher_named_beside_it(op, field, launchers):
    sources = {_module_file(name)[1].read_text(encoding="utf-8") for name in ops.OP_INDEX[op][launchers]}
    for kernel in ops.OP_INDEX[op][field]:
        path, function = _kernel_file_and_name(kernel)
        if path.suffix == ".cu":
            assert any(f'"{function}"' in source for source in sources), \
                f"{op}: none of {ops.OP_INDEX[op][launchers]} launches {kernel}"


def test_the_docstring_is_the_index_text():
    assert ops.index_text() in ops.__doc__
    for op in OPS:
        assert re.search(rf"^{op}: ", ops.__doc__, re.M), f"the docstring does not list {op}"


def test_the_docstring_lists_every_op_of_the_issue():
    wanted = {"conv2d_forward", "conv2d_weight_grad", "conv2d_input_grad", "max_pool2d", "avg_pool2d", "linear",
              "activations", "batch_norm", "softmax_cross_entropy", "optimizer_updates", "multi_tensor_updates"}
    assert wanted <= set(ops.OP_INDEX)


def test_conv2d_is_reached_in_four_files_from_the_index():
    """README -> gpucnn/ops/__init__.py -> at most four files for Conv2D's forward, backward, NumPy
    reference, kernel, CPU fast stage and graph stage (each field's first name; five files opened after
    the README)."""
    files = set()
    for op in ("conv2d_forward", "conv2d_weight_grad", "conv2d_input_grad"):
        entry = ops.OP_INDEX[op]
        files |= {_module_file(entry[field][0])[1] for field in ("reference", "cpu_fast_stage", "graph_stage")}
        files.add(_kernel_file_and_name(entry["kernel"][0])[0])
    assert len(files) <= 4, sorted(str(f.relative_to(ROOT)) for f in files)
