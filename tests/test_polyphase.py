"""Polyphase strided / transposed convolutions equal flax's Conv / ConvTranspose (values and
gradients), with the same parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsep.nn.polyphase import StridedConv1d, TransposedConv1d


def _perturbed(variables, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: a + 0.1 * rng.standard_normal(a.shape).astype(np.float32), variables
    )


def _assert_same(reference, module, x, seed):
    variables = _perturbed(reference.init(jax.random.key(seed), x), seed)
    assert jax.tree.map(jnp.shape, module.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, variables
    )
    np.testing.assert_allclose(module.apply(variables, x), reference.apply(variables, x), atol=2e-6)

    def loss(m):
        return lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))

    got = jax.grad(loss(module), argnums=(0, 1))(variables, x)
    want = jax.grad(loss(reference), argnums=(0, 1))(variables, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,steps", [(2, 16), (2, 17), (3, 20), (4, 9)])
def test_strided_conv_equals_flax_conv(stride, steps):
    x = jnp.asarray(np.random.default_rng(stride).standard_normal((2, steps, 5)), jnp.float32)
    pad = stride // 2
    reference = nn.Conv(7, (2 * stride,), strides=(stride,), padding=((pad, pad),))
    _assert_same(reference, StridedConv1d(7, stride, pad), x, seed=steps)


@pytest.mark.parametrize("stride,steps", [(2, 16), (2, 17), (3, 20), (4, 9)])
def test_transposed_conv_equals_flax_conv_transpose(stride, steps):
    x = jnp.asarray(np.random.default_rng(stride).standard_normal((2, steps, 5)), jnp.float32)
    pad = stride // 2
    edge = 2 * stride - 1 - pad
    reference = nn.ConvTranspose(
        7, (2 * stride,), strides=(stride,), padding=((edge, edge),), transpose_kernel=True
    )
    module = TransposedConv1d(7, stride, pad)
    _assert_same(reference, module, x, seed=steps)
    torch_length = (steps - 1) * stride - 2 * pad + 2 * stride  # ConvTranspose1d's formula
    assert module.apply(reference.init(jax.random.key(0), x), x).shape[1] == torch_length
