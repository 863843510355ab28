"""Deliberately defective Triton kernels proving the AOT resource check can fail (tests/test_triton_aot.py):
one keeps 32768 floats live in a single warp (1024 per thread: far past 255 registers, so ptxas spills), one does
not compile (tl.arange of a non-power-of-two length). Test area only."""

import triton
import triton.language as tl


@triton.jit
def spilling_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    y = tl.cumsum(x * x, axis=0)
    tl.store(out_ptr + offs, y + tl.flip(x, 0))


@triton.jit
def non_compiling_kernel(x_ptr, BLOCK: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), 1.0)


# The efficiency model's planted defect (tests/test_gpu_efficiency.py): the same copy loop read through a
# scattered index, which Triton cannot prove contiguous, so it loads 4 bytes per lane where contiguous_copy_kernel
# loads 16.
@triton.jit
def contiguous_copy_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=offs < n), mask=offs < n)


@triton.jit
def scattered_copy_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, tl.load(x_ptr + (offs * 37) % n, mask=offs < n), mask=offs < n)


# The planted defect of the model's reduction check: a block-wide tl.sum on every tile, against elementwise sums
# reduced once after the loop.
@triton.jit
def sum_in_loop_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    acc = 0.0
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.sum(tl.load(x_ptr + offs, mask=offs < n, other=0.0), axis=0)
    tl.store(out_ptr, acc)


@triton.jit
def sum_after_loop_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr, tl.sum(acc, axis=0))
