"""Data-parallel runs over torch.distributed (gloo, 2 processes on the CPU) give the loss of
one process over the whole batch (SPEC §1: ECF sums and counts are additive)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import spectral_kernels as sk

WORLD = 2


def _problem():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(203, 6, generator=gen, dtype=torch.float64)
    real_y = torch.arange(203) % 3
    syn = torch.randn(12, 6, generator=gen, dtype=torch.float64)
    syn_y = torch.arange(12) % 3
    t = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    return real, real_y, syn, syn_y, t


def _losses(real, real_y, syn, syn_y, t, group):
    """Values and gradients (syn, t) of ncfd, sdd and csdm."""
    out = {}
    fns = {
        "ncfd": lambda s, f: sk.ncfd(real, s, f, real_y, syn_y, num_classes=3, real_group=group),
        "sdd": lambda s, f: sk.sdd(real, s, real_y, syn_y, t=f, num_classes=3, real_group=group),
        "csdm": lambda s, f: sk.csdm(real, s, real_y, syn_y, class_counts=[90, 70, 43], t=f, real_group=group),
    }
    for name, fn in fns.items():
        s, f = syn.clone().requires_grad_(True), t.clone().requires_grad_(True)
        value = fn(s, f)
        value.backward()
        out[name] = (value.detach(), s.grad, f.grad)
    return out


def _worker(rank, init_file, result_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    real, real_y, syn, syn_y, t = _problem()
    out = _losses(real[rank::WORLD], real_y[rank::WORLD], syn, syn_y, t, dist.group.WORLD)
    torch.save(out, os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_process_losses_and_gradients_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    single = _losses(*_problem(), group=None)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name, (value, grad_syn, grad_t) in single.items():
        for out in ranks:
            torch.testing.assert_close(out[name][0], value, rtol=1e-12, atol=1e-14)
            # The synthetic set is replicated: every process gets the whole gradient.
            torch.testing.assert_close(out[name][1], grad_syn, rtol=1e-10, atol=1e-14)
        # t's gradient is split over the shards; averaging over processes (as DDP does) gives it.
        torch.testing.assert_close(sum(out[name][2] for out in ranks) / WORLD, grad_t, rtol=1e-10, atol=1e-14)


def _cli(args, out, torchrun):
    cmd = (
        # --standalone: torchrun picks a free port itself (a fixed one may be taken on a shared runner).
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD)]
        if torchrun
        else [sys.executable]
    )
    cmd += ["-m", "spectral_kernels.cli", "distill", *args, "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "iteration" in row]  # not the rows recording each phase's device


@pytest.mark.parametrize("method", ["csdm", "ncfm", "csdm with the ncfm recipe"])
def test_torchrun_distill_matches_one_process(tmp_path, method):
    args = [
        "--dataset",
        "digits-lt",
        "--method",
        method.split()[0],
        "--ipc",
        "2",
        "--iterations",
        "3",
        "--width",
        "16",
        "--batch-real",
        "16",
        "--num-freqs",
        "128",
        "--num-eval",
        "0",
        "--quiet",
    ]
    if method == "ncfm":
        args.append("--learned-sampler")
    if method.endswith("recipe"):  # pool trained by rank 0 (once: cached), interpolated nets, calibration, AdamW
        args += ["--recipe", "ncfm", "--net-pool", "2", "--pool-epochs", "1", "--lr", "0.01"]
    one = _cli(args, tmp_path / "one", torchrun=False)
    two = _cli(args, tmp_path / "two", torchrun=True)
    assert len(one) == len(two) == 3
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=1e-4, atol=1e-7)
    images_one = torch.load(tmp_path / "one" / "synthetic.pt")["images"]
    images_two = torch.load(tmp_path / "two" / "synthetic.pt")["images"]
    # Sharded float32 sums round differently; where a pixel's gradient is ~0, Adam's normalised
    # step (about lr = 0.01 per iteration) can then take the other sign. So: nearly all pixels
    # agree closely, and none differs by more than those steps could move it.
    diff = (images_two - images_one).abs()
    assert diff.mean() < 1e-4 and diff.max() <= 2 * 0.01 * 3, (float(diff.mean()), float(diff.max()))


def test_pairwise_methods_refuse_to_run_data_parallel(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(WORLD),
        "-m",
        "spectral_kernels.cli",
        "distill",
        "--method",
        "dm",
        "--iterations",
        "1",
        "--num-eval",
        "0",
        "--quiet",
        "--out",
        str(tmp_path / "dm"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "cannot run data-parallel" in done.stderr
