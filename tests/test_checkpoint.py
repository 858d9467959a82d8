"""Model directories: round trip, atomic overwrite, one-line errors for damaged directories."""

import json
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.errors import JaxsepError
from jaxsep.modeldir import load, save_model_dir


class TinyNet(nn.Module):
    """Dense + batch norm: a model with both params and batch_stats."""

    features: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(self.features)(x)
        return nn.BatchNorm(use_running_average=not train)(x)


@pytest.fixture
def tiny_model(monkeypatch):
    """Register `jaxsep.models.tiny_test_net` (exports `Model`) for the lookup by name."""
    module = types.ModuleType("jaxsep.models.tiny_test_net")
    module.Model = TinyNet
    monkeypatch.setitem(sys.modules, "jaxsep.models.tiny_test_net", module)
    config = {"model": "tiny_test_net", "model_kwargs": {"features": 3}, "sample_rate": 16000}
    x = jnp.arange(8.0).reshape(2, 4)
    variables = TinyNet(features=3).init(jax.random.PRNGKey(0), x)
    # non-trivial running statistics, so a lost batch_stats collection would show
    _, updates = TinyNet(features=3).apply(variables, x, train=True, mutable=["batch_stats"])
    return config, {**variables, **updates}, x


def assert_one_line(error: pytest.ExceptionInfo, *parts: str):
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


def test_round_trip(tmp_path, tiny_model):
    config, variables, x = tiny_model
    path = save_model_dir(tmp_path / "model", config, variables)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    model = load(path)
    assert model.config == config
    assert isinstance(model.module, TinyNet) and model.module.features == 3
    assert set(model.variables) == {"params", "batch_stats"}
    jax.tree.map(np.testing.assert_array_equal, model.variables, jax.device_get(variables))
    np.testing.assert_array_equal(
        model.module.apply(model.variables, x), TinyNet(3).apply(variables, x)
    )


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path, tiny_model):
    config, variables, _ = tiny_model
    save_model_dir(tmp_path / "model", config, variables)
    doubled = jax.tree.map(lambda a: 2 * a, variables)
    save_model_dir(tmp_path / "model", {**config, "note": "second"}, doubled)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    model = load(tmp_path / "model")
    assert model.config["note"] == "second"
    jax.tree.map(np.testing.assert_array_equal, model.variables, jax.device_get(doubled))


def test_failed_save_leaves_no_partial_directory(tmp_path, tiny_model):
    config, variables, _ = tiny_model
    with pytest.raises(JaxsepError) as error:
        save_model_dir(tmp_path / "model", {**config, "bad": object()}, variables)
    assert_one_line(error, "model", "JSON")
    with pytest.raises(JaxsepError) as error:
        save_model_dir(tmp_path / "model", config, {"params": {"w": object()}})
    assert_one_line(error, "model", "cannot save")
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_and_config(tmp_path, tiny_model):
    with pytest.raises(JaxsepError) as error:
        load(tmp_path / "nope")
    assert_one_line(error, "nope", "not found")
    config, variables, _ = tiny_model
    path = save_model_dir(tmp_path / "model", config, variables)
    (path / "config.json").unlink()
    with pytest.raises(JaxsepError) as error:
        load(path)
    assert_one_line(error, str(path), "config.json")


@pytest.mark.parametrize(
    "text, expected",
    [("{not json", "invalid JSON"), ('{"model_kwargs": {}}', "'model'"), ("[1, 2]", "'model'")],
)
def test_malformed_config(tmp_path, tiny_model, text, expected):
    config, variables, _ = tiny_model
    path = save_model_dir(tmp_path / "model", config, variables)
    (path / "config.json").write_text(text)
    with pytest.raises(JaxsepError) as error:
        load(path)
    assert_one_line(error, "config.json", expected)


def test_saving_needs_a_model_name_and_loading_an_object_of_kwargs(tmp_path, tiny_model):
    config, variables, _ = tiny_model
    with pytest.raises(JaxsepError) as error:
        save_model_dir(tmp_path / "nameless", {**config, "model": None}, variables)
    assert_one_line(error, "nameless", "needs a 'model' name")
    assert not (tmp_path / "nameless").exists()
    path = save_model_dir(tmp_path / "model", config, variables)
    (path / "config.json").write_text(json.dumps({**config, "model_kwargs": [3]}))
    with pytest.raises(JaxsepError) as error:
        load(path)
    assert_one_line(error, "config.json", "'model_kwargs' must be an object")


def test_unknown_model_name(tmp_path, tiny_model):
    config, variables, _ = tiny_model
    path = save_model_dir(tmp_path / "model", config, variables)
    (path / "config.json").write_text(json.dumps({**config, "model": "no_such_model"}))
    with pytest.raises(JaxsepError) as error:
        load(path)
    assert_one_line(error, "config.json", "unknown model 'no_such_model'")
    (path / "config.json").write_text(json.dumps({**config, "model_kwargs": {"width": 3}}))
    with pytest.raises(JaxsepError) as error:
        load(path)
    assert_one_line(error, "config.json", "model_kwargs")
    # values a model's own config class rejects (ValueError), e.g. a hand-edited VQ-VAE
    for kwargs, reason in [
        ({"bogus": 1}, "unknown VQ-VAE config keys: bogus"),
        ({"levels": 2, "downs_t": [3]}, "downs_t needs 2 entries"),
        ({"downs_t": ["three", 2, 2]}, "invalid literal"),
    ]:
        (path / "config.json").write_text(json.dumps({"model": "vqvae", "model_kwargs": kwargs}))
        with pytest.raises(JaxsepError) as error:
            load(path)
        assert_one_line(error, "config.json", f"model 'vqvae': bad model_kwargs: {reason}")


def test_corrupt_or_missing_checkpoint(tmp_path, tiny_model):
    config, variables, _ = tiny_model
    path = save_model_dir(tmp_path / "model", config, variables)
    for data_file in (path / "variables").rglob("*"):
        if data_file.is_file() and data_file.parent.name == "d":
            data_file.write_bytes(b"garbage")
    with pytest.raises(JaxsepError) as error:
        load(path)
    assert_one_line(error, "variables", "corrupt")
    (path / "variables" / "_METADATA").unlink()
    with pytest.raises(JaxsepError) as error:
        load(path)
    assert_one_line(error, "variables", "corrupt")
    import shutil

    shutil.rmtree(path / "variables")
    with pytest.raises(JaxsepError) as error:
        load(path)
    assert_one_line(error, str(path), "variables")
