"""Plain `torch.nn` twins of the jaxsep models, for the JAX vs PyTorch benchmark.

Each twin computes the same function as its Flax model, and its submodules are named like the
Flax parameter paths (``params/vocals/fc1/kernel`` <-> ``vocals.fc1.weight``), so one generic
mapping (`jaxsep.bench.weights.load_jax_variables`) copies the JAX weights in. Layouts are torch's
own (NCL / NCHW convs, ``[out, in]`` linears, cuDNN LSTM): this is what a PyTorch user would run.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _named(parent: nn.Module, name: str, child: nn.Module) -> nn.Module:
    parent.add_module(name, child)
    return child


# ---------------------------------------------------------------------------------------------
# X-UMX / UMX


class TorchSourceNet(nn.Module):
    """One Open-Unmix network (asteroid / open-unmix layout), in three stages like the JAX one."""

    def __init__(self, nb_bins: int, max_bin: int, channels: int, hidden: int, layers: int):
        super().__init__()
        self.nb_bins, self.max_bin, self.channels, self.hidden = nb_bins, max_bin, channels, hidden
        self.input_mean = nn.Parameter(torch.zeros(max_bin))
        self.input_scale = nn.Parameter(torch.ones(max_bin))
        self.output_scale = nn.Parameter(torch.ones(nb_bins))
        self.output_mean = nn.Parameter(torch.ones(nb_bins))
        self.fc1 = nn.Linear(channels * max_bin, hidden, bias=False)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.lstm = nn.LSTM(
            hidden,
            hidden // 2,
            layers,
            batch_first=True,
            bidirectional=True,
            dropout=0.4 if layers > 1 else 0.0,
        )
        self.fc2 = nn.Linear(2 * hidden, hidden, bias=False)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.fc3 = nn.Linear(hidden, channels * nb_bins, bias=False)
        self.bn3 = nn.BatchNorm1d(channels * nb_bins)

    @staticmethod
    def _bn(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def encode(self, mag: torch.Tensor) -> torch.Tensor:
        x = mag[..., : self.max_bin, :]
        x = (x + self.input_mean[:, None]) * self.input_scale[:, None]
        x = x.transpose(-1, -2).reshape(*x.shape[:2], -1)  # channel-major flatten
        return torch.tanh(self._bn(self.bn1, self.fc1(x)))

    def decode(self, skip: torch.Tensor, mix_mag: torch.Tensor) -> torch.Tensor:
        x = F.relu(self._bn(self.bn2, self.fc2(skip)))
        x = self._bn(self.bn3, self.fc3(x))
        x = x.reshape(*x.shape[:2], self.channels, self.nb_bins)
        x = x * self.output_scale + self.output_mean
        return F.relu(x).transpose(-1, -2) * mix_mag


class TorchXUMX(nn.Module):
    """X-UMX (``bridge=True``) or independent UMX nets: wave [B, T, C] -> [B, S, frames, bins, C]."""

    def __init__(
        self,
        sources: tuple[str, ...],
        n_fft: int = 4096,
        hop: int = 1024,
        hidden: int = 512,
        layers: int = 3,
        channels: int = 2,
        max_bin: int = 1487,
        bridge: bool = True,
    ):
        super().__init__()
        self.sources, self.n_fft, self.hop, self.bridge = tuple(sources), n_fft, hop, bridge
        nb_bins = n_fft // 2 + 1
        for source in self.sources:
            _named(self, source, TorchSourceNet(nb_bins, max_bin, channels, hidden, layers))
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        """|torch.stft| (center, reflect, periodic Hann) as [B, frames, bins, C]."""
        batch, length, channels = wave.shape
        flat = wave.permute(0, 2, 1).reshape(batch * channels, length)
        spec = torch.stft(
            flat, self.n_fft, self.hop, window=self.window, center=True, return_complex=True
        )
        mag = spec.abs().reshape(batch, channels, *spec.shape[-2:])
        return mag.permute(0, 3, 2, 1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mag = self.magnitude(wave)
        nets = [getattr(self, s) for s in self.sources]
        enc = [net.encode(mag) for net in nets]
        lstm_in = [sum(enc) / len(enc)] * len(nets) if self.bridge else enc
        lstm_out = [net.lstm(x)[0] for net, x in zip(nets, lstm_in)]
        skip = [torch.cat([e, h], dim=-1) for e, h in zip(enc, lstm_out)]
        if self.bridge:
            skip = [sum(skip) / len(skip)] * len(nets)
        return torch.stack([net.decode(k, mag) for net, k in zip(nets, skip)], dim=1)


# ---------------------------------------------------------------------------------------------
# ChimeraNet


class TorchChimera(nn.Module):
    """nussl's recurrent Chimera: magnitude [B, frames, bins] -> (embedding, mask)."""

    def __init__(self, bins: int, hidden: int, layers: int, embedding_dim: int, sources: int):
        super().__init__()
        self.bins, self.embedding_dim, self.num_sources = bins, embedding_dim, sources
        self.normalization = nn.BatchNorm1d(1)
        self.recurrent_stack = nn.LSTM(
            bins,
            hidden,
            layers,
            batch_first=True,
            bidirectional=True,
            dropout=0.3 if layers > 1 else 0.0,
        )
        self.embedding = nn.Linear(2 * hidden, bins * embedding_dim)
        self.mask = nn.Linear(2 * hidden, bins * sources)

    def forward(self, magnitude: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, frames, bins = magnitude.shape
        x = 20.0 * torch.log10(torch.clamp(magnitude, min=1e-4))
        x = self.normalization(x.reshape(batch, 1, -1)).reshape(batch, frames, bins)
        h, _ = self.recurrent_stack(x)
        emb = self.embedding(h).reshape(batch, frames, bins, self.embedding_dim)
        emb = F.normalize(torch.sigmoid(emb), dim=-1)
        mask = torch.sigmoid(self.mask(h).reshape(batch, frames, bins, self.num_sources))
        return {"embedding": emb, "mask": mask}


# ---------------------------------------------------------------------------------------------
# Jukebox VQ-VAE (one level as configured; NCL layout)


def _conv1d(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1) -> nn.Conv1d:
    pad = dilation * (kernel - 1) // 2 if stride == 1 else stride // 2
    return nn.Conv1d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation)


class TorchResStack(nn.Module):
    def __init__(self, width: int, hidden: int, dilations: list[int]):
        super().__init__()
        self.blocks = []
        for j, dilation in enumerate(dilations):
            block = _named(self, f"block_{j}", nn.Module())
            block.add_module("conv_dilated", _conv1d(width, hidden, 3, dilation=dilation))
            block.add_module("conv_1x1", _conv1d(hidden, width, 1))
            self.blocks.append(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block.conv_1x1(F.relu(block.conv_dilated(F.relu(x))))
        return x


class TorchVectorQuantizer(nn.Module):
    """Jukebox bottleneck: nearest code, straight-through, commit loss, EMA update with restarts."""

    def __init__(self, codes: torch.Tensor, k_sum: torch.Tensor, k_elem: torch.Tensor, mu: float):
        super().__init__()
        self.mu, self.threshold = mu, 1.0
        self.register_buffer("k", codes.clone())
        self.register_buffer("k_sum", k_sum.clone())
        self.register_buffer("k_elem", k_elem.clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, emb, T'] -> (quantised [B, emb, T'], commit loss). float32 under autocast too, as
        jaxsep's quantiser: a bfloat16 distance would pick other codes."""
        with torch.autocast(x.device.type, enabled=False):
            return self._quantise(x.float())

    def _quantise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.transpose(1, 2).reshape(-1, x.shape[1])
        with torch.no_grad():
            dist = (flat * flat).sum(-1, keepdim=True) - 2.0 * flat @ self.k.T + (self.k**2).sum(-1)
            codes = dist.argmin(-1)
        deq = self.k[codes]
        commit = ((deq.detach() - flat) ** 2).sum() / flat.numel()
        if self.training:
            self._ema_update(flat.detach(), codes)
            out = flat + (deq - flat).detach()
        else:
            out = deq.detach()
        return out.reshape(x.shape[0], -1, x.shape[1]).transpose(1, 2), commit

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        n_codes = self.k.shape[0]
        onehot = torch.zeros(n_codes, flat.shape[0], device=flat.device)
        onehot.scatter_(0, codes[None], 1.0)
        sums, counts = onehot @ flat, onehot.sum(-1)
        candidates = flat[torch.randint(0, flat.shape[0], (n_codes,), device=flat.device)]
        self.k_sum.mul_(self.mu).add_(sums, alpha=1.0 - self.mu)
        self.k_elem.mul_(self.mu).add_(counts, alpha=1.0 - self.mu)
        kept = (self.k_elem >= self.threshold)[:, None]
        self.k.copy_(torch.where(kept, self.k_sum / self.k_elem[:, None], candidates))


class TorchVQVAE(nn.Module):
    """Level-0 Jukebox VQ-VAE: audio [B, 1, T] -> (reconstruction [B, 1, T], commit loss)."""

    def __init__(self, config, codebook: dict[str, torch.Tensor]):
        super().__init__()
        cfg = config
        width, depth = cfg.level_width(0), cfg.level_depth(0)
        hidden = int(cfg.m_conv * width)
        dilations = [cfg.dilation(j) for j in range(depth)]
        stride, down = cfg.strides_t[0], cfg.downs_t[0]
        enc = _named(_named(self, "encoders_0", nn.Module()), "block_0", nn.Module())
        self.down, self.enc_res = [], []
        for i in range(down):
            cin = cfg.input_channels if i == 0 else width
            self.down.append(_named(enc, f"down_{i}", _conv1d(cin, width, 2 * stride, stride)))
            self.enc_res.append(_named(enc, f"res_{i}", TorchResStack(width, hidden, dilations)))
        self.ends = {"proj_out": _named(enc, "proj_out", _conv1d(width, cfg.emb_width, 3))}
        decoders = _named(self, "decoders_0", nn.Module())
        dec = _named(decoders, "block_0", nn.Module())
        self.ends["proj_in"] = _named(dec, "proj_in", _conv1d(cfg.emb_width, width, 3))
        rev = dilations[::-1] if cfg.reverse_decoder_dilation else dilations
        self.dec_res, self.up = [], []
        for i in range(down):
            self.dec_res.append(_named(dec, f"res_{i}", TorchResStack(width, hidden, rev)))
            cout = cfg.emb_width if i == down - 1 else width
            up = nn.ConvTranspose1d(width, cout, 2 * stride, stride, padding=stride // 2)
            self.up.append(_named(dec, f"up_{i}", up))
        self.ends["out"] = _named(decoders, "out", _conv1d(cfg.emb_width, cfg.input_channels, 3))
        self.quantizer = TorchVectorQuantizer(
            codebook["k"], codebook["k_sum"], codebook["k_elem"], cfg.l_mu
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv, res in zip(self.down, self.enc_res):
            x = res(conv(x))
        z, commit = self.quantizer(self.ends["proj_out"](x))
        x = self.ends["proj_in"](z)
        for res, up in zip(self.dec_res, self.up):
            x = up(res(x))
        return self.ends["out"](x), commit


# ---------------------------------------------------------------------------------------------
# VGGish


class TorchVGGish(nn.Module):
    """VGGish: log-mel examples [N, 96, 64] -> 128-d embeddings (TF flatten order, NCHW convs)."""

    def __init__(self, conv_layers, dense_layers, final_relu: bool = False):
        super().__init__()
        self.final_relu = final_relu
        self.convs, cin = [], 1
        for name, features, pool in conv_layers:
            self.convs.append((_named(self, name, nn.Conv2d(cin, features, 3, padding=1)), pool))
            cin = features
        frames, bands = 96, 64
        pools = sum(1 for _, _, pool in conv_layers if pool)
        fin = cin * (frames // 2**pools) * (bands // 2**pools)
        self.dense = []
        for name, features in dense_layers:
            self.dense.append(_named(self, name, nn.Linear(fin, features)))
            fin = features

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = examples[:, None]
        for conv, pool in self.convs:
            x = F.relu(conv(x))
            if pool:
                x = F.max_pool2d(x, 2)
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # (H, W, C) like TF
        for index, layer in enumerate(self.dense):
            x = layer(x)
            if index < len(self.dense) - 1 or self.final_relu:
                x = F.relu(x)
        return x


def count_parameters(module: nn.Module) -> int:
    return int(sum(math.prod(p.shape) for p in module.parameters()))
