"""nussl ChimeraNet checkpoints -> `jaxsep.models.chimera.ChimeraNet` variables + config.

Accepts a bare `state_dict` or nussl's `SeparationModel.save` dict (`{"state_dict": ...,
"config": <JSON string>, ...}`). nussl keeps its modules in an `nn.ModuleDict` named `layers`,
so keys read `layers.recurrent_stack.rnn.weight_ih_l0`; some torch versions also registered
top-level aliases (nussl issue #230), so a file may carry both spellings. The optional `layers.`
prefix is stripped and duplicates must hold identical tensors. Sizes come from the shapes;
unknown or missing keys fail with their names. Metadata nussl pickles as its own classes
(transforms, STFTParams) is refused by the safe loader: save the bare state_dict instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxsep.convert.torch_io import load_torch_checkpoint
from jaxsep.errors import JaxsepError
from jaxsep.models.chimera import HOP, N_FFT, SAMPLE_RATE, WINDOW

PREFIX = "layers."
BN = "normalization.batch_norm."
RNN = "recurrent_stack.rnn."
HEADS = ("embedding", "mask")
DEFAULT_DROPOUT = 0.3


def _names_error(where: str, problem: str, names: list[str]) -> JaxsepError:
    shown = ", ".join(sorted(names)[:6]) + (" ..." if len(names) > 6 else "")
    return JaxsepError(f"{where}: {problem} ({len(names)}): {shown}")


def strip_prefix(state_dict: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """Keys without the optional `layers.` prefix; both spellings of a key must agree."""
    out: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not isinstance(value, np.ndarray):
            raise JaxsepError(f"{where}: state_dict entry {key!r} is not a tensor")
        name = key[len(PREFIX) :] if key.startswith(PREFIX) else key
        if name in out and not np.array_equal(out[name], value):
            raise JaxsepError(f"{where}: {name!r} and {PREFIX}{name!r} hold different tensors")
        out[name] = value
    return out


def infer_model_kwargs(state: Mapping[str, np.ndarray], where: str) -> dict[str, Any]:
    """num_bins, hidden, layers, embedding_dim, num_sources from the tensor shapes."""
    first = f"{RNN}weight_ih_l0"
    needed = [first, f"{RNN}weight_hh_l0", "embedding.linear.weight", "mask.linear.weight"]
    missing = [key for key in needed if key not in state]
    if missing:
        raise _names_error(where, "missing keys", missing)
    gates, num_bins = state[first].shape
    hidden = state[f"{RNN}weight_hh_l0"].shape[1]
    if gates != 4 * hidden:
        raise JaxsepError(f"{where}: {first} has {gates} rows, expected 4 x hidden = {4 * hidden}")
    if f"{RNN}weight_ih_l0_reverse" not in state:
        raise JaxsepError(f"{where}: not a bidirectional LSTM (no {first}_reverse)")
    layers = 0
    while f"{RNN}weight_ih_l{layers}" in state:
        layers += 1
    sizes = {}
    for head in HEADS:
        rows = state[f"{head}.linear.weight"].shape[0]
        if rows % num_bins:
            raise JaxsepError(
                f"{where}: {head}.linear has {rows} outputs, not a multiple of {num_bins}"
            )
        sizes[head] = rows // num_bins
    return {
        "num_bins": int(num_bins),
        "hidden": int(hidden),
        "layers": layers,
        "embedding_dim": sizes["embedding"],
        "num_sources": sizes["mask"],
    }


def _expected_shapes(kw: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every state_dict key (without prefix) of the model `kw` describes, with its shape."""
    hidden, bins = kw["hidden"], kw["num_bins"]
    shapes: dict[str, tuple[int, ...]] = {f"{BN}{n}": (1,) for n in ("weight", "bias")}
    shapes.update({f"{BN}{n}": (1,) for n in ("running_mean", "running_var")})
    for layer in range(kw["layers"]):
        in_features = bins if layer == 0 else 2 * hidden
        for suffix in (f"_l{layer}", f"_l{layer}_reverse"):
            shapes[f"{RNN}weight_ih{suffix}"] = (4 * hidden, in_features)
            shapes[f"{RNN}weight_hh{suffix}"] = (4 * hidden, hidden)
            shapes[f"{RNN}bias_ih{suffix}"] = (4 * hidden,)
            shapes[f"{RNN}bias_hh{suffix}"] = (4 * hidden,)
    for head, size in (("embedding", kw["embedding_dim"]), ("mask", kw["num_sources"])):
        shapes[f"{head}.linear.weight"] = (bins * size, 2 * hidden)
        shapes[f"{head}.linear.bias"] = (bins * size,)
    return shapes


def chimera_variables(state: Mapping[str, np.ndarray], kw: Mapping[str, Any], where: str) -> dict:
    """Flax variables from a prefix-free state_dict, after checking every key and shape."""
    shapes = _expected_shapes(kw)
    ignored = {f"{BN}num_batches_tracked"}  # momentum is fixed: the count is not needed
    unknown = [key for key in state if key not in shapes and key not in ignored]
    if unknown:
        raise _names_error(where, "unexpected keys", unknown)
    missing = [key for key in shapes if key not in state]
    if missing:
        raise _names_error(where, "missing keys", missing)
    wrong = [f"{k} {state[k].shape} != {s}" for k, s in shapes.items() if state[k].shape != s]
    if wrong:
        raise _names_error(where, "tensors of the wrong shape", wrong)
    f32 = {key: np.asarray(state[key], np.float32) for key in shapes}
    params = {
        "normalization": {"weight": f32[f"{BN}weight"], "bias": f32[f"{BN}bias"]},
        "recurrent_stack": {key[len(RNN) :]: f32[key] for key in shapes if key.startswith(RNN)},
    }
    for head in HEADS:
        params[head] = {
            "kernel": np.ascontiguousarray(f32[f"{head}.linear.weight"].T),
            "bias": f32[f"{head}.linear.bias"],
        }
    stats = {"normalization": {n: f32[f"{BN}{n}"] for n in ("running_mean", "running_var")}}
    return {"params": params, "batch_stats": stats}


def _check_nussl_config(config: Any, where: str) -> dict[str, Any]:
    """Parse nussl's JSON model config; refuse activations jaxsep's ChimeraNet does not have."""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as e:
            raise JaxsepError(f"{where}: the checkpoint's 'config' is not valid JSON ({e})") from e
    modules = config.get("modules", {}) if isinstance(config, dict) else {}
    expected = {"embedding": ["sigmoid", "unit_norm"], "mask": ["sigmoid"]}
    for head, activation in expected.items():
        args = modules.get(head, {}).get("args", {})
        if "activation" in args and list(args["activation"]) != activation:
            raise JaxsepError(
                f"{where}: {head} activation {args['activation']} is not supported "
                f"(jaxsep's ChimeraNet uses {activation})"
            )
    return modules.get("recurrent_stack", {}).get("args", {})


def convert_chimera(src: str | Path) -> tuple[dict[str, Any], dict]:
    """A nussl ChimeraNet checkpoint or state_dict `.pth` -> (config dict, variables)."""
    where = str(src)
    checkpoint = load_torch_checkpoint(src)
    if not isinstance(checkpoint, dict):
        raise JaxsepError(f"{where}: not a nussl checkpoint or state_dict (a dict)")
    rnn_args: dict[str, Any] = {}
    if "state_dict" in checkpoint:
        rnn_args = _check_nussl_config(checkpoint.get("config", {}), where)
        checkpoint = checkpoint["state_dict"]
        if not isinstance(checkpoint, dict):
            raise JaxsepError(f"{where}: 'state_dict' is not a dict of tensors")
    state = strip_prefix(checkpoint, where)
    model_kwargs = infer_model_kwargs(state, where)
    if rnn_args.get("rnn_type", "lstm") != "lstm":
        raise JaxsepError(f"{where}: rnn_type {rnn_args['rnn_type']!r} is not supported (lstm)")
    model_kwargs["dropout"] = float(rnn_args.get("dropout", DEFAULT_DROPOUT))
    variables = chimera_variables(state, model_kwargs, where)
    config = {
        "model": "chimera",
        "model_kwargs": model_kwargs,
        "sources": [f"source{s}" for s in range(model_kwargs["num_sources"])],
        "sample_rate": SAMPLE_RATE,
        "channels": 1,
        "downmix": True,  # Separator averages multichannel input to mono, like the recipe
        "stft": {"n_fft": N_FFT, "hop": HOP, "window": WINDOW, "mode": "scipy"},
        "converted_from": {"format": "nussl-chimera", "path": where},
    }
    return config, variables
