"""Inference compiler options: chosen from the program, known to this XLA, applied only on CPU,
results unchanged."""

import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxsep.compile_options import (
    CPU_DOT_FUSION,
    CPU_SINGLE_DOTS,
    compile_for_inference,
    donate_train_state,
    inference_compiler_options,
)
from jaxsep.models.vggish import VGGish
from jaxsep.nn.lstm import LSTM


def _dense(x, w):
    return jnp.tanh(x @ w)


def _conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1,), "SAME")


def test_cpu_options_follow_the_programs_convolutions_and_others_get_nothing():
    x, w = jnp.ones((2, 8)), jnp.ones((8, 8))
    dense_text = jax.jit(_dense).lower(x, w).as_text()
    conv_text = jax.jit(_conv).lower(jnp.ones((1, 2, 16)), jnp.ones((3, 2, 3))).as_text()
    option = "xla_cpu_experimental_ynn_fusion_type"
    assert CPU_DOT_FUSION == {option: "LIBRARY_FUSION_TYPE_DOT"}
    assert CPU_SINGLE_DOTS == {option: "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
    assert inference_compiler_options("cpu", dense_text) == CPU_DOT_FUSION
    assert inference_compiler_options("cpu", conv_text) == CPU_SINGLE_DOTS
    assert inference_compiler_options("gpu", dense_text) == {}
    assert inference_compiler_options("tpu", conv_text) == {}


def _ynn_fusions(compiled) -> int:
    return compiled.as_text().count('"kind":"__ynn_fusion"')


def _top_level_convolutions(compiled) -> int:
    entry = compiled.as_text().split("\nENTRY", 1)[1]
    return len(re.findall(r"\} convolution\(", entry))


def test_options_reach_the_compiler_and_leave_vggish_outputs_unchanged():
    model = VGGish()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 96, 64)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    plain = jax.jit(model.apply)(variables, x)
    tuned = compile_for_inference(jax.jit(model.apply), variables, x, platform="cpu")
    np.testing.assert_allclose(tuned(variables, x), plain, rtol=1e-5, atol=1e-6)
    # VGGish has convolutions: one library call per dense layer and its six convolutions left
    # to XLA, where XLA's default folds the whole network into one YNN call (8x slower)
    with_defaults = jax.jit(model.apply).lower(variables, x).compile()
    assert (_ynn_fusions(with_defaults), _top_level_convolutions(with_defaults)) == (1, 0)
    assert (_ynn_fusions(tuned), _top_level_convolutions(tuned)) == (3, 6)


def test_lstm_inference_gets_dot_fusion_and_same_outputs():
    module = LSTM(16, num_layers=2, bidirectional=True, backend="scan")
    x = jax.random.normal(jax.random.key(0), (2, 9, 6))
    variables = module.init(jax.random.key(1), x)
    plain = jax.jit(module.apply)(variables, x)
    tuned = compile_for_inference(jax.jit(module.apply), variables, x, platform="cpu")
    off = jax.jit(module.apply, compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""})
    assert _ynn_fusions(tuned) > 0 and _ynn_fusions(off.lower(variables, x).compile()) == 0
    np.testing.assert_allclose(tuned(variables, x), plain, rtol=1e-5, atol=1e-6)


def test_train_state_is_donated_on_accelerators_only():
    assert donate_train_state("gpu") and donate_train_state("tpu")
    assert not donate_train_state("cpu")
