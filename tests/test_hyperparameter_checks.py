"""Out-of-range sizes and trainer settings fail in one line that names the field, before any
data or compile work, instead of a shape traceback from inside XLA or a silently wrong run."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.cli import main
from jaxsep.errors import JaxsepError, check_sizes
from jaxsep.models.chimera import ChimeraNet
from jaxsep.models.mask_mlp import MaskMLP
from jaxsep.models.vqvae import VQVAEConfig
from jaxsep.models.xumx import XUMX, bandwidth_to_max_bin
from jaxsep.train.loop import check_train_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_check_sizes_wants_positive_integers():
    check_sizes("Net", width=3, depth=np.int64(5))  # numpy integers from converters count
    for value in (0, -4, 2.0, True, "8", None):
        with pytest.raises(
            JaxsepError, match=f"Net: width must be a positive integer, got {value!r}"
        ):
            check_sizes("Net", width=value)


@pytest.mark.parametrize(
    "module, shape, message",
    [
        (XUMX(n_fft=64, hop=16, hidden_size=-4, max_bin=None), (1, 256, 2), "XUMX: hidden_size"),
        (XUMX(n_fft=64, hop=0, hidden_size=8, max_bin=None), (1, 256, 2), "XUMX: hop"),
        (
            XUMX(n_fft=64, hop=16, hidden_size=8, nb_layers=0, max_bin=None),
            (1, 256, 2),
            "nb_layers",
        ),
        (
            XUMX(n_fft=64, hop=16, hidden_size=8, max_bin=None, extra_features=-1),
            (1, 256, 2),
            "extra",
        ),
        (ChimeraNet(num_bins=9, hidden=8, layers=1, embedding_dim=-2), (1, 5, 9), "embedding_dim"),
        (ChimeraNet(num_bins=9, hidden=8, layers=1, num_sources=0), (1, 5, 9), "num_sources"),
        (
            ChimeraNet(num_bins=9, hidden=8, layers=1, dropout=1.5),
            (1, 5, 9),
            r"dropout must be in \[0, 1\)",
        ),
        (MaskMLP(n_fft=32, hop=8, hidden=-1), (1, 128, 2), "MaskMLP: hidden"),
        (MaskMLP(n_fft=32, hop=0, hidden=4), (1, 128, 2), "MaskMLP: hop"),
    ],
)
def test_models_refuse_impossible_sizes_at_init(module, shape, message):
    with pytest.raises(JaxsepError, match=message) as error:
        module.init(jax.random.key(0), jnp.zeros(shape))
    one_line(error)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 0}, "width must be a positive integer, got 0"),
        ({"l_bins": -1}, "l_bins must be a positive integer"),
        ({"levels": 1, "downs_t": [0]}, r"downs_t must hold positive integers, got \(0,\)"),
        ({"levels": 1, "downs_t": [3], "strides_t": [2], "multipliers": [-1]}, "multipliers"),
    ],
)
def test_vqvae_config_refuses_impossible_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VQVAEConfig.from_dict(kwargs)


def test_bandwidth_must_be_positive():
    assert bandwidth_to_max_bin(44100, 4096, 16000.0) == 1487
    with pytest.raises(JaxsepError, match="bandwidth must be > 0 Hz, got -5.0"):
        bandwidth_to_max_bin(44100, 4096, -5.0)


def load_config(name: str, variant: str | None = None):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("num_steps", -1, "num_steps must be a positive integer, got -1"),
        ("batch_size", 0, "batch_size must be a positive integer"),
        ("eval_every", -5, "eval_every must be an integer >= 0, got -5"),
        ("early_stop_patience", -1, "early_stop_patience must be an integer >= 0"),
        ("plateau.factor", 2.0, r"plateau.factor must be in \(0, 1\), got 2.0"),
        ("plateau.factor", 0.0, r"plateau.factor must be in \(0, 1\)"),
        ("plateau.min_lr", -1e-3, "plateau.min_lr must be >= 0"),
        ("data.workers", -1, "data.workers must be an integer >= 0, got -1"),
        ("data.eval_examples", 0, "data.eval_examples must be a positive integer, got 0"),
        ("data.stats_examples", 0, "data.stats_examples must be a positive integer"),
    ],
)
def test_trainer_settings_out_of_range(key, value, message):
    config = load_config("xumx", "tiny")
    check_train_config(config)  # the shipped config passes
    section, _, name = key.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(JaxsepError, match=f"config: {message}") as error:
        check_train_config(config)
    one_line(error)


def test_every_shipped_config_passes_the_checks():
    for path in sorted(CONFIGS.glob("*.py")):
        for variant in (None, "tiny"):
            check_train_config(load_config(path.stem, variant))


def test_eval_examples_may_be_zero_when_nothing_is_evaluated():
    config = load_config("xumx", "tiny")
    config.eval_every, config.data.eval_examples = 0, 0
    check_train_config(config)


def test_train_command_stops_before_reading_data(tmp_path, capsys):
    argv = ["train", "--config", str(CONFIGS / "xumx.py") + ":tiny", "--config.num_steps=-1"]
    argv += ["--workdir", str(tmp_path / "w"), "--data", str(tmp_path / "no_data_here")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "jaxsep train: error: config: num_steps must be a positive integer, got -1"
