"""Training: data, losses, the two-stage trainer, and the evaluation metrics."""

from .metrics import psnr_y, rgb_to_y, ssim_y

__all__ = ["psnr_y", "rgb_to_y", "ssim_y"]
