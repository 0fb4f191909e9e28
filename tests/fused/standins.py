"""Capture-safe stand-ins for the two pieces the graph step plugs in (test use only).

The real ones (``SoftmaxCrossEntropy.fused`` on gpucnn/kernels/loss.cu, and
gpucnn.compile.cuda_graph.update.MultiTensorUpdate over the multi-tensor optimizer) are compile_step's
defaults; these show that ``loss=`` / ``update=`` still plug in. They are written with
CuPy elementwise and reduction kernels only (no cuBLAS, no host reads), which capture;
their math is the eager path's: gpucnn.losses.SoftmaxCrossEntropy and plain SGD
(gpucnn.optim.SGD without momentum or weight decay).
"""
import numpy


class SoftmaxCrossEntropyStandIn:
    """(mean loss, dL/dlogits, correct count) of softmax cross-entropy, with device labels."""

    def __init__(self, cupy, classes):
        self.cupy = cupy
        self.classes = cupy.arange(classes, dtype=numpy.int64)  # made before capture: a static buffer

    def __call__(self, logits, labels):
        cp = self.cupy
        n = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = cp.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        log_probs = shifted - cp.log(total)
        picked = cp.take_along_axis(log_probs, labels[:, None], axis=1)
        loss = -picked.sum() / n
        onehot = self.classes[None, :] == labels[:, None]
        grad = (exp / total - onehot) / logits.dtype.type(n)
        correct = (logits.argmax(axis=1) == labels).sum()
        return loss, grad.astype(logits.dtype), correct


class SGDStandIn:
    """p -= lr * g for every parameter, lr in a device buffer (a new lr needs no new capture)."""

    def __init__(self, cupy, optimizer, dtype):
        self.cupy = cupy
        self.lr = cupy.zeros(1, dtype=dtype)
        self.sync_from(optimizer)

    def sync_from(self, optimizer):
        self.lr.fill(optimizer.lr)

    def __call__(self, params, grads):
        for p, g in zip(params, grads):
            p -= self.lr * g
