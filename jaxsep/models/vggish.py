"""VGGish (AudioSet audio embedding) in Flax: log-mel examples -> 128-d embeddings, and the
PCA-whitening + 8-bit quantisation post-processor.

Boundary: ``VGGish().apply(variables, examples [N, 96, 64]) -> [N, 128]`` embeddings before PCA.
Layout is NHWC (H = 96 time frames, W = 64 mel bands); kernels are HWIO / ``[in, out]`` like the
TF-slim original, and the flatten before ``fc1_1`` is in (H, W, C) order as in TF (torchvggish
transposes to NHWC before flattening for the same reason).

Final ReLU: the current TF VGGish returns the 128-d layer *without* activation; torchvggish,
ported from an older TF graph, applies a ReLU to it (torchvggish issue #24). ``final_relu``
selects the behaviour; ``False`` (TF) keeps the information in the negative half.

Everything is jit-able, so embeddings of augmented stems can be computed inside a train step
(use ``jax.lax.stop_gradient`` on the result when VGGish is frozen).
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxsep.audio.mel import EXAMPLE_FRAMES, NUM_BANDS, log_mel, waveform_to_examples

__all__ = [
    "CONV_LAYERS",
    "DENSE_LAYERS",
    "EMBEDDING_SIZE",
    "Model",
    "VGGish",
    "log_mel",
    "pca_whiten",
    "postprocess",
    "quantize",
    "waveform_to_examples",
]

EMBEDDING_SIZE = 128
QUANTIZE_MIN = -2.0
QUANTIZE_MAX = 2.0
QUANTIZE_LEVELS = 255.0

# (TF-slim name, output channels, max-pool after it). VGG "configuration A"-like.
CONV_LAYERS = (
    ("conv1", 64, True),
    ("conv2", 128, True),
    ("conv3_1", 256, False),
    ("conv3_2", 256, True),
    ("conv4_1", 512, False),
    ("conv4_2", 512, True),
)
# (TF-slim name, output features); ReLU after all but the last (see ``final_relu``).
DENSE_LAYERS = (("fc1_1", 4096), ("fc1_2", 4096), ("fc2", EMBEDDING_SIZE))

QuantizeStyle = Literal["tf", "torch"]
Array = Any  # numpy (float64 host path) or jax array (jit path)


class VGGish(nn.Module):
    """The VGGish network: 6 conv 3x3 (4 pooled groups) + 3 dense layers.

    ``dtype`` is the activation/compute dtype (parameters stay float32); ``precision`` is passed
    to every conv and matmul (``"highest"`` avoids TF32 on GPUs when parity matters).
    """

    final_relu: bool = False
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, examples: jnp.ndarray) -> jnp.ndarray:
        if examples.shape[-2:] != (EXAMPLE_FRAMES, NUM_BANDS):
            raise ValueError(
                f"VGGish expects examples [..., {EXAMPLE_FRAMES}, {NUM_BANDS}], got {examples.shape}"
            )
        batch_shape = examples.shape[:-2]
        x = examples.reshape(-1, EXAMPLE_FRAMES, NUM_BANDS, 1).astype(self.dtype)
        for name, features, pool in CONV_LAYERS:
            x = nn.Conv(
                features,
                (3, 3),
                padding="SAME",
                dtype=self.dtype,
                precision=self.precision,
                name=name,
            )(x)
            x = nn.relu(x)
            if pool:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)  # (H, W, C) order, like TF's NHWC flatten
        for index, (name, features) in enumerate(DENSE_LAYERS):
            x = nn.Dense(features, dtype=self.dtype, precision=self.precision, name=name)(x)
            if index < len(DENSE_LAYERS) - 1 or self.final_relu:
                x = nn.relu(x)
        return x.reshape(*batch_shape, EMBEDDING_SIZE)


Model = VGGish


def _namespace(x):
    return np if isinstance(x, np.ndarray | np.generic) else jnp


def pca_whiten(embeddings: Array, eigen_vectors: Array, means: Array) -> Array:
    """``(emb - means) @ E.T`` on ``[..., 128]``: PCA projection with whitening.

    ``eigen_vectors`` ``[128, 128]`` has the (scaled) eigenvectors as rows and ``means`` is
    ``[128]`` (torchvggish's ``[128, 1]`` is accepted). numpy inputs run in float64 like TF's
    post-processor; jax inputs stay in jnp (float32 unless x64 is enabled) and are jit-able.
    """
    xp = _namespace(embeddings)
    if xp is np:
        embeddings = np.asarray(embeddings, np.float64)
        eigen_vectors = np.asarray(eigen_vectors, np.float64)
        means = np.asarray(means, np.float64)
    means = xp.reshape(means, (-1,))
    return xp.matmul(embeddings - means, xp.swapaxes(eigen_vectors, -1, -2))


def quantize(pca_applied: Array, style: QuantizeStyle = "tf") -> Array:
    """Clip to [-2, 2] and map to 0..255.

    ``style="tf"``: TF ``vggish_postprocess.py``, a truncating cast, returns uint8.
    ``style="torch"``: torchvggish, ``torch.round`` (round half to even), returns float.
    """
    xp = _namespace(pca_applied)
    clipped = xp.clip(pca_applied, QUANTIZE_MIN, QUANTIZE_MAX)
    scaled = (clipped - QUANTIZE_MIN) * (QUANTIZE_LEVELS / (QUANTIZE_MAX - QUANTIZE_MIN))
    if style == "tf":
        return scaled.astype(xp.uint8)  # values are >= 0, so the cast truncates towards zero
    if style == "torch":
        return xp.round(scaled)  # numpy and jnp round half to even, like torch.round
    raise ValueError(f"quantize style must be 'tf' or 'torch', got {style!r}")


def postprocess(embeddings: Array, pca: dict, style: QuantizeStyle = "tf") -> Array:
    """Embeddings ``[..., 128]`` -> AudioSet-style quantised features ``[..., 128]``.

    ``pca`` is ``{"eigen_vectors": [128, 128], "means": [128]}`` (``variables["pca"]`` of a
    converted model). Note the reference pairs ``style="tf"`` with ``final_relu=False``
    embeddings and ``style="torch"`` with ``final_relu=True`` ones.
    """
    return quantize(pca_whiten(embeddings, pca["eigen_vectors"], pca["means"]), style)
