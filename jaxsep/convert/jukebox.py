"""Jukebox VQ-VAE checkpoint (``vqvae.pth.tar``) -> `jaxsep.models.vqvae` config + variables.

The file is read with ``torch.load(weights_only=True)``: no Jukebox code is imported or run. Its
hyper-parameter object, if pickled as ``jukebox.hparams.Hyperparams``, is rebuilt as a plain
mapping through an allow-list entry, and only an allow-list of VQ-VAE fields is read from it.
Both the legacy (pre-1.6) and the zip serialisation are accepted; a leading ``module.`` on keys
(DataParallel) is stripped. Every expected key must be present with its expected shape and no
unknown key may remain, otherwise a one-line `JaxsepError` names them and the file.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsep.errors import JaxsepError
from jaxsep.models.vqvae import VQVAE, VQVAEConfig
from jaxsep.nn.vq import CODEBOOK_COLLECTION, restored_state

# hps name -> VQVAEConfig field; everything else in the hps is ignored.
HPS_FIELDS = {
    "levels": "levels",
    "downs_t": "downs_t",
    "strides_t": "strides_t",
    "emb_width": "emb_width",
    "l_bins": "l_bins",
    "width": "width",
    "depth": "depth",
    "m_conv": "m_conv",
    "dilation_growth_rate": "dilation_growth_rate",
    "dilation_cycle": "dilation_cycle",
    "vqvae_reverse_decoder_dilation": "reverse_decoder_dilation",
    "hvqvae_multipliers": "multipliers",
    "l_mu": "l_mu",
    "commit": "commit",
    "revival_threshold": "revival_threshold",
    "sr": "sample_rate",
}
HYPERPARAMS_GLOBAL = "jukebox.hparams.Hyperparams"
_LEVEL_KEY = re.compile(r"^(?:encoders\.|decoders\.|bottleneck\.level_blocks\.)(\d+)\.")
_MAX_NAMES = 5


class _HyperparamsStandIn(collections.OrderedDict):
    """Allow-listed in place of ``jukebox.hparams.Hyperparams``: unpickles as a plain mapping.

    ``__new__`` returns an ``OrderedDict`` because torch's safe unpickler only fills exact
    dict / OrderedDict types; no method of the original class is ever called.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> collections.OrderedDict:
        return collections.OrderedDict()


def _first_line(error: BaseException) -> str:
    for line in str(error).splitlines():
        if "Unsupported global" in line:
            return line.strip()
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMES])
    return shown + (f" (+{len(keys) - _MAX_NAMES} more)" if len(keys) > _MAX_NAMES else "")


def load_checkpoint(path: Path) -> dict:
    """``torch.load(weights_only=True)`` with every failure turned into one line naming ``path``."""
    import torch  # local: torch is only needed for conversion

    if not path.is_file():
        raise JaxsepError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals([(_HyperparamsStandIn, HYPERPARAMS_GLOBAL)]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt/truncated/unsafe files
        raise JaxsepError(f"{path}: not a readable PyTorch checkpoint: {_first_line(e)}") from None
    if not isinstance(checkpoint, dict):
        raise JaxsepError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    return checkpoint


def _state_dict(checkpoint: dict, path: Path) -> dict[str, np.ndarray]:
    import torch

    state = checkpoint.get("model")
    if not isinstance(state, dict):
        if any(
            isinstance(k, str) and _LEVEL_KEY.match(k.removeprefix("module.")) for k in checkpoint
        ):
            state = checkpoint  # a bare state_dict
        else:
            top = _names(sorted(map(str, checkpoint)))
            raise JaxsepError(
                f"{path}: not a Jukebox VQ-VAE checkpoint (no 'model' state dict; top-level keys: {top})"
            )
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise JaxsepError(f"{path}: entry {key!r} is not a floating-point tensor")
        arrays[str(key).removeprefix("module.")] = value.detach().float().numpy()
    return arrays


def config_from_hps(hps: Any, levels: int | None, path: Path) -> VQVAEConfig:
    """Allow-listed hps fields over the 5b defaults, optionally cut to the first ``levels``."""
    values: dict[str, Any] = {}
    if isinstance(hps, dict):
        values = {field: hps[name] for name, field in HPS_FIELDS.items() if name in hps}
    for name in ("downs_t", "strides_t", "multipliers"):
        if name in values and isinstance(values[name], (list, tuple)):
            values[name] = tuple(values[name])
    try:
        config = VQVAEConfig(**values)
        if levels is not None:
            if not 1 <= levels <= config.levels:
                raise ValueError(f"levels={levels} but the checkpoint has {config.levels}")
            config = VQVAEConfig(
                **{
                    **values,
                    "levels": levels,
                    "downs_t": config.downs_t[:levels],
                    "strides_t": config.strides_t[:levels],
                    "multipliers": config.multipliers[:levels],
                }
            )
    except (TypeError, ValueError) as e:
        raise JaxsepError(f"{path}: unusable hyper-parameters: {_first_line(e)}") from None
    return config


def _res_stack_keys(torch_prefix: str, flax_path: tuple, depth: int) -> Iterator[tuple]:
    for j in range(depth):
        block = (*flax_path, f"block_{j}")
        yield f"{torch_prefix}.model.{j}.model.1", (*block, "conv_dilated"), "conv"
        yield f"{torch_prefix}.model.{j}.model.3", (*block, "conv_1x1"), "conv"


def torch_layer_map(config: VQVAEConfig) -> Iterator[tuple[str, tuple, str]]:
    """``(torch module prefix, flax params path, "conv" | "conv_transpose")`` for every layer."""
    for level in range(config.levels):
        depth = config.level_depth(level)
        for b in range(level + 1):
            down = config.downs_t[b]
            src, dst = (
                f"encoders.{level}.level_blocks.{b}.model",
                (f"encoders_{level}", f"block_{b}"),
            )
            for i in range(down):
                yield f"{src}.{i}.0", (*dst, f"down_{i}"), "conv"
                yield from _res_stack_keys(f"{src}.{i}.1", (*dst, f"res_{i}"), depth)
            yield f"{src}.{down}", (*dst, "proj_out"), "conv"
            src, dst = (
                f"decoders.{level}.level_blocks.{b}.model",
                (f"decoders_{level}", f"block_{b}"),
            )
            yield f"{src}.0", (*dst, "proj_in"), "conv"
            for i in range(down):
                yield from _res_stack_keys(f"{src}.{i + 1}.0", (*dst, f"res_{i}"), depth)
                yield f"{src}.{i + 1}.1", (*dst, f"up_{i}"), "conv_transpose"
        yield f"decoders.{level}.out", (f"decoders_{level}", "out"), "conv"


def _set(tree: dict, path: tuple, value: np.ndarray) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def convert_state_dict(
    state: dict[str, np.ndarray], config: VQVAEConfig, path: Path
) -> dict[str, dict]:
    """Map torch arrays to ``{"params", "codebook"}``; checks names and shapes strictly."""
    module = VQVAE(config)
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, config.hop(0), 1)))
    plan: dict[str, tuple] = {}  # torch key -> (collection, flax path, transform)
    for prefix, flax_path, kind in torch_layer_map(config):
        plan[f"{prefix}.weight"] = ("params", (*flax_path, "kernel"), kind)
        plan[f"{prefix}.bias"] = ("params", (*flax_path, "bias"), "bias")
    for level in range(config.levels):
        plan[f"bottleneck.level_blocks.{level}.k"] = (
            CODEBOOK_COLLECTION,
            (f"quantizers_{level}", "k"),
            "codebook",
        )

    def ignored(key: str) -> bool:  # weights of levels not selected
        match = _LEVEL_KEY.match(key)
        return match is not None and int(match.group(1)) >= config.levels

    missing = [k for k in plan if k not in state]
    unexpected = [k for k in state if k not in plan and not ignored(k)]
    if missing:
        raise JaxsepError(f"{path}: missing keys: {_names(missing)}")
    if unexpected:
        raise JaxsepError(f"{path}: unexpected keys: {_names(unexpected)}")

    variables: dict[str, dict] = {"params": {}, CODEBOOK_COLLECTION: {}}
    for key, (collection, flax_path, kind) in plan.items():
        value = state[key]
        # Conv1d [out, in, k] -> [k, in, out]; ConvTranspose1d [in, out, k] -> [k, out, in],
        # the kernel layout of flax ConvTranspose(transpose_kernel=True).
        if kind in ("conv", "conv_transpose") and value.ndim == 3:
            value = value.transpose(2, 1, 0)
        expected = _get(shapes[collection], flax_path).shape
        if value.shape != expected:
            torch_shape = expected[::-1] if value.ndim == 3 else expected
            raise JaxsepError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(torch_shape)} for this config (width/depth mismatch?)"
            )
        _set(variables[collection], flax_path, np.ascontiguousarray(value, np.float32))
    for level in range(config.levels):
        name = f"quantizers_{level}"
        k = variables[CODEBOOK_COLLECTION][name]["k"]
        restored = restored_state(k)
        variables[CODEBOOK_COLLECTION][name] = {
            "k": k,
            "k_sum": np.asarray(restored.k_sum),
            "k_elem": np.asarray(restored.k_elem),
            "initialised": np.asarray(restored.initialised),
        }
    return variables


def convert_jukebox(src: str | Path, levels: int | None = None) -> tuple[dict, dict]:
    """Read a Jukebox VQ-VAE checkpoint -> ``(model_kwargs, variables)`` for `jaxsep.models.vqvae`.

    ``levels=1`` keeps only the bottom level (the unmix paper's model); weights of other levels
    are then ignored. The codebook collection is restored with one token per code (k_sum = k,
    k_elem = 1); a recipe fine-tuning with a known token count may call
    `jaxsep.nn.vq.restored_state` with its own ``tokens_per_code``.
    """
    path = Path(src)
    checkpoint = load_checkpoint(path)
    state = _state_dict(checkpoint, path)
    hps = checkpoint.get("hps")
    hps = dict(hps) if isinstance(hps, dict) else {}
    first_conv = state.get("encoders.0.level_blocks.0.model.0.0.weight")
    if "width" not in hps and first_conv is not None:  # bare state_dict: infer the width
        multiplier = tuple(hps.get("hvqvae_multipliers", VQVAEConfig.multipliers))[0]
        hps["width"] = first_conv.shape[0] // multiplier
    config = config_from_hps(hps, levels, path)
    variables = convert_state_dict(state, config, path)
    return config.to_dict(), variables
