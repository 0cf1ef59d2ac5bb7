"""Seconds and peak memory of the refacing cascade: training steps of both stages and sampling.

    python benchmarks/bench_refacing.py [--reference benchmarks/reference/refacing.json]
                                        [--save FILE]
    PYTHONPATH=src python benchmarks/bench_refacing.py --gpu [--variants fp32 bf16 ...]
                                        [--cases stage1 stage2 sample] [--cudnn-benchmark]
                                        [--save FILE]

On a GPU machine: besides torch with CUDA, numpy and PyYAML it needs MONAI and einops, which a
bare torch machine lacks (install them from wheels, without dependencies:
``pip install monai==1.6.1 einops --no-deps``), and the package ``defaceaudit`` importable
(``PYTHONPATH=src`` from the repository root; it need not be installed). Snakemake is not
needed: without it the config defaults are read from the schema itself. Without a CUDA device
``--gpu`` exits with code 2.

CPU (default): the demo's networks and settings (the schema defaults of ``reface``, as
``defaceaudit.config.validate_config({})`` fills them; printed at the top of the output) at the
demo size, a 77x109x90 grid at 2.5 mm padded as ``diffusion.volumes.padded_shape`` gives it for
the configured downsampling factor. Per stage, the mean seconds of one training step (over 5
steps after 2 warm-up steps, the config's batch size; stage 2 on the configured ``slab_patch``
in-plane crops and, when those are smaller than the grid, on whole slabs as well) and the peak
resident memory; then one subject refaced by ``cascade.sample_cascade`` with the default
sampling settings: seconds, peak memory and the seconds spent in each stage's network.

GPU (``--gpu``): config_paper.yaml on top of the defaults (its paper-scale networks) on a 1 mm
256^3 head (stage 1 on 64^3 at factor 4; stage 2 on crops of 256x256x8 slabs and on whole ones),
in the variants fp32, bf16 autocast, bf16 + channels_last_3d and bf16 + torch.compile (every
network, as the pipeline's ``build_unet`` builds it, uses PyTorch's fused attention: no explicit
tokens x tokens matrix, which at the 8192 tokens of a whole stage-2 slab's lowest level is what
would fill the memory). For each: training-step seconds and peak GPU memory
(``torch.cuda.max_memory_allocated``, and the allocator's reserve ``max_memory_reserved``, each
case in its own process) of both stages with config_paper.yaml's batch size, and the seconds to
reface one 256^3 head with 10, 25 and 50 DDIM steps (50: config_paper.yaml), timed between
``torch.cuda.synchronize()`` calls after a 1-step warm-up (each stage's share from CUDA events,
without synchronising per call). The goals are printed beside the figures: a 256^3 head refaced
in 10 s or less on one H100, judged on the variants the pipeline runs (fp32, and bf16: its
default ``reface.sampling.bf16``), training peak memory 40 GB (GiB) or less.

Sampling cost depends on the region to generate: with paste-back stage 2 samples only the window
around it (``cascade.generation_window``). Here that region is a box, :data:`FACE_BOX`: the
anterior 40 % of the grid below 45 % of its height, full width.

Each case runs in a fresh subprocess (this script with ``--child``), its allocator set up as a
workflow job's (``benchlib.job_allocator``; ``DEFACEAUDIT_MALLOC_TUNING=0`` keeps glibc's defaults),
so its peak memory is its own: VmHWM (peak resident set; unlike ru_maxrss not inherited across exec)
on the CPU, the CUDA allocator's peak on the GPU. The baseline (Python with torch, MONAI and the
package imported, nothing run; its seconds are the import time) is measured the same way. Random
tensors in [-1, 1] of the right shapes and randomly initialised networks stand in for heads and
trained weights (the timings depend on neither). A training step is the one of
``diffusion.train.train``: zero_grad, x0 loss (under bf16 autocast when the variant says so),
backward, gradient clipping, AdamW step, EMA update; drawing batches from the training pairs is not
included. The figures are printed side by side with a reference run (the JSON of an earlier run,
committed); ``--save FILE`` writes this run's figures into FILE, replacing the entries of the same
name and keeping the others (so CPU and GPU figures, and GPU runs split by ``--variants`` or
``--cases``, share one reference file). Each row also records the 1-minute load average: other work
on the machine slows the CPU figures.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import benchlib

ROOT = Path(__file__).resolve().parent.parent
DEMO_SHAPE = (77, 109, 90)  # the demo grid at 2.5 mm (config.yaml)
HEAD_SHAPE = (256, 256, 256)  # a 1 mm head
VARIANTS = ("fp32", "bf16", "bf16_channels_last", "bf16_compile")
#: the variants the pipeline runs: reface.sampling.bf16 false and true (its default); the
#: goals apply to their rows only (channels_last_3d and torch.compile are not in the pipeline)
PIPELINE_VARIANTS = {"fp32": "reface.sampling.bf16: false", "bf16": "the pipeline's default"}
GPU_SAMPLING_STEPS = (10, 25, 50)
GOAL_SECONDS = 10.0  # reface a 256^3 head on one H100
GOAL_TRAIN_MB = 40 * 1024.0  # training peak GPU memory, 40 GiB
WARMUP_STEPS = 2
TIMED_STEPS = 5
#: the region to generate when sampling, as fractions of the grid: the voxels in front of
#: FACE_BOX[0] of Y and below FACE_BOX[1] of Z, all of X
FACE_BOX = (0.6, 0.45)
IMPORT_HINT = (
    "needs MONAI and einops (pip install monai==1.6.1 einops --no-deps) and the package "
    "defaceaudit importable (PYTHONPATH=src)"
)


# -- configuration -----------------------------------------------------------------------------


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _schema_defaults(node: dict, root: dict):
    """What a JSON-schema validator with ``set_default`` fills into an absent value of ``node``
    (used only where Snakemake, whose validator the package uses, is not installed)."""
    if "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if "properties" in node:
        out = copy.deepcopy(node.get("default", {}))
        for key, sub in node["properties"].items():
            value = _schema_defaults(sub, root)
            if value is not None and key not in out:
                out[key] = value
        return out
    return copy.deepcopy(node.get("default"))


def reface_config(paper: bool) -> dict:
    """The resolved ``reface`` section: schema defaults, with config_paper.yaml on top when
    ``paper``."""
    import yaml

    from defaceaudit.config import schema_path, validate_config

    config = yaml.safe_load((ROOT / "config_paper.yaml").read_text()) if paper else {}
    try:
        return validate_config(config)["reface"]
    except ImportError:  # no Snakemake (e.g. a bare GPU machine): fill the defaults here
        schema = yaml.safe_load(Path(schema_path()).read_text())
        defaults = _schema_defaults(schema["properties"]["reface"], schema)
        return _deep_merge(defaults, config.get("reface", {}))


def padded(config: dict, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    from defaceaudit.reface.unet import required_multiple
    from defaceaudit.reface.volumes import padded_shape

    return padded_shape(
        shape,
        int(config["downsample_factor"]),
        required_multiple(config["stage1"]["network"]["channels"]),
        required_multiple(config["stage2"]["network"]["channels"]),
    )


# -- one case, in a fresh process --------------------------------------------------------------


def child(spec: dict) -> dict:
    """Run one case; returns ``{row suffix: {"seconds": ..., ...}}``."""
    start = time.perf_counter()
    import torch

    from defaceaudit.devices import bf16_autocast
    from defaceaudit.reface.cascade import (
        SamplingSettings,
        diffusion_loss,
        generation_window,
        sample_cascade,
    )
    from defaceaudit.reface.schedule import DiffusionSchedule
    from defaceaudit.reface.slabs import SLAB_SIZE, slab_starts
    from defaceaudit.reface.train import EMA
    from defaceaudit.reface.unet import required_multiple, unet_from_config

    if spec["case"] == "baseline":
        return {"": {"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}}
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = bool(spec["cudnn_benchmark"])
        torch.cuda.reset_peak_memory_stats(device)
    variant = spec["variant"]
    bf16 = variant.startswith("bf16")
    channels_last = variant == "bf16_channels_last"
    compiled = variant == "bf16_compile"
    config = spec["config"]
    factor = int(config["downsample_factor"])
    grid = tuple(spec["grid"])
    low_grid = tuple(n // factor for n in grid)
    # the pipeline's attack (reface.attack): the region as one more input channel, and the
    # region weighted up in the loss
    attack = config.get("attack", {})
    mask = int(bool(attack.get("mask_channel", False)))
    weighted = float(attack.get("region_weight", 1.0)) != 1.0
    torch.manual_seed(0)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def unit(shape) -> torch.Tensor:
        x = torch.rand(shape, device=device) * 2.0 - 1.0
        return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x

    def network(stage: int) -> torch.nn.Module:
        cfg = {
            **config[f"stage{stage}"]["network"],
            "in_channels": (2 if stage == 1 else 3) + mask,  # x_t + conditions (+ region)
            "out_channels": 1,
        }
        model = unet_from_config(cfg).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last_3d)
        return model

    if spec["case"] == "train":
        stage = int(spec["stage"])
        settings = config[f"stage{stage}"]["training"]
        batch = int(settings["batch_size"])
        model = network(stage).train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
        )
        ema = EMA(model, decay=settings["ema_decay"], warmup=settings["ema_warmup"])
        # static shapes: an automatic recompilation with symbolic shapes failed in inductor
        # (ValueRangeError, torch 2.13 on the CPU); every shape here is fixed anyway
        net = torch.compile(model, dynamic=False) if compiled else model
        if stage == 1:
            spatial, cond_channels = low_grid, 1 + mask
        else:  # a slab, or an in-plane crop of one (slab_patch), as stage2_batches cuts them
            patch = int(spec["patch"])
            inplane = (min(patch, grid[0]), min(patch, grid[1])) if patch > 0 else grid[:2]
            spatial, cond_channels = (*inplane, SLAB_SIZE), 2 + mask
        data = {"x0": unit((batch, 1, *spatial)), "cond": unit((batch, cond_channels, *spatial))}
        if weighted:  # stage2_batches' weights: 1 outside the region, region_weight inside
            data["weight"] = (
                1.0
                + (float(attack["region_weight"]) - 1.0) * (unit((batch, 1, *spatial)) > 0).float()
            )
        loss_fn = diffusion_loss(DiffusionSchedule(**config["schedule"]))
        generator = torch.Generator(device=device).manual_seed(0)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with bf16_autocast(bf16):
                loss = loss_fn(net, data, generator)
            loss.backward()
            if settings["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
            optimizer.step()
            ema.update(model)

        for _ in range(spec["warmup"]):
            step()
        times = []
        for _ in range(spec["repeats"]):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
        return {
            "": {
                "seconds": sum(times) / len(times),
                "seconds_min": min(times),
                "batch": [batch, 1 + cond_channels, *spatial],
                "parameters": sum(p.numel() for p in model.parameters()),
                "threads": torch.get_num_threads(),
            }
        }

    # sampling one subject with the whole cascade
    nets = []
    for stage in (1, 2):
        model = network(stage).eval().requires_grad_(False)
        nets.append(torch.compile(model, dynamic=False) if compiled else model)
    seconds = {"stage1": 0.0, "stage2": 0.0}
    events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def timed(net, key: str):
        """Each network call's time per stage: CUDA events on a GPU (no synchronisation per
        call, so the GPU runs as in the pipeline; summed after the sample), else the clock."""

        def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if cuda:
                begin, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                begin.record()
                out = net(x, t)
                end.record()
                events.append((key, begin, end))
                return out
            t0 = time.perf_counter()
            out = net(x, t)
            seconds[key] += time.perf_counter() - t0
            return out

        return call

    def collect_events() -> None:
        for key, begin, end in events:
            seconds[key] += begin.elapsed_time(end) / 1000.0
        events.clear()

    stage1, stage2 = timed(nets[0], "stage1"), timed(nets[1], "stage2")
    schedule = DiffusionSchedule(**config["schedule"])
    defaced = unit((1, 1, *grid))
    keep = torch.ones((1, 1, *grid), dtype=torch.bool, device=device)
    front, below = int(FACE_BOX[0] * grid[1]), int(FACE_BOX[1] * grid[2])
    keep[..., front:, :below] = False  # the removed region: anterior, inferior, full width
    multiple = required_multiple(config["stage2"]["network"]["channels"])
    window = generation_window(keep[0, 0].cpu(), multiple)

    def sample(steps: int) -> None:
        settings = SamplingSettings(**{**config["sampling"], "steps": steps})
        with bf16_autocast(bf16):
            sample_cascade(
                stage1,
                stage2,
                schedule,
                schedule,
                defaced,
                keep,
                factor,
                settings,
                multiple=multiple,
                mask_channels=(bool(mask), bool(mask)),
            )

    sample(1)  # warm-up: every network input shape once (and compilation)
    sync()
    events.clear()
    rows = {}
    for steps in spec["sampling_steps"]:
        seconds.update(stage1=0.0, stage2=0.0)
        sync()
        t0 = time.perf_counter()
        sample(steps)
        sync()
        total = time.perf_counter() - t0
        collect_events()
        rows[f"{steps} steps"] = {
            "seconds": total,
            "stage1_seconds": seconds["stage1"],
            "stage2_seconds": seconds["stage2"],
            "grid": list(grid),
            "stage1_grid": list(low_grid),
            "stage2_window": [w.stop - w.start for w in window],
            "slabs": len(slab_starts(window[2].stop - window[2].start)),
            "slab_batch": int(config["sampling"]["slab_batch"]),
            "threads": torch.get_num_threads(),
        }
    return rows


def child_main(arg: str) -> None:
    spec = json.loads(arg)
    malloc = benchlib.job_allocator()
    rows = child(spec)
    fields = benchlib.memory_fields(cuda=spec.get("device", "cpu").startswith("cuda"))
    fields["malloc"] = malloc
    for row in rows.values():
        row.update(fields)
    print(json.dumps(rows))


# -- the parent --------------------------------------------------------------------------------


def cpu_cases(config: dict) -> list[tuple[str, dict]]:
    base = {
        "device": "cpu",
        "variant": "fp32",
        "config": config,
        "grid": padded(config, DEMO_SHAPE),
        "warmup": WARMUP_STEPS,
        "repeats": TIMED_STEPS,
    }
    # each case on its rule's threads, as the workflow runs the job
    train = {**base, "threads": benchlib.rule_threads("train_stage1")}
    sample = {**base, "threads": benchlib.rule_threads("sample_refaced")}
    return [
        ("cpu demo_2p5mm baseline", {**base, "case": "baseline"}),
        ("cpu demo_2p5mm stage1 train step", {**train, "case": "train", "stage": 1}),
        *stage2_cases(
            "cpu demo_2p5mm", {**base, "threads": benchlib.rule_threads("train_stage2")}, config
        ),
        (
            "cpu demo_2p5mm sample",
            {**sample, "case": "sample", "sampling_steps": [int(config["sampling"]["steps"])]},
        ),
    ]


def stage2_cases(prefix: str, base: dict, config: dict) -> list[tuple[str, dict]]:
    """Stage-2 training on the configured in-plane crops and, when those are smaller than the
    grid, on whole slabs too."""
    patch = int(config.get("slab_patch", 0))
    spec = {**base, "case": "train", "stage": 2}
    cases = [(f"{prefix} stage2 train step", {**spec, "patch": patch})]
    if 0 < patch < max(base["grid"][:2]):
        cases.append((f"{prefix} stage2 train step whole slabs", {**spec, "patch": 0}))
    return cases


def gpu_cases(config: dict, variants: list[str], which: list[str], cudnn_benchmark: bool):
    steps = sorted({*GPU_SAMPLING_STEPS, int(config["sampling"]["steps"])})
    base = {
        "device": "cuda",
        "config": config,
        "grid": padded(config, HEAD_SHAPE),
        "warmup": WARMUP_STEPS,
        "repeats": TIMED_STEPS,
        "cudnn_benchmark": cudnn_benchmark,
    }
    cases = [("gpu head_1mm_256 baseline", {**base, "case": "baseline", "variant": "fp32"})]
    for variant in variants:
        prefix = f"gpu head_1mm_256 {variant}"
        if "stage1" in which:
            spec = {**base, "case": "train", "stage": 1, "variant": variant}
            cases.append((f"{prefix} stage1 train step", spec))
        if "stage2" in which:
            cases += stage2_cases(prefix, {**base, "variant": variant}, config)
        if "sample" in which:
            spec = {**base, "case": "sample", "variant": variant, "sampling_steps": steps}
            cases.append((f"{prefix} sample", spec))
    return cases


def describe(config: dict, shape: tuple[int, int, int]) -> None:
    grid = padded(config, shape)
    factor = int(config["downsample_factor"])
    print(f"head {'x'.join(map(str, shape))}, padded grid {'x'.join(map(str, grid))}, ", end="")
    print(f"stage-1 grid {'x'.join(str(n // factor) for n in grid)} (factor {factor})")
    for stage in (1, 2):
        net = config[f"stage{stage}"]["network"]
        print(
            f"  stage {stage}: channels {net['channels']}, attention {net['attention_levels']}, "
            f"res blocks {net['num_res_blocks']}, "
            f"batch {config[f'stage{stage}']['training']['batch_size']}"
        )
    patch = int(config.get("slab_patch", 0))
    print(f"  stage 2 trains on {f'{patch}x{patch} in-plane crops of ' if patch else ''}slabs")
    sampling = config["sampling"]
    print(f"  sampling: {sampling['steps']} DDIM steps, slab_batch {sampling['slab_batch']}")
    print(
        f"  region to generate: the front {1 - FACE_BOX[0]:.0%} x bottom {FACE_BOX[1]:.0%}, "
        "full width (stage 2 samples the window around it)"
    )


def _goal(key: str, row: dict) -> str:
    """The goal's verdict for a GPU row: training peak memory, or seconds to reface a head for
    the variants the pipeline runs (:data:`PIPELINE_VARIANTS`)."""
    if not key.startswith("gpu") or "baseline" in key:
        return ""
    if "train step" in key:
        return "met" if row["peak_mb"] <= GOAL_TRAIN_MB else "MISSED"
    if not any(f" {variant} " in f" {key} " for variant in PIPELINE_VARIANTS):
        return "(not in pipeline)"
    return "met" if row["seconds"] <= GOAL_SECONDS else "MISSED"


def print_table(results: dict, reference: dict, gpu: bool) -> None:
    nan = benchlib.NAN
    width = 50
    print(benchlib.table_header(width) + ("  goal" if gpu else ""))
    for key, row in results.items():
        ref = reference.get(key, {})
        print(
            benchlib.table_row(key, row, reference, width)
            + (f"  {_goal(key, row)}" if gpu and "error" not in row else "")
        )
        if "error" in row:
            continue
        for stage in (1, 2):
            name = f"stage{stage}_seconds"
            if name in row:
                label = f"  of which stage-{stage} network"
                if stage == 2 and "stage2_window" in row:
                    window = "x".join(map(str, row["stage2_window"]))
                    label += f" ({window}, {row['slabs']} slabs)"
                print(f"{label:<{width}} {row[name]:>9.2f} {'':>9} | {ref.get(name, nan):>8.2f}")
    if gpu:
        print(
            f"goals: reface a 256^3 head in <= {GOAL_SECONDS:.0f} s on one H100 (sample rows; "
            f"the config samples with the largest step count); training peak GPU memory "
            f"<= {GOAL_TRAIN_MB / 1024:.0f} GB (GiB, train-step rows)"
        )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference", type=Path, default=Path(__file__).parent / "reference" / "refacing.json"
    )
    parser.add_argument("--save", type=Path, default=None)
    parser.add_argument(
        "--gpu", action="store_true", help="paper-scale networks on a 256^3 head, on CUDA"
    )
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=("stage1", "stage2", "sample"),
        default=["stage1", "stage2", "sample"],
        help="GPU cases to run (each variant); the CPU run always runs all",
    )
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="GPU: torch.backends.cudnn.benchmark = True (the pipeline leaves it off)",
    )
    args = parser.parse_args()
    torch = benchlib.import_torch(
        "bench_refacing", "defaceaudit.reface.unet", IMPORT_HINT, args.gpu, also=("einops",)
    )

    config = reface_config(paper=args.gpu)
    if args.gpu:
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, config_paper.yaml")
        describe(config, HEAD_SHAPE)
        cases = gpu_cases(config, args.variants, args.cases, args.cudnn_benchmark)
    else:
        print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}, demo defaults")
        describe(config, DEMO_SHAPE)
        cases = cpu_cases(config)
    reference = benchlib.load_reference(args.reference)
    results: dict = {}
    for prefix, spec in cases:
        for suffix, row in benchlib.run_child(__file__, spec, error_key="").items():
            results[f"{prefix} {suffix}".strip()] = row
    print()
    print_table(results, reference, args.gpu)
    if args.save:
        benchlib.save_merged(args.save, results)


if __name__ == "__main__":
    main()
