"""Seconds and peak memory of training the radiodensity ResNet10 (paper section 3.3).

    python benchmarks/bench_radiodensity.py [--reference benchmarks/reference/radiodensity.json]
                                            [--save FILE]
    PYTHONPATH=src python benchmarks/bench_radiodensity.py --gpu [--variants fp32 bf16]
                                            [--save FILE]

CPU (default): the demo size, face crops of 34 x 15 x 44 voxels (6 mm), 32 training rows of 16
subjects and 12 validation rows (the demo: 32 and 11), batch size 4:
``radiodensity.train.fit_radiodensity`` itself runs 3 epochs (MONAI ResNet10, 14.4 M
parameters, random initialisation, AdamW) and the row gives the mean seconds of epochs 2 and 3
(epoch 1 carries the one-off costs; an epoch is 32 subject-balanced draws in 8 steps plus the
validation predictions) and the peak resident memory.

GPU (``--gpu``): the paper size, 201 x 87 x 261 crops at 1 mm, batch size 8, in float32 and with
bf16 autocast: the mean seconds of one training step (zero_grad, forward, MSE, backward, fused
AdamW step, as in ``fit_radiodensity``; 5 steps after 2 warm-up steps, timed between
``torch.cuda.synchronize()`` calls) and the CUDA allocator's peak (``max_memory_allocated``).
Needs torch with CUDA, MONAI and the package importable (``PYTHONPATH=src``); without a CUDA
device ``--gpu`` exits with code 2.

Each case runs in a fresh subprocess (this script with ``--child``), its allocator set up as a
workflow job's (``benchlib.job_allocator``; ``DEFACEAUDIT_MALLOC_TUNING=0`` keeps glibc's defaults),
so its peak memory is its own: VmHWM (peak resident set; unlike ``ru_maxrss`` not inherited across
exec) on the CPU. The baseline row (Python with torch, MONAI and the package imported, nothing run;
its seconds are the import time) is measured the same way. Random crops stand in for faces (the
timings do not depend on the values). The figures are printed beside a reference run (the committed
JSON of an earlier run); ``--save FILE`` merges this run's rows into FILE. Each row records the
1-minute load average: other work on the machine slows the CPU figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import benchlib

DEMO_SHAPE = (34, 15, 44)  # 6 mm crops (config.yaml)
DEMO_BATCH = 4
DEMO_TRAIN_ROWS = 32  # the demo's 18 training subjects have 32 visits (config.yaml)
DEMO_VALIDATION_ROWS = 12  # the demo has 11; here every subject has 2 rows
DEMO_EPOCHS = 3
PAPER_SHAPE = (201, 87, 261)  # 1 mm crops, paper Figure S2
PAPER_BATCH = 8
VARIANTS = ("fp32", "bf16")
WARMUP_STEPS = 2
TIMED_STEPS = 5
IMPORT_HINT = "needs torch, MONAI and the package defaceaudit importable (PYTHONPATH=src)"


def child(spec: dict) -> dict:
    """Run one case in this process; returns its row."""
    start = time.perf_counter()
    import numpy as np
    import torch

    from defaceaudit.devices import bf16_autocast
    from defaceaudit.radiodensity.model import resnet10
    from defaceaudit.radiodensity.train import fit_radiodensity

    if spec["case"] == "baseline":
        return {"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}
    if spec["case"] == "epoch":
        rng = np.random.default_rng(0)
        n = DEMO_TRAIN_ROWS + DEMO_VALIDATION_ROWS
        crops = rng.normal(size=(n, *DEMO_SHAPE)).astype(np.float32)
        subjects = [f"s{i // 2}" for i in range(n)]
        splits = ["train"] * DEMO_TRAIN_ROWS + ["validation"] * DEMO_VALIDATION_ROWS
        settings = {
            "epochs": DEMO_EPOCHS,
            "batch_size": DEMO_BATCH,
            "learning_rate": 1e-4,
            "weight_decay": 1e-4,
            "patience": DEMO_EPOCHS,
            "seed": 0,
            "device": "cpu",
        }
        _, history, _ = fit_radiodensity(crops, rng.normal(size=n), subjects, splits, settings)
        later = history["seconds"].iloc[1:]
        return {
            "seconds": float(later.mean()),
            "first_epoch_seconds": float(history["seconds"].iloc[0]),
            "crop": list(DEMO_SHAPE),
            "batch": DEMO_BATCH,
            "train_rows": DEMO_TRAIN_ROWS,
            "validation_rows": DEMO_VALIDATION_ROWS,
            "threads": torch.get_num_threads(),
        }
    # GPU training step at the paper size
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = False
    torch.cuda.reset_peak_memory_stats(device)
    bf16 = spec["variant"] == "bf16"
    torch.manual_seed(0)
    model = resnet10().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randn(PAPER_BATCH, 1, *PAPER_SHAPE, device=device)
    y = torch.randn(PAPER_BATCH, device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with bf16_autocast(bf16):
            pred = model(x).float().squeeze(1)
        torch.nn.functional.mse_loss(pred, y).backward()
        optimizer.step()

    for _ in range(WARMUP_STEPS):
        step()
    times = []
    for _ in range(TIMED_STEPS):
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return {
        "seconds": sum(times) / len(times),
        "seconds_min": min(times),
        "batch": [PAPER_BATCH, 1, *PAPER_SHAPE],
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def child_main(arg: str) -> None:
    spec = json.loads(arg)
    malloc = benchlib.job_allocator()
    row = child(spec)
    row.update(benchlib.memory_fields(cuda=spec["case"] == "step"), malloc=malloc)
    print(json.dumps(row))


def print_table(results: dict, reference: dict) -> None:
    width = 44
    print(benchlib.table_header(width))
    for key, row in results.items():
        print(benchlib.table_row(key, row, reference, width))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path(__file__).parent / "reference" / "radiodensity.json",
    )
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument("--gpu", action="store_true", help="paper-size crops on CUDA")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    torch = benchlib.import_torch(
        "bench_radiodensity", "defaceaudit.radiodensity.model", IMPORT_HINT, args.gpu
    )
    if args.gpu:
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
        print(
            f"ResNet10 training step, crops {'x'.join(map(str, PAPER_SHAPE))}, batch {PAPER_BATCH}"
        )
        cases = [("gpu paper_1mm baseline", {"case": "baseline"})]
        cases += [
            (f"gpu paper_1mm {v} train step", {"case": "step", "variant": v}) for v in args.variants
        ]
    else:
        print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
        print(
            f"ResNet10 training epoch, crops {'x'.join(map(str, DEMO_SHAPE))} (6 mm), "
            f"{DEMO_TRAIN_ROWS} training rows, {DEMO_VALIDATION_ROWS} validation rows, "
            f"batch {DEMO_BATCH}"
        )
        threads = benchlib.rule_threads("fit_radiodensity")  # as the workflow runs the job
        cases = [
            ("cpu demo_6mm baseline", {"case": "baseline"}),
            ("cpu demo_6mm train epoch", {"case": "epoch", "threads": threads}),
        ]
    reference = benchlib.load_reference(args.reference)
    results = {name: benchlib.run_child(__file__, spec) for name, spec in cases}
    print()
    print_table(results, reference)
    if args.save:
        benchlib.save_merged(args.save, results)


if __name__ == "__main__":
    main()
