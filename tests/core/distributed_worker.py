"""A training process for tests/core/test_distributed.py, started by torchrun (or run alone for world size 1).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/core/distributed_worker.py SPEC_JSON

SPEC_JSON: {"options": {TrainingOptions fields}, "grads": path (optional), "fail": {"rank", "step", "how"}
(optional)}. "grads" saves, on rank 0, each phase's gradients of the first step as averaged over the processes.
"fail" makes one process raise, be killed (SIGKILL) or hang at the start of a step: the crash the test expects the
job to survive without hanging. Both only wrap the real functions; training itself is the real code.
"""

import json
import os
import signal
import sys
import time

import torch

from core.training import loop


def record_gradients(path: str) -> None:
    averaged = []
    real = loop.average_gradients

    def average_and_record(params, world):
        params = list(params)
        real(params, world)
        if world.is_main and len(averaged) < len(loop.PHASES):
            averaged.append([None if p.grad is None else p.grad.detach().cpu().clone() for p in params])
            torch.save(averaged, path)

    loop.average_gradients = average_and_record


def inject_failure(rank: int, step: int, how: str) -> None:
    real = loop.Trainer.train_step

    def train_step(self):
        if self.world.rank == rank and self.step == step:
            if how == "raise":
                raise RuntimeError(f"injected failure on rank {rank} at step {step}")
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if how == "hang":
                # Stuck, and deaf to the stop request that torchrun's SIGTERM is for training: it ends at once
                # when torchrun stops the job, instead of at torchrun's SIGKILL 30 s later.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                time.sleep(3600)
        return real(self)

    loop.Trainer.train_step = train_step


def main() -> None:
    spec = json.loads(sys.argv[1])
    options = dict(spec["options"])
    for key in ("betas", "sample_grid"):
        if key in options:
            options[key] = tuple(options[key])
    if "grads" in spec:
        record_gradients(spec["grads"])
    if "fail" in spec:
        inject_failure(**spec["fail"])
    torch.set_num_threads(1)
    result = loop.train(loop.TrainingOptions(**options))
    print(f"rank {result.rank} finished at step {result.step}", flush=True)


if __name__ == "__main__":
    main()
