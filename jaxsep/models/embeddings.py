"""Frozen embedding features on STFT frames, for Concat conditioning and latent regularisers.

A frozen embedding model (VGGish, or a cheap random log-mel projection used as a control) runs on
16 kHz mono audio and gives one vector per 0.96 s example; the features are then repeated onto
the frames of the separator's STFT. Both the X-UMX recipe (training) and the X-UMX separation
hook (inference of a Concat model) use these, so they live beside the models.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsep.audio.mel import EXAMPLE_FRAMES, HOP_LENGTH, SAMPLE_RATE, log_mel
from jaxsep.errors import JaxsepError
from jaxsep.models.vggish import EMBEDDING_SIZE, VGGish

Array = jax.Array
EXAMPLE_SECONDS = EXAMPLE_FRAMES * HOP_LENGTH / SAMPLE_RATE  # 0.96 s per VGGish example


def frames_to_examples(
    num_frames: int, num_examples: int, hop: int, sample_rate: float, example_seconds: float = 0.96
) -> np.ndarray:
    """Index of the embedding example every STFT frame takes its features from.

    Frame ``t`` of a centred STFT is centred on sample ``t * hop``, i.e. at ``t * hop / rate``
    seconds; example ``i`` covers ``[i, i + 1) * example_seconds``. Rule:
    ``min(floor(t * hop / rate / example_seconds), num_examples - 1)``: the frames past the
    last complete example (the incomplete tail that VGGish drops; ~11 frames of a 6 s crop at
    4096/1024) repeat the last example.
    """
    if num_examples < 1:
        raise ValueError(
            f"no embedding example: the signal is shorter than one {example_seconds} s example"
        )
    seconds = np.arange(num_frames) * (hop / float(sample_rate))
    index = np.floor(seconds / example_seconds + 1e-9).astype(np.int64)
    return np.minimum(index, num_examples - 1)


def repeat_to_frames(
    examples: Array,
    num_frames: int,
    hop: int,
    sample_rate: float,
    example_seconds: float = 0.96,
) -> Array:
    """Embeddings ``[..., N, E]`` -> ``[..., num_frames, E]`` by :func:`frames_to_examples`."""
    index = frames_to_examples(num_frames, examples.shape[-2], hop, sample_rate, example_seconds)
    return jnp.take(examples, jnp.asarray(index), axis=-2)


def resample_fft(x: jax.Array, rate_in: int, rate_out: int) -> jax.Array:
    """Band-limited resampling on the last axis by truncating/zero-padding the spectrum.

    ``T`` samples -> ``round(T * rate_out / rate_in)``; exact for periodic signals, jit-able.
    Against resampy ``kaiser_best`` (the VGGish reference) it differs mainly at the two edges
    (circular wrap-around) and in the 7.2-8 kHz band, which VGGish's 125-7500 Hz mel bank barely
    sees; the tests bound the log-mel difference.
    """
    length = x.shape[-1]
    out = int(round(length * rate_out / rate_in))
    if out == length:
        return x
    spec = jnp.fft.rfft(x, axis=-1)
    bins = out // 2 + 1
    if bins <= spec.shape[-1]:
        spec = spec[..., :bins]
    else:
        spec = jnp.pad(spec, [(0, 0)] * (x.ndim - 1) + [(0, bins - spec.shape[-1])])
    return (jnp.fft.irfft(spec, n=out, axis=-1) * (out / length)).astype(x.dtype)


def to_16k_mono(wave: jax.Array, sample_rate: int) -> jax.Array:
    """``[..., T, C]`` -> ``[..., T16]``: channel mean then :func:`resample_fft` (as VGGish)."""
    return resample_fft(jnp.mean(wave, axis=-1), int(sample_rate), SAMPLE_RATE)


EmbedFn = Callable[[dict, jax.Array], jax.Array]
EMBEDDINGS = ("vggish", "random_logmel")


def _vggish_params(transfer) -> dict:
    """VGGish params from ``vggish_dir`` (a converted model dir) or a random init (tests)."""
    if transfer["vggish_dir"]:
        from jaxsep.modeldir import load

        model = load(transfer["vggish_dir"])
        if not isinstance(model.module, VGGish):
            raise JaxsepError(f"{transfer['vggish_dir']}: not a VGGish model directory")
        if bool(model.module.final_relu) != bool(transfer["final_relu"]):
            raise JaxsepError(
                f"{transfer['vggish_dir']}: converted with final_relu={model.module.final_relu}, "
                f"but transfer.final_relu is {bool(transfer['final_relu'])}: convert with(out) "
                "--tf-embedding or set --config.transfer.final_relu to match"
            )
        return model.variables["params"]
    return _random_vggish_params(jax.random.PRNGKey(int(transfer["vggish_seed"])))


@jax.jit
def _random_vggish_params(rng: jax.Array) -> dict:
    """A seeded VGGish init, compiled once per process: jitting a fresh module's bound `init`
    compiled the same program again at every call (5-7 s on a 2-core CPU, three times in one
    Concat training and its checks)."""
    return VGGish().init(rng, jnp.zeros((1, EXAMPLE_FRAMES, 64), jnp.float32))["params"]


def frozen_embedding_fn(transfer: ml_collections.ConfigDict | dict) -> EmbedFn:
    """``embed(params, wave16k [N, T16]) -> [N, examples, 128]``, never trained.

    ``vggish``: log-mel examples through VGGish. ``random_logmel``: the mean log-mel of each
    0.96 s example through a fixed Gaussian projection 64 -> 128 (a cheap control with the same
    timing, used by the tests).
    """
    name = transfer["embedding"]
    if name == "vggish":
        module = VGGish(final_relu=bool(transfer["final_relu"]))

        def embed(params, wave16k):
            return jax.lax.stop_gradient(module.apply({"params": params}, log_mel(wave16k)))

        return embed
    if name == "random_logmel":

        def embed(params, wave16k):
            pooled = jnp.mean(log_mel(wave16k), axis=-2)  # [N, examples, 64]
            return jax.lax.stop_gradient(pooled @ params["projection"])

        return embed
    raise JaxsepError(f"config.transfer.embedding must be one of {EMBEDDINGS}, got {name!r}")


def frozen_embedding(transfer: ml_collections.ConfigDict | dict) -> tuple[EmbedFn, dict]:
    """``(embed, params)``: :func:`frozen_embedding_fn` and its parameters (VGGish from
    ``vggish_dir`` or a seeded init; the random projection from ``vggish_seed``)."""
    embed = frozen_embedding_fn(transfer)
    if transfer["embedding"] == "vggish":
        return embed, _vggish_params(transfer)
    rng = np.random.default_rng(int(transfer["vggish_seed"]))
    projection = rng.standard_normal((64, EMBEDDING_SIZE)).astype(np.float32) / 8.0
    return embed, {"projection": jnp.asarray(projection)}


def mixture_features(
    embed: Callable, mixture: jax.Array, num_frames: int, hop: int, sample_rate: int
) -> jax.Array:
    """Concat conditioning: embeddings of ``mixture [B, T, C]`` on the STFT frames."""
    emb = embed(to_16k_mono(mixture, sample_rate))  # [B, N, E]
    return repeat_to_frames(emb, num_frames, hop, sample_rate, EXAMPLE_SECONDS)


def stored_embedding(variables: dict) -> dict:
    """The frozen embedding's parameters a Concat model directory carries (``"embedding"``)."""
    if "embedding" not in variables:
        raise JaxsepError(
            "a Concat X-UMX model needs its frozen embedding's parameters (variables "
            "'embedding'); model directories exported before 2026-11-22 lack them: run "
            "`jaxsep train` on the run's --workdir again to export it anew"
        )
    return variables["embedding"]


def conditioning_features(
    model_config: dict, wave: jax.Array, embedding_params: dict | None = None
) -> jax.Array:
    """A Concat model's ``extra`` input for ``wave [B, T, C]``.

    ``embedding_params`` is the model directory's ``variables["embedding"]`` (the frozen
    embedding it was trained with). Pass it under ``jax.jit``: params built here from
    ``config["conditioning"]`` (the default, for eager calls) would be closed over, and XLA
    would bake a VGGish's 288 MB into the program as constants.
    """
    cond = model_config.get("conditioning")
    if not cond:
        raise JaxsepError("model config has no 'conditioning': not a Concat model")
    if embedding_params is None:
        embed, params = frozen_embedding(cond)
    else:
        embed, params = frozen_embedding_fn(cond), embedding_params
    kwargs = model_config["model_kwargs"]
    frames = 1 + wave.shape[1] // kwargs["hop"]
    rate = int(model_config["sample_rate"])
    return mixture_features(partial(embed, params), wave, frames, kwargs["hop"], rate)
