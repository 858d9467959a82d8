"""Inference compiler options: known to this XLA, applied only on CPU, results unchanged."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxsep.compile_options import donate_train_state, inference_compiler_options
from jaxsep.models.vggish import VGGish


def test_cpu_inference_turns_ynn_fusion_off_and_others_get_nothing():
    assert inference_compiler_options("cpu") == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert inference_compiler_options("gpu") == {}
    assert inference_compiler_options("tpu") == {}


def test_options_leave_vggish_outputs_unchanged():
    model = VGGish()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 96, 64)), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x[:1])
    plain = jax.jit(model.apply)(variables, x)
    tuned = jax.jit(model.apply, compiler_options=inference_compiler_options("cpu"))
    text = tuned.lower(variables, x).compile().as_text()
    assert "__ynn_fusion" not in text  # the option really reached the compiler
    np.testing.assert_allclose(tuned(variables, x), plain, rtol=1e-5, atol=1e-6)


def test_train_state_is_donated_on_accelerators_only():
    assert donate_train_state("gpu") and donate_train_state("tpu")
    assert not donate_train_state("cpu")
