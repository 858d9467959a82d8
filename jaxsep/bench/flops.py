"""Stated model FLOPs per example (reference/perf.md §3), used for model-FLOP utilisation.

1 MAC = 2 FLOP; a training step counts 3x the forward (forward, input grad, weight grad), the
usual MFU convention; elementwise ops, norms, FFTs and the optimizer are left out. The VQ-VAE's
nearest-code search has no backward and is counted once.
"""

from __future__ import annotations

from collections.abc import Sequence


def lstm_macs(in_features: int, hidden: int, layers: int, directions: int) -> int:
    """MACs of one timestep of a stacked (B)LSTM (input and recurrent projections)."""
    total, fin = 0, in_features
    for _ in range(layers):
        total += directions * 4 * hidden * (fin + hidden)
        fin = directions * hidden
    return total


def xumx_forward_flops(
    sources: int, frames: int, max_bin: int, channels: int, hidden: int, layers: int, bins: int
) -> float:
    """X-UMX / UMX forward FLOPs of one example (per source: fc1, BLSTM, fc2, fc3)."""
    per_frame = (
        max_bin * channels * hidden
        + lstm_macs(hidden, hidden // 2, layers, 2)
        + 2 * hidden * hidden
        + hidden * channels * bins
    )
    return 2.0 * per_frame * sources * frames


def chimera_forward_flops(
    frames: int, bins: int, hidden: int, layers: int, embedding_dim: int, sources: int
) -> float:
    """ChimeraNet forward FLOPs of one example (BLSTM stack and the two heads)."""
    per_frame = lstm_macs(bins, hidden, layers, 2) + 2 * hidden * bins * (embedding_dim + sources)
    return 2.0 * per_frame * frames


def vqvae_level0_macs(config, samples: int) -> tuple[float, float, float]:
    """(encoder, decoder, nearest-code) MACs of one level-0 example of `samples` samples."""
    width, depth = config.level_width(0), config.level_depth(0)
    hidden = int(config.m_conv * width)
    stride, down, emb = config.strides_t[0], config.downs_t[0], config.emb_width
    res_per_position = depth * (3 * width * hidden + hidden * width)
    kernel = 2 * stride
    enc, positions, cin = 0.0, samples, config.input_channels
    for _ in range(down):
        positions //= stride
        enc += positions * kernel * cin * width + positions * res_per_position
        cin = width
    enc += positions * 3 * width * emb
    dec = positions * 3 * emb * width
    for i in range(down):
        cout = emb if i == down - 1 else width
        dec += positions * res_per_position + positions * kernel * width * cout
        positions *= stride
    dec += positions * 3 * emb * config.input_channels
    vq = (samples // config.hop(0)) * config.l_bins * emb
    return enc, dec, vq


def vqvae_flops(config, samples: int) -> tuple[float, float]:
    """(forward, train) FLOPs of one level-0 VQ-VAE example."""
    enc, dec, vq = vqvae_level0_macs(config, samples)
    return 2.0 * (enc + dec + vq), 2.0 * (3 * (enc + dec) + vq)


def vggish_forward_flops(
    conv_layers: Sequence[tuple[str, int, bool]], dense_layers: Sequence[tuple[str, int]]
) -> float:
    """VGGish forward FLOPs of one 96x64 example (3x3 SAME convs, 2x2 pools, dense layers)."""
    height, width, cin, macs = 96, 64, 1, 0
    for _, cout, pool in conv_layers:
        macs += height * width * cin * cout * 9
        cin = cout
        if pool:
            height, width = height // 2, width // 2
    fin = height * width * cin
    for _, fout in dense_layers:
        macs += fin * fout
        fin = fout
    return 2.0 * macs


# Dense peak FLOP/s per precision (NVIDIA datasheets) for MFU; None = unknown device. The first
# name found in the device's name wins, so the PCIe H100 (a different part) precedes the SXM one.
PEAK_FLOPS = {
    "H100 PCIE": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12},
    "H100": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12},
    "H200": {"fp32": 67e12, "tf32": 495e12, "bf16": 989e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},
}
# Peak memory bandwidth in bytes/s (datasheets), for the roofline bound of memory-bound steps.
PEAK_BANDWIDTH = {
    "H100 PCIE": 2.0e12,
    "H100": 3.35e12,
    "H200": 4.8e12,
    "A100-SXM4-80GB": 2.039e12,
    "A100 80GB PCIE": 1.935e12,
    "A100": 1.555e12,  # the 40 GB parts
}


def _lookup(table: dict, device_kind: str):
    for name, value in table.items():
        if name in device_kind.upper():
            return value
    return None


def peak_flops(device_kind: str, precision: str) -> float | None:
    """Datasheet peak for a GPU name like "NVIDIA H100 80GB HBM3"; None on CPU or unknown GPUs."""
    peaks = _lookup(PEAK_FLOPS, device_kind)
    return None if peaks is None else peaks.get(precision)


def peak_bandwidth(device_kind: str) -> float | None:
    """Datasheet memory bandwidth (bytes/s) of a GPU name; None on CPU or unknown GPUs."""
    return _lookup(PEAK_BANDWIDTH, device_kind)


def roofline_seconds(
    flops: float, bytes_accessed: float, peak: float | None, bandwidth: float | None
) -> float | None:
    """The roofline bound of one call: the longer of its FLOPs at the peak rate and its memory
    traffic at the peak bandwidth (None when either peak is unknown)."""
    if not (peak and bandwidth):
        return None
    return max(flops / peak, bytes_accessed / bandwidth)
