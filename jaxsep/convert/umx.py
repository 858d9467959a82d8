"""open-unmix (UMX) checkpoints -> `jaxsep.models.xumx.XUMX(bridge=False)` variables + config.

open-unmix stores one plain `OpenUnmix` state_dict per target (`<target>.pth`, or the published
`<target>-<hash>.pth`), optionally beside `<target>.json` (training args: `nfft`, `nhop`, ...) and
`separator.json` (`nfft`, `nhop`, `sample_rate`, `nb_channels`). The per-source network mapping
(`net_variables`, `infer_net_kwargs`) is shared with the asteroid X-UMX converter.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxsep.convert.torch_io import load_torch_checkpoint
from jaxsep.errors import JaxsepError

VECTORS = ("input_mean", "input_scale", "output_scale", "output_mean")
LINEARS = ("fc1", "fc2", "fc3")
BATCH_NORMS = ("bn1", "bn2", "bn3")
# Keys older open-unmix files carry beside the network (STFT front end); not parameters.
UMX_IGNORED_SUFFIXES = ("window", "sample_rate", "num_batches_tracked")

UMX_KEYS: dict[str, str] = {name: name for name in (*VECTORS, *LINEARS, *BATCH_NORMS, "lstm")}


def names_error(where: str, problem: str, names: Sequence[str]) -> JaxsepError:
    shown = ", ".join(sorted(names)[:6]) + (" ..." if len(names) > 6 else "")
    return JaxsepError(f"{where}: {problem} ({len(names)}): {shown}")


def net_variables(
    state_dict: Mapping[str, np.ndarray], keys: Mapping[str, str], where: str
) -> tuple[dict, dict, set[str]]:
    """(params, batch_stats, used keys) of one `SourceNet` from torch names given per role.

    `keys` maps each role (`fc1`, `bn1`, `lstm`, `input_mean`, ...) to its torch prefix/name.
    Missing keys fail with their names.
    """
    used: set[str] = set()
    missing: list[str] = []

    def take(key: str) -> np.ndarray | None:
        if key not in state_dict:
            missing.append(key)
            return None
        used.add(key)
        return np.asarray(state_dict[key], dtype=np.float32)

    params: dict[str, Any] = {name: take(keys[name]) for name in VECTORS}
    stats: dict[str, Any] = {}
    for name in LINEARS:
        weight = take(f"{keys[name]}.weight")
        params[name] = {"kernel": None if weight is None else weight.T}
    for name in BATCH_NORMS:
        prefix = keys[name]
        params[name] = {"weight": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}
        stats[name] = {
            "running_mean": take(f"{prefix}.running_mean"),
            "running_var": take(f"{prefix}.running_var"),
        }
        used.add(f"{prefix}.num_batches_tracked")  # momentum is fixed: the count is not needed
    lstm_prefix = f"{keys['lstm']}."
    params["lstm"] = {
        key[len(lstm_prefix) :]: take(key) for key in state_dict if key.startswith(lstm_prefix)
    }
    if not params["lstm"]:
        missing.append(f"{lstm_prefix}weight_ih_l0")
    if missing:
        raise names_error(where, "missing keys", missing)
    return params, stats, used


def infer_net_kwargs(
    state_dict: Mapping[str, np.ndarray], keys: Mapping[str, str], where: str
) -> dict[str, Any]:
    """XUMX sizes from tensor shapes: hidden size, max_bin, channels, n_fft, layers, direction."""
    try:
        fc1 = state_dict[f"{keys['fc1']}.weight"]
        max_bin = state_dict[keys["input_mean"]].shape[0]
        nb_bins = state_dict[keys["output_mean"]].shape[0]
    except KeyError as e:
        raise JaxsepError(f"{where}: missing key {e.args[0]}") from None
    lstm = keys["lstm"]
    nb_layers = 0
    while f"{lstm}.weight_ih_l{nb_layers}" in state_dict:
        nb_layers += 1
    if fc1.ndim != 2 or fc1.shape[1] % max_bin or nb_bins < 2:
        raise JaxsepError(
            f"{where}: {keys['fc1']}.weight has shape {fc1.shape}, "
            f"not [hidden, channels * {max_bin}]"
        )
    return {
        "n_fft": 2 * (nb_bins - 1),
        "hidden_size": int(fc1.shape[0]),
        "nb_layers": nb_layers,
        "nb_channels": int(fc1.shape[1] // max_bin),
        "max_bin": int(max_bin),
        "bidirectional": f"{lstm}.weight_ih_l0_reverse" in state_dict,
    }


def check_variables(model_kwargs: dict[str, Any], variables: dict, where: str) -> None:
    """Every converted array must exist in the model with the same shape, and vice versa."""
    from jaxsep.models.xumx import XUMX

    module = XUMX(**model_kwargs)
    shape = (1, model_kwargs["n_fft"], model_kwargs["nb_channels"])
    expected = jax.eval_shape(module.init, jax.random.key(0), np.zeros(shape, np.float32))
    want = {jax.tree_util.keystr(p): a.shape for p, a in jax.tree.leaves_with_path(expected)}
    have = {jax.tree_util.keystr(p): a.shape for p, a in jax.tree.leaves_with_path(variables)}
    if set(have) - set(want):
        raise names_error(where, "unexpected parameters", sorted(set(have) - set(want)))
    if set(want) - set(have):
        raise names_error(where, "missing parameters", sorted(set(want) - set(have)))
    wrong = [f"{k} {have[k]} != {want[k]}" for k in want if have[k] != want[k]]
    if wrong:
        raise names_error(where, "shape mismatches (checkpoint != model)", wrong)


def umx_variables_from_state_dicts(
    state_dicts: Mapping[str, Mapping[str, np.ndarray]], where: str = "umx"
) -> tuple[dict[str, Any], dict]:
    """(XUMX model_kwargs except the hop, variables) from `{target: state_dict}`."""
    params, stats, kwargs = {}, {}, None
    for target, state_dict in state_dicts.items():
        target_where = f"{where} [{target}]"
        net_kwargs = infer_net_kwargs(state_dict, UMX_KEYS, target_where)
        if kwargs is not None and net_kwargs != kwargs:
            raise JaxsepError(f"{target_where}: sizes {net_kwargs} differ from the other targets")
        kwargs = net_kwargs
        params[target], stats[target], used = net_variables(state_dict, UMX_KEYS, target_where)
        unknown = [k for k in state_dict if k not in used and not k.endswith(UMX_IGNORED_SUFFIXES)]
        if unknown:
            raise names_error(target_where, "unexpected keys", unknown)
    if kwargs is None:
        raise JaxsepError(f"{where}: no target models found")
    model_kwargs = {"sources": list(state_dicts), "bridge": False, **kwargs}
    variables = {"params": params, "batch_stats": stats}
    return model_kwargs, variables


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise JaxsepError(f"{path}: not a readable JSON file: {e}") from None


def _target_files(path: Path, targets: Sequence[str] | None) -> dict[str, Path]:
    """`{target: .pth}` of a model folder (`<target>.pth` or `<target>-<hash>.pth`) or one file."""
    if path.is_file():
        found = {path.stem.split("-")[0]: path}
    elif path.is_dir():
        found = {p.stem.split("-")[0]: p for p in sorted(path.glob("*.pth"))}
    else:
        raise JaxsepError(f"{path}: no such file or folder")
    if targets is not None:
        absent = [t for t in targets if t not in found]
        if absent:
            raise JaxsepError(f"{path}: no model file for target(s) {', '.join(absent)}")
        found = {t: found[t] for t in targets}
    if not found:
        raise JaxsepError(f"{path}: no <target>.pth files")
    return found


def convert_umx(
    path: str | Path, targets: Sequence[str] | None = None, sample_rate: float = 44100.0
) -> tuple[dict[str, Any], dict]:
    """An open-unmix model folder (or one `<target>.pth`) -> (config dict, variables).

    The config is a jaxsep model-directory config for `jaxsep.models.xumx` with `bridge=False`;
    `targets` picks and orders the targets (default: every `.pth`, sorted by name). The hop comes
    from `separator.json` or `<target>.json` (`nhop`), else n_fft // 4 (open-unmix's default).
    """
    path = Path(path)
    files = _target_files(path, targets)
    state_dicts = {}
    for target, file in files.items():
        state_dict = load_torch_checkpoint(file)
        if not isinstance(state_dict, dict) or "state_dict" in state_dict:
            raise JaxsepError(f"{file}: not an open-unmix state_dict (a plain tensor dict)")
        state_dicts[target] = state_dict
    model_kwargs, variables = umx_variables_from_state_dicts(state_dicts, str(path))
    folder = path if path.is_dir() else path.parent
    settings: dict[str, Any] = {}
    for target in files:
        if (folder / f"{target}.json").is_file():
            settings.update(_read_json(folder / f"{target}.json").get("args", {}))
    if (folder / "separator.json").is_file():
        settings.update(_read_json(folder / "separator.json"))
    if int(settings.get("nfft", model_kwargs["n_fft"])) != model_kwargs["n_fft"]:
        raise JaxsepError(
            f"{path}: nfft {settings['nfft']} in the json does not match the weights "
            f"(n_fft {model_kwargs['n_fft']})"
        )
    model_kwargs["hop"] = int(settings.get("nhop", model_kwargs["n_fft"] // 4))
    check_variables(model_kwargs, variables, str(path))
    config = {
        "model": "xumx",
        "model_kwargs": model_kwargs,
        "sources": list(model_kwargs["sources"]),
        "sample_rate": float(settings.get("sample_rate", sample_rate)),
        "channels": model_kwargs["nb_channels"],
        "converted_from": {"format": "open-unmix", "path": str(path)},
    }
    return config, variables
