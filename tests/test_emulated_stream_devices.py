"""The emulated streams, events, graphs and memory pool belong to a device, as CuPy's and CUDA's do
(tests/support/emulated_streams.py, tests/support/emulated_pool.py).

CuPy's own check (cupy/cuda/stream.pyx, ``check_stream_device_match``, called by ``_BaseStream.__enter__``
and ``_BaseStream.use``) raises RuntimeError('The device that the stream is created on (0) does not match
with the current device (1)'); CuPy keeps the current stream per device; what CUDA refuses across devices
(recording an event of one device on a stream of another, launching a graph into another device's stream)
raises CUDARuntimeError here. A stream made on device 0 and entered under device 1 is what
``GraphStep.__init__`` did for a model on cuda:1 (tests/fused/test_devices.py).
"""
import numpy
import pytest

from support.emulated_cupy import to_host

pytestmark = [pytest.mark.kernels, pytest.mark.graph]

MISMATCH = r"^The device that the stream is created on \(0\) does not match with the current device \(1\)$"


def test_a_stream_made_on_one_device_cannot_be_entered_or_used_on_another(gpu):
    cp = gpu.cupy
    stream = cp.cuda.Stream(non_blocking=True)  # device 0 is current
    assert stream.device_id == 0 and cp.cuda.Stream.null.device_id == -1
    with cp.cuda.Device(1):
        with pytest.raises(RuntimeError, match=MISMATCH):
            with stream:
                pass
        with pytest.raises(RuntimeError, match=MISMATCH):
            stream.use()
        assert cp.cuda.get_current_stream() is cp.cuda.Stream.null  # nothing was pushed
        with cp.cuda.Stream.null:  # the null stream is every device's
            pass
        with cp.cuda.Stream() as mine:
            assert mine.device_id == 1 and cp.cuda.get_current_stream() is mine
    with stream:
        assert cp.cuda.get_current_stream() is stream


def test_the_current_stream_is_kept_per_device(gpu):
    cp = gpu.cupy
    with cp.cuda.Device(1):
        stream = cp.cuda.Stream(non_blocking=True)
    with cp.cuda.Device(1), stream:
        assert cp.cuda.get_current_stream() is stream
        with cp.cuda.Device(0):
            assert cp.cuda.get_current_stream() is cp.cuda.Stream.null
        assert cp.cuda.get_current_stream(1) is stream and cp.cuda.get_current_stream(0) is cp.cuda.Stream.null
    with cp.cuda.Device(1):
        assert cp.cuda.get_current_stream() is cp.cuda.Stream.null
        stream.use()
        assert cp.cuda.get_current_stream() is stream
    assert cp.cuda.get_current_stream() is cp.cuda.Stream.null  # device 0's is untouched


def test_events_and_graphs_belong_to_a_device(gpu):
    cp = gpu.cupy
    errors = cp.cuda.runtime.CUDARuntimeError
    with cp.cuda.Device(1):
        x = cp.asarray(numpy.ones(4))
        stream = cp.cuda.Stream(non_blocking=True)
        event = cp.cuda.Stream.null.record()  # an event of device 1 on device 1's legacy stream
        stream.wait_event(event)
        with stream:
            (x * 2.0).sum()  # warm the pool
            stream.begin_capture()
            x *= 2.0
            graph = stream.end_capture()
    other = cp.cuda.Stream(non_blocking=True)  # device 0
    other.wait_event(event)  # CUDA lets a stream wait for another device's event
    with pytest.raises(errors, match="cudaErrorInvalidResourceHandle"):
        other.record(event)
    with pytest.raises(errors, match="cudaErrorInvalidResourceHandle"):
        event.record()  # on device 0's current stream
    with pytest.raises(errors, match="captured on device 1"):
        graph.launch(other)
    with pytest.raises(errors, match="captured on device 1"):
        graph.launch()  # device 0's current stream
    with cp.cuda.Device(1):
        graph.launch(stream)
        with stream:
            graph.launch()
    stream.synchronize()  # CUDA synchronises with another device's stream
    numpy.testing.assert_array_equal(to_host(x), 4.0)  # two launches of x *= 2


def test_the_pool_keeps_its_blocks_per_device(gpu):
    cp = gpu.cupy
    pool = cp.cuda.MemoryPool()
    with cp.cuda.using_allocator(pool.malloc):
        with cp.cuda.Device(1):
            a = cp.zeros(256)
        del a  # a free block of device 1
        grown = pool.grown
        b = cp.zeros(256)  # device 0 cannot take it
        assert pool.grown == grown + 1
        with cp.cuda.Device(1):
            c = cp.zeros(256)  # device 1 can
        assert pool.grown == grown + 1
    del b, c
    assert pool.used_bytes() == 0
