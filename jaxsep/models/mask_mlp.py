"""A small spectral mask model: the demo's stand-in until X-UMX lands.

Per STFT frame, an MLP maps the log-magnitude of the mixture (all bins, all channels) to one
sigmoid mask per source; the output is the mask times the mixture magnitude, with the same
boundary as X-UMX (`[B, S, frames, bins, C]` masked magnitudes). Separation applies the masks to
the complex mixture STFT (mixture phase) and inverts it.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxsep.audio.stft import istft, stft
from jaxsep.errors import check_sizes


def spectrogram(wave: jnp.ndarray, n_fft: int, hop: int) -> jnp.ndarray:
    """Complex STFT `[B, frames, bins, C]` of `[B, T, C]` audio (torch semantics, centred)."""
    spec = stft(jnp.moveaxis(wave, -1, -2), n_fft, hop, "hann", center=True, pad_mode="reflect")
    return jnp.moveaxis(spec, -3, -1)


class MaskMLP(nn.Module):
    """Frame-wise MLP mask estimator. `hidden` units, `num_sources` sigmoid masks."""

    num_sources: int = 4
    n_fft: int = 1024
    hop: int = 256
    hidden: int = 256
    num_channels: int = 2

    def setup(self) -> None:
        check_sizes(
            "MaskMLP",
            num_sources=self.num_sources,
            n_fft=self.n_fft,
            hop=self.hop,
            hidden=self.hidden,
            num_channels=self.num_channels,
        )
        self.bins = self.n_fft // 2 + 1
        self.fc1 = nn.Dense(self.hidden)
        self.fc2 = nn.Dense(self.hidden)
        self.fc3 = nn.Dense(self.num_sources * self.bins * self.num_channels)

    def masks(self, mix_magnitude: jnp.ndarray) -> jnp.ndarray:
        """Masks `[B, S, frames, bins, C]` from mixture magnitudes `[B, frames, bins, C]`."""
        batch, frames = mix_magnitude.shape[:2]
        x = jnp.log1p(mix_magnitude).reshape(batch, frames, -1)  # [B, F, bins*C]
        x = nn.relu(self.fc1(x))
        x = nn.relu(self.fc2(x))
        logits = self.fc3(x)
        logits = logits.reshape(batch, frames, self.num_sources, self.bins, self.num_channels)
        return nn.sigmoid(jnp.moveaxis(logits, 2, 1))

    def __call__(self, wave: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Masked magnitudes `[B, S, frames, bins, C]` of the mixture `wave [B, T, C]`."""
        del train  # no dropout or batch norm
        magnitude = jnp.abs(spectrogram(wave, self.n_fft, self.hop))
        return self.masks(magnitude) * magnitude[:, None]

    def separate(self, wave: jnp.ndarray) -> jnp.ndarray:
        """Source waveforms `[B, S, T, C]`: masks applied to the mixture STFT, then iSTFT."""
        spec = spectrogram(wave, self.n_fft, self.hop)
        masked = self.masks(jnp.abs(spec)) * spec[:, None]  # [B, S, F, K, C]
        signal = istft(
            jnp.moveaxis(masked, -1, -3), self.n_fft, self.hop, "hann", length=wave.shape[1]
        )  # [B, S, C, T]
        return jnp.moveaxis(signal, -2, -1)


Model = MaskMLP
