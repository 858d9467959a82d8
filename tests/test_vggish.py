"""VGGish: log-mel front end, network and PCA/quantisation against the torchvggish fixtures."""

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.audio import mel
from jaxsep.convert.vggish import load_torch_arrays, pca_to_variables, state_dict_to_params
from jaxsep.errors import JaxsepError
from jaxsep.models import vggish


def assert_close(actual, expected, rel=1e-4):
    """Max abs error within ``rel`` of the reference's largest magnitude (float32 parity)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= rel * scale


@pytest.fixture(scope="module")
def vggish_dir(fixtures_dir):
    return fixtures_dir / "vggish"


@pytest.fixture(scope="module")
def io(vggish_dir):
    return dict(np.load(vggish_dir / "io.npz"))


def regenerate_state_dict(vggish_dir) -> dict:
    """The fixture's torchvggish state_dict: stored biases + weights from the manifest's rule."""
    manifest = json.loads((vggish_dir / "weights_manifest.json").read_text())
    state = dict(np.load(vggish_dir / "small_params.npz"))
    for entry in manifest["regenerated"]:
        shape = entry["shape"]
        seed = np.random.SeedSequence([manifest["base_seed"], entry["index"]])
        uniform = np.random.Generator(np.random.PCG64(seed)).random(int(np.prod(shape)))
        bound = manifest["gain"] / np.sqrt(np.prod(shape[1:]))
        weight = ((2.0 * uniform - 1.0) * bound).astype(np.float32).reshape(shape)
        del uniform
        digest = hashlib.sha256(weight.astype("<f4").tobytes()).hexdigest()
        assert digest == entry["sha256_f32_le"], entry["key"]
        assert weight.sum(dtype=np.float64) == pytest.approx(entry["sum"], rel=1e-9)
        state[entry["key"]] = weight
    assert sorted(state) == sorted(manifest["vggish_pth_key_order"])
    return state


@pytest.fixture(scope="module")
def variables(vggish_dir):
    return {"params": state_dict_to_params(regenerate_state_dict(vggish_dir))}


# ----------------------------------------------------------------------------- front end


def test_mel_matrix_matches_vggish_construction(io):
    np.testing.assert_allclose(mel.mel_matrix(), io["mel_matrix"], rtol=0, atol=1e-6)
    assert np.all(mel.mel_matrix()[0] == 0.0)  # DC row zeroed


def test_numpy_front_end_matches_reference(io):
    wave = io["input_wav_16k"]
    assert_close(mel.stft_magnitude(wave), io["stft_magnitude"], rel=1e-6)
    assert_close(mel.log_mel_spectrogram(wave), io["log_mel"], rel=1e-6)
    examples = vggish.log_mel(wave)
    assert examples.dtype == np.float32
    np.testing.assert_allclose(examples, io["examples"], rtol=0, atol=1e-6)


def test_jitted_front_end_matches_reference_and_keeps_batch_axes(io):
    wave = jnp.asarray(io["input_wav_16k"])
    batch = jnp.stack([wave, 0.5 * wave])
    examples = jax.jit(vggish.log_mel)(batch)
    assert examples.shape == (2, 3, 96, 64) and examples.dtype == jnp.float32
    assert_close(examples[0], io["examples"])
    quieter = mel.log_mel(0.5 * io["input_wav_16k"].astype(np.float64))
    assert_close(examples[1], quieter)
    assert np.abs(quieter - io["examples"]).max() > 0.1  # log(g * mel + 0.01): gain matters


@pytest.mark.parametrize(
    ("samples", "count"),
    [(399, 0), (400 + 160 * 94, 0), (400 + 160 * 95, 1), (48000, 3), (400 + 160 * 191, 2)],
)
def test_examples_drop_the_incomplete_tail(samples, count):
    wave = np.random.default_rng(samples).standard_normal(samples)
    examples = mel.log_mel(wave)
    assert examples.shape == (count, 96, 64)
    if count:
        frames = mel.log_mel_spectrogram(wave).astype(np.float32)
        np.testing.assert_array_equal(examples[-1], frames[(count - 1) * 96 : count * 96])


def test_waveform_to_examples_mixes_down_and_resamples(io):
    from_16k = mel.waveform_to_examples(np.stack([io["resampled_16k_mono"]] * 2, axis=1), 16000)
    np.testing.assert_allclose(from_16k, io["examples_from_44k"], rtol=0, atol=1e-5)
    stereo_44k = io["input_wav_44k_stereo"].T
    from_44k = mel.waveform_to_examples(stereo_44k, 44100)
    assert from_44k.shape == io["examples_from_44k"].shape
    # Same resampler as the reference (resampy kaiser_best), so the tolerance is the float32 one.
    np.testing.assert_allclose(from_44k, io["examples_from_44k"], rtol=1e-4, atol=1e-4)


def test_waveform_to_examples_rejects_bad_shapes():
    with pytest.raises(JaxsepError, match=r"\(2, 3, 4\)"):
        mel.waveform_to_examples(np.zeros((2, 3, 4)), 16000)


# ------------------------------------------------------------------------------ network


@pytest.mark.parametrize(("final_relu", "key"), [(False, "emb_preact"), (True, "emb_relu")])
def test_network_matches_reference_embeddings(io, variables, final_relu, key):
    model = vggish.VGGish(final_relu=final_relu)
    embeddings = jax.jit(model.apply)(variables, io["examples"])
    assert embeddings.shape == (3, 128)
    assert_close(embeddings, io[key])
    if final_relu:
        from_44k = jax.jit(model.apply)(variables, io["examples_from_44k"])
        assert_close(from_44k, io["emb_relu_from_44k"])
    else:
        assert (np.asarray(embeddings) < 0).any()  # TF semantics keep the negative half


def test_waveform_to_embedding_in_one_jit(io, variables):
    """The train-step use: front end + network in one jitted function over leading axes."""
    model = vggish.VGGish()

    @jax.jit
    def embed(variables, waves):
        return jax.lax.stop_gradient(model.apply(variables, vggish.log_mel(waves)))

    waves = jnp.asarray(io["input_wav_16k"])[None, None]  # [batch, sources, time]
    embeddings = embed(variables, waves)
    assert embeddings.shape == (1, 1, 3, 128)
    assert_close(embeddings[0, 0], io["emb_preact"])


def test_network_rejects_wrong_example_shape(variables):
    with pytest.raises(ValueError, match="96, 64"):
        vggish.VGGish().apply(variables, jnp.zeros((1, 64, 96)))


# ------------------------------------------------------------------ PCA and quantisation


@pytest.fixture(scope="module")
def pca_npz(vggish_dir):
    return dict(np.load(vggish_dir / "vggish_pca_params.npz"))


def test_tf_style_postprocessing_in_float64(io, pca_npz):
    pca = {"eigen_vectors": pca_npz["pca_eigen_vectors"], "means": pca_npz["pca_means"]}
    pca_applied = vggish.pca_whiten(io["emb_preact"], pca["eigen_vectors"], pca["means"])
    assert pca_applied.dtype == np.float64
    assert_close(pca_applied, io["pca_applied_tf_style"], rel=1e-6)
    assert (np.abs(pca_applied) > 2).any()  # the clip is exercised
    quantised = vggish.postprocess(io["emb_preact"], pca, style="tf")
    assert quantised.dtype == np.uint8
    np.testing.assert_array_equal(quantised, io["postprocessed_tf_style_uint8"])


def test_torch_style_postprocessing_jitted(io, vggish_dir, pca_npz):
    torch_file = load_torch_arrays(vggish_dir / "vggish_pca_params_style.pth")
    for key, value in pca_npz.items():
        np.testing.assert_array_equal(torch_file[key], value)
    pca = pca_to_variables(torch_file)
    emb = jnp.asarray(io["emb_relu"])
    pca_applied = jax.jit(vggish.pca_whiten)(emb, pca["eigen_vectors"], pca["means"])
    assert_close(pca_applied, io["pca_applied_torch"])
    post = jax.jit(vggish.postprocess, static_argnames="style")(emb, pca, style="torch")
    assert post.dtype == jnp.float32
    np.testing.assert_array_equal(post, io["postprocessed_torch"])
    tf_post = jax.jit(vggish.postprocess, static_argnames="style")(
        jnp.asarray(io["emb_preact"]), pca, style="tf"
    )
    assert tf_post.dtype == jnp.uint8
    np.testing.assert_array_equal(tf_post, io["postprocessed_tf_style_uint8"])


@pytest.mark.parametrize("as_jax", [False, True])
def test_quantize_styles_truncate_or_round_half_even(as_jax):
    # scaled = (x + 2) * 63.75: x=0 -> 127.5 exactly; x=2 -> 255; clipped beyond +-2.
    values = np.array([-5.0, -2.0, 0.0, 1.0, 2.0, 7.0], np.float32)
    values = jnp.asarray(values) if as_jax else values
    np.testing.assert_array_equal(vggish.quantize(values, "tf"), [0, 0, 127, 191, 255, 255])
    np.testing.assert_array_equal(vggish.quantize(values, "torch"), [0, 0, 128, 191, 255, 255])
    with pytest.raises(ValueError, match="style"):
        vggish.quantize(values, "round")
