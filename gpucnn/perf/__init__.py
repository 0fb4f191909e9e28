"""A performance model of one training step that needs no GPU (``gpucnn bench --estimate``).

- ``gpus``: NVIDIA's published figures of the GPUs modelled, with their sources, and the occupancy rules;
- ``resources``: registers, static shared memory and the FFMA share of each kernel's inner loop
  (ptxas and SASS, via nvcc or NVRTC, cached);
- ``launches``: every launch of the eager and the graph step of a model, written from what the launchers do
  (their own grid arithmetic);
- ``roofline``: the estimated time of each launch and of the step;
- ``host``: the Python side of ``loader.launch`` timed on this CPU, the device work left out.

Every figure it produces is an estimate.
"""
