"""BSSEval v4 (images mode, as `museval.evaluate(mode="v4")`) in JAX, jit-able.

museval spends its time on four dense 4096x4096 LU solves (one per estimate, all with the same
Gram matrix), full-length FFT correlations per channel pair and thousands of small
`fftconvolve` calls per frame. Here the same quantities are computed once and batched:

* lagged auto/cross correlations of references (and references x estimates) by block FFTs whose
  cross-spectra are summed over blocks, so only lags 0 <= k < filter_len are ever formed
  (the Gram's negative lags by symmetry);
* ONE solve of the block-Toeplitz Gram system for all estimates and channels (v4 computes the
  distortion filters on the whole signals, not per frame) plus one batched per-source solve,
  both by block Levinson recursion (O(L^2) instead of O(L^3)), with museval's dense LU /
  least-squares solve as a fallback for singular Grams;
* per frame, all projections as one frequency-domain contraction, their energies by Parseval.

Framing, silent-frame NaNs, the `eps * I` regulariser and the `+inf` for a zero denominator
follow museval (`metrics.bss_eval` with `compute_permutation=False`, `framewise_filters=False`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft

# Loop granularity, measured on 2 CPU cores (30 s x 4 stereo sources, tools/bench_bsseval.py,
# before the correlations dropped negative lags): correlations 150 ms with 4 blocks of 4096
# samples per step (16 per step: 175 ms; 1: 206 ms); the whole evaluation 475 ms with one frame
# per step (4 per step: 548 ms). Batching more only makes the temporaries outgrow the caches.
CORRELATION_BLOCKS_PER_STEP = 4
FRAMES_PER_STEP = 1
# |G x - rhs| / |rhs| of Levinson: ~1e-15 for white noise, ~1e-11 for music-like Grams of
# condition number 1e11, astronomically large on a singular Gram (a pure tone, mono source)
RESIDUAL_TOLERANCE = 1e-6


def frame_count(length: int, window: int, hop: int) -> int:
    """Number of frames museval's `Framing` yields: the tail shorter than a window is dropped."""
    if window < length:
        return int(np.floor((length - window + hop) / hop))
    return 1


def _channel_rows(signals: jax.Array) -> jax.Array:
    """`[S, n, C]` -> `[S * C, n]` (source-major rows): every FFT then runs over the minor axis.
    Applied to one block or frame at a time, never to whole signals (a full-length copy)."""
    n_src, length, n_chan = signals.shape
    return jnp.moveaxis(signals, 2, 1).reshape(n_src * n_chan, length)


def _correlation_layout(max_lag: int) -> tuple[int, int, int]:
    """`(n_fft, block, step_len)` of the block correlations for lags `0 <= k < max_lag`.

    A block of `block` samples of `x` is correlated with a segment of `y` that also holds the
    first `max_lag - 1` samples of the next block, zero-padded to `n_fft`; a loop step takes
    `CORRELATION_BLOCKS_PER_STEP` consecutive blocks (`step_len` samples).
    """
    n_fft = int(2 ** np.ceil(np.log2(max(8 * max_lag, 64))))
    block = n_fft - (max_lag - 1)
    return n_fft, block, CORRELATION_BLOCKS_PER_STEP * block


def _accumulate_spectrum(
    spectrum: jax.Array, refs: jax.Array, ests: jax.Array, n_steps: int, max_lag: int
) -> jax.Array:
    """`spectrum` plus `sum conj(X) Y` over the blocks of the first `n_steps` loop steps of
    `[S, T, C]` signals, which must hold `n_steps * step_len + block` samples (zeros past the
    end of the signal). `[P, Q, F]`, P = S * C channel rows of `refs`, Q = 2 P (those of `refs`,
    then those of `ests`).

    Each step slices its blocks (and the next block, whose first `max_lag - 1` samples its last
    segment needs) out of the signals and makes its channel rows there: no full-length copy.
    """
    n_fft, block, step_len = _correlation_layout(max_lag)
    span = max_lag - 1
    n_rows = refs.shape[0] * refs.shape[2]

    def step(spectrum, start):
        chunk = jnp.concatenate(
            [jax.lax.dynamic_slice_in_dim(s, start, step_len + block, axis=1) for s in (refs, ests)]
        )
        chunk = _channel_rows(chunk)  # [2P, step_len + block]
        x_step = chunk[:n_rows, :step_len].reshape(n_rows, -1, block)  # [P, blocks, block]
        heads = chunk[:, :step_len].reshape(2 * n_rows, -1, block)
        tails = chunk[:, block:].reshape(2 * n_rows, -1, block)
        y_step = jnp.concatenate([heads, tails[..., :span]], axis=-1)  # [Q, blocks, block+span]
        x_spec = jnp.fft.rfft(x_step, n=n_fft, axis=-1)
        y_spec = jnp.fft.rfft(y_step, n=n_fft, axis=-1)
        # broadcast-and-sum: XLA:CPU fuses it, ~2x faster than the equivalent einsum
        products = jnp.conj(x_spec)[:, None] * y_spec[None]  # [P, Q, blocks, F]
        return spectrum + jnp.sum(products, axis=2), None

    if n_steps:  # (a scan of no steps would still trace slices larger than short signals)
        spectrum, _ = jax.lax.scan(step, spectrum, jnp.arange(n_steps) * step_len)
    return spectrum


def _empty_spectrum(n_rows: int, max_lag: int, dtype) -> jax.Array:
    n_fft = _correlation_layout(max_lag)[0]
    return jnp.zeros((n_rows, 2 * n_rows, n_fft // 2 + 1), jnp.result_type(dtype, jnp.complex64))


def _lagged_correlations(refs: jax.Array, ests: jax.Array, max_lag: int) -> jax.Array:
    """`rho[p, q, k] = sum_n x[p, n] * y[q, n + k]` for `0 <= k < max_lag`, where `x` are the
    channel rows of `refs [S, T, C]` and `y` those of `refs` followed by those of `ests`.

    Blocks of `x` are correlated with slightly longer, overlapping segments of `y` and the
    cross-spectra summed over blocks, which is exact (no circular wrap) and costs O(T) instead of
    one full-length inverse FFT per channel pair. Only non-negative lags: the Gram's negative
    lags follow by symmetry (`_gram_statistics`), so each segment overlaps the next block by
    `max_lag - 1` samples instead of `2 max_lag - 2` (11% less work than both signs). The steps
    whose blocks lie inside the signals read them in place; only the last ones read a
    zero-padded copy of the tail (a 4-minute 4-source song is 0.7 GB per float64 array).
    """
    length = refs.shape[1]
    _, block, step_len = _correlation_layout(max_lag)
    n_steps = -(-length // step_len)
    # a step reads its blocks and the next block: the first `inside` steps find those inside
    # the signals, the others in a zero-padded tail
    inside = min(max((length - block) // step_len, 0), n_steps)
    tail_start = inside * step_len
    padding = ((0, 0), (0, (n_steps - inside) * step_len + block - (length - tail_start)), (0, 0))
    tail_refs, tail_ests = (jnp.pad(s[:, tail_start:], padding) for s in (refs, ests))
    spectrum = _empty_spectrum(refs.shape[0] * refs.shape[2], max_lag, refs.dtype)
    spectrum = _accumulate_spectrum(spectrum, refs, ests, inside, max_lag)
    spectrum = _accumulate_spectrum(spectrum, tail_refs, tail_ests, n_steps - inside, max_lag)
    return _correlations_from_spectrum(spectrum, max_lag)


def _correlations_from_spectrum(spectrum: jax.Array, max_lag: int) -> jax.Array:
    n_fft = _correlation_layout(max_lag)[0]
    return jnp.fft.irfft(spectrum, n=n_fft, axis=-1)[..., :max_lag]


def _gram_statistics(
    refs: jax.Array, ests: jax.Array, filter_len: int
) -> tuple[jax.Array, jax.Array]:
    """The normal equations of the distortion filters, from `[S, T, C]` signals.

    Returns `lag_blocks [2L - 1, P, P]` (the block-Toeplitz Gram's blocks, lag k at k + L - 1)
    and `cross [L, P, E]` over channel rows (P = E = S * C). Their shapes do not depend on the
    signal length.
    """
    return _normal_equations(_lagged_correlations(refs, ests, filter_len))


def _normal_equations(rho: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`_gram_statistics` from the lagged correlations `rho [P, 2P, L]`."""
    n_rows = rho.shape[0]
    # Gram[(a, p), (b, q)] = <x_p delayed by a, x_q delayed by b> = lag_blocks[a - b][p, q];
    # cross[a, p, e] = <x_p delayed by a, estimate channel e> = rho_pe[a]
    positive = jnp.moveaxis(rho[:, :n_rows], -1, 0)  # [L, P, P]: lags 0 .. L - 1
    negative = jnp.swapaxes(positive[:0:-1], 1, 2)  # rho_pq[-k] = rho_qp[k]: lags 1 - L .. -1
    lag_blocks = jnp.concatenate([negative, positive])  # [2L - 1, P, P], lag k at k + L - 1
    cross = jnp.moveaxis(rho[:, n_rows:], -1, 0)  # [L, P, E]
    return lag_blocks, cross


def _distortion_filters(
    lag_blocks: jax.Array, cross: jax.Array, n_src: int
) -> tuple[jax.Array, jax.Array]:
    """Least-squares filters projecting each estimate on delayed references (whole signals).

    Takes `_gram_statistics`. Returns `all_filters [S_ref, C_in, L, S_est, C_out]` (projection
    on every reference: museval's `C`) and `own_filters [S, C_in, L, C_out]` (on the estimate's
    own reference: museval's `Cj`).
    """
    lags, n_rows, _ = cross.shape
    n_chan = n_rows // n_src
    all_filters = _solve_gram(lag_blocks[None], cross[None])[0]  # [L, P, E]
    all_filters = all_filters.reshape(lags, n_src, n_chan, n_src, n_chan)
    all_filters = jnp.moveaxis(all_filters, 0, 2)

    own = jnp.arange(n_rows).reshape(n_src, n_chan)
    own_blocks = lag_blocks[:, own[:, :, None], own[:, None, :]]  # [2L - 1, S, C, C]
    own_cross = cross[:, own[:, :, None], own[:, None, :]]  # [L, S, C, C]
    own_filters = _solve_gram(jnp.moveaxis(own_blocks, 1, 0), jnp.moveaxis(own_cross, 1, 0))
    return all_filters, jnp.moveaxis(own_filters, 1, 2)  # [S, C_in, L, C_out]


def _solve_gram(lag_blocks: jax.Array, rhs: jax.Array) -> jax.Array:
    """Batched `_solve_block_toeplitz` with museval's dense fallbacks for degenerate Grams.

    Levinson fails (non-finite, or filters that do not reproduce `rhs`) when the Gram is
    singular: a pure tone, or a source whose channels are identical. Then, like museval, the
    dense regularised system is solved by LU and, if that hits an exact zero pivot too, by least
    squares (slow, but only in those cases). Under `vmap` both branches always run.
    """
    solution = jax.vmap(_solve_block_toeplitz)(lag_blocks, rhs)
    residual = jax.vmap(_relative_residual)(lag_blocks, solution, rhs)
    trusted = jnp.all(jnp.isfinite(solution)) & jnp.all(residual < RESIDUAL_TOLERANCE)

    def dense():
        gram = jax.vmap(_dense_gram)(lag_blocks)
        flat_rhs = rhs.reshape(rhs.shape[0], -1, rhs.shape[-1])
        flat = jnp.linalg.solve(gram, flat_rhs)
        flat = jax.lax.cond(
            jnp.all(jnp.isfinite(flat)),
            lambda: flat,
            lambda: jax.vmap(lambda g, d: jnp.linalg.lstsq(g, d)[0])(gram, flat_rhs),
        )
        return flat.reshape(rhs.shape)

    return jax.lax.cond(trusted, lambda: solution, dense)


def _dense_gram(lag_blocks: jax.Array) -> jax.Array:
    """`G + eps I` as a dense `[L m, L m]` matrix (lag-major), as museval builds it."""
    n_lags2, m, _ = lag_blocks.shape
    lags = (n_lags2 + 1) // 2
    index = jnp.arange(lags)[:, None] - jnp.arange(lags)[None, :] + lags - 1
    gram = jnp.transpose(lag_blocks[index], (0, 2, 1, 3)).reshape(lags * m, lags * m)
    return gram + jnp.finfo(gram.dtype).eps * jnp.eye(lags * m, dtype=gram.dtype)


def _relative_residual(lag_blocks: jax.Array, solution: jax.Array, rhs: jax.Array) -> jax.Array:
    """`|G x - rhs| / |rhs|`, with `G x` as an FFT block convolution over lags.

    Relative to `rhs` (not the usual `|G| |x|`): on a singular Gram Levinson returns enormous
    filters with a tiny normwise backward error, but they do not reproduce `rhs`.
    """
    n_lags2 = lag_blocks.shape[0]
    lags = (n_lags2 + 1) // 2
    n_fft = scipy.fft.next_fast_len(n_lags2 + lags - 1, real=True)
    lag_spec = jnp.fft.rfft(lag_blocks, n=n_fft, axis=0)
    sol_spec = jnp.fft.rfft(solution, n=n_fft, axis=0)
    product = jnp.fft.irfft(jnp.einsum("fpq,fqr->fpr", lag_spec, sol_spec), n=n_fft, axis=0)
    applied = product[lags - 1 : 2 * lags - 1]  # (G x)[a] = sum_b lag[a - b] x[b]
    eps = jnp.finfo(lag_blocks.dtype).eps
    applied = applied + eps * solution
    scale = jnp.linalg.norm(rhs)
    return jnp.linalg.norm(applied - rhs) / jnp.where(scale > 0, scale, 1.0)


def _solve_block_toeplitz(lag_blocks: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solve museval's `(G + eps I) x = rhs` for a block-Toeplitz Gram `G[a, b] = lag_blocks[a-b]`.

    Block Levinson recursion: O(L^2 m^3) instead of the O(L^3 m^3) of a dense solve (for
    4 stereo sources and 512 taps, ~2 GFLOP instead of ~46), which is what makes this fast.
    `forward` / `backward` solve the leading n-block system for a unit first / last block
    column and grow by one block per step; `solution` is corrected with the new `backward`.
    It needs the leading blocks to be nonsingular: `_solve_gram` checks and falls back.
    """
    n_lags2, m, _ = lag_blocks.shape
    lags = (n_lags2 + 1) // 2
    eps = jnp.finfo(lag_blocks.dtype).eps
    eye = jnp.eye(m, dtype=lag_blocks.dtype)
    lag_blocks = lag_blocks.at[lags - 1].add(eps * eye)
    padded = jnp.concatenate([lag_blocks, jnp.zeros_like(lag_blocks[:1])])  # lag L -> 0
    flipped = padded[::-1]  # flipped[j] = lag (L - j); a slice of it is one block row of G
    # eps_b = sum_k lag[-(k + 1)] b[k] = sum_k lag[k + 1]^T b[k]: a fixed [m, L m] row
    backward_row = jnp.swapaxes(padded[lags:], 1, 2)  # [L, m(q), m(p)] = lag[k+1]^T
    backward_row = jnp.moveaxis(backward_row, 1, 0).reshape(m, lags * m)
    first_inv = jnp.linalg.inv(lag_blocks[lags - 1])
    forward = jnp.zeros((lags, m, m), lag_blocks.dtype).at[0].set(first_inv)
    backward = forward
    solution = jnp.zeros(rhs.shape, rhs.dtype).at[0].set(first_inv @ rhs[0])

    def step(state, n):
        forward, backward, solution = state
        size = forward.shape[0]  # only the first `size` blocks can be nonzero in this phase
        # last block row of the (n+1)-block Gram: lag[n - k] for k = 0..size-1 (zeros beyond n)
        row = jax.lax.dynamic_slice_in_dim(flipped, lags - n, size, axis=0)  # [size, m, m]
        row = jnp.moveaxis(row, 1, 0).reshape(m, size * m)
        err_f = row @ forward.reshape(size * m, m)
        err_x = row @ solution.reshape(size * m, -1)
        err_b = backward_row[:, : size * m] @ backward.reshape(size * m, m)
        a = jnp.linalg.inv(eye - err_b @ err_f)
        d = jnp.linalg.inv(eye - err_f @ err_b)
        shifted = jnp.roll(backward, 1, axis=0)
        new_forward = forward @ a - shifted @ (err_f @ a)
        new_backward = shifted @ d - forward @ (err_b @ d)
        solution = solution + new_backward @ (rhs[n] - err_x)
        return (new_forward, new_backward, solution), None

    # step n touches blocks 0..n only: run the recursion in phases on growing prefixes, which
    # does ~55% of the work of always carrying all L blocks
    phase = max(lags // 8, 1)
    state = (forward[:phase], backward[:phase], solution[:phase])
    for start in range(1, lags, phase):
        stop = min(start + phase, lags)  # steps start..stop-1 need blocks 0..stop-1
        state = tuple(jnp.pad(x, ((0, stop - x.shape[0]), (0, 0), (0, 0))) for x in state)
        state, _ = jax.lax.scan(step, state, jnp.arange(start, stop))
    return state[2]


def _safe_db(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """museval's `_safe_db`: +inf when the denominator is exactly zero."""
    safe = jnp.where(denominator == 0, 1.0, denominator)
    return jnp.where(denominator == 0, jnp.inf, 10.0 * jnp.log10(numerator / safe))


def _parseval_weights(n_fft: int, dtype) -> jax.Array:
    """`sum_t x[t]^2 = sum_f w[f] |rfft(x)[f]|^2`: bins other than DC and Nyquist count twice."""
    n_bins = n_fft // 2 + 1
    weights = np.full(n_bins, 2.0 / n_fft)
    weights[0] = 1.0 / n_fft
    if n_fft % 2 == 0:
        weights[-1] = 1.0 / n_fft
    return jnp.asarray(weights, dtype)


def _any_source_silent(rows: jax.Array, n_src: int) -> jax.Array:
    """museval's test on `[S * C, W]` rows: a source whose channel sum is zero at every sample."""
    channel_sum = rows.reshape(n_src, -1, rows.shape[-1]).sum(1)
    return jnp.any(jnp.all(channel_sum == 0, axis=-1))


def _projection_fft_size(frame_len: int, filter_len: int) -> int:
    """Long enough that projections (a frame convolved with a filter) do not wrap around."""
    return scipy.fft.next_fast_len(frame_len + filter_len - 1, real=True)


def _filter_spectra(
    all_filters: jax.Array, own_filters: jax.Array, n_fft: int
) -> tuple[jax.Array, jax.Array]:
    """`rfft`s of the distortion filters: `[reference ch, estimate ch, F]` and `[S, Ci, Co, F]`."""
    n_src, n_chan, filter_len = own_filters.shape[:3]
    n_rows = n_src * n_chan
    all_taps = jnp.moveaxis(all_filters.reshape(n_rows, filter_len, n_rows), 1, 2)
    all_spec = jnp.fft.rfft(all_taps, n=n_fft, axis=-1)
    own_spec = jnp.fft.rfft(jnp.moveaxis(own_filters, 2, 3), n=n_fft, axis=-1)
    return all_spec, own_spec


def _scores_of_frames(
    refs: jax.Array,
    ests: jax.Array,
    all_spec: jax.Array,
    own_spec: jax.Array,
    *,
    frame_len: int,
    hop: int,
    n_frames: int,
) -> jax.Array:
    """`[frames, 4, S]` (sdr, isr, sir, sar) of the frames `[i hop, i hop + frame_len)`,
    `i < n_frames`, of `[S, T, C]` signals, given `_filter_spectra`. NaN for a frame where a
    source is silent (so also for a frame in zero padding)."""
    n_src, n_chan = own_spec.shape[:2]
    n_rows = n_src * n_chan
    n_fft = 2 * (all_spec.shape[-1] - 1)  # even: next_fast_len(real=True) of an even size
    weights = _parseval_weights(n_fft, refs.dtype)

    def energy(spectrum):
        """Energy per source of `[S * C, F]` spectra (Parseval: no inverse FFT needed)."""
        per_row = jnp.sum(weights * (spectrum.real**2 + spectrum.imag**2), axis=-1)
        return per_row.reshape(n_src, n_chan).sum(-1)

    def scores(start):
        ref = _channel_rows(jax.lax.dynamic_slice_in_dim(refs, start, frame_len, axis=1))
        est = _channel_rows(jax.lax.dynamic_slice_in_dim(ests, start, frame_len, axis=1))
        ref_spec = jnp.fft.rfft(ref, n=n_fft, axis=-1)  # [S * C, F]
        est_spec = jnp.fft.rfft(est, n=n_fft, axis=-1)
        proj_all = jnp.sum(ref_spec[:, None] * all_spec, axis=0)
        own_ref = ref_spec.reshape(n_src, n_chan, 1, -1)
        proj_own = jnp.sum(own_ref * own_spec, axis=1).reshape(n_rows, -1)
        # s_true = ref and e_spat + e_interf + e_artif = est - ref exactly, so SDR is time-domain
        true_energy = jnp.sum((ref**2).reshape(n_src, -1), axis=-1)
        sdr = _safe_db(true_energy, jnp.sum(((est - ref) ** 2).reshape(n_src, -1), axis=-1))
        isr = _safe_db(true_energy, energy(proj_own - ref_spec))
        sir = _safe_db(energy(proj_own), energy(proj_all - proj_own))
        sar = _safe_db(energy(proj_all), energy(est_spec - proj_all))
        silent = _any_source_silent(ref, n_src) | _any_source_silent(est, n_src)
        return jnp.where(silent, jnp.nan, jnp.stack([sdr, isr, sir, sar]))

    starts = jnp.arange(n_frames) * hop
    return jax.lax.map(scores, starts, batch_size=FRAMES_PER_STEP)


def _frame_scores(
    refs: jax.Array,
    ests: jax.Array,
    all_filters: jax.Array,
    own_filters: jax.Array,
    *,
    window: int,
    hop: int,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """`(sdr, isr, sir, sar)`, each `[S, frames]`, of `[S, T, C]` signals and the filters."""
    length, filter_len = refs.shape[1], own_filters.shape[2]
    frame_len = min(window, length)
    n_fft = _projection_fft_size(frame_len, filter_len)
    all_spec, own_spec = _filter_spectra(all_filters, own_filters, n_fft)
    per_frame = _scores_of_frames(
        refs,
        ests,
        all_spec,
        own_spec,
        frame_len=frame_len,
        hop=hop,
        n_frames=frame_count(length, window, hop),
    )
    sdr, isr, sir, sar = jnp.moveaxis(per_frame, 0, -1)
    return sdr, isr, sir, sar


@functools.partial(jax.jit, static_argnames=("window", "hop", "filter_len"))
def bss_eval_v4_traced(
    references: jax.Array,
    estimates: jax.Array,
    *,
    window: int,
    hop: int,
    filter_len: int = 512,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """BSSEval v4 `(sdr, isr, sir, sar)`, each `[S, frames]`, in the dtype of the inputs.

    Traceable core of `bss_eval_v4` (jit, vmap over songs of equal length): one program per
    signal length. Matching museval needs float64: call it under `jax.enable_x64(True)` with
    float64 arrays; float32 inputs give a float32 Gram solve, which is not accurate for real
    music.
    """
    lag_blocks, cross = _gram_statistics(references, estimates, filter_len)
    all_filters, own_filters = _distortion_filters(lag_blocks, cross, references.shape[0])
    return _frame_scores(references, estimates, all_filters, own_filters, window=window, hop=hop)


# The host entry point feeds the signals to fixed-shape programs chunk by chunk, so that a track
# of a new length compiles nothing (a MUSDB split has as many lengths as tracks; one
# whole-signal program per length cost ~1.5 s of compiling per track) and the device never holds
# a whole song: correlations over chunks of CORRELATION_STEPS_PER_CALL loop steps, accumulated
# into one spectrum (zeros past the end of the signal add nothing); the filter solve (whose
# shapes never depended on the length; ~4 s to compile); frames scored FRAMES_PER_CALL at a
# time (frames in the zero padding past the last one are dropped). Each compiles once per
# (sources, channels, filter length, window, hop). Call sizes, measured on 2 CPU cores (30 s x
# 4 stereo sources, 1 s frames; the loop steps inside a call as above): per-call costs are lost
# in the noise (1 to 16 steps per call: 0.16-0.20 s for the correlations; 1 to 15 frames: 0.28-
# 0.33 s for the frames), padding is not: 4 frames per call (32 scored for 30) took 0.34 s.
# So small calls, whose padding is at most 3 steps (~4 ms) and no frame.
CORRELATION_STEPS_PER_CALL = 4
FRAMES_PER_CALL = 1


def _correlation_chunk(
    spectrum: jax.Array, refs: jax.Array, ests: jax.Array, max_lag: int
) -> jax.Array:
    """`_accumulate_spectrum` over a chunk of `n_steps * step_len + block` samples, cast to the
    spectrum's precision here (fused with the first reads) rather than on the host."""
    _, block, step_len = _correlation_layout(max_lag)
    real = spectrum.real.dtype
    n_steps = (refs.shape[1] - block) // step_len
    return _accumulate_spectrum(spectrum, refs.astype(real), ests.astype(real), n_steps, max_lag)


def _filters_from_spectrum(
    spectrum: jax.Array, n_src: int, max_lag: int
) -> tuple[jax.Array, jax.Array]:
    lag_blocks, cross = _normal_equations(_correlations_from_spectrum(spectrum, max_lag))
    return _distortion_filters(lag_blocks, cross, n_src)


_correlation_chunk_program = jax.jit(_correlation_chunk, static_argnums=3, donate_argnums=0)
_filters_program = jax.jit(_filters_from_spectrum, static_argnums=(1, 2))
_filter_spectra_program = jax.jit(_filter_spectra, static_argnums=2)


def _frame_group(refs: jax.Array, ests: jax.Array, all_spec: jax.Array, own_spec: jax.Array, **kw):
    """`_scores_of_frames` of signals cast to the filters' precision."""
    real = all_spec.real.dtype
    return _scores_of_frames(refs.astype(real), ests.astype(real), all_spec, own_spec, **kw)


_frame_group_program = jax.jit(_frame_group, static_argnames=("frame_len", "hop", "n_frames"))


def _window(signals: np.ndarray, start: int, size: int) -> np.ndarray:
    """`signals[:, start:start + size]`, zero-padded past the end to `size`: a view where the
    window lies inside the signals (the call's transfer is then its only copy)."""
    if start + size <= signals.shape[1]:
        return signals[:, start : start + size]
    window = np.zeros((signals.shape[0], size, signals.shape[2]), signals.dtype)
    window[:, : signals.shape[1] - start] = signals[:, start:]
    return window


def bss_eval_v4(
    references: np.ndarray | jax.Array,
    estimates: np.ndarray | jax.Array,
    *,
    window: int,
    hop: int,
    filter_len: int = 512,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BSSEval v4 of `[S, T, C]` estimates against references, as `museval.evaluate(mode="v4")`.

    `window` and `hop` are in samples. Returns float64 `(sdr, isr, sir, sar)`, each
    `[S, frames]`, NaN in frames where any reference or estimate source is silent. Computes
    `bss_eval_v4_traced`'s scores with fixed-shape programs fed chunk by chunk from host memory
    (no compile for a new signal length), with x64 enabled locally, since the Gram solve needs
    float64.
    """
    window, hop, filter_len = int(window), int(hop), int(filter_len)
    refs, ests = np.asarray(references), np.asarray(estimates)
    n_src, length, n_chan = refs.shape
    _, block, step_len = _correlation_layout(filter_len)
    chunk = CORRELATION_STEPS_PER_CALL * step_len
    frame_len = min(window, length)
    n_frames = frame_count(length, window, hop)
    group_len = (FRAMES_PER_CALL - 1) * hop + frame_len
    with jax.enable_x64(True):
        # each call is dispatched asynchronously: the host cuts the next chunk while one runs
        spectrum = _empty_spectrum(n_src * n_chan, filter_len, np.float64)
        for start in range(0, length, chunk):
            spectrum = _correlation_chunk_program(
                spectrum,
                _window(refs, start, chunk + block),
                _window(ests, start, chunk + block),
                filter_len,
            )
        all_filters, own_filters = _filters_program(spectrum, n_src, filter_len)
        n_fft = _projection_fft_size(frame_len, filter_len)
        all_spec, own_spec = _filter_spectra_program(all_filters, own_filters, n_fft)
        groups = [
            _frame_group_program(
                _window(refs, start, group_len),
                _window(ests, start, group_len),
                all_spec,
                own_spec,
                frame_len=frame_len,
                hop=hop,
                n_frames=FRAMES_PER_CALL,
            )
            for start in range(0, n_frames * hop, FRAMES_PER_CALL * hop)
        ]
        per_frame = np.concatenate([np.asarray(g) for g in groups])[:n_frames]  # [frames, 4, S]
    sdr, isr, sir, sar = np.moveaxis(per_frame, 0, -1)
    return sdr, isr, sir, sar
