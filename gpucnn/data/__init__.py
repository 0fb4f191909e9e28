"""Data sets and mini-batches: IDX reading, MNIST / Fashion-MNIST loading, batch iteration."""
from .batches import BatchIterator, iterate_batches
from .datasets import DataNotFoundError, load_fashion_mnist, load_mnist
from .idx import CorruptDataError, read_idx

__all__ = ["read_idx", "load_fashion_mnist", "load_mnist", "iterate_batches", "BatchIterator",
           "DataNotFoundError", "CorruptDataError"]
