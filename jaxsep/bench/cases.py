"""One benchmark case per model: the JAX model, its torch twin with the same weights, a batch,
the training loss and the stated FLOPs.

Sizes (per example; `SIZES`):

* ``paper`` (accelerators): X-UMX/UMX batch 16 x 6 s stereo at 44.1 kHz; ChimeraNet batch 24 x
  10 s at 16 kHz; VQ-VAE level 0 (W64/D8) batch 4 x 393216 samples; VGGish batch 96 examples
  (16 clips x 6 examples of 0.96 s).
* ``cpu`` (the 2-core CI machine; full-width models, short clips, small batches): X-UMX batch 2 x
  1 s; UMX batch 4 x 1 s; ChimeraNet batch 2 x 1 s; VQ-VAE batch 1 x 16384 samples; VGGish batch 4.
* ``tiny`` (tests): narrow models and a few hundred samples, seconds for both frameworks.

The training loss is the same in both frameworks and deliberately simple: mean squared error of
the model outputs against a fixed random target (VQ-VAE: reconstruction MSE of the input plus the
commitment loss, with the EMA codebook update). Not the papers' losses: the bench measures the
network, the backward pass and Adam, not the loss functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxsep.bench import flops
from jaxsep.bench import torch_models as tm
from jaxsep.bench.weights import load_jax_variables
from jaxsep.errors import JaxsepError

MODELS = ("xumx", "umx", "chimera", "vqvae", "vggish")
SIZE_NAMES = ("tiny", "cpu", "paper")
LSTM_MODELS = ("xumx", "umx", "chimera")
MUSDB_SOURCES = ("bass", "drums", "vocals", "other")

# Per model and size: batch, example length and model settings (see the module docstring).
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "xumx": {
        "tiny": dict(
            batch=2, samples=2048, n_fft=256, hop=64, hidden=16, max_bin=100, layers=1, sources=2
        ),
        "cpu": dict(batch=2, samples=44100),
        "paper": dict(batch=16, samples=264600),
    },
    "umx": {
        "tiny": dict(batch=2, samples=2048, n_fft=256, hop=64, hidden=16, max_bin=100, layers=1),
        "cpu": dict(batch=4, samples=44100),
        "paper": dict(batch=16, samples=264600),
    },
    "chimera": {
        "tiny": dict(batch=2, samples=1600, hidden=16, layers=1),
        "cpu": dict(batch=2, samples=16000),
        "paper": dict(batch=24, samples=160000),
    },
    "vqvae": {
        "tiny": dict(batch=2, samples=512, width=8, depth=2, multipliers=(1,), l_bins=64, emb=16),
        "cpu": dict(batch=1, samples=16384),
        "paper": dict(batch=4, samples=393216),
    },
    "vggish": {"tiny": dict(batch=1), "cpu": dict(batch=4), "paper": dict(batch=96)},
}


@dataclasses.dataclass
class Case:
    """Everything the harness needs to time one model in both frameworks.

    ``jax_program(variant, dtype)`` returns ``(infer(variables, x), loss(params, state, x,
    target, rng) -> (loss, new_state))`` for the model built with compute ``dtype`` ("float32" or
    "bfloat16", `jaxsep.nn.precision`); the torch side takes numpy inputs through ``to_torch`` and its
    outputs come back in the JAX layout through ``from_torch``.
    """

    model: str
    size: str
    batch_size: int
    audio_seconds: float  # per example
    forward_flops: float  # per example
    train_flops: float  # per example
    inputs: np.ndarray
    target: Any
    variables: dict
    jax_variants: tuple[str, ...]  # run by default
    jax_program: Callable[[str, str], tuple[Callable, Callable]]
    torch_module: torch.nn.Module
    torch_infer: Callable[[torch.nn.Module, torch.Tensor], Any]
    torch_loss: Callable[[torch.nn.Module, torch.Tensor, Any], torch.Tensor]
    to_torch: Callable[[np.ndarray], np.ndarray] = lambda x: x
    from_torch: Callable[[Any], Any] = lambda y: y
    deterministic_train: bool = False  # no dropout: the first train loss must match too
    notes: str = ""
    on_request_jax_variants: tuple[str, ...] = ()  # runnable, only when asked for by name
    # XLA's cost analysis counts a loop's body once, not per trip: only the loop-free models
    # (convolutions, no recurrence) get a roofline bound from its FLOP and byte counts
    xla_cost_is_complete: bool = False


def _settings(model: str, size: str, batch_size: int | None) -> dict[str, Any]:
    if size not in SIZE_NAMES:
        raise JaxsepError(f"bench: unknown size {size!r}; use one of {SIZE_NAMES}")
    settings = dict(SIZES[model][size])
    if batch_size is not None:
        if batch_size < 1:
            raise JaxsepError(f"bench: --batch-size must be >= 1, got {batch_size}")
        settings["batch"] = batch_size
    return settings


def _mse(a, b):
    return jnp.mean(jnp.square(a - b))


def _lstm_variants() -> tuple[str, ...]:
    return ("scan", "cudnn") if jax.default_backend() == "gpu" else ("scan",)


def _lstm_program(module, error) -> tuple[Callable, Callable]:
    """Inference and training loss of a batch-norm + dropout model (X-UMX, ChimeraNet):
    ``error(outputs, target)`` in train mode, with "batch_stats" updated."""

    def loss(params, state, x, t, key):
        y, new_state = module.apply(
            {"params": params, **state},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": key},
        )
        return error(y, t), new_state

    return (lambda v, x: module.apply(v, x)), loss


def _random_target(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.random(shape, dtype=np.float32)


# ---------------------------------------------------------------------------------------------


def _xumx_case(model: str, size: str, batch_size: int | None, seed: int) -> Case:
    from jaxsep.models.xumx import XUMX

    s = _settings(model, size, batch_size)
    kwargs = dict(
        sources=(MUSDB_SOURCES[: s.get("sources", 4)] if model == "xumx" else ("vocals",)),
        n_fft=s.get("n_fft", 4096),
        hop=s.get("hop", 1024),
        hidden_size=s.get("hidden", 512),
        max_bin=s.get("max_bin", 1487),
        nb_layers=s.get("layers", 3),
        bridge=model == "xumx",
    )
    rng = np.random.default_rng(seed)
    wave = (0.3 * rng.standard_normal((s["batch"], s["samples"], 2))).astype(np.float32)
    init_module = XUMX(**kwargs, lstm_backend="scan")
    variables = init_module.init(jax.random.key(seed), jnp.asarray(wave[:1]))
    variables = jax.tree.map(np.asarray, dict(variables))
    variables["params"] = _perturb_norm_params(variables["params"], rng)
    out_shape = jax.eval_shape(init_module.apply, variables, wave).shape
    target = _random_target(rng, out_shape)

    def program(variant: str, dtype: str):
        return _lstm_program(XUMX(**kwargs, lstm_backend=variant, dtype=dtype), _mse)

    twin = tm.TorchXUMX(
        kwargs["sources"],
        n_fft=kwargs["n_fft"],
        hop=kwargs["hop"],
        hidden=kwargs["hidden_size"],
        max_bin=kwargs["max_bin"],
        layers=kwargs["nb_layers"],
        bridge=kwargs["bridge"],
    )
    load_jax_variables(twin, variables)
    frames = out_shape[2]
    fwd = flops.xumx_forward_flops(
        len(kwargs["sources"]),
        frames,
        kwargs["max_bin"],
        2,
        kwargs["hidden_size"],
        kwargs["nb_layers"],
        kwargs["n_fft"] // 2 + 1,
    )
    return Case(
        model=model,
        size=size,
        batch_size=s["batch"],
        audio_seconds=s["samples"] / 44100,
        forward_flops=fwd,
        train_flops=3 * fwd,
        inputs=wave,
        target=target,
        variables=variables,
        jax_variants=_lstm_variants(),
        jax_program=program,
        torch_module=twin,
        torch_infer=lambda m, x: m(x),
        torch_loss=lambda m, x, t: torch.mean((m(x) - t) ** 2),
        notes=f"{len(kwargs['sources'])} source(s), n_fft {kwargs['n_fft']}, "
        f"hidden {kwargs['hidden_size']}, STFT inside the step",
    )


def _perturb_norm_params(params: dict, rng: np.random.Generator) -> dict:
    """Give the input/output scalers non-trivial values (init leaves them at 0/1)."""

    def walk(tree):
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out[key] = walk(value)
            elif key in ("input_mean", "output_mean"):
                out[key] = (0.1 * rng.standard_normal(value.shape)).astype(np.float32)
            elif key in ("input_scale", "output_scale"):
                out[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
            else:
                out[key] = value
        return out

    return walk(params)


def _chimera_case(size: str, batch_size: int | None, seed: int) -> Case:
    from jaxsep.models.chimera import ChimeraNet, mixture_magnitude

    s = _settings("chimera", size, batch_size)
    kwargs = dict(hidden=s.get("hidden", 500), layers=s.get("layers", 4))
    rng = np.random.default_rng(seed)
    wave = (0.3 * rng.standard_normal((s["batch"], s["samples"]))).astype(np.float32)
    mag = np.asarray(mixture_magnitude(jnp.asarray(wave)))
    module0 = ChimeraNet(**kwargs, lstm_backend="scan")
    variables = jax.tree.map(np.asarray, dict(module0.init(jax.random.key(seed), mag[:1])))
    shapes = jax.eval_shape(module0.apply, variables, mag)
    target = {k: _random_target(rng, v.shape) for k, v in shapes.items()}

    def program(variant: str, dtype: str):
        module = ChimeraNet(**kwargs, lstm_backend=variant, dtype=dtype)
        return _lstm_program(
            module, lambda y, t: _mse(y["mask"], t["mask"]) + _mse(y["embedding"], t["embedding"])
        )

    cfg = module0
    twin = tm.TorchChimera(cfg.num_bins, cfg.hidden, cfg.layers, cfg.embedding_dim, cfg.num_sources)
    load_jax_variables(twin, variables)

    def torch_loss(m, x, t):
        y = m(x)
        return torch.mean((y["mask"] - t["mask"]) ** 2) + torch.mean(
            (y["embedding"] - t["embedding"]) ** 2
        )

    fwd = flops.chimera_forward_flops(
        mag.shape[1], cfg.num_bins, cfg.hidden, cfg.layers, cfg.embedding_dim, cfg.num_sources
    )
    return Case(
        model="chimera",
        size=size,
        batch_size=s["batch"],
        audio_seconds=s["samples"] / 16000,
        forward_flops=fwd,
        train_flops=3 * fwd,
        inputs=mag,
        target=target,
        variables=variables,
        jax_variants=_lstm_variants(),
        jax_program=program,
        torch_module=twin,
        torch_infer=lambda m, x: m(x),
        torch_loss=torch_loss,
        notes=f"{cfg.layers}x{cfg.hidden} BLSTM, D={cfg.embedding_dim}, S={cfg.num_sources}, "
        "magnitude input (STFT in the data pipeline, as nussl)",
    )


def _vqvae_case(size: str, batch_size: int | None, seed: int) -> Case:
    from jaxsep.models.vqvae import VQVAE, VQVAEConfig
    from jaxsep.nn.vq import restored_state

    s = _settings("vqvae", size, batch_size)
    config = VQVAEConfig(
        levels=1,
        downs_t=(3,),
        strides_t=(2,),
        multipliers=s.get("multipliers", (2,)),
        width=s.get("width", 32),
        depth=s.get("depth", 4),
        l_bins=s.get("l_bins", 2048),
        emb_width=s.get("emb", 64),
    )
    model = VQVAE(config)
    rng = np.random.default_rng(seed)
    wave = (0.3 * rng.standard_normal((s["batch"], s["samples"], 1))).astype(np.float32)
    variables = jax.tree.map(np.asarray, dict(model.init(jax.random.key(seed), wave[:1])))
    # A codebook drawn from this batch's latents (plus noise), marked initialised, so both
    # frameworks start from the same state and quantise to well-separated codes.
    latents = np.asarray(model.apply(variables, wave, method=VQVAE.encode)[0]).reshape(
        -1, config.emb_width
    )
    rows = rng.integers(0, latents.shape[0], config.l_bins)
    codes = latents[rows] + 0.1 * latents.std() * rng.standard_normal(
        (config.l_bins, config.emb_width)
    )
    state = restored_state(codes.astype(np.float32))
    variables["codebook"] = {"quantizers_0": jax.tree.map(np.asarray, state._asdict())}

    def program(variant: str, dtype: str):
        # "remat": residual stacks rematerialised in the backward pass (jax.checkpoint)
        model = VQVAE(dataclasses.replace(config, dtype=dtype, remat=variant == "remat"))
        return _vqvae_program(model, config.commit)

    book = {k: torch.from_numpy(np.array(v)) for k, v in state._asdict().items()}
    twin = tm.TorchVQVAE(config, book)
    load_jax_variables(twin, variables, skip=("quantizer.",))

    def torch_loss(m, x, t):
        del t
        recon, commit = m(x)
        return torch.mean((recon - x) ** 2) + config.commit * commit

    fwd, train = flops.vqvae_flops(config, s["samples"])
    return Case(
        model="vqvae",
        size=size,
        batch_size=s["batch"],
        audio_seconds=s["samples"] / config.sample_rate,
        forward_flops=fwd,
        train_flops=train,
        inputs=wave,
        target=np.zeros((), np.float32),
        variables=variables,
        # remat trades recomputation for activation memory on accelerators; XLA:CPU keeps the
        # same temporaries with it (jaxsep/models/vqvae.py), so on a CPU only when asked for
        jax_variants=("xla", "remat") if jax.default_backend() == "gpu" else ("xla",),
        on_request_jax_variants=() if jax.default_backend() == "gpu" else ("remat",),
        jax_program=program,
        torch_module=twin,
        torch_infer=lambda m, x: m(x)[0],
        torch_loss=torch_loss,
        to_torch=lambda x: np.ascontiguousarray(np.swapaxes(x, 1, 2)),
        from_torch=lambda y: np.swapaxes(y, 1, 2),
        deterministic_train=True,
        xla_cost_is_complete=True,
        notes=f"level 0, W{config.level_width(0)}/D{config.level_depth(0)}, "
        f"{config.l_bins} codes, EMA codebook",
    )


def _vqvae_program(model, commit: float) -> tuple[Callable, Callable]:
    """Level-0 reconstruction (inference) and reconstruction + commitment loss (training)."""

    def loss(params, state, x, t, key):
        del t
        out, new_state = model.apply(
            {"params": params, **state},
            x,
            train=True,
            mutable=["codebook"],
            rngs={"codebook": key},
        )
        return _mse(out["reconstructions"][0], x) + commit * out["commit_losses"][0], new_state

    def infer(v, x):
        return model.apply(v, x)["reconstructions"][0]

    return infer, loss


def _vggish_case(size: str, batch_size: int | None, seed: int) -> Case:
    from jaxsep.models.vggish import CONV_LAYERS, DENSE_LAYERS, VGGish

    s = _settings("vggish", size, batch_size)
    model = VGGish()
    rng = np.random.default_rng(seed)
    examples = rng.standard_normal((s["batch"], 96, 64)).astype(np.float32)
    variables = jax.tree.map(np.asarray, dict(model.init(jax.random.key(seed), examples[:1])))
    target = _random_target(rng, (s["batch"], 128))

    def program(variant: str, dtype: str):
        del variant  # no LSTM
        net = VGGish(dtype=jnp.dtype(dtype))

        def infer(v, x):
            return net.apply(v, x).astype(jnp.float32)

        def loss(params, state, x, t, key):
            del key
            return _mse(infer({"params": params, **state}, x), t), state

        return infer, loss

    twin = tm.TorchVGGish(CONV_LAYERS, DENSE_LAYERS)
    load_jax_variables(twin, variables)
    fwd = flops.vggish_forward_flops(CONV_LAYERS, DENSE_LAYERS)
    return Case(
        model="vggish",
        size=size,
        batch_size=s["batch"],
        audio_seconds=0.96,
        forward_flops=fwd,
        train_flops=3 * fwd,
        inputs=examples,
        target=target,
        variables=variables,
        jax_variants=("xla",),
        jax_program=program,
        torch_module=twin,
        torch_infer=lambda m, x: m(x),
        torch_loss=lambda m, x, t: torch.mean((m(x) - t) ** 2),
        deterministic_train=True,
        xla_cost_is_complete=True,
        notes="log-mel examples [N, 96, 64] in, 128-d embeddings out",
    )


def build_case(
    model: str, size: str = "tiny", batch_size: int | None = None, seed: int = 0
) -> Case:
    """The benchmark case of `model` at `size` (``tiny``, ``cpu`` or ``paper``)."""
    if model in ("xumx", "umx"):
        return _xumx_case(model, size, batch_size, seed)
    if model == "chimera":
        return _chimera_case(size, batch_size, seed)
    if model == "vqvae":
        return _vqvae_case(size, batch_size, seed)
    if model == "vggish":
        return _vggish_case(size, batch_size, seed)
    raise JaxsepError(f"bench: unknown model {model!r}; use one of {MODELS}")
