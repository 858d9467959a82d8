"""`jaxsep bench`: both frameworks compute the same function on every model, the harness writes
complete JSONL records, and the table generator renders them. No test looks at a time."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from jaxsep import host_memory
from jaxsep.bench import flops, torch_side
from jaxsep.bench.cases import MODELS, build_case
from jaxsep.bench.harness import cpu_model_name, cpu_name_from_cpuinfo
from jaxsep.bench.runner import bench_model, max_rel_error, run_bench
from jaxsep.bench.table import END, START, read_records, render_table, update_readme
from jaxsep.bench.weights import load_jax_variables
from jaxsep.compile_options import donate_train_state
from jaxsep.errors import JaxsepError

# PyTorch eager only where torch.compile is not the point: the harness checks JAX against the
# eager twin either way, and on a GPU (where compile is a default variant) its compile time would
# dominate these tests
EAGER = ("eager",)
REQUIRED = (
    "speedup", "speedup_min", "speedup_paired", "jax_median_s", "jax_min_s", "jax_max_s", "torch_median_s",
    "torch_min_s", "torch_max_s", "compile_s", "examples_per_s", "audio_seconds_per_s",
    "torch_examples_per_s", "jax_version", "torch_version", "git_revision", "device", "command",
    "load_avg_start", "flops_per_example", "parity_max_rel_err", "reps", "torch_cudnn_benchmark",
)  # fmt: skip


@pytest.mark.parametrize("model", MODELS)
def test_each_model_runs_both_frameworks_and_records(model, tmp_path):
    out = tmp_path / "r.jsonl"
    records = run_bench(
        model,
        size="tiny",
        reps=1,
        warmup=0,
        out=out,
        command="t",
        log=str,
        torch_variants=EAGER,
    )
    assert {r["mode"] for r in records} == {"train", "infer"}
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(saved) == len(records) == 2
    for r in saved:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, missing
        assert r["model"] == model and r["size"] == "tiny" and r["command"] == "t"
        assert r["host_malloc"] == ("retain" if host_memory.retaining() else "system")
        assert r["parity_max_rel_err"] <= 1e-4
        assert r["speedup"] == pytest.approx(r["torch_median_s"] / r["jax_median_s"])
        assert r["speedup_paired"] == pytest.approx(r["speedup"])  # one round: the same ratio
        assert r["examples_per_s"] == pytest.approx(r["batch_size"] / r["jax_median_s"])
        assert r["audio_seconds_per_s"] == pytest.approx(
            r["examples_per_s"] * r["audio_seconds_per_example"]
        )
        assert r["jax_min_s"] <= r["jax_median_s"] <= r["jax_max_s"]
        assert r["compile_s"] > 0 and r["flops_per_example"] > 0
    train = next(r for r in saved if r["mode"] == "train")
    # as jaxsep's trainer: donated on accelerators, not on CPU (compile_options)
    assert train["jax_donated_state"] is donate_train_state(jax.default_backend())
    infer = next(r for r in saved if r["mode"] == "infer")
    assert infer["jax_infer_layout_s"] >= 0  # the weights laid out once for inference
    # Adam steps changed the weights in both frameworks (they train, not just run).
    for side in ("jax", "torch"):
        assert np.isfinite(train[f"{side}_last_loss"])
        assert train[f"{side}_last_loss"] != train[f"{side}_first_loss"]
    if model in ("vqvae", "vggish"):  # no dropout: the first training losses agree too
        assert train["parity_train_loss_rel_err"] <= 1e-4
    for r in saved:  # XLA's counts (the roofline's inputs) for the loop-free models only
        if model in ("vqvae", "vggish"):
            assert r["jax_bytes_accessed"] > 0
            # XLA counts the model's work (within a few %; the VQ distances are not in flops.py)
            assert r["jax_xla_flops"] == pytest.approx(
                r["flops_per_example"] * r["batch_size"], rel=0.1
            )
        else:
            assert r["jax_xla_flops"] is None and r["jax_bytes_accessed"] is None
        on_gpu = r["peak_flops"] is not None and r["peak_bandwidth"] is not None
        assert (r["jax_roofline_fraction"] is not None) is (on_gpu and model in ("vqvae", "vggish"))


def test_donated_train_state_is_threaded_through_the_timed_steps(monkeypatch):
    """As on an accelerator: the step donates its state, so every timed call must pass on the
    state the previous one returned (a reused donated buffer is an error)."""
    import jaxsep.bench.jax_side as jax_side

    monkeypatch.setattr(jax_side, "donate_train_state", lambda platform: True)
    records = bench_model("umx", size="tiny", reps=3, warmup=1, torch_variants=EAGER)
    train = next(r for r in records if r["mode"] == "train")
    assert train["jax_donated_state"] is True and train["reps"] == 3
    assert train["jax_last_loss"] != train["jax_first_loss"]


def test_parity_check_catches_a_different_torch_network(monkeypatch):
    import jaxsep.bench.cases as cases

    case = build_case("umx", "tiny")
    with torch.no_grad():  # a slightly wrong weight in the twin: a different function
        case.torch_module.vocals.fc2.weight.mul_(1.01)
    monkeypatch.setattr(cases, "build_case", lambda *args, **kwargs: case)
    with pytest.raises(JaxsepError, match="outputs differ"):
        bench_model("umx", size="tiny", reps=1, warmup=0, torch_variants=EAGER)


def test_weight_mapping_rejects_an_incomplete_twin():
    case = build_case("vggish", "tiny")
    variables = {"params": dict(case.variables["params"])}
    del variables["params"]["fc2"]
    with pytest.raises(JaxsepError, match="missing"):
        load_jax_variables(case.torch_module, variables)


def test_max_rel_error_on_trees():
    a = {"x": np.ones(3), "y": np.array([2.0, 4.0])}
    b = {"x": np.ones(3), "y": np.array([2.0, 3.0])}
    assert max_rel_error(a, b) == pytest.approx(0.25)
    with pytest.raises(JaxsepError, match="shapes differ"):
        max_rel_error(np.ones(2), np.ones(3))


def test_stated_flops_match_reference_perf_numbers():
    from jaxsep.models.vqvae import VQVAEConfig

    # reference/perf.md §3: X-UMX 6 s -> 18.4 GFLOP fwd; VQ-VAE L0 W64/D8 -> 610 GFLOP train.
    fwd = flops.xumx_forward_flops(4, 259, 1487, 2, 512, 3, 2049)
    assert fwd == pytest.approx(2 * 8_863_744 * 4 * 259)
    config = VQVAEConfig(levels=1, downs_t=(3,), strides_t=(2,), multipliers=(2,))
    enc, dec, vq = flops.vqvae_level0_macs(config, 393216)
    assert enc / 1e9 == pytest.approx(48.17, abs=0.01)
    assert dec / 1e9 == pytest.approx(51.41, abs=0.01)
    assert vq == 49152 * 2048 * 64
    assert flops.chimera_forward_flops(1250, 257, 500, 4, 20, 4) == pytest.approx(68.0e9, rel=1e-3)
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "tf32") == 495e12
    assert flops.peak_flops("NVIDIA H100 PCIe", "fp32") == 51.2e12  # a different part
    assert flops.peak_flops("cpu", "fp32") is None
    assert flops.peak_bandwidth("NVIDIA H100 80GB HBM3") == 3.35e12
    assert flops.peak_bandwidth("NVIDIA H100 PCIe") == 2.0e12
    assert flops.peak_bandwidth("NVIDIA H200") == 4.8e12
    assert flops.peak_bandwidth("NVIDIA A100-SXM4-80GB") == 2.039e12
    assert flops.peak_bandwidth("NVIDIA A100-SXM4-40GB") == 1.555e12
    assert flops.peak_bandwidth("AMD EPYC") is None
    # 1 TFLOP and 10 GB on a 100 TFLOP/s, 1 TB/s device: memory-bound, 10 ms
    assert flops.roofline_seconds(1e12, 10e9, 100e12, 1e12) == pytest.approx(0.01)
    assert flops.roofline_seconds(1e12, 1e9, 100e12, 1e12) == pytest.approx(0.01)  # compute
    assert flops.roofline_seconds(1e12, 1e9, None, 1e12) is None


def test_records_the_roofline_bound_from_xla_counts_on_known_gpus():
    """A memory-bound step: 1 TFLOP and 10 GB per call on a 100 TFLOP/s, 1 TB/s device is
    bounded at 10 ms; measured at 20 ms it runs at 50% of its roofline."""
    from types import SimpleNamespace

    from jaxsep.bench.runner import _mode_record
    from jaxsep.bench.table import render_table

    case = SimpleNamespace(
        model="vqvae", size="paper", batch_size=4, audio_seconds=8.9, train_flops=2.5e11,
        forward_flops=0.8e11, notes="", xla_cost_is_complete=True,
    )  # fmt: skip
    stats = {"median_s": 0.02, "min_s": 0.019, "max_s": 0.03, "reps": 10}
    side = {
        "variant": "xla", "train": stats, "train_seconds": [0.02] * 10, "first_loss": 1.0,
        "last_loss": 0.5, "compile_s": 1.0, "train_xla_cost": {"flops": 1e12, "bytes_accessed": 1e10},
    }  # fmt: skip
    record = _mode_record(case, "train", side, dict(side, variant="eager"), 100e12, 1e12)
    assert record["jax_roofline_s"] == pytest.approx(0.01)
    assert record["jax_roofline_fraction"] == pytest.approx(0.5)
    record |= {"device_slug": "h100", "bench": "model", "threads": None, "precision": "fp32"}
    assert "| 50% |" in render_table([record])
    unknown = _mode_record(case, "train", side, dict(side, variant="eager"), None, None)
    assert unknown["jax_roofline_fraction"] is None and unknown["jax_bytes_accessed"] == 1e10


def test_cpu_name_carries_the_widest_vector_extension():
    avx512 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 avx512f\n"
    assert cpu_name_from_cpuinfo(avx512) == "AMD EPYC (AVX-512)"
    avx2 = "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 avx512_bf16_like\n"
    assert cpu_name_from_cpuinfo(avx2) == "AMD EPYC (AVX2)"  # a flag name only starting alike
    arm = "model name\t: Neoverse\nFeatures\t: fp asimd sve\n"
    assert cpu_name_from_cpuinfo(arm) == "Neoverse (SVE)"
    assert cpu_name_from_cpuinfo("model name\t: Mystery\n") == "Mystery"
    assert cpu_name_from_cpuinfo("flags\t: avx2\n") is None


def test_pipeline_bench_and_table(tmp_path):
    model = {
        "bench": "model", "model": "xumx", "mode": "train", "size": "tiny", "batch_size": 2,
        "jax_variant": "scan", "torch_variant": "eager", "threads": None, "precision": "fp32",
        "device_slug": "cpu", "device": cpu_model_name(), "jax_median_s": 0.5, "jax_min_s": 0.4,
        "jax_max_s": 0.9, "torch_median_s": 1.0, "torch_min_s": 0.8, "torch_max_s": 1.5,
        "speedup": 2.0, "speedup_min": 2.0, "examples_per_s": 4.0, "audio_seconds_per_s": 1.0,
        "timestamp": "2026-01-01T00:00:00+00:00", "load_avg_start": [3.5, 3.0, 2.0],
    }  # fmt: skip
    chimera = {**model, "model": "chimera", "examples_per_s": 2.0}
    # another CPU host's faster step (same folder, same setting) is not this host's consumer
    other_host = {**model, "device": "other cpu (AVX-512)", "examples_per_s": 40.0}
    path = tmp_path / "cpu" / "xumx.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in (model, chimera, other_host)))
    records = run_bench("pipeline", size="tiny", out=path, command="t", log=str)
    modes = [(r["pipeline"], r["augment"], r["workers"]) for r in records]
    assert modes == [
        ("xumx", "off", 0), ("xumx", "gain_swap", 0), ("chimera", "off", 0),
        ("chimera", "incoherent", 0), ("chimera", "pitch_stretch", 0),
    ]  # fmt: skip
    for r in records:
        assert r["examples_per_s"] > 0
        consumer, rate = ("xumx", 4.0) if r["pipeline"] == "xumx" else ("chimera", 2.0)
        assert r["train_examples_per_s"] == {consumer: rate}  # read back from saved results
        assert r["headroom"][consumer] == pytest.approx(r["examples_per_s"] / rate)

    old = {  # a record from before the ChimeraNet pipeline: no "pipeline" field, X-UMX's
        "bench": "pipeline", "device_slug": "cpu", "device": cpu_model_name(), "size": "tiny",
        "augment": "off", "workers": 0, "threads": None, "batch_size": 2, "examples_per_s": 1.0,
        "audio_seconds_per_s": 1.0,
        "train_examples_per_s": {}, "headroom": {}, "timestamp": "2000-01-01T00:00:00+00:00",
    }  # fmt: skip
    (tmp_path / "cpu" / "pipeline.jsonl").write_text(json.dumps(old) + "\n")
    table = render_table(read_records([tmp_path]))
    assert (
        "| xumx | train | tiny | 2 | default | scan | eager | 0.5 (0.4–0.9) | 1 (0.8–1.5) | 2 |"
        in table
    )
    # each CPU host keeps its own section: a rerun elsewhere does not replace its rows
    assert f"### cpu: {cpu_model_name()} (" in table and "### cpu: other cpu (AVX-512) (" in table
    assert table.count("| xumx | train | tiny | 2 | default | scan | eager |") == 2
    assert table.count("| xumx | synthetic | tiny | 2 | off | 0 |") == 1  # rerun replaced old
    assert "| chimera | synthetic | tiny | 2 | pitch_stretch | 0 |" in table
    assert "chimera 2" in table.split("| chimera | synthetic | tiny | 2 | pitch_stretch")[1]
    bss = {"bench": "bsseval", "signals": "s", "device": "d", "jax_s": 1.0, "museval_s": 22.0,
           "speedup": 22.0, "max_abs_diff_db": 1e-13, "git_revision": "abc"}  # fmt: skip
    (tmp_path / "cpu" / "bsseval.jsonl").write_text(json.dumps(bss) + "\n")
    table = render_table(read_records([tmp_path]))
    assert "### ?" not in table  # a BSSEval record is not a device of its own
    assert "| s | d | 1 | 22 | 22 | 1.0e-13 | – | abc |" in table
    cache = {"bench": "compile_cache", "what": "w", "device": "d", "git_revision": "abc"}
    cache |= {"train_off_s": 20.0, "train_cold_s": 21.0, "train_warm_s": 8.0}
    cache |= {"train_warm_over_off": 0.4, "sep_off_s": 6.0, "sep_cold_s": 6.0, "sep_warm_s": 4.5}
    (tmp_path / "cpu" / "compile_cache.jsonl").write_text(
        json.dumps(cache | {"sep_warm_over_off": 0.75}) + "\n"
    )
    table = render_table(read_records([tmp_path]))
    assert "| w | d | 20 | 21 | 8 | 0.4 | 6 | 6 | 4.5 | 0.75 | –, – | – | abc |" in table

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nstale table\n{END}\nouttro\n")
    result = subprocess.run(
        [sys.executable, "tools/bench_table.py", str(tmp_path / "cpu"), "--readme", str(readme)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = readme.read_text()
    assert "stale table" not in text and "| xumx | train |" in text
    assert text.startswith("intro\n") and text.endswith("outtro\n")
    with pytest.raises(ValueError, match="markers"):
        update_readme(path, table)


def test_bad_options_raise_one_line_errors(tmp_path):
    with pytest.raises(JaxsepError, match="unknown model"):
        run_bench("resnet", out=tmp_path / "x.jsonl")
    with pytest.raises(JaxsepError, match="torch-variants"):
        run_bench("vggish", torch_variants=("compile",), out=tmp_path / "x.jsonl")
    jax.devices()  # the backend is up, so the thread count can no longer change
    with pytest.raises(JaxsepError, match="--threads must be set before JAX starts"):
        run_bench("vggish", threads=1, out=tmp_path / "x.jsonl")
    with pytest.raises(JaxsepError, match="batch-size"):
        build_case("vggish", "tiny", batch_size=0)
    assert not (tmp_path / "x.jsonl").exists()
    with pytest.raises(JaxsepError, match="--precision must be one of fp32, tf32, bf16"):
        run_bench("vggish", precision="fp16", out=tmp_path / "x.jsonl")
    # a typo in a variant name used to fall back silently to the default variants
    with pytest.raises(JaxsepError, match="--jax-variants takes names from .*, got scna"):
        run_bench("umx", jax_variants=("scna",), out=tmp_path / "x.jsonl")
    with pytest.raises(JaxsepError, match="--workers takes worker counts >= 0 .*, got 0,-1"):
        run_bench("pipeline", pipeline_workers=(0, -1), out=tmp_path / "x.jsonl")
    with pytest.raises(JaxsepError, match="--data is the pipeline's corpus; 'xumx' reads none"):
        run_bench("xumx", pipeline_data=tmp_path, out=tmp_path / "x.jsonl")
    with pytest.raises(JaxsepError, match="nowhere: not a folder"):
        run_bench("pipeline", pipeline_data=tmp_path / "nowhere", out=tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_bf16_records_each_frameworks_error_against_float32(tmp_path):
    """bf16: float32 parity first, then each side's bf16 output scored against float32."""
    out = tmp_path / "cpu" / "chimera.jsonl"
    records = run_bench(
        "chimera",
        size="tiny",
        precision="bf16",
        reps=1,
        warmup=0,
        out=out,
        log=str,
        torch_variants=EAGER,
    )
    for r in records:
        assert r["precision"] == "bf16"
        assert r["parity_max_rel_err"] <= 1e-4  # the float32 functions are the same
        assert 0 < r["lowp_rel_l2_jax"] < 1e-2  # bfloat16 rounding, measurable and small
        assert 0 < r["lowp_rel_l2_torch"] < 1e-2  # torch.autocast rounds too
        assert r["torch_kernels"] == torch_side.torch_kernels("bf16", torch.device("cpu"))
    table = render_table(read_records([tmp_path]))
    assert ", bf16, git" in table and "Accuracy of bf16 against float32" in table
    assert f"| chimera | tiny | 2 | {records[0]['lowp_rel_l2_jax']:.1e} |" in table


@pytest.mark.parametrize("onednn_has_bf16_rnn", [True, False])
def test_torch_bf16_falls_back_to_native_kernels_where_onednn_has_no_bf16_rnn(
    onednn_has_bf16_rnn, monkeypatch
):
    """Without AVX-512, oneDNN cannot build a bf16 LSTM; the bench then runs PyTorch's native
    kernels under autocast (recorded) instead of failing."""
    monkeypatch.setattr(torch_side, "_onednn_runs_bf16_rnn", lambda: onednn_has_bf16_rnn)
    cpu = torch.device("cpu")
    kernels = torch_side.torch_kernels("bf16", cpu)
    assert (kernels == "default") == onednn_has_bf16_rnn
    assert torch_side.torch_kernels("fp32", cpu) == "default"
    linear = torch.nn.Linear(4, 3)
    with torch_side.autocast("bf16", cpu):
        assert linear(torch.ones(2, 4)).dtype == torch.bfloat16  # autocast still on
        assert torch.backends.mkldnn.enabled == onednn_has_bf16_rnn
    assert torch.backends.mkldnn.enabled  # restored
    if not onednn_has_bf16_rnn:  # the native path runs an LSTM on any CPU
        with torch_side.autocast("bf16", cpu):
            out, _ = torch.nn.LSTM(4, 4)(torch.ones(3, 2, 4))
        assert out.shape == (3, 2, 4)


def test_a_broken_low_precision_path_stops_the_bench(monkeypatch):
    import jaxsep.bench.cases as cases

    case = build_case("umx", "tiny")
    program = case.jax_program

    def broken(variant, dtype):  # bf16 output off by 30%: a bug, not rounding
        infer, loss = program(variant, dtype)
        if dtype == "float32":
            return infer, loss
        return (lambda v, x: 1.3 * infer(v, x)), loss

    case.jax_program = broken
    monkeypatch.setattr(cases, "build_case", lambda *args, **kwargs: case)
    with pytest.raises(JaxsepError, match="bf16 output is .* away from float32"):
        bench_model("umx", size="tiny", reps=1, warmup=0, precision="bf16", torch_variants=EAGER)
    with torch.no_grad():  # and the float32 comparison still guards the function itself
        case.torch_module.vocals.fc2.weight.mul_(1.01)
    case.jax_program = program
    with pytest.raises(JaxsepError, match="float32 JAX .* outputs differ"):
        bench_model("umx", size="tiny", reps=1, warmup=0, precision="bf16", torch_variants=EAGER)


def test_bf16_runs_only_the_lstm_backends_that_compute_in_bf16(monkeypatch):
    import jaxsep.bench.cases as cases

    case = build_case("umx", "tiny")
    case.jax_variants = ("scan", "cudnn")  # as on a GPU; cuDNN's LSTM is float32 only
    monkeypatch.setattr(cases, "build_case", lambda *args, **kwargs: case)
    records = bench_model(
        "umx", size="tiny", reps=1, warmup=0, precision="bf16", torch_variants=EAGER
    )
    assert {r["jax_variant"] for r in records} == {"scan"}


def test_jax_leaves_the_gpu_memory_it_does_not_use_to_pytorch(tmp_path):
    """Before JAX starts, the bench turns off its 75% preallocation (one process, two
    frameworks); a value the user set is kept, and once JAX runs nothing changes."""
    import os

    code = (
        "import os; from jaxsep.bench.runner import share_device_memory; share_device_memory(); "
        "print(os.environ.get('XLA_PYTHON_CLIENT_PREALLOCATE'))"
    )
    for preset, expected in ((None, "false"), ("true", "true")):
        env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
        if preset is not None:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = preset
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        assert result.stdout.strip() == expected
    from jaxsep.bench.runner import share_device_memory

    jax.devices()  # this process's backend is up: too late to change, so it is left alone
    before = os.environ.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    try:
        share_device_memory()
        assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ
    finally:
        if before is not None:
            os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = before


def test_vqvae_remat_variant_runs_on_request_and_computes_the_same_step():
    """`--jax-variants remat`: residual stacks under jax.checkpoint (by default on GPUs only)."""
    case = build_case("vqvae", "tiny")
    by_default = jax.default_backend() == "gpu"
    assert set(case.jax_variants + case.on_request_jax_variants) == {"xla", "remat"}
    assert ("remat" in case.jax_variants) is by_default
    params = case.variables["params"]
    state = {"codebook": case.variables["codebook"]}
    args = (params, state, case.inputs, case.target, jax.random.key(0))
    losses = {}
    for variant in ("xla", "remat"):
        _, loss = case.jax_program(variant, "float32")
        grad = jax.grad(lambda p, *rest, loss=loss: loss(p, *rest)[0])
        assert ("remat" in str(jax.make_jaxpr(grad)(*args))) == (variant == "remat")
        losses[variant] = float(loss(*args)[0])
    assert losses["remat"] == pytest.approx(losses["xla"], rel=1e-6)
    records = bench_model(
        "vqvae", size="tiny", reps=1, warmup=0, jax_variants=["remat"], torch_variants=EAGER
    )
    assert {r["jax_variant"] for r in records} == {"remat"}
    assert all(r["parity_max_rel_err"] <= 1e-4 for r in records)


def test_revision_is_dirty_for_code_edits_not_for_appended_results(tmp_path, monkeypatch):
    """Every bench run appends to benchmarks/results/, which must not mark the next record
    "+dirty"; an edit to the code must."""
    from jaxsep.bench import harness

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "x.jsonl").write_text("{}\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(harness, "REPO_ROOT", tmp_path)
    clean = harness.git_revision()
    assert len(clean) == 12 and not clean.endswith("+dirty")
    (tmp_path / "benchmarks" / "results" / "x.jsonl").write_text("{}\n{}\n")
    assert harness.git_revision() == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert harness.git_revision() == clean + "+dirty"


def test_benches_run_without_librosa_musdb_and_museval(tmp_path):
    """GPU hosts lack librosa, musdb and museval: the model and pipeline benches must not need
    them (librosa only for pitch-shift / time-stretch, musdb and museval only for data/scores)."""
    code = f"""
import sys
for name in ("librosa", "musdb", "museval", "stempeg"):
    sys.modules[name] = None  # any import of them raises ImportError
from pathlib import Path
from jaxsep.bench.runner import run_bench
out = Path({str(tmp_path / "r.jsonl")!r})
model = run_bench("umx", size="tiny", reps=1, warmup=0, out=out, command="t", log=str)
pipeline = run_bench("pipeline", size="tiny", out=out, command="t", log=str)
ran = [r for r in model + pipeline if not r.get("error")]
failed = [(r["pipeline"], r["augment"], r["error"]) for r in pipeline if r.get("error")]
print(len(model), len(ran), all(r["examples_per_s"] > 0 for r in ran))
print(failed)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    counts, failed = result.stdout.strip().splitlines()[-2:]
    assert counts.split() == ["2", "6", "True"]  # 2 model records, 4 of 5 pipeline modes
    # the one mode that needs librosa says so in its record instead of stopping the bench
    assert failed.startswith("[('chimera', 'pitch_stretch', 'pitch-shift / time-stretch need")
    assert "librosa" in failed


def test_table_names_the_revision_of_every_row():
    """Rows re-measured at a later revision sit beside older ones: each row says its own."""
    base = {
        "bench": "model", "mode": "train", "size": "cpu", "batch_size": 2, "jax_variant": "scan",
        "torch_variant": "eager", "threads": 1, "precision": "fp32", "device_slug": "cpu",
        "device": "test cpu", "jax_median_s": 0.5, "torch_median_s": 1.0, "speedup": 2.0,
    }  # fmt: skip
    records = [
        {**base, "model": "xumx", "git_revision": "128abf3619ce", "timestamp": "1"},
        {**base, "model": "chimera", "git_revision": "5780872df7b2", "timestamp": "2"},
    ]
    table = render_table(records)
    assert "fp32, git 128abf3619ce, 5780872df7b2)" in table
    rows = [line for line in table.splitlines() if line.startswith("| xumx") or "| chimera" in line]
    assert rows[0].endswith("| 128abf3 |") and rows[1].endswith("| 5780872 |")


def test_pipeline_reads_train_rates_from_the_device_results_folder(tmp_path, monkeypatch):
    """A GPU session runs the pipeline in a later call, with `-o` to a fresh file: the train
    rates come from the records its earlier call left in benchmarks/results/<device>/."""
    import jaxsep.bench.runner as runner

    monkeypatch.setattr(runner, "RESULTS_ROOT", tmp_path / "results")
    earlier = {
        "bench": "model", "model": "chimera", "mode": "train", "size": "tiny", "threads": None,
        "examples_per_s": 3.0, "device_slug": "cpu", "device": cpu_model_name(),
    }  # fmt: skip
    (tmp_path / "results" / "cpu").mkdir(parents=True)
    (tmp_path / "results" / "cpu" / "fp32.jsonl").write_text(json.dumps(earlier) + "\n")
    records = run_bench("pipeline", size="tiny", out=tmp_path / "new.jsonl", log=str)
    chimera = [r for r in records if r["pipeline"] == "chimera"]
    assert chimera and all(r["train_examples_per_s"] == {"chimera": 3.0} for r in chimera)
    assert all(r["train_examples_per_s"] == {} for r in records if r["pipeline"] == "xumx")


def test_full_size_xumx_tool_records_train_step_and_separation_rtf(run_record_tool):
    """tools/bench_xumx_cpu.py (the GPU session's 3-minute-track RTF) runs and records."""
    args = ("--seconds", "7", "--reps", "1", "--batch-size", "1")
    record = run_record_tool("bench_xumx_cpu", *args)
    assert record["track_seconds"] == 7.0 and record["separator_batch_size"] == 1
    # both fields are rounded (rtf to 4 decimals, separate_s to 3): the bound of the two roundings
    rounding = 0.5e-4 + 0.5e-3 / 7.0
    assert abs(record["rtf"] - record["separate_s"] / 7.0) <= rounding * (1 + 1e-9)
    assert record["train_step_s_batch1x6s"] > 0 and record["platform"] == jax.default_backend()
    assert record["git_revision"] and "--seconds 7" in record["command"]
