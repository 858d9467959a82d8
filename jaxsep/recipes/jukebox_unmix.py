"""The unmix recipe (reference/jukebox.md §6): Jukebox level-0 VQ-VAE per stem, then a mixture encoder.

* Stage 1 (``config.stage = 1``): a level-0 VQ-VAE on one stem's mono audio (``config.stem``),
  from scratch or fine-tuned from public Jukebox weights / a model directory
  (``config.init_checkpoint``; the codebook EMA restarts with ``restore_k`` semantics). Loss
  ``lmix + multispectral + 0.02 commit`` with bandwidth normalisers computed from the stem's
  training audio. ``codebook_update = "frozen"`` reproduces what DataParallel did to the
  published runs (§6.4).
* Stage 2 (``config.stage = 2``): a mixture encoder trained so its latents match the frozen
  stage-1 encoder's pre-quantisation latents of the stem (``config.stem_model``), ``lmix`` with
  no bandwidth. Exported as a single-stem `jaxsep.models.unmix` directory (mixture encoder +
  stem codebook + stem decoder); `jaxsep.models.unmix.build_deployed` merges four of them.

Both stages: Adam 3e-4 with a linear warm-up, global-norm clip 1.0 and a parameter EMA whose
weights are the exported ones (the reference saves EMA weights). `evaluate` runs the paper's
chunked inference (or overlap-add) and the MDX SDR per song and "Total".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxsep.config import config_to_dict
from jaxsep.data.mixing import ExcerptSampler
from jaxsep.data.pipeline import batch_iterator_from_config
from jaxsep.data.tracks import MusdbSource, TrackSource, musdb_source_from_config
from jaxsep.errors import JaxsepError
from jaxsep.evaluate.metrics import sdr
from jaxsep.losses.vqvae import bandwidth_statistics, stage1_loss, stage2_loss
from jaxsep.modeldir import Model, load_variables, read_config, save_model_dir
from jaxsep.models.unmix import (
    MODEL_NAME as UNMIX_MODEL,
)
from jaxsep.models.unmix import (
    PAPER_CHUNK,
    MixtureEncoder,
    separate_chunked,
    stage2_variables,
)
from jaxsep.models.vqvae import VQVAE, VQVAEConfig
from jaxsep.nn.vq import CODEBOOK_COLLECTION, restored_state
from jaxsep.train.loop import default_train_config
from jaxsep.train.loop import train as run_trainer
from jaxsep.train.mesh import make_mesh
from jaxsep.train.state import scale_by_lr_scale

VQVAE_MODEL = "vqvae"
STAGES = (1, 2)


def default_config() -> ml_collections.ConfigDict:
    """Paper settings (batch 4 x 393216 samples, Adam 3e-4, 100-step warm-up, EMA 0.9995)."""
    c = default_train_config()
    c.recipe = "jukebox_unmix"
    c.stage = 1  # 1: stem VQ-VAE; 2: mixture encoder
    c.stem = "vocals"  # the stem this run models
    c.init_checkpoint = (
        ""  # stage 1: Jukebox .pth.tar | model dir | "" (scratch); stage 2: see below
    )
    # stage 2: "" random init (paper draft) | "stem_model" (its encoder) | .pth.tar | model dir
    c.stem_model = ""  # stage 2: the stage-1 model directory of `stem`
    c.codebook_update = "ema"  # "ema" | "frozen" (codebook kept as restored)
    c.restore_k_tokens = 0  # restore_k token count (0: chunk // hop, one worker: E = 24)
    c.warmup_steps = 100  # linear lr warm-up from 0 (the first update uses lr 0)
    c.param_ema = 0.9995  # parameter EMA decay (0: off); exported weights are the EMA ones
    c.batch_size = 4
    c.num_steps = 80_000
    c.log_every = 100
    c.eval_every = 5_000
    c.checkpoint_every = 20_000
    c.optimizer.lr = 3e-4
    c.optimizer.clip_norm = 1.0
    c.model = ml_collections.ConfigDict(
        {
            "levels": 1,
            "downs_t": (3,),
            "strides_t": (2,),
            "multipliers": (2,),
            "width": 32,
            "depth": 4,
            "emb_width": 64,
            "l_bins": 2048,
            "remat": False,  # rematerialise residual stacks in the backward pass
            "dtype": "float32",  # "bfloat16": bf16 convolution activations
        }
    )
    c.loss = ml_collections.ConfigDict(
        {"commit": 0.02, "multispectral": 1.0, "linf_weight": 0.02, "linf_k": 2048}
    )
    c.bandwidth = ml_collections.ConfigDict(
        {"chunks": 64, "max_seconds": 600.0}  # bounded sample of training chunks
    )
    c.data = ml_collections.ConfigDict()
    c.data.root = ""  # MUSDB18-HQ-layout root
    c.data.setup_file = ""  # musdb setup YAML relative to root ("" = musdb's default)
    c.data.stems = ("drums", "bass", "other", "vocals")  # the mixture is their sum
    c.data.chunk = PAPER_CHUNK  # samples per example
    c.data.aug_blend = True  # mono = m L + (1 - m) R with m ~ U(0, 1), else m = 0.5
    c.data.blend_independently = True  # stage 2: mixture and stem get their own m (reference)
    c.data.examples_per_epoch = 10_000
    c.data.workers = 0
    c.data.eval_examples = 4
    c.data.overfit_batches = 0  # > 0: cycle this many fixed training batches (debugging)
    return c


# --------------------------------------------------------------------------- data


class MonoExcerpts:
    """`ExcerptSampler` excerpts of one stem, mixed to mono like Jukebox's ``aug_blend``.

    ``{"mixture": [T, 1], "sources": [1, T, 1]}``; stage 1 uses only the stem. With
    ``independent`` the mixture and the stem draw their own L/R weights (the reference quirk).
    """

    def __init__(self, sampler: ExcerptSampler, blend: bool, independent: bool) -> None:
        self.sampler, self.blend, self.independent = sampler, blend, independent
        self.frames, self.sample_rate, self.channels = sampler.frames, sampler.sample_rate, 1

    def _weight(self, rng: np.random.Generator) -> float:
        return float(rng.uniform()) if self.blend else 0.5

    @staticmethod
    def _mono(audio: np.ndarray, m: float) -> np.ndarray:
        if audio.shape[-1] == 1:
            return audio
        return (m * audio[..., :1] + (1.0 - m) * audio[..., 1:2]).astype(np.float32)

    def sample(self, rng: np.random.Generator, augment=None) -> dict[str, np.ndarray]:
        excerpt = self.sampler.sample(rng, augment)
        m_stem = self._weight(rng)
        m_mix = self._weight(rng) if self.independent else m_stem
        return {
            "mixture": self._mono(excerpt["mixture"], m_mix),
            "sources": self._mono(excerpt["sources"], m_stem),
        }


class _FixedBatches:
    """Cycles a few fixed batches; has the iterator state API the trainer needs."""

    def __init__(self, batches: list) -> None:
        self.batches, self.index = batches, 0

    def __next__(self):
        batch = self.batches[self.index % len(self.batches)]
        self.index += 1
        return batch

    def get_state(self) -> dict:
        return {"index": self.index}

    def set_state(self, state: dict) -> None:
        self.index = int(state["index"])

    def close(self) -> None:
        pass


def tiny_schedule(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ``tiny`` variant's schedule, both stages: seconds on 2 CPU cores (tests), 4096-sample
    chunks, one evaluation at the last step, no checkpoint before the final one."""
    config.batch_size = 8
    config.num_steps = 6
    config.log_every = 1
    config.eval_every = 6
    config.checkpoint_every = 1000
    config.warmup_steps = 2
    config.param_ema = 0.9
    config.optimizer.lr = 1e-3
    config.loss.linf_k = 256
    config.data.chunk = 4096
    config.data.eval_examples = 2
    return config


def _source(config, subset: str) -> MusdbSource:
    split = "train" if config.data.setup_file and subset == "train" else None
    return musdb_source_from_config(config.data, subset, split)


def _excerpts(config, source: TrackSource) -> MonoExcerpts:
    if config.stem not in source.stems:
        raise JaxsepError(f"config.stem {config.stem!r} is not one of data.stems {source.stems}")
    sampler = ExcerptSampler(source, frames=int(config.data.chunk), stems=(config.stem,))
    return MonoExcerpts(sampler, config.data.aug_blend, config.data.blend_independently)


def _fixed_batch(excerpts: MonoExcerpts, count: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    examples = [excerpts.sample(rng) for _ in range(count)]
    return {k: np.stack([e[k] for e in examples]) for k in ("mixture", "sources")}


def _eval_batch(config) -> dict[str, np.ndarray]:
    """Fixed seeded excerpts of the test subset, so eval losses compare across steps."""
    excerpts = _excerpts(config, _source(config, "test"))
    return _fixed_batch(excerpts, config.data.eval_examples, config.seed + 1)


def _train_iterator(config, excerpts: MonoExcerpts):
    if config.data.overfit_batches > 0:
        batches = [
            _fixed_batch(excerpts, config.batch_size, config.seed + 100 + i)
            for i in range(config.data.overfit_batches)
        ]
        return _FixedBatches(batches)
    return batch_iterator_from_config(excerpts, config, make_mesh())


def compute_bandwidth(config, source: TrackSource) -> dict[str, float]:
    """Loss normalisers from ``config.bandwidth.chunks`` seeded stereo excerpts of the stem."""
    sampler = ExcerptSampler(source, frames=int(config.data.chunk), stems=(config.stem,))
    rng = np.random.default_rng(config.seed + 7)
    chunks = (sampler.sample(rng)["sources"][0] for _ in range(int(config.bandwidth.chunks)))
    stats = bandwidth_statistics(chunks, source.sample_rate, config.bandwidth.max_seconds)
    if not all(np.isfinite(v) and v > 0 for v in stats.values()):
        raise JaxsepError(f"{config.data.root}: stem {config.stem!r} is silent (bandwidth {stats})")
    return stats


# --------------------------------------------------------------------------- optimizer


class ParamEMAState(NamedTuple):
    """Exponential moving average of the parameters after each update."""

    ema: Any


def parameter_ema(decay: float) -> optax.GradientTransformation:
    """Identity on updates that tracks ``ema <- decay ema + (1 - decay) (params + updates)``.

    Last in a chain, so it sees the final update; the EMA starts at the initial parameters, as
    Jukebox's fused EMA does. It never touches the codebook (not a parameter).
    """

    def init_fn(params):
        return ParamEMAState(jax.tree.map(jnp.copy, params))

    def update_fn(updates, state, params):
        new_params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, new_params)
        return updates, ParamEMAState(ema)

    return optax.GradientTransformation(init_fn, update_fn)


def make_unmix_optimizer(config) -> optax.GradientTransformationExtraArgs:
    """clip -> Adam -> linear warm-up -> -lr -> plateau scale -> parameter EMA."""
    opt = config.optimizer
    parts = []
    if opt.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(opt.clip_norm)))
    parts.append(optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps))
    warmup = int(config.warmup_steps)
    if warmup > 0:
        parts.append(optax.scale_by_schedule(lambda count: jnp.minimum(1.0, count / warmup)))
    parts += [optax.scale(-float(opt.lr)), scale_by_lr_scale()]
    if config.param_ema > 0:
        parts.append(parameter_ema(float(config.param_ema)))
    return optax.chain(*parts)


def exported_params(config, state: dict):
    """The EMA weights when the parameter EMA is on, else the raw ones."""
    if config.param_ema <= 0:
        return state["params"]
    found = [s for s in state["opt_state"] if isinstance(s, ParamEMAState)]
    return found[0].ema


# --------------------------------------------------------------------------- model init


def _model_config(config, model_kwargs: dict | None = None) -> VQVAEConfig:
    """Architecture from the checkpoint when there is one; training switches from the config."""
    values = dict(model_kwargs) if model_kwargs else config_to_dict(config.model)
    values["remat"] = bool(config.model.remat)
    values["dtype"] = str(config.model.dtype)
    values["codebook_update"] = str(config.codebook_update)
    try:
        cfg = VQVAEConfig.from_dict(values)
    except (TypeError, ValueError) as e:
        raise JaxsepError(f"config.model: {e}") from e
    if cfg.levels != 1:
        raise JaxsepError(f"config.model.levels must be 1 (level 0 only), got {cfg.levels}")
    return cfg


def load_pretrained(path: str) -> tuple[dict, dict]:
    """``(model_kwargs, variables)`` of a level-0 VQ-VAE: a Jukebox .pth.tar or a model dir."""
    p = Path(path)
    if p.is_dir():
        cfg = read_config(p)
        if cfg["model"] == VQVAE_MODEL:
            return cfg["model_kwargs"], load_variables(p)
        raise JaxsepError(f"{p}: model '{cfg['model']}' is not a {VQVAE_MODEL} model directory")
    from jaxsep.convert.jukebox import convert_jukebox

    return convert_jukebox(p, levels=1)


def _restore_k(config, cfg: VQVAEConfig, codebook: dict) -> dict:
    """Reference ``restore_k``: k_sum = E k, k_elem = E with E = tokens / l_bins."""
    tokens = config.restore_k_tokens or int(config.data.chunk) // cfg.hop(0)
    state = restored_state(codebook["quantizers_0"]["k"], tokens / cfg.l_bins)
    return {"quantizers_0": state._asdict()}


def _check_stage(config) -> None:
    if config.stage not in STAGES:
        raise JaxsepError(f"config.stage must be 1 or 2, got {config.stage!r}")
    if config.codebook_update not in ("ema", "frozen"):
        raise JaxsepError(
            f"config.codebook_update must be ema or frozen, got {config.codebook_update!r}"
        )
    if int(config.data.chunk) <= 0 or int(config.data.chunk) % 8:
        raise JaxsepError(
            f"config.data.chunk must be a positive multiple of 8, got {config.data.chunk}"
        )


# --------------------------------------------------------------------------- stage 1


def train_stage1(config, workdir: Path) -> Path:
    """Fine-tune (or train) the level-0 VQ-VAE on ``config.stem``; exports a vqvae model dir."""
    source = _source(config, "train")
    excerpts = _excerpts(config, source)
    bandwidth = compute_bandwidth(config, source)
    pretrained = load_pretrained(config.init_checkpoint) if config.init_checkpoint else None
    cfg = _model_config(config, pretrained[0] if pretrained else None)
    module = VQVAE(cfg)
    sample = jnp.zeros((1, int(config.data.chunk), 1), jnp.float32)
    loss_kw = {
        "commit": config.loss.commit,
        "multispectral": config.loss.multispectral,
        "linf_weight": config.loss.linf_weight,
        "k": config.loss.linf_k,
    }

    def init_fn(rng):
        if pretrained is None:
            variables = module.init(rng, sample)
            return variables["params"], {"codebook": variables[CODEBOOK_COLLECTION]}
        variables = jax.tree.map(jnp.asarray, pretrained[1])
        return variables["params"], {
            "codebook": _restore_k(config, cfg, variables[CODEBOOK_COLLECTION])
        }

    def forward_loss(params, codebook, x, rng, train):
        variables = {"params": params, CODEBOOK_COLLECTION: codebook}
        out, mutated = module.apply(
            variables, x, train=train, mutable=[CODEBOOK_COLLECTION], rngs={"codebook": rng}
        )
        loss, metrics = stage1_loss(
            out["reconstructions"][0], x, out["commit_losses"][0], bandwidth, **loss_kw
        )
        metrics |= {f"vq_{k}": v for k, v in out["quantizer_metrics"][0].items()}
        return loss, metrics, mutated[CODEBOOK_COLLECTION]

    def loss_fn(params, model_state, batch, rng, train):
        x = batch["sources"][:, 0]
        loss, metrics, codebook = forward_loss(params, model_state["codebook"], x, rng, train)
        return loss, (metrics, {"codebook": codebook})

    def eval_fn(params, model_state):
        return {"loss": float(eval_loss(params, model_state["codebook"], eval_x))}

    if config.eval_every:
        eval_x = _eval_batch(config)["sources"][:, 0]

        # the batch is an argument, not a constant of the program (see mask_demo)
        @jax.jit
        def eval_loss(params, codebook, x):
            return forward_loss(params, codebook, x, jax.random.key(0), False)[0]

    state = _run(config, workdir, init_fn, loss_fn, excerpts, eval_fn)
    return save_model_dir(
        Path(workdir) / "model",
        {
            "model": VQVAE_MODEL,
            "model_kwargs": cfg.to_dict(),
            "stage": 1,
            "stem": config.stem,
            "bandwidth": bandwidth,
            "sample_rate": source.sample_rate,
            "channels": 1,
            "chunk": int(config.data.chunk),
            "train_config": config_to_dict(config),
            "step": int(state["step"]),
        },
        {
            "params": exported_params(config, state),
            CODEBOOK_COLLECTION: state["model_state"]["codebook"],
        },
    )


def _run(config, workdir, init_fn, loss_fn, excerpts, eval_fn) -> dict:
    train_iter = _train_iterator(config, excerpts)
    try:
        return run_trainer(
            config=config,
            workdir=workdir,
            init_fn=init_fn,
            loss_fn=loss_fn,
            train_iter=train_iter,
            eval_fn=eval_fn if config.eval_every else None,
            optimizer=make_unmix_optimizer(config),
        )
    finally:
        train_iter.close()


# --------------------------------------------------------------------------- stage 2


def _stem_model(config) -> tuple[dict, dict]:
    if not config.stem_model:
        raise JaxsepError("config.stem_model is empty: stage 2 needs the stage-1 model directory")
    stem_config = read_config(config.stem_model)
    if stem_config["model"] != VQVAE_MODEL or stem_config.get("stem") != config.stem:
        raise JaxsepError(
            f"{config.stem_model}: not a stage-1 {VQVAE_MODEL} directory of stem {config.stem!r}"
        )
    return stem_config, load_variables(config.stem_model)


def _stage2_init_encoder(config, stem_variables: dict) -> dict | None:
    """Initial mixture-encoder params, or None for random init."""
    if not config.init_checkpoint:
        return None
    if config.init_checkpoint == "stem_model":
        params = stem_variables["params"]
    else:
        params = load_pretrained(config.init_checkpoint)[1]["params"]
    return {"encoders_0": params["encoders_0"]}


def train_stage2(config, workdir: Path) -> Path:
    """Train the mixture encoder of ``config.stem``; exports a single-stem unmix model dir."""
    stem_config, stem_variables = _stem_model(config)
    cfg = _model_config(config, stem_config["model_kwargs"])
    source = _source(config, "train")
    excerpts = _excerpts(config, source)
    encoder = MixtureEncoder(cfg)
    target_params = {"encoders_0": stem_variables["params"]["encoders_0"]}
    initial = _stage2_init_encoder(config, stem_variables)
    sample = jnp.zeros((1, int(config.data.chunk), 1), jnp.float32)

    def init_fn(rng):
        params = encoder.init(rng, sample)["params"] if initial is None else initial
        return jax.tree.map(jnp.asarray, params), {
            "target": jax.tree.map(jnp.asarray, target_params)
        }

    def batch_loss(params, target, batch):
        goal = jax.lax.stop_gradient(encoder.apply({"params": target}, batch["sources"][:, 0]))
        predicted = encoder.apply({"params": params}, batch["mixture"])
        return stage2_loss(
            predicted, goal, linf_weight=config.loss.linf_weight, k=config.loss.linf_k
        )

    def loss_fn(params, model_state, batch, rng, train):
        del rng, train
        loss, metrics = batch_loss(params, model_state["target"], batch)
        return loss, (metrics, model_state)

    def eval_fn(params, model_state):
        return {"loss": float(eval_loss(params, model_state["target"], eval_data))}

    if config.eval_every:
        eval_data = _eval_batch(config)
        eval_loss = jax.jit(lambda params, target, batch: batch_loss(params, target, batch)[0])

    state = _run(config, workdir, init_fn, loss_fn, excerpts, eval_fn)
    variables = stage2_variables(config.stem, exported_params(config, state), stem_variables)
    return save_model_dir(
        Path(workdir) / "model",
        {
            "model": UNMIX_MODEL,
            "model_kwargs": {"vqvae": cfg.to_dict(), "sources": [config.stem]},
            "sources": [config.stem],
            "stage": 2,
            "stem_model": str(Path(config.stem_model).resolve()),
            "sample_rate": source.sample_rate,
            "channels": source.channels,
            "segment": int(config.data.chunk) / source.sample_rate,
            "chunk": int(config.data.chunk),
            "train_config": config_to_dict(config),
            "step": int(state["step"]),
        },
        variables,
    )


def train(config: ml_collections.ConfigDict, workdir: Path) -> Path:
    """Run the configured stage; returns the exported model directory ``workdir/model``."""
    _check_stage(config)
    if config.stage == 1:
        return train_stage1(config, Path(workdir))
    return train_stage2(config, Path(workdir))


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: Model,
    source: TrackSource,
    *,
    chunk: int | None = None,
    mode: str = "paper",
    overlap: float = 0.25,
    batch_size: int = 1,
) -> dict[str, Any]:
    """MDX SDR (mono, as calculate_sdr.py) per song and stem, means per stem and "Total".

    ``mode="paper"``: non-overlapping chunks with a zero-padded tail (`separate_chunked`);
    ``"overlap_add"``: `jaxsep.separate.Separator` with ``overlap``. Also returns the real-time
    factor (separation seconds per audio second, compilation excluded).
    """
    stems = list(model.config["sources"])
    missing = [s for s in stems if s not in source.stems]
    if missing:
        raise JaxsepError(f"evaluate: stems {missing} are not in the data ({source.stems})")
    chunk = int(chunk or model.config.get("chunk", PAPER_CHUNK))
    rate = int(model.config["sample_rate"])
    if mode == "paper":

        def run(audio):
            return separate_chunked(
                model.module, model.variables, audio, chunk=chunk, batch_size=batch_size
            )[..., 0]
    elif mode == "overlap_add":
        from jaxsep.separate import Separator

        separator = Separator(model, segment=chunk / rate, overlap=overlap, batch_size=batch_size)

        def run(audio):
            out = separator(audio, rate)
            return np.stack([out[s].mean(axis=-1) for s in stems])
    else:
        raise JaxsepError(f"evaluate: mode must be paper or overlap_add, got {mode!r}")
    run(np.zeros((chunk, source.channels), np.float32))  # compile outside the timing
    songs, seconds, audio_seconds = {}, 0.0, 0.0
    for i in range(len(source)):
        length = source.num_frames(i)
        mixture = source.read_mixture(i, 0, length)
        start = time.perf_counter()
        estimates = run(mixture)  # [S, T] mono
        seconds += time.perf_counter() - start
        audio_seconds += length / rate
        scores = {}
        for s, stem in enumerate(stems):
            reference = source.read(i, stem, 0, length).mean(axis=-1)
            scores[stem] = float(sdr(reference[:, None], estimates[s][:, None]))
        scores["Total"] = float(np.mean([scores[s] for s in stems]))
        songs[source.names[i]] = scores
    means = {k: float(np.mean([v[k] for v in songs.values()])) for k in [*stems, "Total"]}
    return {"songs": songs, "mean": means, "real_time_factor": seconds / audio_seconds}
