"""Data sets and mini-batches: IDX reading, MNIST / Fashion-MNIST and CIFAR-10 loading, batch iteration, and
data augmentation on whole batches (gpucnn.data.transforms)."""
from .batches import BatchIterator, iterate_batches
from .cifar import load_cifar10
from .datasets import DataNotFoundError, load_fashion_mnist, load_mnist
from .idx import CorruptDataError, read_idx
from . import transforms

__all__ = ["read_idx", "load_fashion_mnist", "load_mnist", "load_cifar10", "iterate_batches", "BatchIterator",
           "DataNotFoundError", "CorruptDataError", "transforms"]
