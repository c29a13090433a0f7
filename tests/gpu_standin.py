"""pytest plugin: the GPU-marked tests with the host emulation standing in for CuPy.

    python -m pytest -p tests.gpu_standin -m gpu tests/test_solver.py ...

Device time is scarce, and a GPU test whose own logic is wrong wastes it: this runs the
GPU tests' code (fixtures, expectations, tolerances) on the emulated kernels, so that such
a test fails here first. It says nothing about the GPU itself. Tests that need CuPy's own
functions, or sizes only a GPU runs in reasonable time, are left out by the caller
(tests/test_kernels.py::test_gpu_tests_pass_with_the_emulation_standing_in).
"""

from gpu_als.backends import gpu

from . import emulation


class StandInRuntime(emulation.EmulatedRuntime):
    """What ``CudaRuntime()`` returns while this plugin is active: an sm_90 multiprocessor,
    and the register count of fused_solve<float, int> there for every kernel."""

    def __init__(self):
        super().__init__(multiprocessor=gpu.Multiprocessor(
            shared_memory=228 * 1024, reserved_shared_memory=1024, registers=65536,
            threads=2048, blocks=32), registers=80)


emulation.build_all()
gpu.unavailable_reason = lambda: None
gpu.CudaRuntime = StandInRuntime
