"""The op contract, the bottom layer of lattice_kernels (DESIGN.md, "Op contract"): the dtype and memory-format
rules every backend follows, and the fake (meta) implementations and autograd of the op schemas of
csrc/lattice_kernels.cpp. Registered for the C++ ops (namespace ``lattice_kernels``, by lattice_kernels._extension)
and for the Triton ops (``lattice_kernels_triton``, by lattice_kernels.triton), which mirror those schemas.
Imports nothing of the package."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

NS = "lattice_kernels"
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """Statistics and coefficients: float64 for float64 inputs, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def autocast_enabled(device_type: str) -> bool:
    """torch.is_autocast_enabled(device_type), False on devices autocast does not know (meta: a model run for its
    shapes), where torch's own call raises."""
    return torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)


def no_autocast(device_type: str):
    """A context that turns autocast off on `device_type` (nothing to turn off on a device autocast does not know)."""
    if not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


def memory_format_of(x: Tensor) -> torch.memory_format:
    """The kernels' layout rule (mirrors is_interleaved of csrc/binding_common.h): channels_last for
    channels_last-contiguous tensors that are not also NCHW-contiguous, else contiguous."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def empty_in_layout_of(x: Tensor, channels: int | None = None) -> Tensor:
    """An uninitialised (N, channels or C, H, W) tensor in x's dtype, device and memory format."""
    n, c, h, w = x.shape
    shape = (n, c if channels is None else channels, h, w)
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))


def _stats_like(x: Tensor, n: int | None = None, c: int | None = None) -> Tensor:
    shape = (x.shape[0] if n is None else n, x.shape[1] if c is None else c)
    return x.new_empty(shape, dtype=stats_dtype(x.dtype))


def _empty_stats(x: Tensor) -> Tensor:
    return x.new_empty((0,), dtype=stats_dtype(x.dtype))


def _zeros_if_none(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


def _present(t: Tensor | None) -> Tensor | None:
    return t if t is not None and t.numel() > 0 else None


def register_fakes(ns: str) -> None:
    """Fake (meta) implementations of the op schemas of namespace ns (the C++ ops; the Triton ops mirror them)."""

    @torch.library.register_fake(f"{ns}::channel_stats")
    def _(x):
        return _stats_like(x), _stats_like(x)

    @torch.library.register_fake(f"{ns}::channel_stats_backward")
    def _(grad_mean, grad_std, x, mean, std):
        return empty_in_layout_of(x)

    @torch.library.register_fake(f"{ns}::combination_coefficients")
    def _(x, w1m, b1m, w2m, b2m, w1s, b1s, w2s, b2s):
        return _stats_like(x), _stats_like(x), _stats_like(x)

    @torch.library.register_fake(f"{ns}::combination_coefficients_backward")
    def _(grad, x, mean, std, *weights):
        return (empty_in_layout_of(x), *(torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights))

    @torch.library.register_fake(f"{ns}::coefficients_from_stats")
    def _(mean, std, *weights):
        return torch.empty_like(mean, memory_format=torch.contiguous_format)

    @torch.library.register_fake(f"{ns}::coefficients_from_stats_backward")
    def _(grad, mean, std, *weights):
        return (torch.empty_like(mean, memory_format=torch.contiguous_format),
                torch.empty_like(std, memory_format=torch.contiguous_format),
                *(torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights))

    def bf_stats(x1, q_stats):
        return (_stats_like(x1), _stats_like(x1)) if q_stats else (_empty_stats(x1), _empty_stats(x1))

    @torch.library.register_fake(f"{ns}::butterfly")
    def _(x1, x2, alpha1, alpha2, beta1, beta2, q_stats):
        return (empty_in_layout_of(x1), empty_in_layout_of(x1), *bf_stats(x1, q_stats))

    @torch.library.register_fake(f"{ns}::butterfly_stacked")
    def _(x1, x2, alpha1, alpha2, beta1, beta2, q_stats):
        return (empty_in_layout_of(x1, 2 * x1.shape[1]), *bf_stats(x1, q_stats))

    @torch.library.register_fake(f"{ns}::butterfly_out")
    def _(x1, x2, alpha1, alpha2, beta1, beta2, q_stats, out):
        return bf_stats(x1, q_stats)

    @torch.library.register_fake(f"{ns}::butterfly_backward")
    def _(grad_p, grad_q, grad_mean_q, grad_std_q, x1, x2, alpha1, alpha2, beta1, beta2, mean_q, std_q):
        coef = [_stats_like(x1) if c is not None else _empty_stats(x1) for c in (alpha1, alpha2, beta1, beta2)]
        return (empty_in_layout_of(x1), empty_in_layout_of(x1), *coef)


def register_autograd(ns: str, ops) -> None:
    """Autograd of the forward ops of namespace ns through its fused backward ops (`ops` = torch.ops.<ns>)."""

    def stats_setup(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x, *output)

    def stats_backward(ctx, grad_mean, grad_std):
        x, mean, std = ctx.saved_tensors
        gm, gs = _zeros_if_none(grad_mean, mean), _zeros_if_none(grad_std, std)
        return ops.channel_stats_backward(gm, gs, x, mean, std)

    torch.library.register_autograd(f"{ns}::channel_stats", stats_backward, setup_context=stats_setup)

    def cc_setup(ctx, inputs, output):
        x, *weights = inputs
        _, mean, std = output
        ctx.mark_non_differentiable(mean, std)
        ctx.save_for_backward(x, mean, std, *weights)

    def cc_backward(ctx, grad, _grad_mean, _grad_std):
        x, mean, std, *weights = ctx.saved_tensors
        return ops.combination_coefficients_backward(_zeros_if_none(grad, mean), x, mean, std, *weights)

    torch.library.register_autograd(f"{ns}::combination_coefficients", cc_backward, setup_context=cc_setup)

    def mlp_setup(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def mlp_backward(ctx, grad):
        mean, std, *weights = ctx.saved_tensors
        if torch.is_grad_enabled() and (grad.requires_grad or any(t.requires_grad for t in ctx.saved_tensors)):
            raise RuntimeError("coefficients_from_stats is once differentiable (its backward is a fused op without "
                               "a backward of its own); for higher-order gradients (create_graph=True) use "
                               "backend='torch'")
        return ops.coefficients_from_stats_backward(_zeros_if_none(grad, mean), mean, std, *weights)

    torch.library.register_autograd(f"{ns}::coefficients_from_stats", mlp_backward, setup_context=mlp_setup)

    def bf_setup(ctx, inputs, output):
        x1, x2, a1, a2, b1, b2, q_stats = inputs
        mean_q, std_q = output[-2:]
        ctx.q_stats = q_stats
        ctx.save_for_backward(x1, x2, a1, a2, b1, b2, mean_q, std_q)

    def bf_grads(ctx, grad_p, grad_q, grad_mean_q, grad_std_q):
        x1, x2, a1, a2, b1, b2, mean_q, std_q = ctx.saved_tensors
        grad_p, grad_q = _zeros_if_none(grad_p, x1), _zeros_if_none(grad_q, x1)
        if ctx.q_stats and (grad_mean_q is not None or grad_std_q is not None):
            gm, gs = _zeros_if_none(grad_mean_q, mean_q), _zeros_if_none(grad_std_q, std_q)
            stats = (gm, gs, mean_q, std_q)
        else:
            stats = (None, None, None, None)
        dx1, dx2, da1, da2, db1, db2 = ops.butterfly_backward(
            grad_p, grad_q, stats[0], stats[1], x1, x2, a1, a2, b1, b2, stats[2], stats[3]
        )
        return dx1, dx2, _present(da1), _present(da2), _present(db1), _present(db2), None

    def bf_backward(ctx, grad_p, grad_q, grad_mean_q, grad_std_q):
        return bf_grads(ctx, grad_p, grad_q, grad_mean_q, grad_std_q)

    def bf_stacked_backward(ctx, grad_pq, grad_mean_q, grad_std_q):
        c = ctx.saved_tensors[0].shape[1]
        grad_p = grad_q = None
        if grad_pq is not None:
            grad_p, grad_q = grad_pq.narrow(1, 0, c), grad_pq.narrow(1, c, c)
        return bf_grads(ctx, grad_p, grad_q, grad_mean_q, grad_std_q)

    torch.library.register_autograd(f"{ns}::butterfly", bf_backward, setup_context=bf_setup)
    torch.library.register_autograd(f"{ns}::butterfly_stacked", bf_stacked_backward, setup_context=bf_setup)


def register_conv3x3(ns: str = NS) -> None:
    """Fake implementations of lattice_kernels::conv3x3 and ::conv3x3_weight_grad, and conv3x3's autograd (CPU
    kernels only). Backward: the gradient through the LeakyReLU (mask from the saved output: y > 0 exactly where the
    pre-activation is > 0, for a slope >= 0), then the input gradient by conv3x3 itself (a stride-1, padding-1 3x3
    conv with the weights transposed and flipped), the weight and bias gradients by conv3x3_weight_grad (the adjoint
    of the same Winograd algorithm, or for bf16 on the amx kernel set the direct sum over pixels on AMX tiles; the
    bias gradient, the sum of the gradient over (N, H, W), from the same reads)."""

    @torch.library.register_fake(f"{ns}::conv3x3")
    def _(x, weight, bias, negative_slope):
        return empty_in_layout_of(x, weight.shape[0])

    @torch.library.register_fake(f"{ns}::conv3x3_weight_grad")
    def _(x, grad):
        return x.new_empty((grad.shape[1], x.shape[1], 3, 3)), x.new_empty((grad.shape[1],))

    def setup(ctx, inputs, output):
        x, weight, bias, negative_slope = inputs
        ctx.negative_slope = negative_slope
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, output if negative_slope is not None else None)

    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        if ctx.negative_slope is not None:  # grad where y > 0, else grad * slope: one pass (aten's, vectorized)
            grad = torch.ops.aten.leaky_relu_backward(grad, y, ctx.negative_slope, True)
        need = ctx.needs_input_grad
        lib = getattr(torch.ops, ns)
        gx = gw = gb = None
        if need[0]:  # the input gradient is itself a 3x3 conv (flipped, transposed weights): the same kernel
            gx = lib.conv3x3(grad, weight.transpose(0, 1).flip(2, 3), None, None)
        if need[1]:
            gw, gb = lib.conv3x3_weight_grad(x, grad)
        if ctx.has_bias and need[2] and not need[1]:  # a frozen weight: the sum alone
            gb = grad.sum((0, 2, 3), dtype=torch.float64 if grad.dtype == torch.float64 else torch.float32)
        if gb is not None:
            gb = gb.to(grad.dtype) if ctx.has_bias and need[2] else None
        return gx, gw, gb, None

    torch.library.register_autograd(f"{ns}::conv3x3", backward, setup_context=setup)

    # conv3x3_weight_grad's dw is bilinear in (x, grad) and its db linear in grad:
    #   <v, dw> + <vb, db> = sum_{n, co, p} grad[n, co, p] (sum_{ci, a, b} v[co, ci, a, b] x[n, ci, p + (a, b) - 1]
    #                                                       + vb[co]),
    # so its own gradients are 3x3 convs again plus a broadcast (twice-differentiable, as aten's
    # convolution_backward was). Cotangents of unused outputs stay None (a conv without bias discards db).
    def wgrad_setup(ctx, inputs, output):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*inputs)

    def wgrad_backward(ctx, v, vb):
        x, grad = ctx.saved_tensors
        lib = getattr(torch.ops, ns)
        need = ctx.needs_input_grad
        gx = gg = None
        if need[0] and v is not None:
            gx = lib.conv3x3(grad, v.transpose(0, 1).flip(2, 3), None, None)
        if need[1] and (v is not None or vb is not None):
            gg = lib.conv3x3(x, v, None, None) if v is not None else None
            if vb is not None:
                bias = vb[None, :, None, None].to(grad.dtype)
                gg = bias.expand_as(grad).contiguous(memory_format=memory_format_of(grad)) if gg is None else gg + bias
        return gx, gg

    torch.library.register_autograd(f"{ns}::conv3x3_weight_grad", wgrad_backward, setup_context=wgrad_setup)
