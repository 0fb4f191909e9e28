"""CuPy launchers of gpucnn's own CUDA kernels (gpucnn/kernels/*.cu).

``gpucnn.ops.conv``, ``gpucnn.ops.pool`` and ``gpucnn.ops.update`` hand CuPy arrays to
the modules here (``conv``, ``pool``, ``update``), which take the same arguments and
return the same results as the NumPy reference. Those modules import CuPy; this package
itself imports nothing, so ``import gpucnn.ops.cuda`` is harmless without CuPy.
"""
