#!/usr/bin/env python3
"""Attack a real training checkpoint and count what gpucnn does with each bad file.

    python scripts/checkpoint_attack.py            # every byte flipped, every crafted case
    python scripts/checkpoint_attack.py --stride 13 # every 13th byte (what the tests run)

A small model (conv, dropout, dense; Adam and StepLR) trains one epoch and writes a
checkpoint. Each attack writes a damaged or crafted copy and loads it into a fresh model
and optimizer. For each it records: refused with a CheckpointError naming the file, loaded
(only acceptable when the result equals the good file's), or escaped as another exception;
and whether the model, optimizer, schedule and RNGs were left bitwise unchanged after a refusal.
"""
import argparse
import copy
import io
import json
import os
import struct
import sys
import tempfile
import zipfile

import numpy

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gpucnn  # noqa: E402
from gpucnn.io.arrays import CheckpointError, load_arrays, save_arrays  # noqa: E402
from gpucnn.nn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU  # noqa: E402
from gpucnn.nn.losses import SoftmaxCrossEntropy  # noqa: E402
from gpucnn.optim.optimizers import Adam, StepLR  # noqa: E402
from gpucnn.train.loop import fit  # noqa: E402
from gpucnn.train.checkpoint import load_training_checkpoint  # noqa: E402


def toy_data(n=48, seed=0):
    rng = numpy.random.default_rng(seed)
    return rng.random((n, 1, 8, 8), dtype=numpy.float32), rng.integers(0, 4, n)


def toy_setup(seed=0):
    """(model, optimizer, schedule): the fresh objects each attack loads into."""
    model = gpucnn.Sequential([Conv2D(1, 4, 3, padding="same", rng=seed), ReLU(), MaxPool2D(2), Flatten(),
                               Dropout(0.2, rng=seed), Dense(64, 4, rng=seed)])
    opt = Adam(model.parameters(), lr=1e-2)
    return model, opt, StepLR(opt, step_size=2, gamma=0.5)


def write_good_checkpoint(path):
    model, opt, sched = toy_setup()
    x, y = toy_data()
    fit(model, SoftmaxCrossEntropy(), opt, x, y, 1, batch_size=16, scheduler=sched, seed=3, progress=False,
        checkpoint=path)


def snapshot(model, opt, sched):
    """Everything a load may change, as bytes and plain values: equal snapshots mean bitwise unchanged."""
    state = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in model.named_state().items()}
    opt_state = [{k: (v.tobytes() if hasattr(v, "tobytes") else v) for k, v in s.items()} for s in opt.state]
    hyper = {k: v for k, v in vars(opt).items() if k not in ("params", "state", "param_groups")}
    hyper["param_groups"] = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    rngs = [json.dumps(layer.rng.bit_generator.state, default=str) for layer in model.layers if hasattr(layer, "rng")]
    return state, opt_state, hyper, (sched.base_lr, sched.last_epoch), rngs


def rewrite(good, path, arrays=None, meta=None, drop=(), raw_meta=None):
    """Copy the good checkpoint to ``path`` with arrays/meta entries replaced or dropped."""
    a, m = load_arrays(good)
    a.update(arrays or {})
    m.update(meta or {})
    for key in drop:
        a.pop(key, None)
        m.pop(key, None)
    if raw_meta is None:
        save_arrays(path, a, m)
        return
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__meta__.npy", npy_bytes(numpy.frombuffer(raw_meta, dtype=numpy.uint8)))
        for k, v in a.items():
            z.writestr(k + ".npy", npy_bytes(v))


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def npy_bytes(array):
    buf = io.BytesIO()
    numpy.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def huge_header_file(path, shape, name="model.0.weight"):
    """A zip whose member declares ``shape`` float32 but carries only a few bytes of data."""
    header = numpy.lib.format.header_data_from_array_1_0(numpy.zeros(1, numpy.float32))
    header["shape"] = shape
    buf = io.BytesIO()
    numpy.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        if name != "__meta__":
            z.writestr("__meta__.npy", npy_bytes(numpy.frombuffer(b'{"format": "gpucnn.training/1"}', numpy.uint8)))
        z.writestr(name + ".npy", buf.getvalue() + b"\0" * 64)


def inflating_file(good, path, declared_bytes):
    """The good checkpoint with model.0.weight replaced by a small deflated member that inflates to
    ``declared_bytes`` of zeros (the wrong shape for the model)."""
    header = numpy.lib.format.header_data_from_array_1_0(numpy.zeros(1, numpy.float32))
    header["shape"] = (declared_bytes // 4,)
    buf = io.BytesIO()
    numpy.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for info in source.infolist():
            if info.filename != "model.0.weight.npy":
                z.writestr(info.filename, source.read(info))
        with z.open("model.0.weight.npy", "w", force_zip64=True) as member:
            member.write(buf.getvalue())
            chunk = bytes(1 << 20)
            for _ in range(declared_bytes >> 20):
                member.write(chunk)


def patch_zip_field(good, path, local_offset, central_offset, fmt, value):
    """Copy with one field of every local and central zip header set to ``value``."""
    data = bytearray(read_bytes(good))
    for signature, offset in ((b"PK\x03\x04", local_offset), (b"PK\x01\x02", central_offset)):
        start = data.find(signature)
        while start != -1:
            struct.pack_into(fmt, data, start + offset, value)
            start = data.find(signature, start + 4)
    with open(path, "wb") as f:
        f.write(bytes(data))


def crafted_cases(good, workdir, bomb_mib=1024):
    """(label, path) of every crafted bad file; each is unusable and must be refused."""
    def p(name):
        return os.path.join(workdir, name)

    a, m = load_arrays(good)
    w = a["model.0.weight"]
    cases = []

    def case(label, **kwargs):
        path = p(label.replace(" ", "_") + ".npz")
        rewrite(good, path, **kwargs)
        cases.append((label, path))

    case("nan weight", arrays={"model.0.weight": numpy.full_like(w, numpy.nan)})
    case("inf bias", arrays={"model.0.bias": numpy.full_like(a["model.0.bias"], numpy.inf)})
    case("nan optimizer state", arrays={"optimizer.0.exp_avg": numpy.full_like(w, numpy.nan)})
    case("lossy float64", arrays={"model.0.weight": w.astype(numpy.float64) + 1e-12})
    case("weight wrong shape", arrays={"model.0.weight": numpy.zeros((4, 1, 2, 2), numpy.float32)})
    case("integer weight", arrays={"model.0.weight": numpy.zeros(w.shape, numpy.int32)})
    case("optimizer state wrong shape", arrays={"optimizer.0.exp_avg": numpy.zeros((3,), numpy.float32)})
    case("optimizer unknown key", arrays={"optimizer.0.extra": numpy.zeros(w.shape, numpy.float32)})
    case("missing optimizer state", drop=("optimizer.0.exp_avg_sq",))
    case("missing weight", drop=("model.5.weight",))
    case("unknown weight", arrays={"model.9.weight": numpy.zeros(3, numpy.float32)})
    opt = m["optimizer"]
    case("optimizer missing lr", meta={"optimizer": {k: v for k, v in opt.items() if k != "lr"}})
    case("optimizer lr string", meta={"optimizer": {**opt, "lr": "fast"}})
    case("optimizer lr nan", meta={"optimizer": {**opt, "lr": float("nan")}})
    case("optimizer steps short", meta={"optimizer": {**opt, "steps": opt["steps"][:-1]}})
    case("optimizer steps negative", meta={"optimizer": {**opt, "steps": [-1] * len(opt["steps"])}})
    case("optimizer betas bad", meta={"optimizer": {**opt, "hyper": {**opt["hyper"], "betas": [2, 0.9]}}})
    case("optimizer unknown hyper", meta={"optimizer": {**opt, "hyper": {"gamma": 1}}})
    case("optimizer meta not object", meta={"optimizer": [1, 2]})
    case("optimizer other type", meta={"optimizer": {**opt, "type": "SGD"}})
    case("schedule missing", meta={"scheduler": None})
    case("schedule malformed", meta={"scheduler": {"base_lr": "x", "last_epoch": 1}})
    case("schedule negative epoch", meta={"scheduler": {**m["scheduler"], "last_epoch": -3}})
    case("schedule other type", meta={"scheduler": {**m["scheduler"], "type": "CosineAnnealingLR"}})
    case("epoch string", meta={"epoch": "1"})
    case("step negative", meta={"step": -1})
    case("step past the epoch", meta={"step": 99})
    case("history missing", meta={"history": None})
    case("history wrong length", meta={"history": {**m["history"], "loss": [1.0, 2.0, 3.0]}})
    case("history strings", meta={"history": {**m["history"], "loss": ["a"]}})
    case("partial malformed", meta={"partial": {"loss_sum": "x"}})
    case("shuffling state missing", drop=("batches",))
    case("shuffling state malformed", meta={"batches": {**m["batches"], "state": {"state": "zz", "inc": "1"}}})
    case("shuffling other generator", meta={"batches": {**m["batches"], "bit_generator": "MT19937"}})
    case("layer rng malformed", meta={"layer_rngs": {"4": {"bit_generator": "PCG64", "state": {}}}})
    case("layer rng for a layer without one", meta={"layer_rngs": {"0": m["layer_rngs"]["4"]}})
    case("other batch size", meta={"batch_size": 32})
    case("other data-set size", meta={"num_samples": 4800})
    case("format other", meta={"format": "something/9"})
    case("meta is a list", raw_meta=b"[1, 2, 3]")
    case("meta is a string", raw_meta=b'"hello"')
    case("meta deeply nested", raw_meta=b"[" * 200000 + b"]" * 200000)
    case("meta not utf-8", raw_meta=b"\xff\xfe{}")
    case("meta not json", raw_meta=b"{nope")

    def raw(label, data):
        path = p(label.replace(" ", "_") + ".npz")
        with open(path, "wb") as f:
            f.write(data)
        cases.append((label, path))

    good_bytes = read_bytes(good)
    raw("text file", b"epoch,loss\n1,0.5\n" * 20)
    raw("random bytes", numpy.random.default_rng(0).bytes(4096))
    raw("one byte", b"P")
    raw("empty file", b"")
    raw("bare npy", npy_bytes(numpy.zeros(3)))
    raw("raw pickle", b"\x80\x04\x95" + bytes(20))
    for cut in (10, 30, 100, len(good_bytes) // 2, len(good_bytes) - 22, len(good_bytes) - 1):
        raw(f"truncated at {cut}", good_bytes[:cut])
    os.makedirs(p("a_directory.npz"), exist_ok=True)
    cases.append(("directory", p("a_directory.npz")))
    patch_zip_field(good, p("encrypted.npz"), 6, 8, "<H", 0x1)
    cases.append(("zip encrypted flag", p("encrypted.npz")))
    patch_zip_field(good, p("bzip2.npz"), 8, 10, "<H", 12)
    cases.append(("zip bzip2 compression", p("bzip2.npz")))
    patch_zip_field(good, p("method99.npz"), 8, 10, "<H", 99)
    cases.append(("zip unknown compression", p("method99.npz")))
    huge_header_file(p("huge.npz"), (2 ** 40,))
    cases.append(("declares 4 TiB array", p("huge.npz")))
    huge_header_file(p("huge_meta.npz"), (2 ** 40,), name="__meta__")
    cases.append(("declares 4 TiB metadata", p("huge_meta.npz")))
    if bomb_mib:
        inflating_file(good, p("bomb.npz"), bomb_mib << 20)
        cases.append((f"{os.path.getsize(p('bomb.npz')) >> 10} KiB inflating to {bomb_mib} MiB", p("bomb.npz")))
    pickled = p("object_member.npz")
    with zipfile.ZipFile(pickled, "w") as z:
        z.writestr("__meta__.npy", npy_bytes(numpy.frombuffer(b"{}", numpy.uint8)))
        buf = io.BytesIO()
        numpy.save(buf, numpy.array([{"a": 1}], dtype=object), allow_pickle=True)
        z.writestr("model.0.weight.npy", buf.getvalue())
    cases.append(("object member (pickle)", pickled))
    return cases


def try_load(path):
    """('refused' | 'loaded' | 'escaped: <type>', message, unchanged-after-failure, loaded-equals-good)."""
    model, opt, sched = copy.deepcopy(_trained_target())
    before = snapshot(model, opt, sched)
    try:
        load_training_checkpoint(path, model, opt, sched, check=_same_run_check(path))
    except CheckpointError as exc:
        named = os.path.basename(path) in str(exc)
        return "refused" if named else "refused without naming the file", str(exc), \
            snapshot(model, opt, sched) == before, None
    except Exception as exc:  # noqa: BLE001 - counted and reported, that is the point
        return f"escaped: {type(exc).__name__}", str(exc)[:200], snapshot(model, opt, sched) == before, None
    return "loaded", "", None, snapshot(model, opt, sched)


_TARGET = []


def _trained_target():
    """(model, optimizer, schedule) after one epoch of their own: state that a failed load must not touch.
    Trained once; each attack loads into a deep copy."""
    if not _TARGET:
        model, opt, sched = toy_setup(seed=7)
        x, y = toy_data()
        fit(model, SoftmaxCrossEntropy(), opt, x, y, 1, batch_size=16, scheduler=sched, seed=5, progress=False)
        _TARGET.append((model, opt, sched))
    return _TARGET[0]


def _same_run_check(path):
    from gpucnn.train.checkpoint import same_run_check
    from gpucnn.data.batches import BatchIterator
    x, y = toy_data()
    batches = BatchIterator(x, y, 16)
    return same_run_check(path, 16, len(batches), batches)


def attack(workdir, stride=1, verbose=False, bomb_mib=1024):
    """Run every attack; returns the tallies and the list of outcomes that are not clean refusals."""
    good = os.path.join(workdir, "good.npz")
    write_good_checkpoint(good)
    _, _, _, good_state = try_load(good)
    tallies = {"tried": 0, "refused clearly": 0, "unchanged after refusal": 0, "loaded intact": 0}
    problems = []
    cases = crafted_cases(good, workdir, bomb_mib)
    data = read_bytes(good)
    flipped = os.path.join(workdir, "flipped.npz")
    flips = range(0, len(data), stride)
    for label, path in cases + [(f"byte {i} flipped", i) for i in flips]:
        if isinstance(path, int):
            damaged = bytearray(data)
            damaged[path] ^= 0xFF
            with open(flipped, "wb") as f:
                f.write(damaged)
            path = flipped
        outcome, message, unchanged, loaded = try_load(path)
        tallies["tried"] += 1
        if outcome == "refused":
            tallies["refused clearly"] += 1
            tallies["unchanged after refusal"] += bool(unchanged)
            if not unchanged:
                problems.append((label, "refused but changed the model", message))
        elif outcome == "loaded" and label.startswith("byte") and loaded == good_state:
            tallies["loaded intact"] += 1  # a flip in a field nothing reads (a timestamp): harmless
        else:
            problems.append((label, outcome, message))
        if verbose:
            print(f"{label:40} {outcome:10} {message[:110]}")
    tallies["crafted cases"] = len(cases)
    tallies["byte flips"] = len(flips)
    tallies["file bytes"] = len(data)
    return tallies, problems


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stride", type=int, default=1, help="flip every N-th byte (default: %(default)s)")
    p.add_argument("--bomb-mib", type=int, default=1024,
                   help="size a small deflated member inflates to (default: %(default)s)")
    p.add_argument("--verbose", action="store_true", help="print every case and its message")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        tallies, problems = attack(workdir, args.stride, args.verbose, args.bomb_mib)
    for key, value in tallies.items():
        print(f"{key:26} {value}")
    for label, outcome, message in problems:
        print(f"PROBLEM {label}: {outcome}: {message}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
