"""X-UMX trained with MDL + CL, alone or informed by frozen VGGish embeddings (Hung & Lerch 2022).

``config.method``:

* ``baseline``: X-UMX with the multi-domain + combination loss (``jaxsep.losses.xumx.mdl_loss``).
* ``concat``: VGGish embeddings of the *mixture*, repeated onto the STFT frames, are concatenated
  to every source's LSTM input (after bridge 1; ``XUMX(extra_features=128)``). The model needs
  the same features at inference: config.json's ``conditioning`` says how to rebuild them and
  the model directory stores the frozen VGGish as ``variables["embedding"]``
  (:func:`conditioning_features`; the directory does not depend on ``vggish_dir`` any more).
* ``conreg``: a per-source 1x1 projection (Dense, per frame) of a per-source latent to 128-d is
  pulled towards the VGGish embedding of the same source's true stem and pushed (margin 0.2)
  from the other stems' (``losses.xumx.con_reg``); the head is dropped at export.
* ``disreg``: cosine distances between the sources' latents may not exceed the distances
  between their stems' VGGish embeddings (``losses.xumx.dis_reg``).

VGGish runs frozen inside the jitted step on the augmented stems / mixture (the random gains
change log-mels, so nothing can be precomputed): channel mean, 44.1 -> 16 kHz by
:func:`resample_fft` (an exact band-limited FFT resampler; chosen over a host 16 kHz branch in
the grain map because it is one FFT pair on the accelerator, while resampling 5 stems per example
on the host would add to the data workers, the usual bottleneck), then ``log_mel`` + VGGish.
Its parameters ride in the trainer's ``model_state["embedding"]`` (not in jit constants, which would bake
288 MB into the program), so checkpoints also hold them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsep.audio.stft import istft
from jaxsep.config import config_to_dict
from jaxsep.data.augment import Augmentation
from jaxsep.data.mixing import ExcerptSampler
from jaxsep.data.pipeline import batch_iterator_from_config
from jaxsep.data.tracks import (
    musdb_source_from_config,
    validation_source_from_config,
)
from jaxsep.errors import JaxsepError, check_sizes
from jaxsep.losses.xumx import con_reg, dis_reg, mdl_loss, stem_embeddings
from jaxsep.modeldir import save_model_dir
from jaxsep.models.embeddings import (
    EXAMPLE_SECONDS,
    frozen_embedding,
    mixture_features,
    to_16k_mono,
)
from jaxsep.models.vggish import EMBEDDING_SIZE
from jaxsep.models.xumx import XUMX, bandwidth_to_max_bin, mixture_stft
from jaxsep.train.loop import default_train_config
from jaxsep.train.loop import train as run_trainer
from jaxsep.train.mesh import make_mesh

METHODS = ("baseline", "concat", "conreg", "disreg")
LATENTS = ("enc_out", "lstm_out", "skip_concat")
MODEL_NAME = "xumx"


def default_config() -> ml_collections.ConfigDict:
    """The paper's training setup (one comment per recipe field; trainer keys in loop.py)."""
    c = default_train_config()
    c.recipe = "xumx_vggish"
    c.method = "baseline"  # baseline | concat | conreg | disreg
    c.seed = 42
    c.batch_size = 16
    c.num_steps = 1_000_000  # early stopping ends the run
    c.log_every = 50
    c.eval_every = 344  # one MUSDB "epoch": 86 tracks x 64 excerpts / batch 16
    c.checkpoint_every = 344
    c.early_stop_patience = 25
    c.optimizer.lr = 1e-4
    c.optimizer.weight_decay = 1e-5  # coupled L2, as torch Adam
    c.plateau.patience = 10
    c.plateau.factor = 0.3
    c.data = ml_collections.ConfigDict()
    c.data.root = ""  # MUSDB18-HQ-layout root
    c.data.setup_file = ""  # musdb setup YAML relative to root ("" = musdb's default)
    c.data.stems = ("bass", "drums", "vocals", "other")  # X-UMX's source order
    c.data.seconds = 6.0  # excerpt length
    c.data.coherent = False  # random-track mixing: each stem from its own track and offset
    c.data.examples_per_epoch = 86 * 64
    c.data.workers = 0  # grain worker processes
    c.data.eval_examples = 16  # fixed validation excerpts
    c.data.stats_examples = 256  # excerpts for the input mean/std (bounded; asteroid: all)
    c.data.augment = ml_collections.ConfigDict(
        {"gain": True, "channel_swap": True, "pitch_shift": False, "time_stretch": False}
    )
    c.model = ml_collections.ConfigDict()
    c.model.n_fft = 4096
    c.model.hop = 1024
    c.model.hidden_size = 512
    c.model.nb_layers = 3
    c.model.bandwidth = 16000.0  # Hz: the network sees bins up to here (1487 at 4096)
    c.model.dtype = "float32"  # "bfloat16": bf16 activations (jaxsep.nn.precision)
    c.loss = ml_collections.ConfigDict()
    c.loss.mix_coef = 10.0  # weight of the time-domain weighted-SDR term
    c.loss.combine = True  # combination loss over the 14 source subsets
    c.loss.multidomain = True  # False: frequency MSE only
    c.transfer = ml_collections.ConfigDict()
    c.transfer.embedding = "vggish"  # frozen embedding: vggish | random_logmel (control, tests)
    c.transfer.vggish_dir = ""  # converted VGGish model dir ("" = random init: tests only)
    c.transfer.vggish_seed = 0  # init seed when vggish_dir is empty (and for random_logmel)
    c.transfer.final_relu = False  # TF VGGish (no ReLU on the 128-d layer)
    c.transfer.latent = "skip_concat"  # per-source latent regularised: enc_out|lstm_out|...
    c.transfer.margin = 0.2  # Con-Reg negative margin
    c.transfer.conreg_weight = 1e-6
    c.transfer.disreg_weight = 1.0
    return c


def config_for(method: str, variant: str | None) -> ml_collections.ConfigDict:
    """``default_config()`` for ``method``; variant ``tiny`` trains in seconds on 2 CPU cores
    (n_fft 512 / hop 128, hidden 32, 1 LSTM layer, 1 s excerpts, batch 8)."""
    config = default_config()
    config.method = method
    if variant == "tiny":
        config.batch_size = 8
        config.num_steps = 4
        config.log_every = 1
        config.eval_every = 2
        config.checkpoint_every = 1000  # only the final step is saved
        config.early_stop_patience = 0
        config.plateau.patience = 0
        config.data.seconds = 1.0
        config.data.examples_per_epoch = 64
        config.data.eval_examples = 8
        config.data.stats_examples = 8
        config.model.n_fft = 512
        config.model.hop = 128
        config.model.hidden_size = 32
        config.model.nb_layers = 1
        config.optimizer.lr = 1e-3  # a few steps must move the loss
    elif variant not in (None, "base"):
        raise ValueError(f"unknown variant {variant!r} (base, tiny)")
    return config


# --- frozen embeddings --------------------------------------------------------------------


class ProjectionHead(nn.Module):
    """Con-Reg head: one per-frame Dense (a kernel-1 Conv1d) per source, latent -> 128."""

    sources: tuple[str, ...]
    features: int = EMBEDDING_SIZE

    @nn.compact
    def __call__(self, latents: jax.Array) -> jax.Array:
        """``[B, S, frames, D] -> [B, S, frames, features]``."""
        heads = [nn.Dense(self.features, name=s)(latents[:, i]) for i, s in enumerate(self.sources)]
        return jnp.stack(heads, axis=1)


# --- model, loss, statistics -----------------------------------------------------------------


def model_kwargs(config: ml_collections.ConfigDict, sample_rate: int, channels: int) -> dict:
    m = config.model
    sizes = {k: m[k] for k in ("n_fft", "hop", "hidden_size", "nb_layers")}
    check_sizes("config.model", **sizes)  # before any STFT of the data uses them
    return {
        "sources": tuple(config.data.stems),
        "n_fft": int(m.n_fft),
        "hop": int(m.hop),
        "hidden_size": int(m.hidden_size),
        "nb_layers": int(m.nb_layers),
        "nb_channels": int(channels),
        "max_bin": bandwidth_to_max_bin(sample_rate, int(m.n_fft), float(m.bandwidth)),
        "bridge": True,
        "extra_features": EMBEDDING_SIZE if config.method == "concat" else 0,
        "dtype": str(m.dtype),
    }


def input_statistics(
    sampler: ExcerptSampler, augment: Augmentation, config: ml_collections.ConfigDict
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std per bin of the mono mixture magnitude over ``stats_examples`` excerpts.

    Open-Unmix's rule: downmix, centred STFT magnitude, statistics over all frames, std floored
    at ``1e-4 * max(std)``. Augmentation stays on, as in asteroid's recipe.
    """
    rng = np.random.default_rng(config.seed + 2)
    n_fft, hop = int(config.model.n_fft), int(config.model.hop)
    magnitude = jax.jit(lambda w: jnp.abs(mixture_stft(w, n_fft, hop))[..., 0])
    total = total_sq = 0.0
    count = 0
    for _ in range(max(1, int(config.data.stats_examples))):
        mono = sampler.sample(rng, augment)["mixture"].mean(axis=-1, keepdims=True)
        frames = np.asarray(magnitude(mono[None]), np.float64)[0]  # [frames, bins]
        total = total + frames.sum(axis=0)
        total_sq = total_sq + np.square(frames).sum(axis=0)
        count += frames.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.maximum(std, 1e-4 * std.max()) if std.max() > 0 else np.ones_like(std)
    return mean.astype(np.float32), std.astype(np.float32)


def with_input_statistics(params: dict, mean: np.ndarray, std: np.ndarray) -> dict:
    """Write ``input_mean = -mean``, ``input_scale = 1/std`` (port's signs) into every source."""
    out = dict(params)
    for source, tree in params.items():
        max_bin = tree["input_mean"].shape[0]
        out[source] = {
            **tree,
            "input_mean": jnp.asarray(-mean[:max_bin]),
            "input_scale": jnp.asarray(1.0 / std[:max_bin]),
        }
    return out


class XumxObjective:
    """The recipe's loss as pure functions of (params, model_state, batch)."""

    def __init__(self, config: ml_collections.ConfigDict, module: XUMX, sample_rate: int):
        if config.method not in METHODS:
            raise JaxsepError(f"config.method must be one of {METHODS}, got {config.method!r}")
        if config.transfer.latent not in LATENTS:
            raise JaxsepError(
                f"config.transfer.latent must be one of {LATENTS}, got {config.transfer.latent!r}"
            )
        self.config = config
        self.method = config.method
        self.module = module
        self.rate = int(sample_rate)
        self.embed_fn = None
        if self.method != "baseline":
            self.embed_fn, params = frozen_embedding(config.transfer)
            self.embed_params = jax.tree.map(np.asarray, params)  # host copy for init_fn
        self.head = ProjectionHead(tuple(module.sources))

    def embed(self, model_state: dict) -> Callable:
        """The frozen embedding with its parameters from the trainer's model_state."""
        return partial(self.embed_fn, model_state["embedding"])

    def __call__(self, params, model_state, batch, rng, train: bool):
        """``(loss, (metrics, new_model_state))``; the regulariser is added in training and
        reported (not added) in evaluation, whose ``loss`` is the separation loss alone."""
        module, cfg = self.module, self.config
        mixture, sources = batch["mixture"], batch["sources"]
        frames = 1 + mixture.shape[1] // module.hop
        extra = None
        if self.method == "concat":
            extra = mixture_features(
                self.embed(model_state), mixture, frames, module.hop, self.rate
            )
        variables = {"params": params["xumx"], "batch_stats": model_state["batch_stats"]}
        mutable = ["batch_stats", "intermediates"] if train else ["intermediates"]
        estimate, updates = module.apply(
            variables, mixture, train=train, extra=extra, mutable=mutable, rngs={"dropout": rng}
        )
        spec = mixture_stft(mixture, module.n_fft, module.hop, module.center)  # [B, K, F, C]
        target = jnp.abs(mixture_stft_sources(sources, module))  # [B, S, K, F, C]
        est_wave = None
        if cfg.loss.multidomain:
            phase = jnp.exp(1j * jnp.angle(spec))[:, None]
            complex_est = jnp.moveaxis(estimate * phase, -1, -3)  # [B, S, C, K, F]
            est_wave = jnp.swapaxes(istft(complex_est, module.n_fft, module.hop), -1, -2)
        loss, metrics = mdl_loss(
            estimate,
            target,
            est_wave,
            sources,
            mixture,
            mix_coef=cfg.loss.mix_coef,
            combine=cfg.loss.combine,
            multidomain=cfg.loss.multidomain,
        )
        metrics = {**metrics, "separation_loss": loss}
        if self.method in ("conreg", "disreg"):
            latent = updates["intermediates"][cfg.transfer.latent][0]  # [B, S, K, D]
            stems = to_16k_mono(sources, self.rate)  # [B, S, T16]
            features = stem_embeddings(
                self.embed(model_state), stems, frames, module.hop, self.rate, EXAMPLE_SECONDS
            )
            if self.method == "conreg":
                projected = self.head.apply({"params": params["head"]}, latent)
                reg, parts = con_reg(projected, features, cfg.transfer.margin)
                weight, metrics = cfg.transfer.conreg_weight, {**metrics, **parts}
            else:
                reg, weight = dis_reg(latent, features), cfg.transfer.disreg_weight
            metrics[f"{self.method}_loss"] = reg
            if train:
                loss = loss + weight * reg
        new_state = dict(model_state)
        if train:
            new_state["batch_stats"] = updates["batch_stats"]
        return loss, (metrics, new_state)


def mixture_stft_sources(sources: jax.Array, module: XUMX) -> jax.Array:
    """Complex STFT of every stem ``[B, S, T, C] -> [B, S, frames, bins, C]``."""
    b, s = sources.shape[:2]
    spec = mixture_stft(sources.reshape(b * s, *sources.shape[2:]), module.n_fft, module.hop)
    return spec.reshape(b, s, *spec.shape[1:])


# --- data and the training run -------------------------------------------------------------


def fixed_batch(sampler: ExcerptSampler, count: int, seed: int) -> dict:
    """``count`` seeded excerpts (no augmentation): the fixed validation batch."""
    rng = np.random.default_rng(seed)
    examples = [sampler.sample(rng) for _ in range(count)]
    return {k: np.stack([e[k] for e in examples]) for k in ("mixture", "sources")}


def _conditioning(config: ml_collections.ConfigDict) -> dict | None:
    if config.method != "concat":
        return None
    return {
        "type": "embedding_of_mixture",
        "embedding": str(config.transfer.embedding),
        "vggish_dir": str(config.transfer.vggish_dir),
        "vggish_seed": int(config.transfer.vggish_seed),
        "final_relu": bool(config.transfer.final_relu),
        "features": EMBEDDING_SIZE,
        "frame_rule": "example = min(floor(frame * hop / rate / 0.96), examples - 1)",
        "note": "apply(v, wave, extra=jaxsep.models.embeddings.conditioning_features("
        "cfg, wave, v['embedding'])); vggish_dir is where the stored embedding came from",
    }


def train(config: ml_collections.ConfigDict, workdir: Path) -> Path:
    """Train X-UMX with ``config.method``; returns the exported model directory."""
    if config.method not in METHODS:
        raise JaxsepError(f"config.method must be one of {METHODS}, got {config.method!r}")
    split = "train" if config.data.setup_file else None
    train_source = musdb_source_from_config(config.data, "train", split)
    rate, channels = int(train_source.sample_rate), int(train_source.channels)
    sampler = ExcerptSampler(
        train_source,
        seconds=config.data.seconds,
        stems=tuple(config.data.stems),
        coherent=config.data.coherent,
    )
    augment = Augmentation(**config.data.augment.to_dict())
    kwargs = model_kwargs(config, rate, channels)
    mean, std = input_statistics(sampler, augment, config)
    module = XUMX(**kwargs)
    objective = XumxObjective(config, module, rate)
    frames = 1 + sampler.frames // module.hop
    sample_wave = jnp.zeros((1, sampler.frames, channels), jnp.float32)
    sample_extra = jnp.zeros((1, frames, kwargs["extra_features"]), jnp.float32)

    def init_fn(rng):
        extra = sample_extra if config.method == "concat" else None
        variables = module.init(rng, sample_wave, extra=extra)
        params = {"xumx": with_input_statistics(variables["params"], mean, std)}
        if config.method == "conreg":
            latent = jax.eval_shape(
                lambda v: module.apply(v, sample_wave, extra=extra, mutable=["intermediates"]),
                variables,
            )[1]["intermediates"][config.transfer.latent][0]
            params["head"] = objective.head.init(
                jax.random.fold_in(rng, 1), jnp.zeros(latent.shape, latent.dtype)
            )["params"]
        state = {"batch_stats": variables["batch_stats"]}
        if objective.embed_fn is not None:  # a host callback: 288 MB must not become constants
            host = objective.embed_params
            shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), host)
            state["embedding"] = jax.pure_callback(lambda: host, shapes)
        return params, state

    mesh = make_mesh()
    train_iter = batch_iterator_from_config(sampler, config, mesh, augment)

    eval_fn = None
    if config.eval_every:
        valid = ExcerptSampler(
            validation_source_from_config(config.data),
            seconds=config.data.seconds,
            stems=tuple(config.data.stems),
        )
        eval_data = fixed_batch(valid, config.data.eval_examples, config.seed + 1)
        eval_step = jax.jit(lambda p, s, b: objective(p, s, b, jax.random.PRNGKey(0), False)[1][0])

        def eval_fn(params, model_state):
            metrics = eval_step(params, model_state, eval_data)
            return {k: float(v) for k, v in metrics.items()} | {
                "loss": float(metrics["separation_loss"])
            }

    try:
        state = run_trainer(
            config=config,
            workdir=workdir,
            init_fn=init_fn,
            loss_fn=objective,
            train_iter=train_iter,
            eval_fn=eval_fn,
        )
    finally:
        train_iter.close()
    export = {
        "model": MODEL_NAME,
        "model_kwargs": {**kwargs, "sources": list(kwargs["sources"])},
        "sources": list(config.data.stems),
        "sample_rate": float(rate),
        "channels": channels,
        "recipe": "xumx_vggish",
        "method": config.method,
        "train_config": config_to_dict(config),
        "step": int(state["step"]),
    }
    conditioning = _conditioning(config)
    if conditioning:
        export["conditioning"] = conditioning
    variables = {
        "params": state["params"]["xumx"],
        "batch_stats": state["model_state"]["batch_stats"],
    }
    if conditioning:  # the frozen embedding travels with the model: the directory stands alone
        variables["embedding"] = state["model_state"]["embedding"]
    return save_model_dir(Path(workdir) / "model", export, variables)
