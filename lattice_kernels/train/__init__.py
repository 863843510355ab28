"""Training: data, losses, the two-stage trainer, and the evaluation metrics."""

from ..metrics import psnr_y, rgb_to_y, ssim_y
from .data import DataError, DenoiseDataset, EpochSampler, SRDataset
from .losses import ContrastiveLoss, PixelFeatures, VGG19Features
from .run_folder import RunFolderError
from .trainer import TrainConfig, Trainer, evaluate

__all__ = ["ContrastiveLoss", "DataError", "DenoiseDataset", "EpochSampler", "PixelFeatures", "RunFolderError",
           "SRDataset", "TrainConfig", "Trainer", "VGG19Features", "evaluate", "psnr_y", "rgb_to_y", "ssim_y"]
