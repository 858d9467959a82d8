"""Checkpoint reading and the asteroid X-UMX / open-unmix converters (bad files, key checks)."""

import collections
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.torch_version import TorchVersion

from jaxsep.convert.torch_io import load_torch_checkpoint
from jaxsep.convert.umx import convert_umx
from jaxsep.convert.xumx import convert_xumx
from jaxsep.errors import JaxsepError
from jaxsep.modeldir import load, save_model_dir


class NotAllowed:
    """A class a checkpoint must not be able to instantiate."""


@pytest.fixture(scope="module")
def package(fixtures_dir):
    return torch.load(fixtures_dir / "xumx" / "xumx_tiny_package.pth", weights_only=True)


def save(path, obj):
    torch.save(obj, path)
    return path


def edited_package(package, tmp_path, drop=(), add=None, resize=None, **model_args):
    state_dict = collections.OrderedDict(package["state_dict"])
    for key in drop:
        del state_dict[key]
    if add:
        state_dict.update(add)
    if resize:
        state_dict[resize] = state_dict[resize][:-1]
    args = {**package["model_args"], **model_args}
    return save(tmp_path / "edited.pth", {**package, "state_dict": state_dict, "model_args": args})


def test_package_with_torch_version_and_numpy_scalars_loads(package, fixtures_dir, tmp_path):
    # What asteroid's serialize() writes: a TorchVersion object and max_bin as np.int64.
    infos = {"software_versions": {"torch_version": TorchVersion("2.1.0")}}
    args = {**package["model_args"], "max_bin": np.int64(186)}
    path = save(tmp_path / "pkg.pth", {**package, "infos": infos, "model_args": args})
    checkpoint = load_torch_checkpoint(path)
    assert checkpoint["infos"]["software_versions"]["torch_version"] == "2.1.0"
    assert type(checkpoint["model_args"]["max_bin"]) is int
    assert isinstance(checkpoint["state_dict"]["decoder.window"], np.ndarray)
    config, variables = convert_xumx(path)
    assert config["model_kwargs"]["max_bin"] == 186
    _, reference = convert_xumx(fixtures_dir / "xumx" / "xumx_tiny_package.pth")
    jax.tree.map(np.testing.assert_array_equal, variables, reference)


def test_converted_xumx_round_trips_through_a_model_directory(package, fixtures_dir, tmp_path):
    config, variables = convert_xumx(fixtures_dir / "xumx" / "xumx_tiny_package.pth")
    assert config["model"] == "xumx" and config["sources"] == ["bass", "drums", "vocals", "other"]
    assert config["sample_rate"] == 44100 and config["channels"] == 2
    expected = package["state_dict"]["layer_enc.vocals.enc.0.weight"].numpy().T
    np.testing.assert_array_equal(variables["params"]["vocals"]["fc1"]["kernel"], expected)
    model = load(save_model_dir(tmp_path / "model", config, variables))
    wave = jnp.asarray(np.load(fixtures_dir / "xumx" / "tiny_io.npz")["input_wav"]).mT[
        ..., :4096, :
    ]
    out = jax.jit(model.module.apply)(model.variables, wave)
    np.testing.assert_array_equal(out, jax.jit(model.module.apply)(variables, wave))


@pytest.mark.parametrize(
    "drop, names",
    [
        (["layer_enc.drums.enc.1.running_var"], "layer_enc.drums.enc.1.running_var"),
        (["mean_scale.input_scale_other"], "mean_scale.input_scale_other"),
        (["layer_lstm.vocals.weight_hh_l2"], "weight_hh_l2"),
    ],
)
def test_missing_keys_fail_with_their_names(package, tmp_path, drop, names):
    with pytest.raises(JaxsepError, match="missing") as error:
        convert_xumx(edited_package(package, tmp_path, drop=drop))
    assert names in str(error.value) and "edited.pth" in str(error.value)
    assert "\n" not in str(error.value)


def test_unexpected_keys_fail_with_their_names(package, tmp_path):
    extra = {
        "layer_dec.bass.dec.5.weight": torch.zeros(3),
        "separator.gain": torch.zeros(()),
    }
    with pytest.raises(JaxsepError, match="unexpected") as error:
        convert_xumx(edited_package(package, tmp_path, add=extra))
    assert "layer_dec.bass.dec.5.weight" in str(error.value)
    assert "separator.gain" in str(error.value)


def test_shape_and_model_args_mismatches_fail(package, tmp_path):
    with pytest.raises(JaxsepError, match="output_scale"):
        convert_xumx(edited_package(package, tmp_path, resize="mean_scale.output_scale_other"))
    with pytest.raises(JaxsepError, match="max_bin=100"):
        convert_xumx(edited_package(package, tmp_path, max_bin=100))
    with pytest.raises(JaxsepError, match="'ConvTasNet'"):
        convert_xumx(save(tmp_path / "other.pth", {**package, "model_name": "ConvTasNet"}))
    with pytest.raises(JaxsepError, match="model_args in_chan=1024 but weights need 512"):
        convert_xumx(edited_package(package, tmp_path, in_chan=1024))
    with pytest.raises(JaxsepError, match=r"spec_power=2 is not supported \(1\)"):
        convert_xumx(edited_package(package, tmp_path, spec_power=2))
    with pytest.raises(JaxsepError, match="not an asteroid model package"):
        convert_xumx(save(tmp_path / "list.pth", [package["state_dict"]]))
    # vocals cut to 100 input bins, consistently (its statistics and first layer)
    narrow = dict(package["state_dict"])
    for key in ("mean_scale.input_mean_vocals", "mean_scale.input_scale_vocals"):
        narrow[key] = narrow[key][:100]
    first = "layer_enc.vocals.enc.0.weight"
    narrow[first] = narrow[first][:, :200]
    with pytest.raises(JaxsepError, match="source 'vocals' has sizes .* !="):
        convert_xumx(save(tmp_path / "narrow.pth", {**package, "state_dict": narrow}))


def test_corrupt_foreign_and_missing_files_fail_in_one_line(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = save(tmp_path / "foreign.pth", {"state_dict": {}, "hook": NotAllowed()})
    cases = [(garbage, "garbage.pth"), (foreign, "NotAllowed"), (tmp_path / "absent.pth", "absent")]
    for path, expected in cases:
        with pytest.raises(JaxsepError) as error:
            convert_xumx(path)
        message = str(error.value)
        assert str(path) in message and expected in message and "\n" not in message


def test_umx_folder_and_single_published_style_file(fixtures_dir, tmp_path):
    folder = fixtures_dir / "umx" / "tiny_model"
    config, variables = convert_umx(folder, targets=["vocals", "bass"])
    kwargs = config["model_kwargs"]
    assert config["sources"] == ["vocals", "bass"] and not kwargs["bridge"]
    assert (kwargs["n_fft"], kwargs["hop"], kwargs["max_bin"], kwargs["hidden_size"]) == (
        512,
        128,
        186,
        32,
    )
    # A published-style file name `<target>-<hash>.pth`, with an old STFT key beside the network.
    state_dict = torch.load(folder / "vocals.pth", weights_only=True)
    single = save(tmp_path / "vocals-b62c91ce.pth", {**state_dict, "stft.window": torch.ones(512)})
    single_config, single_variables = convert_umx(single)
    assert single_config["sources"] == ["vocals"]
    jax.tree.map(
        np.testing.assert_array_equal,
        single_variables["params"]["vocals"],
        variables["params"]["vocals"],
    )


def test_umx_unknown_key_and_missing_target_fail(fixtures_dir, tmp_path):
    folder = fixtures_dir / "umx" / "tiny_model"
    with pytest.raises(JaxsepError, match="karaoke"):
        convert_umx(folder, targets=["karaoke"])
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    state_dict = torch.load(copy / "drums.pth", weights_only=True)
    save(copy / "drums.pth", {**state_dict, "fc4.weight": torch.zeros(2, 2)})
    with pytest.raises(JaxsepError, match=r"unexpected keys.*fc4\.weight"):
        convert_umx(copy)


def test_umx_folder_problems_fail_in_one_line_naming_the_file(fixtures_dir, tmp_path):
    folder = fixtures_dir / "umx" / "tiny_model"
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)

    def error(path, **kwargs):
        with pytest.raises(JaxsepError) as info:
            convert_umx(path, **kwargs)
        message = str(info.value)
        assert "\n" not in message
        return message

    assert "no such file or folder" in error(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    assert "no <target>.pth files" in error(tmp_path / "empty")
    drums = torch.load(copy / "drums.pth", weights_only=True)
    save(copy / "drums.pth", {"state_dict": drums})  # a training checkpoint, not the weights
    message = error(copy)
    assert str(copy / "drums.pth") in message and "plain tensor dict" in message
    narrow = {k: v[..., :2] if k == "input_mean" else v for k, v in drums.items()}
    save(copy / "drums.pth", drums)
    save(copy / "other.pth", narrow)
    message = error(copy, targets=["drums", "other"])
    assert "[other]" in message and "differ from the other targets" in message
    (copy / "other.pth").unlink()
    (copy / "separator.json").write_text("{not json")
    message = error(copy)
    assert str(copy / "separator.json") in message and "not a readable JSON file" in message
    (copy / "separator.json").write_text('{"nfft": 1024, "nhop": 256}')
    assert "nfft 1024 in the json does not match the weights (n_fft 512)" in error(copy)
