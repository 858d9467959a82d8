"""SI-SDR over N random test excerpts, and a paired comparison of two models on the same ones.

The ChimeraNet transfer paper (reference/chimera.md §8) scores 1000 random test excerpts per
model with SI-SDR (nussl BSSEvalScale: float64, zero-mean, no epsilon) and compares models with a
one-sided Wilcoxon signed-rank test on the paired per-excerpt scores. Excerpt k is drawn from a
generator seeded with `(seed, k)`, so two models evaluated with the same seed see exactly the same
excerpts, and excerpts are produced and scored in batches instead of being held in memory.
Excerpts where a target source is (nearly) silent are redrawn: SI-SDR of a silent reference is
undefined.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator

import jax
import numpy as np

from jaxsep.data.mixing import ExcerptSampler, level_db
from jaxsep.errors import JaxsepError
from jaxsep.evaluate.metrics import si_sdr
from jaxsep.evaluate.stats import wilcoxon_one_sided
from jaxsep.modeldir import Model
from jaxsep.nn.lstm import inference_layout
from jaxsep.separate import separate_fn_for

PAPER_NUM_EXCERPTS = 1000
OVERALL = "overall"  # per excerpt: the mean SI-SDR over its sources


def draw_excerpt(
    sampler: ExcerptSampler,
    seed: int,
    index: int,
    min_level_db: float = -50.0,
    max_tries: int = 20,
) -> dict[str, np.ndarray]:
    """Excerpt `index` of the `seed` stream: `{"mixture": [T, C], "sources": [S, T, C]}`, every
    target above `min_level_db` dBFS if any of `max_tries` draws has that (else the last draw)."""
    rng = np.random.default_rng([seed, index])
    for _ in range(max_tries):
        excerpt = sampler.sample(rng)
        if all(level_db(s) >= min_level_db for s in excerpt["sources"]):
            break
    return excerpt


def excerpt_batches(
    sampler: ExcerptSampler, num_excerpts: int, seed: int, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of `draw_excerpt(sampler, seed, k)` for k = 0..num_excerpts-1, in order."""
    for first in range(0, num_excerpts, batch_size):
        excerpts = [
            draw_excerpt(sampler, seed, k)
            for k in range(first, min(first + batch_size, num_excerpts))
        ]
        yield {key: np.stack([e[key] for e in excerpts]) for key in ("mixture", "sources")}


def si_sdr_per_source(references: np.ndarray, estimates: np.ndarray) -> np.ndarray:
    """`[B, S, T, C]` pairs -> `[B, S]` SI-SDR (float64, zero-mean), averaged over channels."""
    ref = np.moveaxis(np.asarray(references, np.float64), -1, -2)  # [B, S, C, T]
    est = np.moveaxis(np.asarray(estimates, np.float64), -1, -2)
    return np.mean(si_sdr(ref, est), axis=-1)


def excerpt_si_sdr(
    model: Model,
    sampler: ExcerptSampler,
    num_excerpts: int = PAPER_NUM_EXCERPTS,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, np.ndarray]:
    """Per-excerpt SI-SDR `{stem: [N], "overall": [N]}` of `model` on `num_excerpts` excerpts.

    The sampler must produce audio at the model's rate and channel count, with its target stems
    in the model's source order. Each excerpt is separated whole (no chunking), like nussl.
    """
    sources = list(model.config.get("sources", []))
    if list(sampler.stems) != sources:
        raise JaxsepError(
            f"excerpt evaluation: sampler stems {list(sampler.stems)} != model sources {sources}"
        )
    if sampler.sample_rate != model.config.get("sample_rate"):
        raise JaxsepError(
            f"excerpt evaluation: excerpts at {sampler.sample_rate} Hz, the model takes "
            f"{model.config.get('sample_rate')} Hz"
        )
    if num_excerpts < 1:
        raise JaxsepError(f"excerpt evaluation: num_excerpts must be >= 1, got {num_excerpts}")
    hook = separate_fn_for(model.module, model.config.get("model"))
    if "config" in inspect.signature(hook).parameters:  # as jaxsep.Separator passes it
        hook = functools.partial(hook, config=model.config)
    separate = jax.jit(lambda variables, wave: hook(model.module, variables, wave))
    variables = inference_layout(model.variables)  # as jaxsep.Separator: fixed weights
    scores = []
    for batch in excerpt_batches(sampler, num_excerpts, seed, batch_size):
        rows = len(batch["mixture"])
        wave = np.zeros((batch_size, *batch["mixture"].shape[1:]), np.float32)
        wave[:rows] = batch["mixture"]  # pad the tail batch: one compiled shape
        estimates = np.asarray(separate(variables, wave))[:rows]
        scores.append(si_sdr_per_source(batch["sources"], estimates))
    table = np.concatenate(scores)  # [N, S]
    result = {name: table[:, i] for i, name in enumerate(sources)}
    result[OVERALL] = table.mean(axis=1)
    return result


def summarize(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """`{stem: {"mean", "median", "n"}}` over the finite scores."""
    out = {}
    for name, values in scores.items():
        finite = values[np.isfinite(values)]
        out[name] = {
            "mean": float(np.mean(finite)) if finite.size else float("nan"),
            "median": float(np.median(finite)) if finite.size else float("nan"),
            "n": int(finite.size),
        }
    return out


def compare_models(
    scores_a: dict[str, np.ndarray], scores_b: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Paired one-sided Wilcoxon "a scores higher than b" per stem and overall.

    Both score sets must come from the same excerpts (same sampler, count and seed). Pairs where
    either score is not finite are dropped (`n_dropped`). Adds `mean_difference` (a - b, dB).
    """
    if set(scores_a) != set(scores_b):
        raise JaxsepError(f"compare: different stems {sorted(scores_a)} vs {sorted(scores_b)}")
    out = {}
    for name in scores_a:
        a, b = np.asarray(scores_a[name]), np.asarray(scores_b[name])
        if a.shape != b.shape:
            raise JaxsepError(f"compare: {name} has {a.size} and {b.size} scores (not paired)")
        keep = np.isfinite(a) & np.isfinite(b)
        if not keep.any():
            raise JaxsepError(f"compare: no finite pairs of {name} scores")
        test = wilcoxon_one_sided(a[keep], b[keep], alternative="greater")
        out[name] = {
            **test,
            "mean_difference": float(np.mean(a[keep] - b[keep])),
            "n_dropped": int((~keep).sum()),
        }
    return out
