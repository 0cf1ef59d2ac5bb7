"""The GPU benchmark's cases (benchmarks/bench_refacing.py --gpu) run end to end on the CPU at a
toy size, so that a GPU session finds them working: fp32, bf16 autocast and channels_last_3d
(the networks use MONAI's fused attention, as the pipeline's), each for a stage-1 and a stage-2
training step and a cascade sample; and the goal applies to the variants the pipeline runs.
(bf16 + torch.compile also runs on the CPU, with ``dynamic=False``, but compiling takes a
minute: it is left to the benchmark.)"""

from __future__ import annotations

import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_refacing as bench  # noqa: E402 - the benchmark's cases, one implementation


@pytest.mark.parametrize("variant", ["fp32", "bf16", "bf16_channels_last"])
@pytest.mark.slow
def test_gpu_benchmark_cases_run_on_the_cpu(variant):
    config = bench.reface_config(paper=False)
    grid = bench.padded(config, (24, 24, 24))
    base = {
        "device": "cpu",
        "variant": variant,
        "config": config,
        "grid": grid,
        "warmup": 1,
        "repeats": 1,
        "cudnn_benchmark": False,
    }
    cases = [
        {"case": "train", "stage": 1},
        {"case": "train", "stage": 2, "patch": 0},
        {"case": "sample", "sampling_steps": [2]},
    ]
    for case in cases:
        rows = bench.child({**base, **case})
        assert rows and all(row["seconds"] > 0 for row in rows.values()), (case, rows)
        if case["case"] == "train":  # x_t, the conditions and the pipeline's region channel
            assert config["attack"]["mask_channel"]
            assert rows[""]["batch"][1] == (2 if case["stage"] == 1 else 3) + 1
    assert rows["2 steps"]["grid"] == list(grid) and rows["2 steps"]["slabs"] >= 1


def test_the_sampling_goal_is_judged_on_the_pipelines_variants_only():
    fast, slow = {"seconds": 4.0}, {"seconds": 40.0}
    assert bench._goal("gpu head_1mm_256 bf16 sample 50 steps", fast) == "met"
    assert bench._goal("gpu head_1mm_256 fp32 sample 50 steps", slow) == "MISSED"
    assert bench._goal("gpu head_1mm_256 bf16_compile sample 50 steps", fast) == (
        "(not in pipeline)"
    )
    assert bench._goal("gpu head_1mm_256 bf16_compile stage1 train step", {"peak_mb": 1.0}) == "met"
