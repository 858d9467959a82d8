"""torchvggish checkpoints -> jaxsep VGGish ``(config, variables)``.

Inputs are the published torchvggish files: ``vggish-*.pth`` (a plain state_dict with keys
``features.{0,3,6,8,11,13}.*`` and ``embeddings.{0,2,4}.*``, optionally with the GitHub wrapper's
``pproc.pca_*`` entries) and ``vggish_pca_params-*.pth`` (a pickled dict of *numpy* arrays
``pca_eigen_vectors`` [128, 128], ``pca_means`` [128]). Both are read with
``torch.load(weights_only=True)``; the only extra globals allowed are the three numpy
reconstructors that a pickled ndarray needs (no code from the file is executed).

Layouts: conv OIHW -> HWIO (transpose 2, 3, 1, 0), linear ``[out, in]`` -> ``[in, out]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxsep.convert.torch_io import load_torch_checkpoint
from jaxsep.errors import JaxsepError
from jaxsep.models.vggish import CONV_LAYERS, DENSE_LAYERS, EMBEDDING_SIZE

_CONV_TORCH_INDEX = (0, 3, 6, 8, 11, 13)  # nn.Sequential slots; the gaps are ReLU / MaxPool
_DENSE_TORCH_INDEX = (0, 2, 4)
PCA_KEYS = ("pca_eigen_vectors", "pca_means")
_WRAPPER_PCA_KEYS = {"pproc.pca_eigen_vectors": "pca_eigen_vectors", "pproc.pca_means": "pca_means"}


def torch_key_map() -> dict[str, tuple[str, str]]:
    """torchvggish state_dict key -> (Flax layer name, "kernel" | "bias")."""
    mapping: dict[str, tuple[str, str]] = {}
    layers = [(f"features.{i}", name) for i, (name, _, _) in zip(_CONV_TORCH_INDEX, CONV_LAYERS)]
    layers += [(f"embeddings.{i}", name) for i, (name, _) in zip(_DENSE_TORCH_INDEX, DENSE_LAYERS)]
    for prefix, name in layers:
        mapping[f"{prefix}.weight"] = (name, "kernel")
        mapping[f"{prefix}.bias"] = (name, "bias")
    return mapping


def expected_torch_shapes() -> dict[str, tuple[int, ...]]:
    """torchvggish state_dict key -> its shape (torch layouts: OIHW conv, [out, in] linear)."""
    shapes: dict[str, tuple[int, ...]] = {}
    in_channels = 1
    for index, (_, features, _) in zip(_CONV_TORCH_INDEX, CONV_LAYERS):
        shapes[f"features.{index}.weight"] = (features, in_channels, 3, 3)
        shapes[f"features.{index}.bias"] = (features,)
        in_channels = features
    in_features = 6 * 4 * in_channels  # 96 x 64 after four 2x2 pools
    for index, (_, features) in zip(_DENSE_TORCH_INDEX, DENSE_LAYERS):
        shapes[f"embeddings.{index}.weight"] = (features, in_features)
        shapes[f"embeddings.{index}.bias"] = (features,)
        in_features = features
    return shapes


def state_dict_to_params(state_dict: Mapping[str, np.ndarray], source: str = "state_dict") -> dict:
    """Network entries of a torchvggish state_dict -> Flax ``params`` (numpy float32).

    Every one of the 18 keys must be present with its shape; any other key is an error, named
    in a one-line :class:`JaxsepError` that starts with ``source``.
    """
    mapping, shapes = torch_key_map(), expected_torch_shapes()
    unknown = sorted(set(state_dict) - set(mapping))
    missing = [key for key in mapping if key not in state_dict]
    if set(state_dict) == set(PCA_KEYS):
        raise JaxsepError(
            f"{source}: this is VGGish's PCA parameter file, not its weights; pass it with --pca "
            "next to the weights file (vggish-10086976.pth)"
        )
    if unknown:
        raise JaxsepError(f"{source}: unexpected VGGish keys: {', '.join(unknown)}")
    if missing:
        raise JaxsepError(f"{source}: missing VGGish keys: {', '.join(missing)}")
    params: dict[str, dict[str, np.ndarray]] = {}
    for key, (layer, kind) in mapping.items():
        value = np.asarray(state_dict[key], dtype=np.float32)
        if value.shape != shapes[key]:
            raise JaxsepError(f"{source}: {key} has shape {value.shape}, expected {shapes[key]}")
        if kind == "kernel":
            value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
        params.setdefault(layer, {})[kind] = np.ascontiguousarray(value)
    return params


def pca_to_variables(pca: Mapping[str, np.ndarray], source: str = "pca") -> dict:
    """``{"pca_eigen_vectors", "pca_means"}`` -> ``{"eigen_vectors": [128,128], "means": [128]}``.

    Values are kept at float32 (the jit path's precision); pass float64 numpy arrays to
    :func:`jaxsep.models.vggish.pca_whiten` to reproduce TF's float64 post-processing exactly.
    """
    unknown = sorted(set(pca) - set(PCA_KEYS))
    missing = [key for key in PCA_KEYS if key not in pca]
    if unknown:
        raise JaxsepError(f"{source}: unexpected PCA keys: {', '.join(unknown)}")
    if missing:
        raise JaxsepError(f"{source}: missing PCA keys: {', '.join(missing)}")
    vectors = np.asarray(pca["pca_eigen_vectors"], np.float32)
    means = np.asarray(pca["pca_means"], np.float32)
    if vectors.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE):
        raise JaxsepError(
            f"{source}: pca_eigen_vectors has shape {vectors.shape}, expected (128, 128)"
        )
    if means.size != EMBEDDING_SIZE or means.squeeze().ndim != 1:
        raise JaxsepError(f"{source}: pca_means has shape {means.shape}, expected (128,)")
    return {"eigen_vectors": vectors, "means": means.reshape(EMBEDDING_SIZE)}


def _to_numpy(value, path: Path, key: str) -> np.ndarray:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise JaxsepError(f"{path}: entry {key!r} is a Python {type(value).__name__}, not an array")


def load_torch_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A ``.pth`` holding a flat dict of tensors / numpy arrays -> ``{key: numpy array}``.

    Reads through `convert.torch_io.load_torch_checkpoint` (weights_only + allow-list); a missing,
    corrupt or non-dict file raises a one-line :class:`JaxsepError` naming the file.
    """
    path = Path(path)
    loaded = load_torch_checkpoint(path)
    if isinstance(loaded, Mapping) and "state_dict" in loaded and len(loaded) <= 3:
        loaded = loaded["state_dict"]  # tolerate {"state_dict": ...} wrappers
    if not isinstance(loaded, Mapping):
        raise JaxsepError(f"{path}: expected a dict of arrays, found a {type(loaded).__name__}")
    return {str(key): _to_numpy(value, path, str(key)) for key, value in loaded.items()}


def convert_torchvggish(
    weights_path: str | os.PathLike,
    pca_path: str | os.PathLike | None = None,
    *,
    final_relu: bool = True,
) -> tuple[dict, dict]:
    """torchvggish files -> ``(config, variables)`` for a jaxsep model directory.

    ``variables`` is ``{"params": ...}`` plus ``{"pca": {"eigen_vectors", "means"}}`` when the
    PCA parameters come from ``pca_path`` or from ``pproc.*`` keys in the weights file.
    ``final_relu=True`` reproduces torchvggish; ``False`` gives TF's pre-activation embedding.
    """
    weights_path = Path(weights_path)
    state = load_torch_arrays(weights_path)
    wrapper_pca = {
        _WRAPPER_PCA_KEYS[k]: state.pop(k) for k in list(state) if k in _WRAPPER_PCA_KEYS
    }
    variables: dict = {"params": state_dict_to_params(state, str(weights_path))}
    if pca_path is not None:
        variables["pca"] = pca_to_variables(load_torch_arrays(pca_path), str(pca_path))
    elif wrapper_pca:
        variables["pca"] = pca_to_variables(wrapper_pca, str(weights_path))
    config = {
        "model": "vggish",
        "model_kwargs": {"final_relu": bool(final_relu)},
        "source": {"framework": "torchvggish", "weights": weights_path.name},
        "sample_rate": 16000,
    }
    if pca_path is not None:
        config["source"]["pca"] = Path(pca_path).name
    return config, variables
