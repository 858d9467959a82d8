"""torchvggish .pth files -> jaxsep VGGish (config, variables): layouts, PCA, clear errors."""

import jax
import numpy as np
import pytest
import torch

from jaxsep.convert import vggish as convert
from jaxsep.errors import JaxsepError
from jaxsep.models import vggish

SHAPES = convert.expected_torch_shapes()


def torch_state_dict() -> dict:
    """A torchvggish-shaped state_dict; the two big dense weights are broadcast views, so the
    saved file stays small (torch.save keeps strides) while every value still varies along
    the axis the converter transposes."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in SHAPES.items():
        if key in ("embeddings.0.weight", "embeddings.2.weight"):
            state[key] = torch.randn(1, shape[1], generator=generator).expand(*shape)
        else:
            state[key] = torch.randn(*shape, generator=generator)
    return state


@pytest.fixture(scope="module")
def state():
    return torch_state_dict()


def test_key_map_covers_the_published_layout():
    assert len(convert.torch_key_map()) == 18
    assert sum(int(np.prod(s)) for s in SHAPES.values()) == 72_141_184


def test_convert_weights_and_pca_files(tmp_path, state, fixtures_dir):
    weights = tmp_path / "vggish-10086976.pth"
    torch.save(state, weights)
    pca_file = fixtures_dir / "vggish" / "vggish_pca_params_style.pth"
    config, variables = convert.convert_torchvggish(weights, pca_file)
    assert config["model"] == "vggish" and config["model_kwargs"] == {"final_relu": True}
    params = variables["params"]
    np.testing.assert_array_equal(
        params["conv3_2"]["kernel"], state["features.8.weight"].numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(params["conv1"]["bias"], state["features.0.bias"].numpy())
    np.testing.assert_array_equal(params["fc1_1"]["kernel"], state["embeddings.0.weight"].numpy().T)
    np.testing.assert_array_equal(params["fc2"]["kernel"], state["embeddings.4.weight"].numpy().T)
    reference = np.load(fixtures_dir / "vggish" / "vggish_pca_params.npz")
    np.testing.assert_array_equal(
        variables["pca"]["eigen_vectors"], reference["pca_eigen_vectors"].astype(np.float32)
    )
    assert variables["pca"]["means"].shape == (128,)
    model = vggish.Model(**config["model_kwargs"])
    initial = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 96, 64), np.float32))
    assert jax.tree.map(np.shape, initial["params"]) == jax.tree.map(np.shape, params)
    embeddings = jax.jit(model.apply)(variables, np.zeros((2, 96, 64), np.float32))  # pca too
    assert embeddings.shape == (2, 128) and np.isfinite(embeddings).all()


def test_wrapper_pca_keys_inside_the_weights_file(tmp_path, state):
    rng = np.random.default_rng(1)
    wrapped = dict(state)
    wrapped["pproc.pca_eigen_vectors"] = torch.as_tensor(rng.standard_normal((128, 128)))
    wrapped["pproc.pca_means"] = torch.as_tensor(rng.standard_normal((128, 1)))
    path = tmp_path / "wrapped.pth"
    torch.save(wrapped, path)
    config, variables = convert.convert_torchvggish(path, final_relu=False)
    assert config["model_kwargs"] == {"final_relu": False}
    np.testing.assert_allclose(
        variables["pca"]["means"], wrapped["pproc.pca_means"].numpy()[:, 0], rtol=1e-7
    )


def test_pca_file_given_as_the_weights_says_to_pass_it_with_pca(fixtures_dir):
    pca_file = fixtures_dir / "vggish" / "vggish_pca_params_style.pth"
    with pytest.raises(
        JaxsepError, match=r"PCA parameter file, not its weights; pass it with --pca"
    ):
        convert.convert_torchvggish(pca_file)


def test_unknown_missing_and_misshaped_keys_are_named():
    arrays = {key: np.zeros(shape, np.float32) for key, shape in SHAPES.items()}
    with pytest.raises(JaxsepError, match=r"^f\.pth: unexpected VGGish keys: features\.99\.bias$"):
        convert.state_dict_to_params({**arrays, "features.99.bias": np.zeros(3)}, "f.pth")
    del arrays["embeddings.2.bias"]
    with pytest.raises(JaxsepError, match=r"missing VGGish keys: embeddings\.2\.bias$"):
        convert.state_dict_to_params(arrays, "f.pth")
    arrays["embeddings.2.bias"] = np.zeros(5, np.float32)
    with pytest.raises(JaxsepError, match=r"embeddings\.2\.bias has shape \(5,\)"):
        convert.state_dict_to_params(arrays, "f.pth")
    with pytest.raises(JaxsepError, match=r"missing PCA keys: pca_means"):
        convert.pca_to_variables({"pca_eigen_vectors": np.eye(128)})
    with pytest.raises(JaxsepError, match=r"unexpected PCA keys: extra"):
        convert.pca_to_variables({"pca_eigen_vectors": np.eye(128), "pca_means": 0, "extra": 1})
    with pytest.raises(JaxsepError, match=r"pca_eigen_vectors has shape \(64, 128\)"):
        convert.pca_to_variables({"pca_eigen_vectors": np.eye(64, 128), "pca_means": np.zeros(128)})
    with pytest.raises(JaxsepError, match=r"pca_means has shape \(2, 128\), expected \(128,\)"):
        convert.pca_to_variables(
            {"pca_eigen_vectors": np.eye(128), "pca_means": np.zeros((2, 128))}
        )


def test_corrupt_and_missing_files_fail_in_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint" * 10)
    for path in (corrupt, tmp_path / "absent.pth"):
        with pytest.raises(JaxsepError) as info:
            convert.convert_torchvggish(path)
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    with pytest.raises(JaxsepError, match="expected a dict of arrays"):
        convert.load_torch_arrays(listing)
    counted = tmp_path / "counted.pth"
    torch.save({"features.0.weight": torch.zeros(2), "steps": 3}, counted)
    with pytest.raises(JaxsepError, match="entry 'steps' is a Python int, not an array"):
        convert.load_torch_arrays(counted)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"features.0.bias": torch.ones(2)}}, wrapped)
    np.testing.assert_array_equal(convert.load_torch_arrays(wrapped)["features.0.bias"], [1, 1])
