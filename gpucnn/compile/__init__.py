"""The fast paths beside the readable ops: ``cpu`` (threads, a channel-major layout) and
``cuda_graph`` (the whole training step as one CUDA graph on fused kernels)."""
