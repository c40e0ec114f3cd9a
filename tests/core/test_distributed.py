"""Data-parallel training under torchrun, on the CPU with gloo and 2 processes (core/training/distributed.py).

Two processes with half the batch each train as one process with the whole batch; a state resumes at the other
world size; a crashed, killed or stuck process stops the job with a message instead of hanging.

Tolerance. The two runs draw the same random numbers and see the same images (the RNG states after each step are
bit-equal), so what differs is only the order of float sums: a gradient summed over two half-batches, then
averaged. Step 0's gradients differ by 4e-7 to 6e-5 of their norm, depending on the phase and the data; one process
run with 1 and with 2 threads differs as much. Adam's first steps divide each gradient by its own magnitude, so
where a gradient is near zero (Adam's eps is 1e-8) rounding becomes a step of up to 2 lr: after two steps, 0.01% to
0.02% of G's elements differ by more than 1e-5 (at most 8e-5 here, 2e-3 on an 8-image dataset), D and G_ema by at
most 2e-5. The checks allow 1e-3 on gradients and Adam's moments, 1e-4 on D and G_ema, 0.1% of G's elements beyond
1e-5. Shards that draw their own noise, take contiguous rows (other minibatch-std groups) or keep their own running
mean of w fail them (gradients 0.35 and 0.05 apart, the RNG state, the running mean).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.errors import InputError
from core.training.discriminator import MinibatchStdLayer
from core.training.distributed import BatchShard, World, batch_shard, check_batch_split, world_from_env
from core.training.loop import PHASES, load_training_state
from core.training.synthetic import StandInHeadSampler, generate_dataset

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")
BATCH = 4
GRAD_RTOL = 1e-3


# ------------------------------------------------------------------------------------------------ the pieces

def test_torchrun_variables_give_the_world():
    assert world_from_env({}) == World()                                 # not under torchrun: one process
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    world = world_from_env(env)
    assert world == World(rank=1, size=2, local_rank=1) and world.distributed and not world.is_main
    with pytest.raises(InputError, match="not MASTER_ADDR.*torchrun"):
        world_from_env({k: v for k, v in env.items() if k != "MASTER_ADDR"})
    with pytest.raises(InputError, match="RANK 2 is outside"):
        world_from_env({**env, "RANK": "2"})


def test_shards_split_the_batch_into_whole_minibatch_std_groups():
    x = torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    layer = MinibatchStdLayer(group_size=2)
    whole = layer(x)
    for size in (2, 4):
        shards = [batch_shard(8, World(rank=r, size=size), mbstd_group=2) for r in range(size)]
        assert sorted(torch.cat([s.rows for s in shards]).tolist()) == list(range(8))
        for shard in shards:       # D's statistics of each shard are those of the same images in the whole batch
            assert torch.equal(layer(shard.take(x)), shard.take(whole))
    contiguous = torch.arange(4)                   # a plain split would group other images
    assert not torch.equal(layer(x[contiguous]), whole[contiguous])
    with pytest.raises(InputError, match="--batch 6 does not split evenly over the 4 processes"):
        check_batch_split(6, World(rank=0, size=4), mbstd_group=2)
    with pytest.raises(InputError, match="2 images, not a multiple of the discriminator's minibatch-std group "
                                         r"\(4\).*multiple of 8"):
        check_batch_split(4, World(rank=0, size=2), mbstd_group=4)


def test_a_shard_draws_its_rows_of_what_one_process_draws():
    shard = batch_shard(BATCH, World(rank=1, size=2), mbstd_group=2)
    torch.manual_seed(5)
    noise, u = torch.randn(BATCH, 1, 3, 3), torch.rand(BATCH * 6, 7)
    after_one_process = torch.get_rng_state()
    torch.manual_seed(5)
    with shard.random():                           # as the networks draw it: the local batch first
        local_noise = torch.randn([2, 1, 3, 3])
    local_u = shard.draw(torch.rand, (7,), torch.device("cpu"), per_sample=6)
    assert torch.equal(local_noise, shard.take(noise))
    assert torch.equal(local_u, shard.take(u.view(BATCH, 6, 7)).reshape(-1, 7))
    assert torch.equal(torch.get_rng_state(), after_one_process)       # the streams stay in step
    with shard.random(), pytest.raises(RuntimeError, match=r"randn\[5\] .* does not draw one row per sample"):
        torch.randn(5)
    with shard.random(), pytest.raises(RuntimeError, match="randint inside a data-parallel step"):
        torch.randint(3, (2,))
    whole = BatchShard.whole(BATCH)
    torch.manual_seed(5)
    assert torch.equal(whole.draw(torch.randn, (1, 3, 3), torch.device("cpu")), noise)


# ------------------------------------------------------------------------------------------------ real runs

def _launch(spec: dict, processes: int) -> subprocess.Popen:
    """The worker alone (world size 1) or under torchrun, one thread per process."""
    command = [sys.executable, str(WORKER), json.dumps(spec)]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _finish(process: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        output, _ = process.communicate()
        pytest.fail(f"the job was still running after {timeout} s:\n{output[-3000:]}")
    return output


def _run_all(*jobs, timeout: float = 240) -> None:
    """(spec, processes) pairs, run at the same time; each must succeed."""
    started = [_launch(spec, n) for spec, n in jobs]
    for process in started:
        output = _finish(process, timeout)
        assert process.returncode == 0, output[-3000:]


def _options(data, outdir, steps, **kw):
    kw.setdefault("snapshot_kimg", BATCH / 1000)
    return dict(data=str(data), outdir=str(outdir), cfg="tiny", batch_size=BATCH, mbstd_group=2,
                total_kimg=steps * BATCH / 1000, seed=3, g_reg_interval=2, d_reg_interval=2, sample_grid=[0, 0],
                progress=False, keep_states=4, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed") / "data"
    generate_dataset(root, count=4, resolution=32, seed=7, sampler=StandInHeadSampler())
    return root


@pytest.fixture(scope="module")
def pair(data):
    """Two steps in one process (a) and in two processes (b), a snapshot after each, step 0's gradients recorded."""
    base = data.parent
    _run_all(({"options": _options(data, base / "a", 2), "grads": str(base / "a.grads")}, 1),
             ({"options": _options(data, base / "b", 2), "grads": str(base / "b.grads")}, 2))
    return base


def _state(path):
    meta, tensors, extra = load_training_state(path)
    return meta, {**tensors, **{f"extra/{k}": v for k, v in extra.items()}}


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _assert_trained_alike(one: Path, other: Path) -> None:
    meta_a, a = _state(one)
    meta_b, b = _state(other)
    assert sorted(a) == sorted(b)
    assert meta_a["step"] == meta_b["step"] and meta_a["cur_nimg"] == meta_b["cur_nimg"]
    options_a, options_b = ({k: v for k, v in m["options"].items() if k != "outdir"} for m in (meta_a, meta_b))
    assert options_a == options_b                           # nothing in a state depends on the world size
    assert torch.equal(a["extra/rng.torch_cpu"], b["extra/rng.torch_cpu"])   # the same random numbers were drawn
    for prefix in ("D.", "G_ema."):
        worst = max((a[k] - b[k]).abs().max().item() for k in a if k.startswith(prefix) and a[k].is_floating_point())
        assert worst < 1e-4, (prefix, worst)
    g = torch.cat([(a[k] - b[k]).abs().flatten() for k in a if k.startswith("G.") and a[k].is_floating_point()])
    assert (g > 1e-5).float().mean().item() < 1e-3
    running_mean = [k for k in a if k.startswith("G.") and k.endswith("w_avg")]
    assert running_mean and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in running_mean)
    for prefix in ("opt_G.", "opt_D."):           # Adam's moments: the last gradient and the running squares
        for moment in (".exp_avg", ".exp_avg_sq"):
            keys = [k for k in a if k.startswith(prefix) and k.endswith(moment)]
            fa, fb = (torch.cat([t[k].flatten() for k in keys]).double() for t in (a, b))
            assert ((fa - fb).norm() / fa.norm()).item() < GRAD_RTOL, prefix + moment


def test_two_processes_train_as_one_process_with_the_whole_batch(pair):
    one, two = torch.load(pair / "a.grads"), torch.load(pair / "b.grads")
    assert len(one) == len(two) == len(PHASES)                 # step 0 runs all four phases
    for phase, g1, g2 in zip(PHASES, one, two):
        assert [g is None for g in g1] == [g is None for g in g2]
        f1 = torch.cat([g.flatten() for g in g1 if g is not None]).double()
        f2 = torch.cat([g.flatten() for g in g2 if g is not None]).double()
        assert f1.norm() > 0 and ((f1 - f2).norm() / f1.norm()).item() < GRAD_RTOL, phase
    log_a, log_b = _log(pair / "a"), _log(pair / "b")
    assert [r["event"] for r in log_b if "event" in r] == ["start", "snapshot", "snapshot", "done"]   # rank 0 alone
    assert log_b[0]["world_size"] == 2 and log_a[0]["world_size"] == 1
    steps_a, steps_b = [r for r in log_a if "event" not in r], [r for r in log_b if "event" not in r]
    assert len(steps_a) == len(steps_b) == 2
    for ra, rb in zip(steps_a, steps_b):                       # losses averaged over the processes
        for key in ("loss_G", "loss_D_real", "loss_D_fake"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), key
    assert "r1_penalty" in steps_b[0] and steps_b[0]["r1_penalty"] == pytest.approx(steps_a[0]["r1_penalty"],
                                                                                   rel=1e-4)
    for step in (1, 2):
        _assert_trained_alike(pair / "a" / f"state-{step:08d}.safetensors",
                              pair / "b" / f"state-{step:08d}.safetensors")


def test_a_state_resumes_at_the_other_world_size(pair, data):
    base = pair
    for run, source in (("two_from_one", "a"), ("one_from_two", "b")):
        (base / run).mkdir()
        shutil.copy(base / source / "state-00000001.safetensors", base / run)
    _run_all(({"options": _options(data, base / "two_from_one", 2)}, 2),
             ({"options": _options(data, base / "one_from_two", 2)}, 1))
    for run, world_size in (("two_from_one", 2), ("one_from_two", 1)):
        first = _log(base / run)[0]
        assert first["event"] == "resume" and first["step"] == 1 and first["world_size"] == world_size
        _assert_trained_alike(base / "a" / "state-00000002.safetensors", base / run / "state-00000002.safetensors")


@pytest.mark.parametrize("how", ["raise", "kill", "hang"])
def test_a_failed_process_stops_the_job_instead_of_hanging(data, tmp_path, how):
    spec = {"options": _options(data, tmp_path / "run", 3, dist_timeout_s=15),
            "fail": {"rank": 1, "step": 1, "how": how}}
    start = time.monotonic()
    process = _launch(spec, 2)
    output = _finish(process, timeout=150)
    assert process.returncode != 0
    assert time.monotonic() - start < 150
    if how == "raise":
        assert "RuntimeError: injected failure on rank 1 at step 1" in output
    elif how == "kill":
        assert "Signal 9 (SIGKILL) received by PID" in output
    else:     # rank 0 waited dist_timeout_s for rank 1, then stopped
        assert "DistributedError: Process 0 of 2 stopped while averaging gradients" in output
        assert "Timed out waiting 15000ms" in output
    # Step 0's snapshot, written by rank 0 before the failure, is there to resume from.
    assert (tmp_path / "run" / "state-00000001.safetensors").is_file()


def test_ctrl_c_to_torchrun_stops_every_process_after_the_same_step_with_a_snapshot(data, tmp_path):
    """torchrun passes a Ctrl-C (or a scheduler's SIGINT/SIGTERM) to its processes as SIGTERM: they finish the step,
    agree to stop, and rank 0 saves where they stopped."""
    run = tmp_path / "run"
    # Far more steps than can run before the signal arrives (on an idle machine 50 tiny steps finished first).
    total = 100_000
    process = _launch({"options": _options(data, run, total, snapshot_kimg=1000.0)}, 2)
    deadline = time.monotonic() + 120
    while not (run / "log.jsonl").is_file() or '"step": 1,' not in (run / "log.jsonl").read_text():
        assert process.poll() is None and time.monotonic() < deadline, "the run did not reach step 1"
        time.sleep(0.5)
    os.kill(process.pid, signal.SIGINT)                 # torchrun itself, as a terminal's Ctrl-C reaches it
    output = _finish(process, timeout=90)
    log = _log(run)
    stopped = log[-1]
    assert stopped["event"] == "stopped" and 1 <= stopped["step"] < total, output[-2000:]
    assert (run / f"state-{stopped['step']:08d}.safetensors").is_file()
    assert f"rank 1 finished at step {stopped['step']}" in output          # both processes stopped there
    assert f"rank 0 finished at step {stopped['step']}" in output
    assert output.count("Stopping after this step and saving a snapshot") == 1   # said once, by rank 0


def test_the_command_line_under_torchrun_refuses_a_batch_that_does_not_split(data, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "core.cli", "train", "--data", str(data), "--outdir", str(tmp_path / "run"),
                             "--cfg", "tiny", "--batch", "1", "--no-progress"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and all("--batch 1 does not split evenly over the 2 processes" in line for line in lines)
    assert not (tmp_path / "run").exists()
