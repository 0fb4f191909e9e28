"""Data parallelism for fit(): every rank holds the whole model and trains on its shard of each batch.

What each rank does, around fit's own loop:

- start: rank 0's weights (parameters and buffers) are broadcast, so all ranks begin equal;
  the ranks check that they resumed at the same place;
- every step: each rank takes its contiguous shard of the global batch (the global batch size
  and the shuffling, seeded the same on every rank, do not depend on the rank count); after
  backward the gradients, weighted by shard size over batch size, are copied into one flat
  buffer per dtype and summed over ranks in one all-reduce: the sum is the gradient of the
  global batch's mean loss, the same update single-process training makes;
- BatchNorm's batch statistics are per rank (each normalises its shard with its own mean and
  variance, as PyTorch's DistributedDataParallel without SyncBatchNorm); its running statistics
  are averaged over ranks at the end of every epoch, so that all ranks hold the same model;
- epoch totals (loss, correct count, images) and the validation results are summed over ranks;
  the validation set is sharded too, each rank evaluating its part.
"""
from ..backend import device_of, device_scope, get_array_module

__all__ = ["DataParallel"]


class DataParallel:
    """The per-step hooks fit() calls when ``distributed`` is set.

    Args:
        comm: a Communicator (``gpucnn.distributed.init()``).
        model: the Sequential every rank trains; its parameters stay where they are.
        batch_size, num_samples: of the global batches, to check that every rank gets samples.
    """

    def __init__(self, comm, model, batch_size, num_samples):
        self.comm, self.model = comm, model
        rest = num_samples % batch_size
        if batch_size < comm.size or 0 < rest < comm.size:
            raise ValueError(f"distributed training over {comm.size} ranks needs at least {comm.size} samples in "
                             f"every global batch; batch size {batch_size} over {num_samples} samples "
                             + (f"leaves a last batch of {rest}" if batch_size >= comm.size else "is too small"))
        self._params = model.parameters()
        self._flats = {}  # (device, dtype) -> the flat buffer, reused every step
        self._weight = 1.0

    @property
    def is_root(self):
        return self.comm.is_root

    def start(self, start_epoch, skip_steps):
        """Broadcast rank 0's weights; check that every rank resumed at the same epoch and step."""
        first = self.comm.sum_over_ranks(start_epoch, skip_steps, 1.0 if self.comm.is_root else 0.0)
        if first[:2] != (start_epoch * self.comm.size, skip_steps * self.comm.size):
            raise ValueError(f"rank {self.comm.rank} resumed at epoch {start_epoch + 1}, step {skip_steps}, and "
                             f"not every rank did: all ranks must read the same checkpoint file (put it on a file "
                             f"system they share)")
        self._broadcast_all([p.data for p in self._params])
        buffers = self._buffers()
        if buffers:
            self._broadcast_all(buffers)

    def shard(self, xb, yb):
        """This rank's contiguous part of the global batch (xb, yb); remembers its share for the gradients."""
        total = len(xb)
        lo, hi = self.comm.rank * total // self.comm.size, (self.comm.rank + 1) * total // self.comm.size
        self._weight = (hi - lo) / total
        return xb[lo:hi], yb[lo:hi]

    def average_gradients(self):
        """grad <- sum over ranks of (shard size / batch size) * grad: one all-reduce per dtype bucket."""
        for arrays, flat in _buckets([p.grad for p in self._params], self._flats):
            _pack(arrays, flat)
            with device_scope(flat):
                flat *= flat.dtype.type(self._weight)
            self.comm.all_reduce_sum(flat)
            _unpack(flat, arrays)

    def end_epoch(self, loss_sum, correct, seen, seen_now):
        """Average BatchNorm running statistics over ranks; returns the epoch's totals (loss sum, correct
        count, images, images this run) summed over ranks."""
        buffers = self._buffers()
        if buffers:
            for arrays, flat in _buckets(buffers):
                _pack(arrays, flat)
                with device_scope(flat):
                    flat *= flat.dtype.type(1.0 / self.comm.size)
                self.comm.all_reduce_sum(flat)
                _unpack(flat, arrays)
        loss_sum, correct, seen, seen_now = self.comm.sum_over_ranks(loss_sum, correct, seen, seen_now)
        return loss_sum, round(correct), round(seen), round(seen_now)

    def shard_validation(self, validation):
        """This rank's contiguous part of the validation set (x, y)."""
        if validation is None:
            return None
        x, y = validation
        if len(x) < self.comm.size:
            raise ValueError(f"a validation set of {len(x)} samples cannot be shared by {self.comm.size} ranks")
        lo, hi = self.comm.rank * len(x) // self.comm.size, (self.comm.rank + 1) * len(x) // self.comm.size
        return x[lo:hi], y[lo:hi]

    def reduce_evaluation(self, result, count):
        """evaluate()'s result on this rank's ``count`` samples -> the result over all ranks' samples."""
        correct = round(result["accuracy"] * count)  # the exact correct count behind the fraction
        loss_sum = result.get("loss", 0.0) * count
        loss_sum, correct, total = self.comm.sum_over_ranks(loss_sum, correct, count)
        reduced = dict(result, accuracy=correct / total)
        if "loss" in result:
            reduced["loss"] = loss_sum / total
        return reduced

    def _buffers(self):
        return [getattr(layer, name) for layer in self.model.leaf_layers() for name in layer.buffer_names]

    def _broadcast_all(self, arrays):
        for group, flat in _buckets(arrays):
            if self.comm.is_root:
                _pack(group, flat)
            self.comm.broadcast(flat, root=0)
            _unpack(flat, group)


def _buckets(arrays, flats=None):
    """[(arrays, flat buffer)]: one contiguous buffer per (device, dtype), on that device, taken from
    ``flats`` (a dict kept between calls) when it holds one of the right size."""
    groups = {}
    for a in arrays:
        groups.setdefault((device_of(a), a.dtype.str), []).append(a)
    flats = {} if flats is None else flats
    buckets = []
    for key, group in groups.items():
        size = sum(a.size for a in group)
        if key not in flats or flats[key].size != size:
            with device_scope(group[0]):
                flats[key] = get_array_module(group[0]).empty(size, dtype=group[0].dtype)
        buckets.append((group, flats[key]))
    return buckets


def _pack(arrays, flat):
    offset = 0
    with device_scope(flat):
        for a in arrays:
            flat[offset:offset + a.size] = a.reshape(-1)
            offset += a.size


def _unpack(flat, arrays):
    offset = 0
    with device_scope(flat):
        for a in arrays:
            a[...] = flat[offset:offset + a.size].reshape(a.shape)
            offset += a.size
