"""asteroid X-UMX model packages -> `jaxsep.models.xumx.XUMX` variables + config.

An asteroid package is `torch.save` of `{"model_name": "XUMX", "state_dict", "model_args",
"infos", ...}`; a bare state_dict is accepted too. Sizes come from tensor shapes (model_args
only supplies the hop, the sample rate and the source order, and is cross-checked).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxsep.convert.torch_io import load_torch_checkpoint
from jaxsep.convert.umx import check_variables, infer_net_kwargs, names_error, net_variables
from jaxsep.errors import JaxsepError

# The STFT/iSTFT window buffers (one tensor saved twice): jaxsep computes the periodic Hann.
XUMX_IGNORED = ("encoder.0.window", "decoder.window")


def xumx_keys(source: str) -> dict[str, str]:
    """torch name (prefix) of every role of one source's network in asteroid's `XUMX`."""
    return {
        "input_mean": f"mean_scale.input_mean_{source}",
        "input_scale": f"mean_scale.input_scale_{source}",
        "output_mean": f"mean_scale.output_mean_{source}",
        "output_scale": f"mean_scale.output_scale_{source}",
        "fc1": f"layer_enc.{source}.enc.0",
        "bn1": f"layer_enc.{source}.enc.1",
        "lstm": f"layer_lstm.{source}",
        "fc2": f"layer_dec.{source}.dec.0",
        "bn2": f"layer_dec.{source}.dec.1",
        "fc3": f"layer_dec.{source}.dec.3",
        "bn3": f"layer_dec.{source}.dec.4",
    }


def sources_in(state_dict: Mapping[str, Any]) -> list[str]:
    """Source names in state_dict order (from the `layer_enc.<s>.enc.0.weight` keys)."""
    return [
        key[len("layer_enc.") : -len(".enc.0.weight")]
        for key in state_dict
        if key.startswith("layer_enc.") and key.endswith(".enc.0.weight")
    ]


def xumx_variables_from_state_dict(
    state_dict: Mapping[str, np.ndarray],
    model_args: Mapping[str, Any] | None = None,
    where: str = "state_dict",
) -> tuple[dict[str, Any], dict]:
    """(XUMX model_kwargs, variables) from an asteroid `XUMX` state_dict (numpy arrays)."""
    model_args = dict(model_args or {})
    sources = list(model_args.get("sources") or sources_in(state_dict))
    if not sources:
        raise JaxsepError(f"{where}: no layer_enc.<source>.enc.0.weight keys: not an X-UMX model")
    params, stats, used, kwargs = {}, {}, set(XUMX_IGNORED), None
    for source in sources:
        keys = xumx_keys(source)
        net_kwargs = infer_net_kwargs(state_dict, keys, where)
        if kwargs is not None and net_kwargs != kwargs:
            raise JaxsepError(f"{where}: source {source!r} has sizes {net_kwargs} != {kwargs}")
        kwargs = net_kwargs
        params[source], stats[source], source_used = net_variables(state_dict, keys, where)
        used |= source_used
    unknown = [key for key in state_dict if key not in used]
    if unknown:
        raise names_error(where, "unexpected keys", unknown)
    n_fft = kwargs["n_fft"]
    for name in ("in_chan", "window_length"):
        if name in model_args and int(model_args[name]) != n_fft:
            raise JaxsepError(
                f"{where}: model_args {name}={model_args[name]} but weights need {n_fft}"
            )
    for name in ("hidden_size", "nb_layers", "nb_channels", "max_bin", "bidirectional"):
        value = model_args.get(name)
        if value is not None and value != kwargs[name]:
            raise JaxsepError(
                f"{where}: model_args {name}={value!r} but the weights have {kwargs[name]!r}"
            )
    if model_args.get("spec_power", 1) != 1:
        raise JaxsepError(f"{where}: spec_power={model_args['spec_power']} is not supported (1)")
    model_kwargs = {
        "sources": sources,
        "bridge": True,
        "hop": int(model_args.get("n_hop", n_fft // 4)),
        **kwargs,
    }
    variables = {"params": params, "batch_stats": stats}
    check_variables(model_kwargs, variables, where)
    return model_kwargs, variables


def convert_xumx(path: str | Path) -> tuple[dict[str, Any], dict]:
    """An asteroid X-UMX package (or bare state_dict) `.pth` -> (config dict, variables)."""
    checkpoint = load_torch_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise JaxsepError(f"{path}: not an asteroid model package (a dict)")
    if "state_dict" in checkpoint:
        name = checkpoint.get("model_name", "XUMX")
        if name != "XUMX":
            raise JaxsepError(f"{path}: asteroid package of model {name!r}, expected 'XUMX'")
        state_dict, model_args = checkpoint["state_dict"], checkpoint.get("model_args") or {}
    else:
        state_dict, model_args = checkpoint, {}
    model_kwargs, variables = xumx_variables_from_state_dict(state_dict, model_args, str(path))
    config = {
        "model": "xumx",
        "model_kwargs": model_kwargs,
        "sources": list(model_kwargs["sources"]),
        "sample_rate": float(model_args.get("sample_rate", 44100)),
        "channels": model_kwargs["nb_channels"],
        "converted_from": {"format": "asteroid-xumx", "path": str(path)},
    }
    return config, variables
