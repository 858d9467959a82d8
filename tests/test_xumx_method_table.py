"""tools/xumx_method_table.py table writer on a fake result set (the four training runs take
~30 CPU-minutes: they are run by hand, results in benchmarks/xumx_methods_tiny/)."""

import pytest


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("xumx_method_table")


def _result(method, bass_values, loss):
    rows = [
        {
            "track": f"t{i}",
            "sdr": {"bass": value, "drums": value + 1.0},
            "mixture_sdr": {"bass": -4.0 - i, "drums": -6.0},
        }
        for i, value in enumerate(bass_values)
    ]
    return {
        "method": method,
        "steps": 300,
        "batch": 4,
        "seconds": 2.0,
        "train_wall_s": 123.4,
        "final_eval_loss": loss,
        "rows": rows,
    }


def test_table_has_the_mixture_baseline_and_one_row_per_method_with_medians(tool):
    results = [_result("baseline", [1.0, 2.0, 9.0], 0.5), _result("conreg", [0.0, 3.0, 4.0], None)]
    text = tool.table(results, {"songs": 16, "seconds": 12.0, "seed": 0}, vggish_dir="")
    lines = text.splitlines()
    assert "| mixture as estimate | -5.00 | -6.00 | -5.50 | – | – |" in lines  # medians
    assert "| baseline | 2.00 | 3.00 | 2.50 | 0.5 | 123 |" in lines
    assert "| conreg | 3.00 | 4.00 | 3.50 | – | 123 |" in lines
    assert "300 steps of batch 4 x 2 s" in text and "3 test songs" in text
    assert "random init" in text  # says the embedding was not pre-trained
    converted = tool.table(results, {"songs": 16, "seconds": 12.0, "seed": 0}, vggish_dir="/v")
    assert "converted weights from `/v`" in converted
