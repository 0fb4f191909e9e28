"""gpucnn.data.transforms on the emulated CuPy: the NumPy result bit for bit, the output a device array,
no read-back to the host, and one host-to-device copy per transform and batch."""
import numpy
import pytest

from gpucnn import backend
from gpucnn.data.transforms import Compose, Normalize, RandomCrop, RandomErasing, RandomHorizontalFlip
from support.emulated_cupy import DEVICE_OPS, DeviceArray, to_host

pytestmark = pytest.mark.kernels


def transforms(seed):
    return {
        "crop-zeros": RandomCrop(10, padding=2, seed=seed),
        "crop-reflect": RandomCrop((9, 8), padding=(1, 2), padding_mode="reflect", seed=seed),
        "flip": RandomHorizontalFlip(seed=seed),
        "erase": RandomErasing(p=0.8, value=(0.5, -1, 2), seed=seed),
        "erase-random": RandomErasing(p=0.8, value="random", seed=seed),
        "normalize": Normalize((0.1, 0.2, 0.3), (0.5, 1.5, 2.5)),
        "compose": Compose([RandomCrop(10, padding=2, padding_mode="reflect"), RandomHorizontalFlip(),
                            RandomErasing(p=0.5), Normalize(0.5, 0.25)], seed=seed),
    }


@pytest.mark.parametrize("name", list(transforms(0)))
@pytest.mark.parametrize("dtype", [numpy.float32, numpy.float64])
def test_the_emulated_gpu_gives_the_numpy_result_bit_for_bit(gpu, name, dtype):
    x = numpy.random.default_rng(1).standard_normal((16, 3, 10, 10)).astype(dtype)
    on_cpu, on_gpu = transforms(4)[name], transforms(4)[name]
    xd = backend.to_device(x, "cuda")
    gpu.syncs.reset()
    for _ in range(3):  # three batches: the generators advance alike
        expected = on_cpu(x)
        got = on_gpu(xd)
        assert type(got) is DeviceArray and got.dtype == dtype
        numpy.testing.assert_array_equal(to_host(got), expected)
    assert gpu.syncs.events == []  # no read-back
    assert on_cpu.rng.bit_generator.state == on_gpu.rng.bit_generator.state


def test_parameters_reach_the_device_in_one_copy_per_array(gpu):
    xd = backend.to_device(numpy.zeros((8, 1, 6, 6), numpy.float32), "cuda")
    crop = RandomCrop(6, padding=1, seed=0)
    DEVICE_OPS.reset()
    crop(xd)
    copies = [op for op in DEVICE_OPS.names if "copy to the device" in op]
    assert len(copies) == 1, DEVICE_OPS.names  # the (n, 2) corners; aranges are made on the device
