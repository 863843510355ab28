"""Reading and writing model weights: the published .pt state dicts (loaded with weights_only) and safetensors."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .._files import atomic_write


class CheckpointError(ValueError):
    """A weights file that cannot be used for the requested model: unreadable, or the wrong keys/shapes."""


# What a weights file starts with: a zip archive (torch.save since 1.6), the legacy torch.save format (pickle
# protocol 2 with torch's magic number first) or safetensors (u64 little-endian header length, then a JSON object).
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def weights_format(path: str | os.PathLike) -> str | None:
    """'torch' (zip or legacy torch.save), 'safetensors', or None for anything else, read from the file's first
    bytes (not its suffix)."""
    with open(path, "rb") as f:
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
    if head.startswith(_ZIP_MAGIC) or head.startswith(_LEGACY_TORCH_MAGIC):
        return "torch"
    if len(head) >= 9 and 8 + int.from_bytes(head[:8], "little") <= size and head[8:9] == b"{":
        return "safetensors"
    return None


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """A state dict from a torch.save file (.pt/.pth, loaded with weights_only=True: tensors and plain containers
    only) or a safetensors file, told apart by their first bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    kind = weights_format(path)
    if kind is None:
        raise CheckpointError(f"{path} is neither a PyTorch checkpoint (torch.save) nor a safetensors file")
    # Errors are raised `from None`: the library's message replaces torch's, whose advice (re-running torch.load
    # with weights_only=False, i.e. executing code from the file) must never reach a user.
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path), device=str(map_location))
        else:  # an open file: torch.load given a path ending in .safetensors would take it for one
            with open(path, "rb") as f:
                sd = torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():
            raise CheckpointError(f"cannot read torch weights from {path}: the file is damaged or truncated") from None
        raise CheckpointError(f"{path} is a PyTorch checkpoint holding Python objects other than tensors (e.g. a "
                              f"whole pickled model), which cannot be loaded safely; save the model's state_dict() "
                              f"(or safetensors) where it was made and load that") from None
    except Exception as e:  # a truncated or damaged file: say which one, with the first line of the reason
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else "unexpected end of file"
        raise CheckpointError(f"cannot read {kind} weights from {path} (damaged or truncated?): "
                              f"{type(e).__name__}: {reason}") from None
    if isinstance(sd, Mapping) and "state_dict" in sd and isinstance(sd["state_dict"], Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a plain state dict (name -> tensor)")
    return dict(sd)


def check_state_dict(model: nn.Module, sd: Mapping[str, Tensor], source: str) -> None:
    """Raise CheckpointError listing missing keys, unexpected keys and shape mismatches, if any."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return
    lines = [f"{source} does not match {type(model).__name__}:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" ... and {len(items) - 12} more" if len(items) > 12 else ""
            lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:12]) + more)
    raise CheckpointError("\n".join(lines))


def save_safetensors(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """Write the model's state dict as safetensors, atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata=metadata))
