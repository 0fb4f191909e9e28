"""Support shared by the test modules (nothing here is collected as tests).

- emulated_cupy/: a stand-in CuPy over NumPy, an emulated CUDA device (conftest's ``gpu`` fixture);
- emulated_streams: its streams, memory pool, stream capture and CUDA graphs;
- kernel_harness: tests/kernels/harness.cu built by nvcc and run, and ``FakeKernel`` for the launchers;
- cuda_cases, cuda_parity: the configurations and checks of every CUDA op against its NumPy twin;
- emulated_models: the models, optimizers and comparisons of the end-to-end runs on the emulated device;
- oracle: independent loop references; helpers: driving gpucnn layers in the per-layer tests.

pytest puts tests/ on sys.path (it imports tests/conftest.py, in a folder without __init__.py, in its
default 'prepend' import mode), so test modules import these as ``support.<module>``;
tests/distributed/worker.py, run by mpirun as a script, puts tests/ there itself.
"""
