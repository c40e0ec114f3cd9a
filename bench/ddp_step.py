"""Seconds per training step at world size 1 and 2 (torchrun, gloo on the CPU, or NCCL with --device cuda).

    .venv/bin/python bench/ddp_step.py [--cfg lite] [--resolution 64] [--batch 8] [--steps 4] [--threads 2]

Makes a small synthetic dataset in a temporary folder, then runs `torchrun --nproc_per_node N -m core.cli train`
for each world size with the same global batch and reads the step times from the run's log.jsonl (the first step,
which renders and caches the mesh conditions, is left out). On one CPU the processes share its cores: each gets
threads / N, so the figure shows the cost of the split and the all-reduce, not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(world_size: int, data: Path, outdir: Path, args) -> list:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS=str(max(1, args.threads // world_size)), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world_size}",
               "-m", "core.cli", "train", "--data", str(data), "--outdir", str(outdir), "--cfg", args.cfg,
               "--batch", str(args.batch), "--kimg", str(args.steps * args.batch / 1000), "--snap", "1000",
               "--device", args.device, "--no-progress"]
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (outdir / "log.jsonl").read_text().splitlines()]
    return [r["sec_per_step"] for r in records if "sec_per_step" in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", default="lite")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="global batch, the same at every world size")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads shared by the processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--world-sizes", default="1,2")
    args = parser.parse_args()

    from core.training.synthetic import builtin_head_sampler, generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_dataset(data, count=max(8, args.batch), resolution=args.resolution, seed=0,
                         sampler=builtin_head_sampler())
        print(f"{args.cfg} at {args.resolution} px, global batch {args.batch}, {args.steps} steps, {args.device}, "
              f"{args.threads} threads in all; load average before: {os.getloadavg()[0]:.2f}")
        for world_size in (int(w) for w in args.world_sizes.split(",")):
            t0 = time.perf_counter()
            times = run(world_size, data, Path(tmp) / f"run{world_size}", args)
            steady = times[1:] or times
            print(f"world size {world_size}: {statistics.median(steady):.3f} s/step median of steps 2-{len(times)} "
                  f"({args.batch / statistics.median(steady):.2f} img/s; first step {times[0]:.3f} s; "
                  f"{max(1, args.threads // world_size)} threads per process; whole run "
                  f"{time.perf_counter() - t0:.1f} s; load average now {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
