"""X-UMX losses: MDL + CL against asteroid's values, Con-Reg / Dis-Reg on cases with known
answers, the example-to-frame rule, the regulisers with a non-VGGish embedding, the resampler."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.audio.mel import log_mel
from jaxsep.audio.stft import stft
from jaxsep.losses.xumx import (
    con_reg,
    dis_reg,
    mdl_loss,
    source_combinations,
    stem_embeddings,
)
from jaxsep.models.embeddings import frames_to_examples, repeat_to_frames, resample_fft


def test_fourteen_combinations_for_four_sources():
    combos = source_combinations(4)
    assert combos.shape == (14, 4)
    assert sorted(combos.sum(axis=1).tolist()) == [1] * 4 + [2] * 6 + [3] * 4
    assert len({tuple(r) for r in combos.tolist()}) == 14
    assert source_combinations(4, combine=False).tolist() == np.eye(4).tolist()


@pytest.mark.parametrize("combine", [True, False])
def test_mdl_loss_matches_asteroid(fixtures_dir, combine):
    data = np.load(fixtures_dir / "xumx" / "mdl_loss.npz")
    values = json.loads((fixtures_dir / "xumx" / "mdl_loss_values.json").read_text())
    targets = data["targets"]  # [B, S, C, L]
    target_mag = jnp.abs(stft(targets, 4096, 1024, "hann", center=True, pad_mode="reflect"))
    gt = np.transpose(data["gt_spec"], (1, 2, 0, 3)).reshape(target_mag.shape)
    np.testing.assert_allclose(target_mag, gt, rtol=1e-4, atol=1e-5 * np.abs(gt).max())
    target_mag = jnp.transpose(target_mag, (0, 1, 3, 4, 2))  # [B, S, frames, bins, C]
    est_mag = jnp.transpose(data["spec_hat"], (2, 0, 1, 4, 3))
    est_wave = jnp.transpose(data["time_hat"], (1, 0, 3, 2))  # [B, S, T', C]
    ref_wave = jnp.transpose(targets, (0, 1, 3, 2))
    tag = "comb1" if combine else "comb0"
    total, parts = mdl_loss(
        est_mag, target_mag, est_wave, ref_wave, ref_wave.sum(axis=1), combine=combine
    )
    np.testing.assert_allclose(float(total), values[f"mdl_total_{tag}"], rtol=1e-5)
    np.testing.assert_allclose(float(parts["freq_loss"]), values[f"freq_loss_{tag}"], rtol=1e-5)
    np.testing.assert_allclose(float(parts["time_loss"]), values[f"time_loss_{tag}"], rtol=1e-4)
    if combine:
        freq_only, _ = mdl_loss(est_mag, target_mag, None, None, None, multidomain=False)
        np.testing.assert_allclose(float(freq_only), values["freq_only_loss_comb1"], rtol=1e-5)


def _unit(i, dim=4):
    return np.eye(dim, dtype=np.float32)[i]


def test_con_reg_known_values():
    # latents equal to their own source's features: positive term 0; the other sources'
    # features are orthogonal (cos 0 < margin): negative term 0.
    feats = np.stack([_unit(i) for i in range(3)])[None, :, None]  # [1, 3, 1, 4]
    loss, parts = con_reg(jnp.asarray(2.0 * feats), jnp.asarray(feats), margin=0.2)
    assert float(parts["con_positive"]) == pytest.approx(0.0, abs=1e-6)
    assert float(parts["con_negative"]) == pytest.approx(0.0, abs=1e-6)
    # every latent = the same vector u, features: source 0 = u, others orthogonal to u
    # -> positive: (0 + 1 + 1) / 3; negatives: cos(u, f_0) = 1 appears for sources 1, 2
    # (2 of 6 pairs) with hinge 1 - 0.2 = 0.8 -> 1.6 / 6.
    latents = np.broadcast_to(_unit(0), (1, 3, 1, 4))
    loss, parts = con_reg(jnp.asarray(latents), jnp.asarray(feats), margin=0.2)
    assert float(parts["con_positive"]) == pytest.approx(2.0 / 3.0, rel=1e-5)
    assert float(parts["con_negative"]) == pytest.approx(1.6 / 6.0, rel=1e-5)
    assert float(loss) == pytest.approx(2.0 / 3.0 + 1.6 / 6.0, rel=1e-5)


def test_dis_reg_known_values():
    orthogonal = jnp.asarray(np.stack([_unit(i) for i in range(3)])[None, :, None])
    identical = jnp.asarray(np.broadcast_to(_unit(1), (1, 3, 1, 4)))
    # latents orthogonal (distance 1), features identical (distance 0): hinge 1 on every pair
    assert float(dis_reg(orthogonal, identical)) == pytest.approx(1.0, rel=1e-5)
    # latents closer than features: no penalty
    assert float(dis_reg(identical, orthogonal)) == pytest.approx(0.0, abs=1e-6)
    # opposite latents (distance 2) vs orthogonal features (distance 1) on one of 3 pairs
    latents = np.stack([_unit(0), -_unit(0), _unit(0)])[None, :, None]
    expected = (1.0 + 0.0 + 1.0) / 3.0  # pairs (0,1): 2-1, (0,2): max(0-1,0), (1,2): 2-1
    assert float(dis_reg(jnp.asarray(latents), orthogonal)) == pytest.approx(expected, rel=1e-5)
    grads = jax.grad(lambda x: dis_reg(x, identical))(orthogonal)
    assert np.all(np.isfinite(grads)) and float(jnp.abs(grads).max()) > 0


def test_frames_to_examples_rule_with_tail():
    # 6 s at 44.1 kHz, hop 1024: 259 frames, 6 VGGish examples (5.76 s)
    index = frames_to_examples(259, 6, 1024, 44100)
    assert index[0] == 0 and index[41] == 0 and index[42] == 1  # 41 * 1024 / 44100 < 0.96
    expected = np.minimum(np.floor(np.arange(259) * 1024 / 44100 / 0.96), 5)
    np.testing.assert_array_equal(index, expected)
    tail = np.arange(259) * 1024 / 44100 >= 5.76  # past the last complete example
    assert tail.sum() == 10 and np.all(index[tail] == 5)  # frames 249..258
    assert np.all(np.diff(index) >= 0)
    examples = jnp.arange(6 * 2, dtype=jnp.float32).reshape(1, 6, 2)
    repeated = repeat_to_frames(examples, 259, 1024, 44100)
    assert repeated.shape == (1, 259, 2)
    np.testing.assert_array_equal(repeated[0, :, 0], 2.0 * index)
    with pytest.raises(ValueError, match="shorter than one"):
        frames_to_examples(10, 0, 1024, 44100)


def _random_logmel_embedding(seed=0):
    """A second frozen embedding: fixed random projection of per-example mean log-mels."""
    projection = jnp.asarray(np.random.default_rng(seed).standard_normal((64, 16)), jnp.float32)
    return lambda wave16k: jnp.mean(log_mel(wave16k), axis=-2) @ projection


def test_regularisers_with_another_embedding():
    rng = np.random.default_rng(1)
    stems = jnp.asarray(0.1 * rng.standard_normal((2, 3, 32000)), jnp.float32)  # 2 s at 16 kHz
    embed = _random_logmel_embedding()
    feats = stem_embeddings(embed, stems, 87, 1024, 44100)  # 2 s at 44.1 kHz: 87 frames
    assert feats.shape == (2, 3, 87, 16)
    per_example = embed(stems.reshape(6, -1)).reshape(2, 3, 2, 16)
    np.testing.assert_allclose(feats[:, :, 0], per_example[:, :, 0], rtol=1e-6)
    np.testing.assert_allclose(feats[:, :, -1], per_example[:, :, 1], rtol=1e-6)
    # latents equal to the features: no positive term, and nothing for Dis-Reg
    _, parts = con_reg(feats, feats, margin=2.0)
    assert float(parts["con_positive"]) == pytest.approx(0.0, abs=1e-5)
    assert float(dis_reg(feats, feats)) == pytest.approx(0.0, abs=1e-6)
    latents = jnp.asarray(rng.standard_normal((2, 3, 87, 16)), jnp.float32)

    def total(lat):
        return con_reg(lat, feats)[0] + dis_reg(lat, feats)

    value, grads = jax.jit(jax.value_and_grad(total))(latents)
    assert np.isfinite(float(value)) and float(value) > 0
    assert float(jnp.abs(grads).max()) > 0
    # the embedding is frozen: no gradient reaches the stems
    stem_grad = jax.grad(lambda s: jnp.sum(stem_embeddings(embed, s, 87, 1024, 44100)))(stems)
    assert float(jnp.abs(stem_grad).max()) == 0.0


def test_fft_resampler_against_resampy(fixtures_dir):
    data = np.load(fixtures_dir / "vggish" / "io.npz")
    stereo = data["input_wav_44k_stereo"]  # [2, 88200]
    mono16 = resample_fft(jnp.asarray(stereo.mean(axis=0), jnp.float32), 44100, 16000)
    reference = data["resampled_16k_mono"]
    assert mono16.shape == reference.shape
    # resampy's kaiser_best rolls off from ~7.6 kHz, the FFT resampler keeps up to 8 kHz: the
    # waveforms differ by the (noisy) 7.6-8 kHz band (RMS error 4 % of the signal's RMS) ...
    inner = slice(400, -400)  # and the edges (circular wrap vs zero padding)
    error = np.sqrt(np.mean(np.square(np.asarray(mono16)[inner] - reference[inner])))
    assert error < 0.05 * np.sqrt(np.mean(np.square(reference)))
    # ... which VGGish's mel bank only sees in its top two bands: the others agree to 2e-3
    ours = np.asarray(log_mel(mono16))
    theirs = data["examples_from_44k"]
    interior = (slice(None), slice(5, -5), slice(0, 62))
    np.testing.assert_allclose(ours[interior], theirs[interior], atol=2e-3)
    assert np.abs(ours - theirs).mean() < 0.01


def test_frozen_embedding_reads_a_vggish_model_directory(tmp_path, fixtures_dir):
    """`transfer.vggish_dir` (a `jaxsep convert vggish` output) is the VGGish the recipe runs."""
    from jaxsep.convert import convert_to_model_dir
    from jaxsep.errors import JaxsepError
    from jaxsep.modeldir import save_model_dir
    from jaxsep.models.embeddings import frozen_embedding
    from jaxsep.models.vggish import VGGish

    shapes = jax.eval_shape(VGGish().init, jax.random.key(0), jnp.zeros((1, 96, 64)))["params"]
    # every leaf its own constant: a 288 MB tree that compresses on disk, leaves told apart
    leaves, treedef = jax.tree.flatten(shapes)
    params = jax.tree.unflatten(
        treedef, [np.full(s.shape, 1e-3 * (i + 1), np.float32) for i, s in enumerate(leaves)]
    )
    vggish_dir = tmp_path / "vggish"
    save_model_dir(vggish_dir, {"model": "vggish", "sample_rate": 16000}, {"params": params})
    transfer = {"embedding": "vggish", "vggish_dir": str(vggish_dir), "vggish_seed": 0}
    embed, loaded = frozen_embedding({**transfer, "final_relu": False})
    for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(got, want)
    wave16k = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16000)), jnp.float32)
    features = jax.jit(embed)(loaded, wave16k)
    assert features.shape == (2, 1, 128) and bool(jnp.all(jnp.isfinite(features)))
    # jitted too: on AVX2 hosts op-by-op and fused convolutions round differently (1e-5 apart
    # on these 1e10-sized activations), which is not what this test is about
    vggish = jax.jit(lambda p, wave: VGGish().apply({"params": p}, log_mel(wave)))
    np.testing.assert_allclose(features, vggish(params, wave16k), rtol=1e-5)

    xumx_dir = convert_to_model_dir(
        "xumx", fixtures_dir / "xumx" / "xumx_tiny_package.pth", tmp_path / "xumx"
    )
    with pytest.raises(JaxsepError, match="not a VGGish model directory"):
        frozen_embedding({**transfer, "vggish_dir": str(xumx_dir), "final_relu": False})
    with pytest.raises(JaxsepError, match="converted with final_relu=False, but transfer"):
        frozen_embedding({**transfer, "final_relu": True})  # one directory, one embedding
    with pytest.raises(JaxsepError, match="model directory not found"):
        frozen_embedding({**transfer, "vggish_dir": str(tmp_path / "nope"), "final_relu": False})
