"""X-UMX (CrossNet-Open-Unmix) and UMX (Open-Unmix) as one flax.linen module.

Each source has its own Open-Unmix network: input normalisation, fc1 + BN + tanh (encoder),
a 3-layer BLSTM, a skip concat [encoder, LSTM], fc2 + BN + ReLU, fc3 + BN, an output affine and
a ReLU mask on the full-band mixture magnitude. X-UMX (`bridge=True`) averages the encoder
outputs over sources before the LSTMs and the skip concats before the decoders; UMX
(`bridge=False`) runs the networks independently (one open-unmix `OpenUnmix` per target).

Parameter tree (one sub-tree per source, named after the source; torch names in brackets:
asteroid `XUMX` / open-unmix `OpenUnmix`)::

    params/<s>/input_mean     [max_bin]   (mean_scale.input_mean_<s> / input_mean)  holds -mean
    params/<s>/input_scale    [max_bin]   (mean_scale.input_scale_<s> / input_scale) holds 1/std
    params/<s>/fc1/kernel     [C*max_bin, H]  = (layer_enc.<s>.enc.0.weight / fc1.weight).T
    params/<s>/bn1/{weight,bias}              (layer_enc.<s>.enc.1.* / bn1.*)
    params/<s>/lstm/{weight_ih_l{k}[_reverse], weight_hh_..., bias_ih_..., bias_hh_...}
                                              (layer_lstm.<s>.* / lstm.*), torch layout as is
    params/<s>/fc2/kernel     [2H, H]         = (layer_dec.<s>.dec.0.weight / fc2.weight).T
    params/<s>/bn2/{weight,bias}              (layer_dec.<s>.dec.1.* / bn2.*)
    params/<s>/fc3/kernel     [H, C*F]        = (layer_dec.<s>.dec.3.weight / fc3.weight).T
    params/<s>/bn3/{weight,bias}              (layer_dec.<s>.dec.4.* / bn3.*)
    params/<s>/output_scale, output_mean  [F] (mean_scale.output_*_<s> / output_*)
    batch_stats/<s>/bn{1,2,3}/{running_mean,running_var}   (the BN buffers of the same name)

`num_batches_tracked` and the STFT window buffers have no counterpart (momentum is fixed and
the window is the periodic Hann of `jaxsep.audio.stft`). fc1 inputs and fc3 outputs are
flattened channel-major (all bins of channel 0, then channel 1), as in torch.

Off cuDNN, the sources' LSTM stacks run fused (`fuse_lstms=True`): one scan per layer for all
sources and directions, with each source's own parameters (same numbers, 1/S of the sequential
steps); `fuse_lstms=False` calls each source's `jaxsep.nn.lstm.LSTM` module.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxsep.audio.stft import stft
from jaxsep.errors import JaxsepError, check_sizes
from jaxsep.nn.batchnorm import TorchBatchNorm
from jaxsep.nn.lstm import (
    LSTM,
    input_gates,
    param_names,
    recurrence,
    recurrent_weight,
    uses_cudnn,
)
from jaxsep.nn.precision import compute_dtype

Array = jax.Array

# torch.nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def bandwidth_to_max_bin(rate: float, n_fft: int, bandwidth: float) -> int:
    """Number of STFT bins with centre frequency <= `bandwidth` (open-unmix's rule).

    44100 Hz, n_fft 4096, 16 kHz -> 1487.
    """
    if not bandwidth > 0:
        raise JaxsepError(f"bandwidth must be > 0 Hz, got {bandwidth}")
    freqs = np.linspace(0, float(rate) / 2, n_fft // 2 + 1, endpoint=True)
    return int(np.max(np.where(freqs <= bandwidth)[0])) + 1


def mixture_stft(wave: Array, n_fft: int, hop: int, center: bool = True) -> Array:
    """Complex STFT `[B, frames, bins, C]` of `wave [B, T, C]` (torch semantics, reflect pad)."""
    spec = stft(jnp.moveaxis(wave, -1, -2), n_fft, hop, "hann", center=center, pad_mode="reflect")
    return jnp.moveaxis(spec, -3, -1)


def _layer_weights(weights: Sequence[dict], layer: int, directions: int) -> tuple[list, ...]:
    """W_ih, W_hh, b_ih + b_hh of one layer, per (source, direction) in that order, unstacked,
    and whether the W_hh came in `jaxsep.nn.lstm.inference_layout` (all or none)."""
    names = [param_names(layer, reverse) for reverse in (False, True)[:directions]]
    hh = [recurrent_weight(w, n[1]) for w in weights for n in names]
    layouts = {transposed for _, transposed in hh}
    if len(layouts) != 1:
        raise JaxsepError(f"XUMX: LSTM layer {layer} mixes W_hh layouts (see inference_layout)")
    per = [(w[n[0]], w[n[2]] + w[n[3]]) for w in weights for n in names]
    w_ih, bias = (list(t) for t in zip(*per))
    return w_ih, [w for w, _ in hh], bias, layouts.pop()


def fused_lstm_layer(
    x: Array,
    w_ih: list,
    w_hh: list,
    bias: list,
    hh_transposed: bool = False,
    dtype: jnp.dtype = jnp.float32,
) -> Array:
    """One (bi)LSTM layer of every source at once: x `[S, B, T, F]` -> `[S, B, T, D*H]`
    (in `dtype`, the matmul operand dtype of `jaxsep.nn.precision`).

    The S sources x D directions run as S*D independent recurrences in a single `lax.scan`
    (jaxsep.nn.lstm's, with its fast custom backward), instead of S scans of D. Weights come
    per (source, direction) in torch layout (`hh_transposed`: W_hh as [H, 4H], the inference
    layout) and are projected in place (`input_gates`).
    """
    sources = x.shape[0]
    directions = len(w_ih) // sources
    hidden = bias[0].shape[0] // 4
    batch, steps = x.shape[1], x.shape[2]
    inputs = [x[r // directions].swapaxes(0, 1) for r in range(len(w_ih))]  # [T, B, F]
    reverse = [bool(r % directions) for r in range(len(w_ih))]
    gates_x = input_gates(inputs, w_ih, bias, reverse, dtype=dtype)
    h0 = jnp.zeros((sources * directions, batch, hidden), gates_x.dtype)
    hs, _ = recurrence(gates_x, w_hh, h0, h0, dtype=dtype, transposed=hh_transposed)
    hs = hs.reshape(steps, sources, directions, batch, hidden)
    if directions == 2:
        hs = jnp.stack([hs[:, :, 0], hs[::-1, :, 1]], axis=2)
    hs = hs.transpose(1, 3, 0, 2, 4).reshape(sources, batch, steps, directions * hidden)
    return hs.astype(dtype)


class SourceNet(nn.Module):
    """One Open-Unmix network, split into the three stages between the X-UMX bridges."""

    nb_bins: int
    max_bin: int
    nb_channels: int
    hidden_size: int
    nb_layers: int
    bidirectional: bool
    lstm_backend: str
    dtype: str = "float32"

    def setup(self) -> None:
        self.input_mean = self.param("input_mean", nn.initializers.zeros, (self.max_bin,))
        self.input_scale = self.param("input_scale", nn.initializers.ones, (self.max_bin,))
        self.output_scale = self.param("output_scale", nn.initializers.ones, (self.nb_bins,))
        self.output_mean = self.param("output_mean", nn.initializers.ones, (self.nb_bins,))
        dense = dict(use_bias=False, kernel_init=_torch_linear_init, dtype=self.dtype)
        self.fc1 = nn.Dense(self.hidden_size, **dense)
        self.bn1 = TorchBatchNorm()
        lstm_hidden = self.hidden_size // 2 if self.bidirectional else self.hidden_size
        self.lstm = LSTM(
            hidden_size=lstm_hidden,
            num_layers=self.nb_layers,
            bidirectional=self.bidirectional,
            dropout=0.4 if self.nb_layers > 1 else 0.0,
            backend=self.lstm_backend,
            batch_first=True,
            dtype=self.dtype,
        )
        self.fc2 = nn.Dense(self.hidden_size, **dense)
        self.bn2 = TorchBatchNorm()
        self.fc3 = nn.Dense(self.nb_channels * self.nb_bins, **dense)
        self.bn3 = TorchBatchNorm()

    def encode(self, mag: Array, train: bool) -> Array:
        """`[B, frames, bins, C]` magnitude -> tanh(bn1(fc1(normalised))) `[B, frames, H]`."""
        x = mag[..., : self.max_bin, :]
        x = (x + self.input_mean[:, None]) * self.input_scale[:, None]
        x = jnp.swapaxes(x, -1, -2).reshape(*x.shape[:2], -1)  # channel-major flatten
        return jnp.tanh(self.bn1(self.fc1(x), train=train))

    def recur(self, x: Array, train: bool) -> Array:
        """3-layer BLSTM `[B, frames, H]` -> `[B, frames, H]` (dropout between layers in train)."""
        return self.lstm(x, train=train)

    def decode(self, skip: Array, mix_mag: Array, train: bool) -> tuple[Array, Array]:
        """Skip concat `[B, frames, 2H]` -> (mask, mask * mix_mag), both `[B, frames, bins, C]`."""
        x = nn.relu(self.bn2(self.fc2(skip), train=train))
        x = self.bn3(self.fc3(x), train=train)
        x = x.reshape(*x.shape[:2], self.nb_channels, self.nb_bins)
        x = x * self.output_scale + self.output_mean
        mask = jnp.swapaxes(nn.relu(x), -1, -2)
        return mask, mask * mix_mag


class XUMX(nn.Module):
    """X-UMX (`bridge=True`) or a set of independent UMX networks (`bridge=False`).

    `apply(v, wave [B, T, C])` -> masked magnitudes `[B, S, frames, n_fft//2+1, C]`;
    `apply(v, mag, method="from_magnitude")` does the same from a precomputed mixture magnitude
    `[B, frames, bins, C]`. `train=True` uses batch statistics (and updates "batch_stats", pass
    `mutable=["batch_stats"]`) and LSTM dropout (rng "dropout"). Intermediates of the reference
    (enc_out, cross_1, lstm_out, skip_concat, cross_2, masks) are sown in "intermediates".
    """

    sources: Sequence[str] = ("bass", "drums", "vocals", "other")
    n_fft: int = 4096
    hop: int = 1024
    hidden_size: int = 512
    nb_layers: int = 3
    nb_channels: int = 2
    max_bin: int | None = 1487
    bridge: bool = True
    bidirectional: bool = True
    lstm_backend: str = "auto"
    center: bool = True
    fuse_lstms: bool = True
    extra_features: int = 0  # > 0: per-frame conditioning `extra` joins every LSTM input (Concat)
    dtype: str = "float32"  # "bfloat16": bfloat16 activations (jaxsep.nn.precision)

    @property
    def nb_bins(self) -> int:
        return self.n_fft // 2 + 1

    def _check(self, where: str, shape: tuple[int, ...], channel_axis: int = -1) -> None:
        compute_dtype(self.dtype, "XUMX")
        check_sizes(
            "XUMX",
            n_fft=self.n_fft,
            hop=self.hop,
            hidden_size=self.hidden_size,
            nb_layers=self.nb_layers,
            nb_channels=self.nb_channels,
        )
        if self.extra_features != 0:  # 0: no conditioning input
            check_sizes("XUMX", extra_features=self.extra_features)
        if len(self.sources) == 0 or len(set(self.sources)) != len(self.sources):
            raise JaxsepError(f"XUMX: sources must be distinct names, got {self.sources!r}")
        if self.max_bin is not None and not 0 < self.max_bin <= self.nb_bins:
            raise JaxsepError(f"XUMX: max_bin must be in [1, {self.nb_bins}], got {self.max_bin}")
        if len(shape) != 3 + (where == "magnitude") or shape[channel_axis] != self.nb_channels:
            layout = "[B, frames, bins, C]" if where == "magnitude" else "[B, T, C]"
            raise JaxsepError(
                f"XUMX: {where} must be {layout} with C={self.nb_channels}, got shape {shape}"
            )

    def _fuse_lstms(self, mag: Array) -> bool:
        """Run all sources' LSTMs in one scan, unless initialising or on the cuDNN backend."""
        cudnn = uses_cudnn(self.lstm_backend, mag.dtype, self.dtype)
        fuse = self.fuse_lstms and len(self.sources) > 1
        return fuse and not cudnn and not self.is_initializing()

    def _fused_recur(self, x: Array, train: bool) -> list[Array]:
        """The per-source LSTM stacks on x `[S, B, T, H]` with their own params, fused."""
        weights = [self.variables["params"][source]["lstm"] for source in self.sources]
        directions = 2 if self.bidirectional else 1
        rate = 0.4 if self.nb_layers > 1 else 0.0  # as SourceNet's LSTM: between layers only
        for layer in range(self.nb_layers):
            if layer > 0 and train and rate > 0.0:
                keep = jax.random.bernoulli(self.make_rng("dropout"), 1.0 - rate, x.shape)
                x = jnp.where(keep, x / (1.0 - rate), 0.0)
            x = fused_lstm_layer(
                x, *_layer_weights(weights, layer, directions), compute_dtype(self.dtype)
            )
        return list(x)

    def __call__(self, wave: Array, train: bool = False, extra: Array | None = None) -> Array:
        """Masked magnitudes `[B, S, frames, bins, C]` of the mixture `wave [B, T, C]`."""
        self._check("wave", wave.shape)
        mag = jnp.abs(mixture_stft(wave, self.n_fft, self.hop, self.center))
        return self.from_magnitude(mag, train=train, extra=extra)

    def _check_extra(self, extra: Array | None, mag_shape: tuple[int, ...]) -> None:
        """`extra` `[B, frames, extra_features]` is required exactly when extra_features > 0."""
        if self.extra_features == 0 and extra is None:
            return
        expected = (*mag_shape[:2], self.extra_features)
        if self.extra_features == 0 or extra is None or tuple(extra.shape) != expected:
            got = None if extra is None else tuple(extra.shape)
            raise JaxsepError(
                f"XUMX: extra_features={self.extra_features} needs extra of shape {expected} "
                f"(e.g. VGGish features of the mixture), got {got}"
            )

    @nn.compact
    def from_magnitude(self, mag: Array, train: bool = False, extra: Array | None = None) -> Array:
        """Masked magnitudes `[B, S, frames, bins, C]` from the mixture magnitude.

        `extra` `[B, frames, extra_features]` (Concat conditioning) is concatenated to the LSTM
        input of every source (after bridge 1), so only `weight_ih_l0` grows.
        """
        self._check("magnitude", mag.shape)
        self._check_extra(extra, mag.shape)
        if mag.shape[-2] != self.nb_bins:
            raise JaxsepError(
                f"XUMX: magnitude has {mag.shape[-2]} bins, n_fft={self.n_fft} needs {self.nb_bins}"
            )
        nets = [
            SourceNet(
                nb_bins=self.nb_bins,
                max_bin=self.max_bin or self.nb_bins,
                nb_channels=self.nb_channels,
                hidden_size=self.hidden_size,
                nb_layers=self.nb_layers,
                bidirectional=self.bidirectional,
                lstm_backend=self.lstm_backend,
                dtype=self.dtype,
                name=source,
            )
            for source in self.sources
        ]
        enc = [net.encode(mag, train) for net in nets]
        self.sow("intermediates", "enc_out", jnp.stack(enc, axis=1))
        lstm_in = enc
        if self.bridge:
            cross_1 = sum(enc) / len(enc)
            self.sow("intermediates", "cross_1", cross_1)
            lstm_in = [cross_1] * len(nets)
        if extra is not None:
            lstm_in = [jnp.concatenate([x, extra.astype(x.dtype)], axis=-1) for x in lstm_in]
        if self._fuse_lstms(mag):
            lstm_out = self._fused_recur(jnp.stack(lstm_in), train)
        else:
            lstm_out = [net.recur(x, train) for net, x in zip(nets, lstm_in)]
        self.sow("intermediates", "lstm_out", jnp.stack(lstm_out, axis=1))
        skip = [jnp.concatenate([e, h], axis=-1) for e, h in zip(enc, lstm_out)]
        self.sow("intermediates", "skip_concat", jnp.stack(skip, axis=1))
        if self.bridge:
            cross_2 = sum(skip) / len(skip)
            self.sow("intermediates", "cross_2", cross_2)
            skip = [cross_2] * len(nets)
        decoded = [net.decode(k, mag, train) for net, k in zip(nets, skip)]
        self.sow("intermediates", "masks", jnp.stack([m for m, _ in decoded], axis=1))
        return jnp.stack([spec for _, spec in decoded], axis=1)


Model = XUMX


def _separation_settings(config: dict | None, bridge: bool) -> dict:
    """Post-filter settings from a model directory's config.json (`"separation"`), with the
    original recipes' defaults: one EM iteration, norbert semantics for X-UMX (its eval script)
    and open-unmix's Separator semantics for UMX; 300-frame Wiener blocks bound the memory."""
    settings = {
        "wiener_iterations": 1,
        "wiener_style": "norbert" if bridge else "openunmix",
        "wiener_window": 300,
        "softmask": False,
    }
    settings.update((config or {}).get("separation", {}))
    return settings


def separate_waveforms(
    module: XUMX, variables: dict, wave: Array, config: dict | None = None
) -> Array:
    """`[B, T, C]` mixture -> `[B, S, T, C]` sources: masked magnitudes, the multichannel Wiener
    EM post-filter (mixture phase when `wiener_iterations` is 0), then the inverse STFT.

    A Concat model (`extra_features > 0`) computes its conditioning with the frozen embedding
    stored in its directory (`variables["embedding"]`, an argument of the jitted call, not
    constants of the program) as `config["conditioning"]` describes.
    """
    from jaxsep.audio.stft import istft
    from jaxsep.audio.wiener import wiener

    settings = _separation_settings(config, module.bridge)
    extra = None
    if module.extra_features:
        from jaxsep.models.embeddings import conditioning_features, stored_embedding

        if not config or "conditioning" not in config:
            raise JaxsepError("a Concat X-UMX model needs the 'conditioning' block of config.json")
        extra = conditioning_features(config, wave, stored_embedding(variables))
    spec = mixture_stft(wave, module.n_fft, module.hop, module.center)  # [B, F, K, C]
    magnitudes = module.apply(variables, jnp.abs(spec), method="from_magnitude", extra=extra)
    iterations = int(settings["wiener_iterations"])
    if iterations > 0 or settings["softmask"]:
        estimates = wiener(
            magnitudes,
            spec,
            iterations=iterations,
            softmask=bool(settings["softmask"]),
            style=settings["wiener_style"],
            window=settings["wiener_window"],
        )
    else:
        phase = spec / jnp.maximum(jnp.abs(spec), 1e-12)
        estimates = magnitudes * phase[:, None]
    signals = istft(
        jnp.moveaxis(estimates, -1, -3),  # [B, S, C, F, K]
        module.n_fft,
        module.hop,
        "hann",
        center=module.center,
        length=wave.shape[1],
    )
    return jnp.moveaxis(signals, -2, -1)  # [B, S, T, C]
