"""nussl ChimeraNet checkpoint conversion: round trip from the fixture's state_dict, key handling."""

import json

import jax
import numpy as np
import pytest
import torch

from jaxsep.convert.chimera import convert_chimera
from jaxsep.errors import JaxsepError
from jaxsep.models import build_model


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    folder = fixtures_dir / "chimera"
    return folder / "chimera_small_state_dict.pt", np.load(folder / "chimera_small.npz")


def torch_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_round_trip_from_state_dict(fixture):
    path, d = fixture
    config, variables = convert_chimera(path)
    assert config["model"] == "chimera"
    assert config["model_kwargs"] == {
        "num_bins": 257,
        "hidden": 24,
        "layers": 2,
        "embedding_dim": 20,
        "num_sources": 2,
        "dropout": 0.3,
    }
    assert config["sample_rate"] == 16000
    json.dumps(config)  # a model directory stores it as config.json
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert count == 345_592
    model = build_model(config["model"], **config["model_kwargs"])
    out = jax.jit(model.apply)(variables, d["input_mix_magnitude"][..., 0])
    np.testing.assert_allclose(out["embedding"], d["eval_embedding"][..., 0, :], atol=1e-6)
    np.testing.assert_allclose(out["mask"], d["eval_mask"][..., 0, :], atol=1e-6)
    kernel = variables["params"]["embedding"]["kernel"]
    np.testing.assert_array_equal(kernel.T, d["param/layers.embedding.linear.weight"])
    np.testing.assert_array_equal(
        variables["batch_stats"]["normalization"]["running_mean"],
        d["param/layers.normalization.batch_norm.running_mean"],
    )


def test_prefix_free_duplicated_and_packaged_files(fixture, tmp_path):
    path, _ = fixture
    state = torch_state(path)
    _, reference = convert_chimera(path)
    bare = {k.removeprefix("layers."): v for k, v in state.items()}
    both = {**state, **bare}  # nussl issue #230: both spellings in one file
    config_json = json.dumps(
        {
            "modules": {
                "recurrent_stack": {"args": {"rnn_type": "lstm", "dropout": 0.1}},
                "embedding": {"args": {"activation": ["sigmoid", "unit_norm"]}},
                "mask": {"args": {"activation": ["sigmoid"]}},
            }
        }
    )
    package = {"state_dict": state, "config": config_json, "nussl_version": "1.1.9"}
    for name, obj in (("bare", bare), ("both", both), ("package", package)):
        torch.save(obj, tmp_path / f"{name}.pth")
        config, variables = convert_chimera(tmp_path / f"{name}.pth")
        jax.tree.map(np.testing.assert_array_equal, variables, reference)
        assert config["model_kwargs"]["dropout"] == (0.1 if name == "package" else 0.3)


def save(tmp_path, obj, name="bad.pth"):
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def test_bad_files_fail_with_one_line_naming_the_problem(fixture, tmp_path):
    path, _ = fixture
    state = torch_state(path)
    cases = []
    missing = dict(state)
    del missing["layers.mask.linear.bias"]
    cases.append((missing, r"missing keys \(1\): mask\.linear\.bias"))
    cases.append(
        ({**state, "layers.extra.weight": torch.zeros(2)}, r"unexpected keys \(1\): extra")
    )
    conflict = {**state, "mask.linear.bias": state["layers.mask.linear.bias"] + 1}
    cases.append((conflict, "hold different tensors"))
    wrong = {**state, "layers.mask.linear.bias": torch.zeros(3)}
    cases.append((wrong, "wrong shape"))
    forward_only = {k: v for k, v in state.items() if "reverse" not in k}
    cases.append((forward_only, "not a bidirectional"))
    softmax = json.dumps({"modules": {"mask": {"args": {"activation": ["softmax"]}}}})
    cases.append(({"state_dict": state, "config": softmax}, "activation"))
    cases.append(([1, 2, 3], "not a nussl checkpoint"))
    cases.append(({**state, "layers.step": 3}, "entry 'layers.step' is not a tensor"))
    narrow = {**state, "layers.recurrent_stack.rnn.weight_ih_l0": torch.zeros(7, 5)}
    cases.append((narrow, r"weight_ih_l0 has 7 rows, expected 4 x hidden"))
    odd_head = {**state, "layers.mask.linear.weight": state["layers.mask.linear.weight"][:-1]}
    cases.append((odd_head, "mask.linear has .* outputs, not a multiple of"))
    cases.append(({"state_dict": state, "config": "{not json"}, "'config' is not valid JSON"))
    cases.append(({"state_dict": [1], "config": "{}"}, "'state_dict' is not a dict of tensors"))
    gru = json.dumps({"modules": {"recurrent_stack": {"args": {"rnn_type": "gru"}}}})
    cases.append(({"state_dict": state, "config": gru}, "rnn_type 'gru' is not supported"))
    for obj, message in cases:
        with pytest.raises(JaxsepError, match=message) as info:
            convert_chimera(save(tmp_path, obj))
        assert "\n" not in str(info.value) and "bad.pth" in str(info.value)

    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(JaxsepError) as info:
        convert_chimera(corrupt)
    assert "\n" not in str(info.value) and "corrupt.pth" in str(info.value)
    with pytest.raises(JaxsepError, match="no such"):
        convert_chimera(tmp_path / "absent.pth")
