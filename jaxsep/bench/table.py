"""Benchmark JSON lines -> markdown tables (the one in benchmarks/README.md is generated here)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from jaxsep.bench.runner import PRECISIONS

START = "<!-- bench-table:start -->"
END = "<!-- bench-table:end -->"

_MODEL_KEY = (
    "device_slug", "device", "model", "mode", "size", "batch_size", "jax_variant", "torch_variant",
    "threads", "precision",
)  # fmt: skip
_PIPELINE_KEY = (
    "device_slug", "device", "pipeline", "corpus", "size", "augment", "workers", "threads",
)  # fmt: skip
# Fields older records lack: every pipeline record before the ChimeraNet pipeline was X-UMX's,
# and every one before `--data` read the generated corpus.
_DEFAULTS = {"pipeline": "xumx", "corpus": "synthetic"}
MODEL_ORDER = {m: i for i, m in enumerate(("xumx", "umx", "chimera", "vqvae", "vggish"))}


def read_records(paths: Iterable[Path]) -> list[dict]:
    """Every JSON line of `paths` (files or folders searched for *.jsonl), in file order."""
    records = []
    for path in paths:
        files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
        for file in files:
            for line in file.read_text().splitlines():
                if line.strip():
                    records.append(json.loads(line))
    return records


def latest(records: list[dict]) -> list[dict]:
    """The last record of each setting (a rerun replaces the older line in the table)."""
    chosen: dict[tuple, dict] = {}
    for r in records:
        key_names = _PIPELINE_KEY if r.get("bench") == "pipeline" else _MODEL_KEY
        key = (r.get("bench"), *(json.dumps(r.get(k, _DEFAULTS.get(k))) for k in key_names))
        if key not in chosen or r.get("timestamp", "") >= chosen[key].get("timestamp", ""):
            chosen[key] = r
    return list(chosen.values())


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _threads(r: dict) -> str:
    return "default" if r.get("threads") is None else str(r["threads"])


def _load(r: dict) -> str:
    load = r.get("load_avg_start") or []
    return _num(load[0], 2) if load else "–"


def _percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{100 * fraction:.0f}%"


def _model_rows(records: list[dict]) -> list[str]:
    head = (
        "| model | mode | size | batch | threads | JAX | PyTorch | JAX median s (min–max) "
        "| PyTorch median s (min–max) | speedup | speedup (min) | speedup (paired) | JAX ex/s "
        "| PyTorch ex/s "
        "| JAX audio-s/s | JAX compile s | MFU JAX / PyTorch | JAX % of roofline | load | git |"
    )
    rows = [head, "|" + "---|" * 20]
    records = sorted(
        records,
        key=lambda r: (
            MODEL_ORDER.get(r["model"], 99),
            str(r.get("threads")),
            r.get("batch_size") or 0,
            r["mode"] != "train",
            r["jax_variant"],
            r["torch_variant"],
        ),  # fmt: skip
    )
    for r in records:
        if r.get("torch_error"):
            torch_cell = f"failed: {r['torch_error'][:60]}"
        else:
            torch_cell = (
                f"{_num(r.get('torch_median_s'))} ({_num(r.get('torch_min_s'))}–"
                f"{_num(r.get('torch_max_s'))})"
            )
        mfu = "–"
        if r.get("jax_mfu") is not None:
            mfu = f"{100 * r['jax_mfu']:.1f}% / {100 * (r.get('torch_mfu') or 0):.1f}%"
        rows.append(
            "| "
            + " | ".join(
                [
                    r["model"],
                    r["mode"],
                    r["size"],
                    str(r["batch_size"]),
                    _threads(r),
                    r["jax_variant"],
                    r["torch_variant"],
                    f"{_num(r.get('jax_median_s'))} ({_num(r.get('jax_min_s'))}–"
                    f"{_num(r.get('jax_max_s'))})",
                    torch_cell,
                    _num(r.get("speedup"), 2),
                    _num(r.get("speedup_min"), 2),
                    _num(r.get("speedup_paired"), 2),
                    _num(r.get("examples_per_s")),
                    _num(r.get("torch_examples_per_s")),
                    _num(r.get("audio_seconds_per_s")),
                    _num(r.get("compile_s"), 2),
                    mfu,
                    _percent(r.get("jax_roofline_fraction")),
                    _load(r),
                    str(r.get("git_revision") or "–")[:7],
                ]
            )
            + " |"
        )
    return rows


def _pipeline(r: dict) -> str:
    return r.get("pipeline", _DEFAULTS["pipeline"])


def _pipeline_rows(records: list[dict]) -> list[str]:
    rows = [
        "| pipeline | corpus | size | batch | augment | workers | threads | examples/s "
        "| audio-s/s | train step ex/s | headroom (pipeline / train step) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = lambda r: (  # noqa: E731
        _pipeline(r),
        str(r.get("corpus")),
        str(r.get("threads")),
        r["augment"],
        r["workers"],
    )
    for r in sorted(records, key=order):
        train = ", ".join(f"{m} {_num(v)}" for m, v in sorted(r["train_examples_per_s"].items()))
        head = ", ".join(f"{m} {_num(v, 2)}x" for m, v in sorted(r["headroom"].items()))
        rows.append(
            f"| {_pipeline(r)} | {r.get('corpus', _DEFAULTS['corpus'])} | {r['size']} "
            f"| {r.get('batch_size', '–')} "
            f"| {r['augment']} | {r['workers']} | {_threads(r)} "
            f"| {_num(r['examples_per_s']) if not r.get('error') else 'failed: ' + r['error']} "
            f"| {_num(r['audio_seconds_per_s'])} "
            f"| {train or '–'} | {head or '–'} | {_load(r)} |"
        )
    return rows


def _accuracy_rows(records: list[dict]) -> list[str]:
    """Reduced-precision outputs against float32, per framework (`runner` module docstring)."""
    rows = [
        "| model | size | batch | JAX rel. L2 error vs fp32 | PyTorch rel. L2 error vs fp32 "
        "| first train loss JAX / PyTorch |",
        "|---|---|---|---|---|---|",
    ]
    seen = set()
    for r in sorted(records, key=lambda r: MODEL_ORDER.get(r["model"], 99)):
        key = (r["model"], r["size"], r["batch_size"], r["jax_variant"])
        if "lowp_rel_l2_jax" not in r or key in seen:
            continue
        seen.add(key)
        rows.append(
            f"| {r['model']} | {r['size']} | {r['batch_size']} | {r['lowp_rel_l2_jax']:.1e} "
            f"| {r['lowp_rel_l2_torch']:.1e} | {_num(r.get('lowp_first_loss_jax'), 5)} / "
            f"{_num(r.get('lowp_first_loss_torch'), 5)} |"
        )
    return rows if seen else []


def render_table(records: list[dict]) -> str:
    """Markdown: per device and precision, a table of model records (plus, for a reduced
    precision, its accuracy against float32), and per device one of pipeline records."""
    bsseval = [r for r in records if r.get("bench") == "bsseval"]
    bsseval_sets = [r for r in records if r.get("bench") == "bsseval_set"]
    stem_reads = [r for r in records if r.get("bench") == "stem_reads"]
    evaluations = [r for r in records if r.get("bench") == "evaluate"]
    compile_cache = [r for r in records if r.get("bench") == "compile_cache"]
    records = latest([r for r in records if r.get("bench") in ("model", "pipeline")])
    out = []
    for slug, device in sorted({_section(r) for r in records}):
        mine = [r for r in records if _section(r) == (slug, device)]
        models = [r for r in mine if r.get("bench") == "model"]
        pipeline = [r for r in mine if r.get("bench") == "pipeline"]
        precisions = sorted({r.get("precision") or "fp32" for r in models}, key=_precision_order)
        for precision in precisions or [None]:
            group = [r for r in models if (r.get("precision") or "fp32") == precision]
            first = (group or mine)[0]
            revisions = ", ".join(dict.fromkeys(str(r.get("git_revision")) for r in group or mine))
            out.append(
                f"### {slug}: {first.get('device')} (jax {first.get('jax_version')}, torch "
                f"{first.get('torch_version')}, {precision or first.get('precision')}, git "
                f"{revisions})\n"
            )
            if group:
                out += _model_rows(group) + [""]
                accuracy = _accuracy_rows(group)
                if accuracy:
                    out += [f"Accuracy of {precision} against float32 (same weights and input):\n"]
                    out += accuracy + [""]
        if pipeline:
            out += _pipeline_rows(pipeline) + [""]
    if bsseval:
        out += _bsseval_rows(bsseval[-1:]) + [""]
    if bsseval_sets:
        # the latest record per song set and revision: a change's before and after, side by side
        latest_sets = {(r.get("signals"), r.get("git_revision")): r for r in bsseval_sets}
        out += _bsseval_set_rows(list(latest_sets.values())) + [""]
    if evaluations:
        out += _evaluate_rows(evaluations) + [""]
    if stem_reads:
        out += _stem_read_rows(stem_reads[-1:]) + [""]
    if compile_cache:
        out += _compile_cache_rows(compile_cache[-1:]) + [""]
    return "\n".join(out) + ("\n" if out else "")


def _section(r: dict) -> tuple[str, str]:
    """A record's table section: one per device name, as a CPU's name carries its vector
    extension (AVX2, AVX-512) and one folder (`cpu/`) holds the records of every CPU host."""
    return r.get("device_slug", "?"), str(r.get("device"))


def _precision_order(precision: str) -> int:
    return PRECISIONS.index(precision) if precision in PRECISIONS else len(PRECISIONS)


def _bsseval_rows(records: list[dict]) -> list[str]:
    """The JAX BSSEval v4 against museval on the same signals (tools/bench_bsseval.py)."""
    rows = [
        "### BSSEval v4: `jaxsep.evaluate.bsseval` vs museval\n",
        "| signals | device | JAX s | museval s | speedup | max abs diff (dB) | load | git |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        rows.append(
            f"| {r.get('signals')} | {r.get('device')} | {_num(r.get('jax_s'))} | "
            f"{_num(r.get('museval_s'))} | {_num(r.get('speedup'), 2)} | "
            f"{r.get('max_abs_diff_db', float('nan')):.1e} | {_load(r)} | {r.get('git_revision')} |"
        )
    return rows


def _bsseval_set_rows(records: list[dict]) -> list[str]:
    """One song of each of several lengths, in turn, in a fresh process (tools/bench_bsseval.py
    --set): compilation included, as `jaxsep evaluate` pays it over a dataset."""
    rows = [
        "### BSSEval v4 over songs of different lengths (one fresh process, compiles included)\n",
        "| signals | device | total s | first song s | slowest later song s | peak RSS GB | "
        "peak added by one song GB | load | git |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        per_song = r.get("per_song_s") or [float("nan")]
        rows.append(
            f"| {r.get('signals')} | {r.get('device')} | {_num(r.get('total_s'))} | "
            f"{_num(per_song[0])} | {_num(max(per_song[1:], default=float('nan')))} | "
            f"{_num(r.get('peak_rss_gb'))} | {_num(r.get('peak_added_gb'))} | {_load(r)} | "
            f"{r.get('git_revision')} |"
        )
    return rows


def _evaluate_rows(records: list[dict]) -> list[str]:
    """`jaxsep evaluate` over a test split, one fresh process per `--host-malloc` way
    (tools/bench_evaluate.py): every record, oldest first."""
    rows = [
        "### `jaxsep evaluate`: wall time and peak memory per `--host-malloc` way\n",
        "| signals | model config | BSSEval | way | wall s | peak RSS GB | load | git |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        for way in ("retain", "system"):
            if f"{way}_s" in r:
                rows.append(
                    f"| {r.get('signals')} | {r.get('config')} | {r.get('bsseval')} | {way} | "
                    f"{_num(r[f'{way}_s'])} | {_num(r.get(f'{way}_peak_rss_gb'))} | {_load(r)} "
                    f"| {r.get('git_revision')} |"
                )
    return rows


def _stem_read_rows(records: list[dict]) -> list[str]:
    """Windows of a MUSDB18 ``.stem.mp4``: jaxsep's reader, stempeg's, and the same window as a
    WAV (tools/bench_stem_reads.py); median seconds per window."""
    rows = [
        "### MUSDB18 `.stem.mp4` windows: `jaxsep.audio.streams` vs stempeg (and WAV)\n",
        "| signals | device | jaxsep s | stempeg s | WAV s | jaxsep s, 4 stems | "
        "stempeg s, 4 stems | speedup over stempeg (1 / 4 stems) | max abs diff | load | git |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        median = r.get("median_s", {})
        rows.append(
            f"| {r.get('signals')} | {r.get('device')} | {_num(median.get('jaxsep'), 4)} | "
            f"{_num(median.get('stempeg'), 4)} | {_num(median.get('wav_soundfile'), 4)} | "
            f"{_num(median.get('jaxsep_4_stems'), 4)} | {_num(median.get('stempeg_4_stems'), 4)} "
            f"| {_num(r.get('speedup'), 3)} / {_num(r.get('speedup_4_stems'), 3)} | "
            f"{r.get('max_abs_diff', float('nan')):.1e} | {_load(r)} | {r.get('git_revision')} |"
        )
    return rows


def _compile_cache_rows(records: list[dict]) -> list[str]:
    """Fresh `jaxsep` processes compiling every program, filling an empty persistent cache, and
    loading from a warm one (tools/bench_compile_cache.py); median wall seconds."""
    rows = [
        "### Persistent compile cache: fresh `jaxsep` processes, wall seconds\n",
        "| commands | device | train: off | cold | warm | warm / off | separate: off | cold | "
        "warm | warm / off | cached programs, MB | load | git |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        cells = [
            _num(r.get(f"{command}_{way}"), 3)
            for command in ("train", "sep")
            for way in ("off_s", "cold_s", "warm_s", "warm_over_off")
        ]
        rows.append(
            f"| {r.get('what')} | {r.get('device')} | {' | '.join(cells)} | "
            f"{r.get('cache_programs', '–')}, {_num(r.get('cache_mb'))} | {_load(r)} | "
            f"{r.get('git_revision')} |"
        )
    return rows


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between the bench-table markers of `readme` with `table`."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table}{END}{tail}")
