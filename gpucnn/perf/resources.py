"""Registers, static shared memory and the FFMA share of the inner loop of each of our kernels, without a GPU.

For one GPU architecture (sm_80, sm_90) every kernel file's float32 / 32-bit-index instantiations (what a
float32 model launches) are compiled the way tests/kernels/test_compile.py compiles them: by nvcc
(``-cubin -Xptxas -v``, a wrapper that includes the .cu file and takes the address of every name
expression of gpucnn/ops/cuda/loader.py), or, where nvcc is missing, by NVRTC from the installed CuPy
(``--ptxas-options=-v``, the same source text and options as cupy.RawModule). ptxas's report gives the
registers per thread and the static shared memory per block.

The FFMA share comes from the SASS (``cuobjdump -sass`` of the cubin; cuobjdump and the nvdisasm it runs
are looked up on PATH and in the pip packages nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm): a loop is a
backward branch (``BRA`` to a lower address), the innermost loops are those that contain no other loop,
and the share is FFMA instructions / all instructions of the innermost loop with the most FFMAs. Every
innermost loop with FFMAs is kept too (``loops``: FFMA, LDS, LDG and instruction counts): a fused GEMM kernel
holds one k-loop per tile shape (GPUCNN_GEMM_TILE_TABLE), and the roofline takes the launched tile's. Where
no SASS can be had the share is ``None`` and the roofline uses its fixed, documented share.

Results are cached as JSON per (architecture, kernel sources, compiler), in $GPUCNN_ESTIMATE_CACHE or
~/.cache/gpucnn/estimate; nothing here needs a GPU, CuPy is needed only for the NVRTC path.
"""
import concurrent.futures
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile

from ..ops.cuda import loader

__all__ = ["kernel_resources", "parse_ptxas", "parse_sass", "expression_of", "find_tool", "cache_dir",
           "instantiations"]

_CTYPES = {"f": "float", "d": "double", "i": "int", "x": "long long"}


def cache_dir():
    default = os.path.join(os.path.expanduser("~"), ".cache", "gpucnn", "estimate")
    return os.environ.get("GPUCNN_ESTIMATE_CACHE") or default


def find_tool(name):
    """The path of ``name`` (cuobjdump, nvdisasm, nvcc): on PATH, else in a pip-installed nvidia/*/bin; or None."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia  # the namespace package of NVIDIA's pip wheels (nvidia-cuda-cuobjdump, ...)
        roots = list(nvidia.__path__)
    except ImportError:
        return None
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "*", "bin", name))):
            if os.access(path, os.X_OK):
                return path
    return None


def instantiations(file):
    """The name expressions a float32 model launches from ``file``: float, with 32-bit indices."""
    return loader.name_expressions(file, "float", "int")


def expression_of(mangled):
    """'conv_fwd_fused<float>' from '_Z14conv_fwd_fusedIfEv...', 'im2col<float, int>' from '_Z6im2colIfiEv...'."""
    m = re.match(r"_Z(\d+)", mangled)
    if not m:
        return None
    start = m.end()
    name = mangled[start:start + int(m.group(1))]
    rest = mangled[start + int(m.group(1)):]
    t = re.match(r"I([fdix]+)E", rest)
    if not t:
        return None
    return f"{name}<{', '.join(_CTYPES[c] for c in t.group(1))}>"


def parse_ptxas(log):
    """{mangled kernel name: {'registers': int, 'smem': int}} from a ptxas -v report."""
    out, current = {}, None
    for line in log.splitlines():
        entry = re.search(r"Compiling entry function '([^']+)'", line)
        if entry:
            current = entry.group(1)
            out[current] = {"registers": None, "smem": 0}
            continue
        used = re.search(r"Used (\d+) registers", line)
        if used and current is not None:
            out[current]["registers"] = int(used.group(1))
            smem = re.search(r"(\d+) bytes smem", line)
            out[current]["smem"] = int(smem.group(1)) if smem else 0
    return out


def _instructions(body):
    """[(address, opcode, text)] of one function's SASS listing."""
    out = []
    for line in body.splitlines():
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+([^;]*);", line)
        if not m:
            continue
        text = m.group(2).strip()
        tokens = text.split()
        if tokens and tokens[0].startswith("@"):
            tokens = tokens[1:]
        if tokens:
            out.append((int(m.group(1), 16), tokens[0], text))
    return out


def innermost_loops(instructions):
    """[{'ffma', 'lds', 'ldg', 'instructions', 'share', 'range'}] of the innermost loops that hold FFMAs, in
    address order (a kernel with several tile shapes or instantiations has one k-loop each)."""
    loops = []
    for address, opcode, text in instructions:
        if opcode.split(".")[0] in ("BRA", "JMP"):
            target = re.search(r"0x([0-9a-f]+)", text.split(opcode, 1)[1])
            if target and int(target.group(1), 16) < address:
                loops.append((int(target.group(1), 16), address))
    innermost = [(lo, hi) for lo, hi in loops
                 if not any((lo2, hi2) != (lo, hi) and lo <= lo2 and hi2 <= hi for lo2, hi2 in loops)]
    out = []
    for lo, hi in sorted(innermost):
        body = [opcode.split(".")[0] for address, opcode, _ in instructions if lo <= address <= hi]
        ffma = body.count("FFMA")
        if ffma:
            out.append({"ffma": ffma, "lds": body.count("LDS"), "ldg": body.count("LDG"), "instructions": len(body),
                        "share": ffma / len(body), "range": [hex(lo), hex(hi)]})
    return out


def _inner_loop(instructions):
    """The innermost loop with the most FFMAs (the first of equals), or None."""
    best = None
    for loop in innermost_loops(instructions):
        if best is None or loop["ffma"] > best["ffma"]:
            best = loop
    return best


def parse_sass(listing, every_loop=False):
    """{mangled kernel name: inner-loop dict or None} from ``cuobjdump -sass`` output; with ``every_loop``,
    {name: innermost_loops(...)} instead."""
    out = {}
    for part in re.split(r"\n\s*Function : ", "\n" + listing)[1:]:
        name = part.split("\n", 1)[0].strip()
        instructions = _instructions(part)
        out[name] = innermost_loops(instructions) if every_loop else _inner_loop(instructions)
    return out


def _wrapper_source(file):
    refs = ",\n    ".join(f"(const void*)&{expr}" for expr in instantiations(file))
    return f'#include "{file}"\nconst void* gpucnn_estimate_kernels[] = {{\n    {refs}\n}};\n'


def _sass(cubin_path):
    cuobjdump = find_tool("cuobjdump")
    if cuobjdump is None:
        return None, "no cuobjdump"
    env = dict(os.environ)
    nvdisasm = find_tool("nvdisasm")
    if nvdisasm is not None:
        env["PATH"] = os.path.dirname(nvdisasm) + os.pathsep + env.get("PATH", "")
    done = subprocess.run([cuobjdump, "-sass", cubin_path], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        return None, f"cuobjdump failed: {(done.stderr or done.stdout).strip()[-200:]}"
    return done.stdout, "cuobjdump -sass"


def _compile_nvcc(nvcc, file, arch, work):
    wrapper = os.path.join(work, f"estimate_{file}")
    with open(wrapper, "w", encoding="utf-8") as f:
        f.write(_wrapper_source(file))
    cubin = os.path.join(work, f"{file}.{arch}.cubin")
    cmd = [nvcc, "-std=c++17", f"-arch={arch}", "-cubin", "-Xptxas", "-v", "-I", loader.KERNELS_DIR, wrapper,
           "-o", cubin]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"nvcc failed for {file} {arch}: {(done.stderr or done.stdout).strip()[-400:]}")
    return done.stdout + done.stderr, cubin


def _compile_nvrtc(file, arch, work):
    from cupy_backends.cuda.libs import nvrtc  # the NVRTC binding of the installed CuPy (no GPU needed)

    program = nvrtc.createProgram(loader.kernel_source(file), file, [], [])
    try:
        for expression in instantiations(file):
            nvrtc.addNameExpression(program, expression)
        options = list(loader.compile_options()) + [f"-arch={arch}", "--ptxas-options=-v",
                                                    "--device-as-default-execution-space", "-ftz=true"]
        nvrtc.compileProgram(program, options)
        log = nvrtc.getProgramLog(program)
        cubin = os.path.join(work, f"{file}.{arch}.cubin")
        with open(cubin, "wb") as f:
            f.write(nvrtc.getCUBIN(program))
    finally:
        nvrtc.destroyProgram(program)
    return log, cubin


def _compiler():
    """('nvcc', path, version) or ('nvrtc', None, version) or None."""
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        done = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
        lines = done.stdout.strip().splitlines() or ["?"]
        return "nvcc", nvcc, next((line for line in lines if "release" in line), lines[-1]).strip()
    try:
        from cupy_backends.cuda.libs import nvrtc
        return "nvrtc", None, "NVRTC %d.%d" % nvrtc.getVersion()
    except Exception:  # noqa: BLE001 - no CuPy, or no loadable libnvrtc: the resources are unknown
        return None


def _file_resources(compiler, file, arch, work):
    kind, path, _ = compiler
    log, cubin = _compile_nvcc(path, file, arch, work) if kind == "nvcc" else _compile_nvrtc(file, arch, work)
    ptxas = parse_ptxas(log)
    listing, how = _sass(cubin)
    loops = parse_sass(listing, every_loop=True) if listing is not None else {}
    out = {}
    for mangled, used in ptxas.items():
        expression = expression_of(mangled)
        if expression is None:
            continue
        every = loops.get(mangled) or []
        best = max(every, key=lambda loop: loop["ffma"], default=None)  # the first of equals
        out[expression] = {"registers": used["registers"], "smem": used["smem"], "inner_loop": best,
                           "loops": every, "sass": how,
                           "compiler": "nvcc -Xptxas -v" if kind == "nvcc" else "NVRTC --ptxas-options=-v"}
    return out


def _cache_key(arch, compiler):
    digest = hashlib.sha256(f"loops\0{arch}\0{compiler[0]}\0{compiler[2]}\0{find_tool('cuobjdump')}\0".encode())
    for file in sorted(loader.SIGNATURES):
        digest.update(file.encode() + b"\0" + loader.kernel_source(file).encode() + b"\0")
    return digest.hexdigest()[:20]


def kernel_resources(arch, use_cache=True):
    """({name expression: {'registers', 'smem', 'inner_loop', 'sass', 'compiler'}}, note) for every kernel file's
    float32 instantiations on ``arch``; ({}, why) when neither nvcc nor NVRTC is there (resources 'unknown')."""
    compiler = _compiler()
    if compiler is None:
        return {}, "neither nvcc nor CuPy's NVRTC is available: registers and shared memory unknown"
    path = os.path.join(cache_dir(), f"resources-{arch}-{_cache_key(arch, compiler)}.json")
    if use_cache and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f), f"{compiler[2]} (cached: {path})"
    out = {}
    with tempfile.TemporaryDirectory(prefix="gpucnn-estimate-") as work:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for part in pool.map(lambda file: _file_resources(compiler, file, arch, work), sorted(loader.SIGNATURES)):
                out.update(part)
    if use_cache:
        os.makedirs(cache_dir(), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    return out, compiler[2]
