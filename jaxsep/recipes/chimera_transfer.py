"""ChimeraNet transfer learning (Bugler, Pardo, Seetharaman 2020) on the generic trainer.

Four modes (`config.mode`), all at 16 kHz mono, nussl STFT 512/128 sqrt-Hann:
  * "pretrain": deep-clustering-only pre-training (alpha = 1: the loss is the DC term alone,
    so the mask head gets no gradient and keeps its init -- reference/chimera.md doubt #3);
  * "finetune_whole": every parameter trained from a pre-trained model directory
    (`config.pretrained`), chimera loss alpha = 0.01, a fresh Adam;
  * "finetune_mask": only the mask head (`mask/kernel`, `mask/bias`) is trained; the rest is
    frozen through the trainer's `optimizer.freeze` (stop_gradient + zero update, no Adam
    moments). Choice: the frozen body runs in *inference* mode in the step -- BatchNorm uses and
    keeps its running statistics and the BLSTM uses no dropout -- so the pre-trained features are
    a fixed function. nussl (the paper's library) calls `model.train()` every step, which would
    keep updating BN running statistics and drop out in the frozen BLSTM;
  * "scratch": the baseline: fresh init, chimera loss, `num_steps` should be the pre-training
    plus fine-tuning iterations (the paper's "same total iterations").

Optimisation (chimera.md §6): Adam 1e-3, AutoClip p = 10, learning rate halved when the
validation loss has not improved for more than 5 evaluations, one every 100 iterations. Choice
(doubt #6): "validation loss every 100 iterations" is a pass over fixed validation excerpts
(seeded, so every run and mode sees the same ones), not the mean of recent training losses.
AutoClip across fine-tuning (doubt #5): `config.autoclip_init = "reset"` (default) starts an
empty history, as a fresh nussl trainer with a new handler would; "carry" seeds it with the norms
the pre-training recorded (`autoclip_history.npy` in its model directory).

Data (chimera.md §7): two targets by default, chosen by `config.data.stems` + `grouping`
(lead vs accompaniment: pop "vocals" vs "accompaniment"; chorale "soprano" vs the lower three
voices; Frets-on-Fire "guitar" vs "backing"), so one mask-head layout serves every domain and the
pre-trained head's first source is always the melody. Stems are read from the corpus (44.1 kHz
stereo), averaged to mono and resampled to 16 kHz on the host (`MonoResampledSource`); the
mixture is the sum of the (augmented) targets. Choices (doubt #7): magnitude weights are computed
per excerpt (nussl caches them over the whole file), excerpts with every target below -60 dBFS
are redrawn.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxsep.audio.io import resample_audio
from jaxsep.config import config_to_dict
from jaxsep.data.augment import Augmentation
from jaxsep.data.mixing import ExcerptSampler
from jaxsep.data.pipeline import batch_iterator_from_config
from jaxsep.data.tracks import StemFolderSource, TrackSource
from jaxsep.errors import JaxsepError
from jaxsep.losses.chimera import chimera_loss, ideal_binary_mask, magnitude_weights
from jaxsep.modeldir import load, save_model_dir
from jaxsep.models.chimera import SAMPLE_RATE, ChimeraNet, mixture_magnitude
from jaxsep.train.autoclip import autoclip_history
from jaxsep.train.loop import default_train_config
from jaxsep.train.loop import train as run_trainer
from jaxsep.train.mesh import make_mesh
from jaxsep.train.state import make_optimizer

MODEL_NAME = "chimera"
MODES = ("pretrain", "finetune_whole", "finetune_mask", "scratch")
AUTOCLIP_INIT = ("reset", "carry")
HISTORY_FILE = "autoclip_history.npy"
MASK_ONLY_FREEZE = ("^(?!mask/)",)  # every parameter path not under the mask head
RESAMPLE_MARGIN = 256  # samples read on each side so the resampler has no edge effects

GROUPINGS = {
    "pop": {"vocals": ["vocals"], "accompaniment": ["drums", "bass", "other"]},
    "chorale": {"soprano": ["soprano"], "accompaniment": ["alto", "tenor", "bass"]},
    "fof": {"guitar": ["guitar"], "backing": ["song", "rhythm"]},
}


def default_config() -> ml_collections.ConfigDict:
    """Trainer defaults plus the recipe's fields (paper values; `configs/chimera_*.py` vary them)."""
    c = default_train_config()
    c.recipe = "chimera_transfer"
    c.mode = "pretrain"  # pretrain | finetune_whole | finetune_mask | scratch
    c.pretrained = ""  # model directory of the pre-training (fine-tune modes)
    c.autoclip_init = "reset"  # reset | carry: AutoClip history at the start of a fine-tune
    c.alpha = 0.01  # chimera DC weight; "pretrain" always uses 1.0 (DC only)
    c.batch_size = 24
    c.num_steps = 10_000
    c.log_every = 50
    c.eval_every = 100
    c.checkpoint_every = 1000
    c.optimizer.lr = 1e-3
    c.optimizer.autoclip_percentile = 10.0
    c.plateau.patience = 5
    c.plateau.factor = 0.5
    c.data = ml_collections.ConfigDict()
    c.data.root = ""  # corpus root (e.g. `jaxsep synth` output, or Frets-on-Fire songs)
    c.data.domain = "pop"  # pop | chorale | fof: picks the default grouping
    c.data.stems = ("vocals", "accompaniment")  # model source order
    c.data.grouping = ""  # "name=part+part;name=part" ("" = GROUPINGS[domain])
    c.data.optional = ()  # file stems a track may lack (Frets-on-Fire "rhythm")
    c.data.ext = ("wav", "flac", "ogg")
    c.data.train_split = "train"  # sub-folder of root ("" = root itself)
    c.data.train_tracks = ""  # python slice over the split's sorted tracks, e.g. ":6"
    c.data.valid_split = "test"
    c.data.valid_tracks = ""
    c.data.sample_rate = SAMPLE_RATE
    c.data.seconds = 10.0  # excerpt length
    c.data.coherent = True  # False: incoherent mixing (each stem from its own song and offset)
    c.data.examples_per_epoch = 10_000
    c.data.workers = 0
    c.data.eval_examples = 96  # fixed validation excerpts
    c.data.augment = ml_collections.ConfigDict(
        {"pitch_shift": False, "time_stretch": False}  # U[-3, 3] semitones, U[0.8, 1.2]
    )
    c.model = ml_collections.ConfigDict(
        {"hidden": 500, "layers": 4, "embedding_dim": 20, "dropout": 0.3, "n_fft": 512}
    )
    c.model.dtype = "float32"  # "bfloat16": bf16 activations (jaxsep.nn.precision)
    return c


# ------------------------------------------------------------------------------------------
# Data


class MonoResampledSource:
    """A track source read as mono at `sample_rate` (stems averaged over channels, soxr).

    `indices` selects tracks of the wrapped source. Windows are resampled with a margin on both
    sides, so a crop has no resampler edge effects; every stem of a crop is read with the same
    offsets, so sums of stems stay consistent.
    """

    def __init__(
        self, source: TrackSource, sample_rate: int, indices: list[int] | None = None
    ) -> None:
        self.inner = source
        self.sample_rate = int(sample_rate)
        self.channels = 1
        self.stems = source.stems
        self._indices = list(range(len(source))) if indices is None else list(indices)
        if not self._indices:
            raise JaxsepError(f"{source.track(0).folder.parent}: track selection is empty")
        self.names = tuple(source.names[i] for i in self._indices)
        self._ratio = source.sample_rate / self.sample_rate
        self._ratio_fraction = Fraction(source.sample_rate, self.sample_rate)

    def __len__(self) -> int:
        return len(self._indices)

    def num_frames(self, i: int) -> int:
        return int(self.inner.num_frames(self._indices[i]) / self._ratio)

    def read(self, i: int, stem: str, start: int, frames: int) -> np.ndarray:
        track = self._indices[i]
        if self._ratio == 1.0:
            return self.inner.read(track, stem, start, frames).mean(axis=1, keepdims=True)
        # input sample p*m and output sample q*m fall on the same instant (rate ratio p/q), so a
        # read that starts at p*m resamples onto exactly the whole-track output grid
        p, q = self._ratio_fraction.numerator, self._ratio_fraction.denominator
        m = (start - RESAMPLE_MARGIN) // q
        first, offset = p * m, start - q * m
        count = int(math.ceil((offset + frames + RESAMPLE_MARGIN) * self._ratio))
        audio = self.inner.read(track, stem, max(first, 0), count + min(first, 0))
        if first < 0:
            audio = np.concatenate([np.zeros((-first, audio.shape[1]), np.float32), audio])
        mono = audio.mean(axis=1, keepdims=True)
        out = resample_audio(mono, self.inner.sample_rate, self.sample_rate)
        out = out[offset : offset + frames]
        if out.shape[0] < frames:
            out = np.concatenate([out, np.zeros((frames - out.shape[0], 1), np.float32)])
        return np.ascontiguousarray(out, np.float32)


def parse_grouping(text: str, domain: str) -> dict[str, list[str]]:
    """ "a=x+y;b=z" -> {"a": ["x", "y"], "b": ["z"]}; "" -> the domain's default grouping."""
    if not text:
        if domain not in GROUPINGS:
            raise JaxsepError(f"config: data.domain must be one of {sorted(GROUPINGS)}")
        return {k: list(v) for k, v in GROUPINGS[domain].items()}
    grouping = {}
    for item in text.split(";"):
        name, sep, parts = item.partition("=")
        if not sep or not name.strip() or not parts.strip():
            raise JaxsepError(f"config: data.grouping item {item!r} is not name=part+part")
        grouping[name.strip()] = [p.strip() for p in parts.split("+")]
    return grouping


def _track_slice(text: str, count: int, where: str) -> list[int]:
    if not text:
        return list(range(count))
    try:
        parts = [int(p) if p.strip() else None for p in text.split(":")]
        indices = list(range(count))[slice(*parts)]
    except (ValueError, TypeError):
        raise JaxsepError(f"{where}: track selection {text!r} is not a slice like '0:6'") from None
    if not indices:
        raise JaxsepError(f"{where}: track selection {text!r} picks none of {count} tracks")
    return indices


def build_source(
    config: ml_collections.ConfigDict, split: str, tracks: str = ""
) -> MonoResampledSource:
    """The stems of `root/split` (grouped as configured), mono at the model's rate."""
    if not config.data.root:
        raise JaxsepError(
            "config.data.root is empty: pass --data ROOT (stem folders or .stem.mp4 files)"
        )
    folder = Path(config.data.root) / split if split else Path(config.data.root)
    grouping = parse_grouping(config.data.grouping, config.data.domain)
    stems = tuple(config.data.stems)
    missing = [s for s in stems if s not in grouping]
    if missing:
        raise JaxsepError(f"config: data.stems {missing} are not in the grouping {grouping}")
    source = StemFolderSource(
        folder,
        stems=stems,
        grouping=grouping,
        ext=tuple(config.data.ext),
        optional=tuple(config.data.optional),
    )
    indices = _track_slice(tracks, len(source), str(folder))
    return MonoResampledSource(source, config.data.sample_rate, indices)


def make_sampler(
    config: ml_collections.ConfigDict, source: MonoResampledSource, coherent: bool | None = None
) -> ExcerptSampler:
    return ExcerptSampler(
        source,
        seconds=config.data.seconds,
        coherent=config.data.coherent if coherent is None else coherent,
    )


def validation_batch(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """Fixed, seeded validation excerpts (coherent, no augmentation) from the validation split."""
    sampler = make_sampler(
        config, build_source(config, config.data.valid_split, config.data.valid_tracks), True
    )
    rng = np.random.default_rng(1_000_003 + config.seed)
    examples = [sampler.sample(rng) for _ in range(config.data.eval_examples)]
    return {k: np.stack([e[k] for e in examples]) for k in ("mixture", "sources")}


# ------------------------------------------------------------------------------------------
# Model and loss


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    m = config.model
    return {
        "num_bins": int(m.n_fft) // 2 + 1,
        "hidden": int(m.hidden),
        "layers": int(m.layers),
        "embedding_dim": int(m.embedding_dim),
        "num_sources": len(config.data.stems),
        "dropout": float(m.dropout),
        "dtype": str(m.dtype),
    }


def spectra(batch: dict, n_fft: int) -> tuple[jax.Array, jax.Array]:
    """Mixture magnitude `[B, frames, bins]` and source magnitudes `[B, frames, bins, S]`."""
    hop = n_fft // 4
    mix = mixture_magnitude(batch["mixture"][..., 0], n_fft, hop)
    sources = mixture_magnitude(batch["sources"][..., 0], n_fft, hop)  # [B, S, frames, bins]
    return mix, jnp.moveaxis(sources, 1, -1)


def objective(
    module: ChimeraNet,
    params,
    model_state: dict,
    batch: dict,
    *,
    alpha: float,
    train: bool,
    rng: jax.Array | None = None,
) -> tuple[jax.Array, tuple[dict, dict]]:
    """alpha * DC + (1 - alpha) * MI on a waveform batch; `train` runs BN/dropout in train mode
    and returns updated batch statistics, otherwise `model_state` comes back unchanged."""
    mix, sources = spectra(batch, 2 * (module.num_bins - 1))
    variables = {"params": params, **model_state}
    if train:
        outputs, updates = module.apply(
            variables, mix, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
        )
        model_state = {**model_state, **updates}
    else:
        outputs = module.apply(variables, mix)
    loss, terms = chimera_loss(
        outputs, mix, sources, ideal_binary_mask(sources), magnitude_weights(mix), alpha=alpha
    )
    return loss, (terms, model_state)


def batched_loss(module: ChimeraNet, alpha: float, data: dict, batch_size: int):
    """`loss(params, model_state) -> {"loss", "dc", "mi"}` means over `data` in jitted chunks."""
    size = len(data["mixture"])
    chunks = [
        {k: v[i : i + batch_size] for k, v in data.items()} for i in range(0, size, batch_size)
    ]

    @jax.jit
    def one(params, model_state, chunk):
        loss, (terms, _) = objective(module, params, model_state, chunk, alpha=alpha, train=False)
        return {"loss": loss, **terms}

    def evaluate(params, model_state) -> dict[str, float]:
        totals: dict[str, float] = {}
        for chunk in chunks:
            weight = len(chunk["mixture"]) / size
            for k, v in one(params, model_state, chunk).items():
                totals[k] = totals.get(k, 0.0) + float(v) * weight
        return totals

    return evaluate


def effective_alpha(config: ml_collections.ConfigDict) -> float:
    return 1.0 if config.mode == "pretrain" else float(config.alpha)


def _check_config(config: ml_collections.ConfigDict) -> None:
    if config.mode not in MODES:
        raise JaxsepError(f"config: mode must be one of {MODES}, got {config.mode!r}")
    if config.autoclip_init not in AUTOCLIP_INIT:
        raise JaxsepError(f"config: autoclip_init must be one of {AUTOCLIP_INIT}")
    if config.mode.startswith("finetune") and not config.pretrained:
        raise JaxsepError(f"config: mode {config.mode} needs config.pretrained (a model dir)")
    if len(config.data.stems) < 2:
        raise JaxsepError("config: data.stems needs at least two sources")


def _pretrained_variables(config, kwargs: dict, fresh: dict) -> tuple[dict, dict]:
    """Pre-trained params/batch_stats; a mask head of another source count is re-initialised."""
    model = load(config.pretrained)
    if model.config.get("model") != MODEL_NAME:
        raise JaxsepError(f"{config.pretrained}: not a ChimeraNet model directory")
    theirs = model.config.get("model_kwargs", {})
    for key in ("num_bins", "hidden", "layers", "embedding_dim"):
        if theirs.get(key) != kwargs[key]:
            raise JaxsepError(
                f"{config.pretrained}: model_kwargs.{key} = {theirs.get(key)} but the fine-tune "
                f"config has {kwargs[key]}"
            )
    params = jax.tree.map(jnp.asarray, dict(model.variables["params"]))
    if params["mask"]["kernel"].shape != fresh["params"]["mask"]["kernel"].shape:
        params["mask"] = fresh["params"]["mask"]  # shapes only: init_fn fills in a fresh head
    stats = jax.tree.map(jnp.asarray, model.variables.get("batch_stats", {}))
    return params, {"batch_stats": stats}


def _is_shape(tree) -> bool:
    return any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(tree))


def _optimizer(config: ml_collections.ConfigDict, freeze: tuple[str, ...]):
    history = None
    if config.mode.startswith("finetune") and config.autoclip_init == "carry":
        path = Path(config.pretrained) / HISTORY_FILE
        if not path.is_file():
            raise JaxsepError(f"{path}: no AutoClip history to carry (pre-trained elsewhere?)")
        history = jnp.asarray(np.load(path), jnp.float32)
    return make_optimizer(config.optimizer.to_dict(), freeze, autoclip_initial_history=history)


def train(config: ml_collections.ConfigDict, workdir: Path) -> Path:
    """Train one mode; returns the exported model directory `workdir/model`."""
    _check_config(config)
    workdir = Path(workdir)
    mode, alpha = config.mode, effective_alpha(config)
    freeze = MASK_ONLY_FREEZE if mode == "finetune_mask" else tuple(config.optimizer.freeze)
    config = ml_collections.ConfigDict(config.to_dict())  # a private copy we may annotate
    config.optimizer.freeze = freeze

    train_source = build_source(config, config.data.train_split, config.data.train_tracks)
    sampler = make_sampler(config, train_source)
    augment = Augmentation(
        pitch_shift=config.data.augment.pitch_shift, time_stretch=config.data.augment.time_stretch
    )
    train_iter = batch_iterator_from_config(sampler, config, make_mesh(), augment)
    kwargs = model_kwargs(config)
    module = ChimeraNet(**kwargs)
    sample = jnp.zeros((1, 8, kwargs["num_bins"]), jnp.float32)

    pretrained = None
    if mode.startswith("finetune"):
        shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), sample))
        pretrained = _pretrained_variables(config, kwargs, shapes)

    def init_fn(rng):
        fresh = module.init(rng, sample)
        params, model_state = fresh["params"], {"batch_stats": fresh["batch_stats"]}
        if pretrained is not None:
            loaded_params, model_state = pretrained
            # a mask head of another source count was left as a shape: take the fresh init
            params = (
                {**loaded_params, "mask": params["mask"]}
                if _is_shape(loaded_params["mask"])
                else loaded_params
            )
        return params, model_state

    body_in_train_mode = mode != "finetune_mask"

    def loss_fn(params, model_state, batch, rng, train):
        return objective(
            module,
            params,
            model_state,
            batch,
            alpha=alpha,
            train=train and body_in_train_mode,
            rng=rng,
        )

    eval_fn = None
    if config.eval_every:
        eval_fn = batched_loss(module, alpha, validation_batch(config), config.batch_size)

    state = run_trainer(
        config=config,
        workdir=workdir,
        init_fn=init_fn,
        loss_fn=loss_fn,
        train_iter=train_iter,
        eval_fn=eval_fn,
        optimizer=_optimizer(config, freeze),
    )
    train_iter.close()
    out = save_model_dir(
        workdir / "model",
        {
            "model": MODEL_NAME,
            "model_kwargs": kwargs,
            "sources": list(config.data.stems),
            "sample_rate": int(config.data.sample_rate),
            "channels": 1,
            "downmix": True,  # Separator averages multichannel input to mono
            "mode": mode,
            "alpha": alpha,
            "train_config": config_to_dict(config),
            "step": int(state["step"]),
        },
        {"params": state["params"], **state["model_state"]},
    )
    history = autoclip_history(state["opt_state"])
    if history is not None and jax.process_index() == 0:
        np.save(out / HISTORY_FILE, np.asarray(jax.device_get(history)))
    return out


# ------------------------------------------------------------------------------------------
# Config variants (configs/chimera_*.py are thin wrappers over this)

PAPER_STEPS = {"pretrain": 10_000, "finetune": 2_000}
TINY_STEPS = {"pretrain": 100, "finetune": 50}
DOMAINS = {
    "pop": {"stems": ("vocals", "accompaniment")},
    "chorale": {"stems": ("soprano", "accompaniment")},
    "fof": {
        "stems": ("guitar", "backing"),
        "optional": ("rhythm",),
        "ext": ("ogg",),
        "train_split": "",
        "valid_split": "",
        "train_tracks": ":4",  # 8 songs: 4 fine-tune, 1 validation, 3 test (tools/transfer_study)
        "valid_tracks": "4:5",
    },
}


def set_domain(config: ml_collections.ConfigDict, domain: str) -> None:
    if domain not in DOMAINS:
        raise JaxsepError(f"config: unknown domain {domain!r} (one of {sorted(DOMAINS)})")
    config.data.domain = domain
    for key, value in DOMAINS[domain].items():
        config.data[key] = value


def shrink_to_tiny(config: ml_collections.ConfigDict) -> None:
    """Minutes on 2 CPU cores: a small BLSTM, 1 s excerpts, a few hundred steps at most."""
    config.batch_size = 8
    config.log_every = 10
    config.eval_every = 10
    config.checkpoint_every = 100
    config.plateau.patience = 5
    config.data.seconds = 1.0
    config.data.eval_examples = 16
    config.data.examples_per_epoch = 2_000
    config.model.update({"hidden": 32, "layers": 2, "embedding_dim": 20, "dropout": 0.0})


def variant_config(mode: str, arg: str | None) -> ml_collections.ConfigDict:
    """`arg`: comma-separated tokens -- a scale (paper | tiny), a domain (pop | chorale | fof),
    augmentations (pitch, stretch, incoherent) and, for fine-tuning, whole | mask."""
    tokens = [t for t in (arg or "").split(",") if t]
    known = {"paper", "tiny", "pitch", "stretch", "incoherent", "whole", "mask", *DOMAINS}
    unknown = [t for t in tokens if t not in known]
    if unknown:
        raise ValueError(f"unknown variant tokens {unknown} (known: {sorted(known)})")
    config = default_config()
    finetune = mode == "finetune"
    if finetune:
        config.mode = "finetune_mask" if "mask" in tokens else "finetune_whole"
    else:
        config.mode = mode
    default_domain = "pop" if mode == "pretrain" else "chorale"
    set_domain(config, next((t for t in tokens if t in DOMAINS), default_domain))
    steps = TINY_STEPS if "tiny" in tokens else PAPER_STEPS
    config.num_steps = {
        "pretrain": steps["pretrain"],
        "finetune": steps["finetune"],
        "scratch": steps["pretrain"] + steps["finetune"],
    }[mode]
    if "tiny" in tokens:
        shrink_to_tiny(config)
    config.data.augment.pitch_shift = "pitch" in tokens
    config.data.augment.time_stretch = "stretch" in tokens
    config.data.coherent = "incoherent" not in tokens
    return config
