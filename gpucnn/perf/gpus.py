"""The GPUs the performance model knows: NVIDIA's published figures, each with its source, and the occupancy rules.

Every number below is a datasheet or architecture-guide figure, not a measurement and not a tuned value:

- H100 SXM5 (sm_90): 132 SMs, 1.98 GHz boost (FP32 vector peak 132 SMs x 128 lanes x 2 x 1.98 GHz = 66.9
  TFLOP/s), 67 TFLOP/s FP32, 3.35 TB/s HBM3. Sources: NVIDIA H100 Tensor Core GPU datasheet
  (www.nvidia.com/en-us/data-center/h100/, "H100 SXM" column: FP32 67 teraFLOPS, GPU memory bandwidth
  3.35TB/s) and the NVIDIA H100 Tensor Core GPU Architecture whitepaper (132 SMs in the SXM5 product,
  128 FP32 lanes per SM, FP32 66.9 TFLOPS at the boost clock).
- H200 SXM (sm_90): the same GH100 compute as H100 SXM5 (132 SMs, 67 TFLOP/s FP32), 4.8 TB/s HBM3e.
  Source: NVIDIA H200 Tensor Core GPU datasheet (www.nvidia.com/en-us/data-center/h200/, "H200 SXM":
  FP32 67 TFLOPS, GPU memory bandwidth 4.8TB/s).
- A100 SXM4 80GB (sm_80): 108 SMs, 1.41 GHz boost (108 x 64 lanes x 2 x 1.41 GHz = 19.5 TFLOP/s),
  19.5 TFLOP/s FP32, 2.039 TB/s HBM2e. Sources: NVIDIA A100 Tensor Core GPU datasheet
  (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf, "A100 80GB SXM": FP32 19.5 TFLOPS, GPU memory
  bandwidth 2,039GB/s) and the NVIDIA A100 Tensor Core GPU Architecture whitepaper (108 SMs, 64 FP32
  lanes per SM, 1410 MHz boost).

Per-SM limits (CUDA C++ Programming Guide, "Technical Specifications per Compute Capability", 8.0 and
9.0): 65536 32-bit registers, 2048 resident threads, 32 resident blocks, at most 255 registers per
thread; registers are allocated per warp in units of 256. Shared memory per SM: 228 KiB on compute
capability 9.0 (NVIDIA Hopper Tuning Guide, "Increased shared memory capacity": up to 227 KB per block),
164 KiB on 8.0 (NVIDIA Ampere GPU Architecture Tuning Guide: "shared memory capacity per SM is 164 KB",
163 KB per block); the driver reserves 1 KiB of shared memory per resident block on both (the same
tuning guides: "1 KB of shared memory is reserved for system use"), counted here like the CUDA
occupancy calculator counts it.
"""
__all__ = ["GPUS", "GPU", "blocks_per_sm", "waves", "gpu_names"]

_KIB = 1024


class GPU:
    """One GPU's published figures (see the module docstring for each source)."""

    def __init__(self, key, name, arch, sms, boost_ghz, fp32_lanes_per_sm, peak_fp32_flops, hbm_bytes_per_s,
                 smem_per_sm, source):
        self.key, self.name, self.arch = key, name, arch
        self.sms, self.boost_ghz, self.fp32_lanes_per_sm = sms, boost_ghz, fp32_lanes_per_sm
        self.peak_fp32_flops, self.hbm_bytes_per_s = peak_fp32_flops, hbm_bytes_per_s
        self.smem_per_sm = smem_per_sm
        self.regs_per_sm = 65536
        self.max_threads_per_sm = 2048
        self.max_blocks_per_sm = 32
        self.reg_alloc_unit = 256  # registers, allocated per warp
        self.smem_reserved_per_block = 1 * _KIB
        self.warp_size = 32
        self.source = source

    def describe(self):
        return (f"{self.name} ({self.arch}): {self.sms} SMs, peak FP32 {self.peak_fp32_flops / 1e12:.1f} TFLOP/s, "
                f"HBM {self.hbm_bytes_per_s / 1e12:.2f} TB/s, {self.smem_per_sm // _KIB} KiB shared memory per SM "
                f"(source: {self.source})")

    def as_dict(self):
        return {"key": self.key, "name": self.name, "arch": self.arch, "sms": self.sms, "boost_ghz": self.boost_ghz,
                "peak_fp32_flops": self.peak_fp32_flops, "hbm_bytes_per_s": self.hbm_bytes_per_s,
                "smem_per_sm": self.smem_per_sm, "regs_per_sm": self.regs_per_sm,
                "max_threads_per_sm": self.max_threads_per_sm, "max_blocks_per_sm": self.max_blocks_per_sm,
                "source": self.source}


GPUS = {
    # NVIDIA H100 datasheet (H100 SXM: FP32 67 TFLOPS, 3.35TB/s) + H100 architecture whitepaper (132 SMs, 1.98 GHz)
    "h100-sxm": GPU("h100-sxm", "NVIDIA H100 SXM5 80GB", "sm_90", sms=132, boost_ghz=1.98, fp32_lanes_per_sm=128,
                    peak_fp32_flops=67e12, hbm_bytes_per_s=3.35e12, smem_per_sm=228 * _KIB,
                    source="NVIDIA H100 Tensor Core GPU datasheet and architecture whitepaper"),
    # NVIDIA H200 datasheet (H200 SXM: FP32 67 TFLOPS, 4.8TB/s); GH100 compute as H100 SXM5
    "h200": GPU("h200", "NVIDIA H200 SXM 141GB", "sm_90", sms=132, boost_ghz=1.98, fp32_lanes_per_sm=128,
                peak_fp32_flops=67e12, hbm_bytes_per_s=4.8e12, smem_per_sm=228 * _KIB,
                source="NVIDIA H200 Tensor Core GPU datasheet"),
    # NVIDIA A100 datasheet (A100 80GB SXM: FP32 19.5 TFLOPS, 2,039GB/s) + A100 architecture whitepaper (108 SMs)
    "a100": GPU("a100", "NVIDIA A100 SXM4 80GB", "sm_80", sms=108, boost_ghz=1.41, fp32_lanes_per_sm=64,
                peak_fp32_flops=19.5e12, hbm_bytes_per_s=2.039e12, smem_per_sm=164 * _KIB,
                source="NVIDIA A100 Tensor Core GPU datasheet and architecture whitepaper"),
}


def gpu_names():
    return ", ".join(GPUS)


def blocks_per_sm(gpu, threads, registers, static_smem):
    """Resident blocks of ``threads`` threads per SM, from the registers per thread and the static shared memory
    per block (bytes), under the limits of ``gpu`` (see the module docstring); None when the registers are unknown.
    Returns (blocks, limiting resource)."""
    if registers is None:
        return None, "unknown"
    warps = -(-threads // gpu.warp_size)
    regs_per_warp = -(-max(int(registers), 1) * gpu.warp_size // gpu.reg_alloc_unit) * gpu.reg_alloc_unit
    limits = {"blocks": gpu.max_blocks_per_sm,
              "threads": gpu.max_threads_per_sm // (warps * gpu.warp_size),
              "registers": (gpu.regs_per_sm // regs_per_warp) // warps}
    smem = int(static_smem or 0) + gpu.smem_reserved_per_block
    limits["shared memory"] = gpu.smem_per_sm // smem
    limit = min(limits, key=lambda k: (limits[k], k))
    return limits[limit], limit


def waves(gpu, grid_blocks, resident_per_sm):
    """Waves of a grid on ``gpu``: ceil(blocks / (resident blocks per SM x SMs)); None when residency is unknown."""
    if not resident_per_sm:
        return None
    return -(-int(grid_blocks) // (resident_per_sm * gpu.sms))
