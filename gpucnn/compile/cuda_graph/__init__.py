"""The fast path: the whole training step as one CUDA graph, on fused kernels.

``reference`` holds the NumPy twins of the fused kernels (composed from the readable ops);
the launchers are ``gpucnn.compile.cuda_graph.launch``.
"""
