"""The deployed "unmix" separator: per stem, mixture encoder -> stem codebook -> stem decoder.

Each stem is a level-0 Jukebox VQ-VAE (`jaxsep.models.vqvae.VQVAE`, ``levels=1``) whose encoder
was replaced by the stage-2 mixture encoder; codebook and decoder come from the stage-1 stem
VQ-VAE. Variables: ``{"params": {stem: {"encoders_0", "decoders_0"}}, "codebook": {stem:
{"quantizers_0": ...}}}``, so a single-stem stage-2 directory and a 4-stem deployed set share one
layout and a set is built by merging directories (`build_deployed`).

The model is mono (reference/jukebox.md §6.6): input channels are averaged, the mono estimate is
copied to every input channel so the ``[B, S, T, C]`` contract of `jaxsep.separate` holds.
`separate_chunked` reproduces the paper's inference (non-overlapping chunks, zero-padded tail);
overlap-add inference is `jaxsep.separate.Separator` on a model directory.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsep.errors import JaxsepError
from jaxsep.models.vqvae import VQVAE, Encoder, VQVAEConfig
from jaxsep.nn.vq import CODEBOOK_COLLECTION

MODEL_NAME = "unmix"
PAPER_CHUNK = 393216  # samples (8.9 s at 44.1 kHz), the paper's training and inference chunk
TAILS = ("pad", "exact")


class MixtureEncoder(nn.Module):
    """Level-0 VQ-VAE encoder alone (params ``{"encoders_0": ...}``, the VQVAE's own subtree).

    Stage 2 trains one on mixtures and uses another, frozen, as the stem encoder target.
    """

    config: VQVAEConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return Encoder(self.config, 0, name="encoders_0")(x).astype(jnp.float32)


def fit_length(wave: jax.Array, length: int) -> jax.Array:
    """Zero-pad (or crop) ``[B, T', C]`` on the right to ``length`` samples (decoder hop rounding)."""
    if wave.shape[1] >= length:
        return wave[:, :length]
    return jnp.pad(wave, ((0, 0), (0, length - wave.shape[1]), (0, 0)))


class Unmix(nn.Module):
    """One level-0 VQ-VAE per stem, named by the stem; ``__call__ == separate``."""

    config: VQVAEConfig
    sources: tuple[str, ...]

    @nn.compact
    def __call__(self, wave: jax.Array) -> jax.Array:
        """``[B, T, C]`` -> ``[B, S, T, C]``: mono in, mono estimate copied to the C channels."""
        mono = jnp.mean(wave, axis=-1, keepdims=True)
        stems = []
        for stem in self.sources:
            out = VQVAE(self.config, name=stem)(mono, train=False)
            stems.append(fit_length(out["reconstructions"][0], wave.shape[1]))
        estimates = jnp.stack(stems, axis=1)  # [B, S, T, 1]
        return jnp.broadcast_to(estimates, (*estimates.shape[:3], wave.shape[-1]))

    def separate(self, wave: jax.Array) -> jax.Array:
        return self(wave)


def Model(vqvae: dict[str, Any], sources: Sequence[str]) -> Unmix:  # noqa: N802 (registry name)
    """Build from a model directory's ``model_kwargs``: level-0 VQ-VAE fields and stem names."""
    config = VQVAEConfig.from_dict(dict(vqvae))
    if config.levels != 1:
        raise JaxsepError(f"unmix: the VQ-VAE must have levels=1, got {config.levels}")
    return Unmix(config, tuple(str(s) for s in sources))


def separate_waveforms(module: Unmix, variables: Any, wave: jax.Array) -> jax.Array:
    """`jaxsep.separate` hook: ``[B, T, C]`` -> ``[B, S, T, C]``."""
    return module.apply(variables, wave)


def chunk_bounds(length: int, chunk: int) -> list[tuple[int, int]]:
    """Consecutive non-overlapping ``(start, stop)`` chunks; the last one may be shorter."""
    if length <= 0 or chunk <= 0:
        raise JaxsepError(f"chunking needs positive lengths, got length={length}, chunk={chunk}")
    return [(s, min(s + chunk, length)) for s in range(0, length, chunk)]


@functools.lru_cache(maxsize=16)
def _compiled_apply(module: Unmix):
    return jax.jit(module.apply)


def separate_chunked(
    module: Unmix,
    variables: Any,
    audio: np.ndarray,
    *,
    chunk: int = PAPER_CHUNK,
    batch_size: int = 1,
    tail: str = "pad",
) -> np.ndarray:
    """The paper's inference: mono ``[T, C]`` audio -> ``[S, T, 1]`` mono stems.

    The track is cut into consecutive non-overlapping ``chunk``-sample pieces run independently
    (no context across chunk edges, as predict_channel.py). ``tail="pad"`` zero-pads the shorter
    last piece to a full chunk (one compiled shape) and crops the output; ``tail="exact"`` runs
    it at its own length, as the reference does (the decoder output is zero-padded to it).
    """
    if tail not in TAILS:
        raise JaxsepError(f"tail must be one of {TAILS}, got {tail!r}")
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    length = audio.shape[0]
    mono = audio.mean(axis=1, keepdims=True)
    apply = _compiled_apply(module)
    bounds = chunk_bounds(length, chunk)
    full = [b for b in bounds if b[1] - b[0] == chunk or tail == "pad"]
    out = np.zeros((len(module.sources), length, 1), np.float32)
    for first in range(0, len(full), batch_size):
        group = full[first : first + batch_size]
        batch = np.zeros((batch_size, chunk, 1), np.float32)
        for row, (start, stop) in enumerate(group):
            batch[row, : stop - start] = mono[start:stop]
        result = np.asarray(apply(variables, batch))  # [B, S, chunk, 1]
        for row, (start, stop) in enumerate(group):
            out[:, start:stop] = result[row, :, : stop - start]
    if tail == "exact" and bounds[-1][1] - bounds[-1][0] != chunk:
        start, stop = bounds[-1]
        out[:, start:stop] = np.asarray(apply(variables, mono[None, start:stop]))[0]
    return out


def stage2_variables(
    stem: str, mixture_encoder: Mapping, stem_variables: Mapping
) -> dict[str, dict]:
    """One stem's deployed variables: stage-2 encoder + the stage-1 codebook and decoder."""
    return {
        "params": {
            stem: {
                "encoders_0": mixture_encoder["encoders_0"],
                "decoders_0": stem_variables["params"]["decoders_0"],
            }
        },
        CODEBOOK_COLLECTION: {
            stem: {"quantizers_0": stem_variables[CODEBOOK_COLLECTION]["quantizers_0"]}
        },
    }


def build_deployed(stage2_dirs: Mapping[str, str | Path], out: str | Path) -> Path:
    """Merge single-stem stage-2 model directories into one deployed S-stem directory.

    ``stage2_dirs`` maps stem -> directory (in output order); all must share one VQ-VAE config.
    """
    from jaxsep.modeldir import load_variables, read_config, save_model_dir

    if not stage2_dirs:
        raise JaxsepError("build_deployed: no stage-2 model directories given")
    merged: dict[str, dict] = {"params": {}, CODEBOOK_COLLECTION: {}}
    base = None
    for stem, path in stage2_dirs.items():
        config = read_config(path)
        if config.get("model") != MODEL_NAME or list(config.get("sources", [])) != [stem]:
            raise JaxsepError(f"{path}: not a single-stem '{stem}' unmix model directory")
        vqvae = config["model_kwargs"]["vqvae"]
        if base is None:
            base = config
        elif vqvae != base["model_kwargs"]["vqvae"]:
            raise JaxsepError(f"{path}: VQ-VAE config differs from the other stems'")
        variables = load_variables(path)
        for collection in merged:
            merged[collection][stem] = variables[collection][stem]
    stems = list(stage2_dirs)
    config = {
        key: base[key] for key in ("sample_rate", "channels", "segment", "chunk") if key in base
    }
    config |= {
        "model": MODEL_NAME,
        "model_kwargs": {"vqvae": base["model_kwargs"]["vqvae"], "sources": stems},
        "sources": stems,
        "stage2_dirs": {s: str(Path(p).resolve()) for s, p in stage2_dirs.items()},
    }
    return save_model_dir(out, config, merged)
