"""Read PyTorch checkpoints safely (`torch.load(weights_only=True)`) into plain numpy trees.

Nothing in a checkpoint is executed: torch's restricted unpickler rebuilds tensors and plain
containers only, plus the classes of an explicit allow-list (the harmless types that public
separation checkpoints pickle: `TorchVersion` strings, numpy scalars and dtypes). Anything else
fails with one line naming the file and the rejected class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxsep.errors import JaxsepError


def default_allow_list() -> list[Any]:
    """Classes/functions that asteroid and open-unmix packages may pickle besides tensors.

    `TorchVersion` (asteroid's `serialize()` stores `torch.__version__`), numpy scalars
    (`max_bin` as `np.int64`) and their dtypes, and plain numpy arrays.
    """
    import torch.torch_version
    from numpy._core import multiarray

    dtype_classes = [type(np.dtype(t)) for t in np.sctypeDict.values() if t is not np.object_]
    return [
        torch.torch_version.TorchVersion,
        multiarray.scalar,
        multiarray._reconstruct,
        # the same two under numpy 1's module name: files saved before numpy 2 (most public ones)
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *sorted(set(dtype_classes), key=lambda c: c.__name__),
    ]


def to_numpy_tree(obj: Any) -> Any:
    """Tensors -> numpy arrays, numpy scalars -> Python scalars, version strings -> str."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(obj, Mapping):
        return {key: to_numpy_tree(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy_tree(value) for value in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, str):
        return str(obj)  # TorchVersion is a str subclass
    return obj


def _why(error: Exception) -> str:
    """One line from torch's (multi-line) load error."""
    text = str(error)
    rejected = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if rejected:
        return f"it pickles {rejected.group(1)}, which is not on the allow-list"
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if unpickler:
        return f"corrupt or not a PyTorch file ({unpickler.group(1).strip()})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return f"empty or truncated file ({type(error).__name__})"
    return lines[0].split(". ")[0]


def load_torch_checkpoint(path: str | Path, allow: Iterable[Any] = ()) -> Any:
    """`torch.load(path, weights_only=True)` with `default_allow_list() + allow`, as numpy.

    Returns the checkpoint with every tensor as a numpy array (dicts stay dicts, in file order).
    A missing, corrupt or foreign file raises a one-line `JaxsepError` naming it.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise JaxsepError(f"{path}: no such checkpoint file")
    allowed = default_allow_list() + list(allow)
    try:
        with torch.serialization.safe_globals(allowed):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle, zip, runtime and EOF errors alike
        raise JaxsepError(f"{path}: not a readable PyTorch checkpoint: {_why(e)}") from e
    return to_numpy_tree(checkpoint)
