"""The emulated CuPy models stream capture as CuPy 14 and the CUDA runtime do (tests/support/emulated_streams.py).

Captured work replays on the buffers it was captured on; what CuPy refuses during a capture
(host reads and writes, synchronisation, cuBLAS, work on another stream, and, by the
emulation's stricter rule, an allocation the warmed pool cannot serve) raises.
"""
import numpy
import pytest

from support.emulated_cupy import to_host

pytestmark = [pytest.mark.kernels, pytest.mark.graph]


def _step(cp, x, out):
    """A little captured step: CuPy elementwise and reduction kernels writing into ``out``."""
    y = cp.maximum(x * 2.0 + 1.0, 0.0)
    out[...] = y.sum(axis=1)


def _capture(cp, function, *args):
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        function(*args)  # warm the pool: capture takes its memory from blocks freed here
        stream.begin_capture()
        function(*args)
        graph = stream.end_capture()
    return stream, graph


def test_replay_recomputes_on_the_captured_buffers(gpu):
    cp = gpu.cupy
    x = cp.asarray(numpy.arange(12.0).reshape(3, 4) - 5)
    out = cp.zeros(3)
    stream, graph = _capture(cp, _step, cp, x, out)
    numpy.testing.assert_array_equal(to_host(out), [0.0, 9.0, 40.0])  # the warm-up's result: capture runs nothing
    assert "cupy.maximum" in graph.captured and "assignment into a device array" in graph.captured
    x[...] = cp.asarray(numpy.ones((3, 4)))  # new inputs in the same buffer
    out.fill(-1.0)
    graph.launch(stream)
    numpy.testing.assert_array_equal(to_host(out), [12.0, 12.0, 12.0])
    assert gpu.streams.GRAPH_LAUNCHES[0] == 1


def test_our_kernel_launches_are_captured_and_replayed(gpu):
    cp = gpu.cupy
    param = cp.asarray(numpy.ones(5))
    grad = cp.asarray(numpy.full(5, 0.5))
    stream, graph = _capture(cp, gpu.update.sgd_update, param, grad, None, 0.1, 0.0, 0.0, False, 0.0, True)
    assert graph.captured == ["kernel sgd_update"]
    numpy.testing.assert_allclose(to_host(param), 0.95)  # the warm-up step; the capture ran nothing
    graph.launch(stream)
    graph.launch(stream)
    numpy.testing.assert_allclose(to_host(param), 0.85)


@pytest.mark.parametrize("read", ["float", "item", "get", "asnumpy", "bool", "tolist"])
def test_host_reads_are_refused_during_capture(gpu, read):
    cp = gpu.cupy
    x = cp.asarray(numpy.ones(3))
    total = x.sum()
    stream = cp.cuda.Stream(non_blocking=True)
    reads = {"float": float, "item": lambda a: a.item(), "get": lambda a: a.get(), "asnumpy": cp.asnumpy,
             "bool": bool, "tolist": lambda a: a.tolist()}
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError, match="capturing, so D2H transfers are disallowed"):
            reads[read](total)
        stream.end_capture()  # CuPy's own check: the capture stays valid


def test_host_writes_are_refused_during_capture(gpu):
    cp = gpu.cupy
    x = cp.zeros(3)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError, match="H2D transfers are disallowed"):
            cp.asarray(numpy.ones(3))
        with pytest.raises(RuntimeError, match="H2D transfers are disallowed"):
            x[...] = numpy.ones(3)
        stream.end_capture()


@pytest.mark.parametrize("sync", ["stream", "device"])
def test_synchronize_invalidates_the_capture(gpu, sync):
    cp = gpu.cupy
    errors = cp.cuda.runtime.CUDARuntimeError
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(errors, match="cudaErrorStreamCaptureUnsupported"):
            stream.synchronize() if sync == "stream" else cp.cuda.Device().synchronize()
        with pytest.raises(errors, match="cudaErrorStreamCaptureInvalidated"):
            stream.end_capture()
    assert not stream.is_capturing()


@pytest.mark.parametrize("call", ["matmul", "operator", "dot", "method", "tensordot"])
def test_cublas_is_refused_during_capture(gpu, call):
    cp = gpu.cupy
    a, b = cp.ones((2, 3)), cp.ones((3, 2))
    calls = {"matmul": lambda: cp.matmul(a, b), "operator": lambda: a @ b, "dot": lambda: cp.dot(a, b),
             "method": lambda: a.dot(b), "tensordot": lambda: cp.tensordot(a, b, axes=1)}
    calls[call]()  # fine outside a capture
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(NotImplementedError, match="cuBLAS API during stream capture"):
            calls[call]()
        stream.end_capture()


def test_allocation_the_pool_cannot_serve_is_refused(gpu):
    cp = gpu.cupy
    x = cp.ones(1000)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(gpu.streams.CaptureAllocationError, match="warm the pool"):
            x * 3.0 + cp.ones(1 << 20)
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Invalidated"):
            stream.end_capture()
        y = x * 3.0  # warm-up: its block returns to the pool when y goes
        del y
        stream.begin_capture()
        y = x * 3.0
        graph = stream.end_capture()
    assert numpy.isnan(to_host(y)).all()  # captured, not run: garbage until the graph runs
    x.fill(2.0)
    graph.launch(stream)
    numpy.testing.assert_array_equal(to_host(y), 6.0)


def test_work_on_another_stream_is_refused_during_capture(gpu):
    cp = gpu.cupy
    x = cp.ones(4)
    (x * 2).sum()
    capturing, other = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
    with capturing:
        capturing.begin_capture()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="cudaErrorStreamCaptureImplicit"):
        x * 2  # the legacy default stream is current here
    with other:
        with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="outside the graph"):
            x.sum()
    with capturing, pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="Invalidated"):
        capturing.end_capture()


def test_capture_api_errors(gpu):
    cp = gpu.cupy
    with pytest.raises(RuntimeError, match="default \\(legacy\\) stream"):
        cp.cuda.Stream.null.begin_capture()
    with pytest.raises(NotImplementedError):
        cp.cuda.Graph()
    stream = cp.cuda.Stream(non_blocking=True)
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="not capturing"):
        stream.end_capture()
    assert cp.cuda.get_current_stream() is cp.cuda.Stream.null
    with stream:
        assert cp.cuda.get_current_stream() is stream


def test_private_pool_serves_the_capture(gpu):
    """Capture into a pool of its own (what compile_step does): its blocks never go to other arrays."""
    cp = gpu.cupy
    pool = cp.cuda.MemoryPool()
    x = cp.ones(64)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream, cp.cuda.using_allocator(pool.malloc):
        (x + 1.0).sum()
        grown = pool.total_bytes()
        stream.begin_capture()
        total = (x + 1.0).sum()
        stream.end_capture()
    assert grown > 0 and pool.total_bytes() == grown and pool.used_bytes() > 0
    del total
    assert pool.used_bytes() == 0 and cp.get_default_memory_pool() is not pool
