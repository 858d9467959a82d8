"""Jukebox checkpoint conversion: both formats, allow-listed hps, strict keys, one-line errors."""

import json
import sys
import types

import numpy as np
import pytest
import torch

from jaxsep.convert.jukebox import convert_jukebox, convert_state_dict, load_checkpoint
from jaxsep.errors import JaxsepError
from jaxsep.models.vqvae import VQVAEConfig

ZIP = "vqvae_5b_width8.pth.tar"
LEGACY = "vqvae_5b_width8_legacy.pth.tar"


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    """(checkpoint dict, converted config, converted variables) of the zip fixture."""
    path = fixtures_dir / "jukebox" / ZIP
    config, variables = convert_jukebox(path)
    return torch.load(path, map_location="cpu", weights_only=True), config, variables


def _save(tmp_path, name, obj, legacy=False):
    path = tmp_path / name
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def _assert_one_line_error(path, match, **kwargs):
    with pytest.raises(JaxsepError) as info:
        convert_jukebox(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    assert match in message, message
    return message


def _assert_same_variables(a, b):
    flat_a = {k: v for k, v in _flatten(a)}
    flat_b = {k: v for k, v in _flatten(b)}
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, (*prefix, key))
        else:
            yield (*prefix, key), np.asarray(value)


def test_config_and_layout(reference):
    checkpoint, config, variables = reference
    assert config["width"] == 8 and config["levels"] == 3 and config["multipliers"] == [2, 1, 1]
    state = checkpoint["model"]
    # Conv1d [out, in, k] -> [k, in, out]; ConvTranspose1d [in, out, k] -> [k, out, in]
    conv = state["encoders.0.level_blocks.0.model.0.1.model.2.model.1.weight"].numpy()
    kernel = variables["params"]["encoders_0"]["block_0"]["res_0"]["block_2"]["conv_dilated"]
    np.testing.assert_array_equal(kernel["kernel"], conv.transpose(2, 1, 0))
    up = state["decoders.1.level_blocks.1.model.2.1.weight"].numpy()
    np.testing.assert_array_equal(
        variables["params"]["decoders_1"]["block_1"]["up_1"]["kernel"], up.transpose(2, 1, 0)
    )
    book = variables["codebook"]["quantizers_2"]
    np.testing.assert_array_equal(book["k"], state["bottleneck.level_blocks.2.k"].numpy())
    np.testing.assert_array_equal(book["k_sum"], book["k"])
    assert np.all(book["k_elem"] == 1.0) and bool(book["initialised"])
    assert json.loads(json.dumps(config)) == config


def test_module_prefix_and_bare_state_dict(tmp_path, reference):
    checkpoint, _, variables = reference
    prefixed = {f"module.{k}": v for k, v in checkpoint["model"].items()}
    path = _save(tmp_path, "prefixed.pth.tar", {**checkpoint, "model": prefixed}, legacy=True)
    _assert_same_variables(convert_jukebox(path)[1], variables)
    bare = _save(tmp_path, "bare.pth", dict(checkpoint["model"]))  # no hps: width inferred
    _assert_same_variables(convert_jukebox(bare)[1], variables)


def test_hyperparams_object_is_mapped_never_executed(tmp_path, reference, monkeypatch):
    checkpoint, config, variables = reference

    class Hyperparams(dict):  # stands for jukebox.hparams.Hyperparams at save time
        def __getattr__(self, name):
            raise RuntimeError("Jukebox code must never run while loading")

    Hyperparams.__module__, Hyperparams.__qualname__ = "jukebox.hparams", "Hyperparams"
    package, module = types.ModuleType("jukebox"), types.ModuleType("jukebox.hparams")
    module.Hyperparams, package.hparams = Hyperparams, module
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "jukebox", package)
        patch.setitem(sys.modules, "jukebox.hparams", module)
        hps = Hyperparams(checkpoint["hps"])
        path = _save(tmp_path, "hps_object.pth.tar", {**checkpoint, "hps": hps})
        legacy = _save(tmp_path, "hps_object_legacy.pth.tar", {**checkpoint, "hps": hps}, True)
    assert "jukebox" not in sys.modules
    for file in (path, legacy):
        loaded = load_checkpoint(file)
        assert type(loaded["hps"]) is not Hyperparams and loaded["hps"]["width"] == 8
        got_config, got_variables = convert_jukebox(file)
        assert got_config == config
        _assert_same_variables(got_variables, variables)
    assert "jukebox" not in sys.modules


class NotAllowed:
    pass


def test_unknown_pickled_class_is_refused(tmp_path, reference):
    checkpoint = reference[0]
    path = _save(tmp_path, "evil.pth.tar", {**checkpoint, "hps": NotAllowed()})
    _assert_one_line_error(path, "Unsupported global")


def test_corrupt_truncated_foreign_files(tmp_path, fixtures_dir):
    corrupt = tmp_path / "corrupt.pth.tar"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    _assert_one_line_error(corrupt, "not a readable PyTorch checkpoint")
    for name in (ZIP, LEGACY):
        data = (fixtures_dir / "jukebox" / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        _assert_one_line_error(cut, "not a readable PyTorch checkpoint")
    foreign = _save(
        tmp_path, "foreign.pth", {"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}
    )
    _assert_one_line_error(foreign, "not a Jukebox VQ-VAE checkpoint")
    _assert_one_line_error(tmp_path / "absent.pth.tar", "no such checkpoint file")
    listing = _save(tmp_path, "list.pth", [torch.zeros(3)])
    _assert_one_line_error(listing, "expected a dict checkpoint, got list")


def test_integer_tensors_are_refused_by_name(tmp_path, reference):
    state = dict(reference[0]["model"])
    key = next(iter(state))
    state[key] = state[key].to(torch.int32)
    path = _save(tmp_path, "ints.pth", {**reference[0], "model": state})
    _assert_one_line_error(path, f"entry '{key}' is not a floating-point tensor")


def test_missing_unexpected_and_misshaped_keys(tmp_path, reference):
    checkpoint = reference[0]
    state = dict(checkpoint["model"])
    dropped = "decoders.0.level_blocks.0.model.2.0.model.5.model.3.bias"
    path = _save(
        tmp_path,
        "missing.pth.tar",
        {**checkpoint, "model": {k: v for k, v in state.items() if k != dropped}},
    )
    _assert_one_line_error(path, f"missing keys: {dropped}")
    path = _save(
        tmp_path, "extra.pth.tar", {**checkpoint, "model": {**state, "prior.x": torch.zeros(1)}}
    )
    _assert_one_line_error(path, "unexpected keys: prior.x")
    bad = "encoders.1.level_blocks.1.model.2.weight"
    path = _save(
        tmp_path, "shape.pth.tar", {**checkpoint, "model": {**state, bad: torch.zeros(64, 8, 2)}}
    )
    _assert_one_line_error(path, f"{bad} has shape (64, 8, 2)")
    wide = _save(
        tmp_path, "wide.pth.tar", {**checkpoint, "hps": {**checkpoint["hps"], "width": 32}}
    )
    _assert_one_line_error(wide, "has shape")


def test_level_subset(tmp_path, fixtures_dir, reference):
    _, _, variables = reference
    config, subset = convert_jukebox(fixtures_dir / "jukebox" / LEGACY, levels=1)
    assert config["levels"] == 1 and config["downs_t"] == [3]
    assert set(subset["params"]) == {"encoders_0", "decoders_0"}
    assert set(subset["codebook"]) == {"quantizers_0"}
    for collection in ("params", "codebook"):
        for name in subset[collection]:
            _assert_same_variables(subset[collection][name], variables[collection][name])
    _assert_one_line_error(fixtures_dir / "jukebox" / ZIP, "levels=4", levels=4)


def test_real_5b_key_set(fixtures_dir):
    """The 669 keys and shapes of the real 5b model map exactly onto the default config."""
    listing = json.loads((fixtures_dir / "jukebox" / "jukebox_5b_state_dict_keys.json").read_text())
    state = {e["key"]: np.zeros(e["shape"], np.float32) for e in listing["entries"]}
    assert len(state) == 669
    variables = convert_state_dict(state, VQVAEConfig(), fixtures_dir / "5b")
    params = sum(v.size for _, v in _flatten(variables["params"]))
    assert params == 1_485_763
    level0 = {
        k: v
        for k, v in state.items()
        if k.startswith(("encoders.0.", "decoders.0.", "bottleneck.level_blocks.0."))
    }
    assert len(level0) == 211
    paper = VQVAEConfig(levels=1, downs_t=(3,), strides_t=(2,), multipliers=(2,))
    variables = convert_state_dict(state, paper, fixtures_dir / "5b")
    assert sum(v.size for _, v in _flatten(variables["params"])) == 900_033
