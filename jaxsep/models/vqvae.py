"""Jukebox hierarchical VQ-VAE (openai/jukebox, 5b sizes) in flax.linen, channels last.

Each level L has its own encoder (level blocks 0..L, each: strided k4 convs, every one followed by
a stack of dilated pre-activation residual blocks, then a k3 projection to ``emb_width``), its own
quantiser and its own decoder (blocks L..0 with reversed dilations and transposed convs, then an
output conv). Widths and depths come from `VQVAEConfig`, so the width-8 test fixture, the real 5b
model and the paper's level-0-only model (``levels=1, multipliers=(2,)``) are the same code.

Boundary (DESIGN §9): ``encode`` ``[B, T, 1] -> [[B, T/hop_L, emb]]``; ``quantize`` that list
``-> (codes, dequantised)``; ``decode`` list of latents ``-> [[B, T, 1]]``; ``__call__`` runs all
three and returns losses for training. ``dtype="bfloat16"`` runs every convolution on bfloat16
activations; latents, quantiser and reconstructions stay float32 (`jaxsep.nn.precision`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxsep.errors import is_count
from jaxsep.nn.polyphase import StridedConv1d, TransposedConv1d
from jaxsep.nn.precision import compute_dtype
from jaxsep.nn.vq import VectorQuantizer


@dataclasses.dataclass(frozen=True)
class VQVAEConfig:
    """Jukebox ``vqvae`` hparams (5b defaults); names follow the reference hps where they exist."""

    levels: int = 3
    downs_t: tuple[int, ...] = (3, 2, 2)
    strides_t: tuple[int, ...] = (2, 2, 2)
    emb_width: int = 64
    l_bins: int = 2048
    width: int = 32
    depth: int = 4
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    reverse_decoder_dilation: bool = True
    multipliers: tuple[int, ...] = (2, 1, 1)
    input_channels: int = 1
    l_mu: float = 0.99
    commit: float = 0.02
    revival_threshold: float = 1.0
    sample_rate: int = 44100
    codebook_update: str = "ema"
    remat: bool = False
    quantize_chunk_rows: int = 8192
    dtype: str = "float32"  # convolution activations: "float32" or "bfloat16"

    def __post_init__(self) -> None:
        for name in ("downs_t", "strides_t", "multipliers"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("levels", "emb_width", "l_bins", "width", "depth", "input_channels"):
            value = getattr(self, name)
            if not is_count(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("downs_t", "strides_t", "multipliers"):
            if len(getattr(self, name)) < self.levels:
                raise ValueError(f"{name} needs {self.levels} entries, got {getattr(self, name)}")
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name} must hold positive integers, got {getattr(self, name)}")
        object.__setattr__(self, "dtype", compute_dtype(self.dtype, "VQ-VAE config").name)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VQVAEConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown VQ-VAE config keys: {', '.join(unknown)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (lists for tuples) that `from_dict` reads back."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def level_width(self, level: int) -> int:
        return int(self.width * self.multipliers[level])

    def level_depth(self, level: int) -> int:
        return int(self.depth * self.multipliers[level])

    def hop(self, level: int) -> int:
        """Samples per latent step at ``level`` (8, 32, 128 for the 5b model)."""
        hop = 1
        for down, stride in zip(self.downs_t[: level + 1], self.strides_t[: level + 1]):
            hop *= stride**down
        return hop

    def dilation(self, block: int) -> int:
        cycle = self.dilation_cycle
        return self.dilation_growth_rate ** (block if cycle is None else block % cycle)


def _conv(
    features: int,
    kernel: int,
    name: str,
    stride: int = 1,
    dilation: int = 1,
    dtype: str = "float32",
) -> nn.Conv:
    """PyTorch-style Conv1d: explicit symmetric padding, never 'SAME'."""
    pad = dilation * (kernel - 1) // 2 if stride == 1 else stride // 2
    return nn.Conv(
        features,
        (kernel,),
        strides=(stride,),
        padding=((pad, pad),),
        kernel_dilation=(dilation,),
        dtype=dtype,
        name=name,
    )


class ResBlock(nn.Module):
    """``x + Conv1x1(relu(Conv3_dilated(relu(x))))``: pre-activation, identity skip."""

    width: int
    hidden: int
    dilation: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv_dilated = _conv(
            self.hidden, 3, "conv_dilated", dilation=self.dilation, dtype=self.dtype
        )
        h = conv_dilated(nn.relu(x))
        return x + _conv(self.width, 1, "conv_1x1", dtype=self.dtype)(nn.relu(h))


class ResStack(nn.Module):
    """``depth`` residual blocks, dilation ``growth**j`` (reversed order in decoders)."""

    config: VQVAEConfig
    width: int
    depth: int
    reverse: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dilations = [self.config.dilation(j) for j in range(self.depth)]
        if self.reverse:
            dilations = dilations[::-1]
        hidden = int(self.config.m_conv * self.width)
        for j, dilation in enumerate(dilations):
            x = ResBlock(self.width, hidden, dilation, self.config.dtype, name=f"block_{j}")(x)
        return x


def _res_stack_class(config: VQVAEConfig) -> type[ResStack]:
    """`ResStack`, rematerialised in the backward pass when ``config.remat`` (memory for compute
    on accelerators). Not on XLA:CPU: its compiled level-0 step needs the same temporaries with
    and without (495 vs 497 MiB at 1 x 65536, 24.5 GiB either way at the paper's 4 x 393216); the
    recomputation is in the program, but the residuals stay live (CSE off changes nothing), so
    CPU runs need not set it."""
    return nn.remat(ResStack) if config.remat else ResStack


class EncoderBlock(nn.Module):
    """``down`` x (strided k=2s conv -> residual stack), then a k3 conv to ``emb_width``."""

    config: VQVAEConfig
    level: int
    block: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        width, depth = cfg.level_width(self.level), cfg.level_depth(self.level)
        stride = cfg.strides_t[self.block]
        stack = _res_stack_class(cfg)
        for i in range(cfg.downs_t[self.block]):
            # = _conv(width, 2 * stride, ..., stride=stride), as polyphase matmuls (fast backward)
            x = StridedConv1d(width, stride, stride // 2, cfg.dtype, name=f"down_{i}")(x)
            x = stack(cfg, width, depth, name=f"res_{i}")(x)
        return _conv(cfg.emb_width, 3, "proj_out", dtype=cfg.dtype)(x)


class DecoderBlock(nn.Module):
    """k3 conv from ``emb_width``, then ``down`` x (residual stack -> transposed conv)."""

    config: VQVAEConfig
    level: int
    block: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        width, depth = cfg.level_width(self.level), cfg.level_depth(self.level)
        stride, down = cfg.strides_t[self.block], cfg.downs_t[self.block]
        stack = _res_stack_class(cfg)
        x = _conv(width, 3, "proj_in", dtype=cfg.dtype)(x)
        for i in range(down):
            x = stack(cfg, width, depth, reverse=cfg.reverse_decoder_dilation, name=f"res_{i}")(x)
            # Torch ConvTranspose1d(2s, s, s // 2) with nn.ConvTranspose's parameters, as
            # polyphase matmuls (XLA:CPU runs the dilated-input convolution slowly)
            features = cfg.emb_width if i == down - 1 else width
            x = TransposedConv1d(features, stride, stride // 2, cfg.dtype, name=f"up_{i}")(x)
        return x


class Encoder(nn.Module):
    """Encoder of one level: blocks 0..level applied in order."""

    config: VQVAEConfig
    level: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for b in range(self.level + 1):
            x = EncoderBlock(self.config, self.level, b, name=f"block_{b}")(x)
        return x


class Decoder(nn.Module):
    """Decoder of one level: blocks level..0, then the output conv to audio channels."""

    config: VQVAEConfig
    level: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for b in reversed(range(self.level + 1)):
            x = DecoderBlock(self.config, self.level, b, name=f"block_{b}")(x)
        return _conv(self.config.input_channels, 3, "out", dtype=self.config.dtype)(x)


class VQVAE(nn.Module):
    """All configured levels; submodules ``encoders_L``, ``quantizers_L``, ``decoders_L``."""

    config: VQVAEConfig

    def setup(self) -> None:
        cfg = self.config
        levels = range(cfg.levels)
        self.encoders = [Encoder(cfg, level) for level in levels]
        self.decoders = [Decoder(cfg, level) for level in levels]
        self.quantizers = [
            VectorQuantizer(
                n_codes=cfg.l_bins,
                dim=cfg.emb_width,
                mu=cfg.l_mu,
                threshold=cfg.revival_threshold,
                codebook_update=cfg.codebook_update,
                chunk_rows=cfg.quantize_chunk_rows,
            )
            for level in levels
        ]

    def encode(self, x: jax.Array) -> list[jax.Array]:
        """``[B, T, C]`` audio -> per level ``[B, T/hop, emb]`` latents before quantisation."""
        return [encoder(x).astype(jnp.float32) for encoder in self.encoders]

    def quantize(
        self, latents: list[jax.Array], train: bool = False
    ) -> tuple[list[jax.Array], list[jax.Array]]:
        """Latents -> ``(codes [B, T'] int32, dequantised [B, T', emb])`` per level."""
        outputs = [q(z, train) for q, z in zip(self.quantizers, latents)]
        return [o[0] for o in outputs], [o[1] for o in outputs]

    def decode(self, latents: list[jax.Array]) -> list[jax.Array]:
        """Per-level (dequantised) latents -> per-level reconstructions ``[B, T, C]``."""
        return [decoder(z).astype(jnp.float32) for decoder, z in zip(self.decoders, latents)]

    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, Any]:
        """Full forward; ``reconstructions[0]`` is the model output (level 0)."""
        latents = self.encode(x)
        outputs = [q(z, train) for q, z in zip(self.quantizers, latents)]
        return {
            "latents": latents,
            "codes": [o[0] for o in outputs],
            "reconstructions": self.decode([o[1] for o in outputs]),
            "commit_losses": [o[2] for o in outputs],
            "quantizer_metrics": [o[3] for o in outputs],
        }


def Model(**model_kwargs: Any) -> VQVAE:  # noqa: N802 (the registry's factory name)
    """Build from a model directory's ``model_kwargs`` (the `VQVAEConfig` fields)."""
    return VQVAE(VQVAEConfig.from_dict(model_kwargs))
