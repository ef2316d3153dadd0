"""Compile the Triton kernels for Hopper (sm_90) without a GPU and check the machine code: the
interpreter never compiles, so a kernel that fails to build, misses the tensor cores or spills
in its inner loop would otherwise go unnoticed until a GPU run."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import spectral_kernels as sk

pytestmark = pytest.mark.skipif("triton" not in sk.available_backends(), reason="triton is not installed")

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "triton_resources.py"


def test_triton_kernels_compile_for_hopper_use_tensor_cores_and_keep_the_k_loop_spill_free():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # The script must compile this checkout's kernels, whatever else the environment can import.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--quick"], capture_output=True, text=True, env=env, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    # forward and weight kernels: 4 float32-accumulating variants x 2 sin/cos modes + float64; the class
    # reduction; the SORF forward and backward at D = 64 and 2048 in both precisions.
    assert len(rows) == 2 * (4 * 2 + 1) + 1 + 2 * 2 * 2
    for row in rows:
        assert row["instructions"] > 0 and row["shared_bytes"] <= 227 * 1024, row
        if row["kernel"] == "class_reduce":
            continue
        if row["kernel"].startswith("sorf"):
            # The two-product transform (D = 2048 = 32 x 64) runs on tensor cores in both precisions
            # (ieee as tf32x3). The transforms' reshapes and permutes leave some local-memory traffic
            # in the block loop (sm_90, triton 3.x: 2.7-4.1% of its instructions, against ~40% for an
            # FFMA product at D = 2048): a guard against it growing, not a claim that it is zero.
            if row["config"].startswith("D=2048"):
                assert row["hgmma"] > 0 and any(".tf32.tf32" in op for op in row["wgmma_ptx"]), row
            assert row["k_loop_spills"] <= 0.06 * row["k_loop_instructions"], row
            continue
        # bf16/fp16 inputs multiply natively on Hopper's tensor cores whatever the precision (their
        # products are exact in float32); tf32 on float32 inputs must reach them too; ieee float32 cannot.
        low = {"bf16": "bf16", "fp16": "f16"}.get(row["x"])
        if low is not None:
            assert row["hgmma"] > 0 and row["wgmma_ptx"], row
            assert all(op.endswith(f".f32.{low}.{low}") for op in row["wgmma_ptx"]), row
        elif row["precision"] == "tf32":
            assert row["hgmma"] > 0 and any(".tf32.tf32" in op for op in row["wgmma_ptx"]), row
        # Spills inside the product loop cost every K step. The tensor-core loops must have none;
        # the FFMA loops of ieee float32 products hold both operands in registers, and some Triton
        # versions leave a few spill instructions there: at most 1% of the loop. float64 is the
        # gradcheck path, not tuned.
        if row["precision"] == "tf32" or low is not None:
            assert row["k_loop_spills"] == 0, row
        elif row["x"] != "fp64":
            assert row["k_loop_spills"] <= 0.01 * row["k_loop_instructions"], row


def test_autotuning_tells_precisions_apart_and_gives_float64_one_config(monkeypatch):
    import triton.language as tl

    from spectral_kernels.ops import triton_ecf as te

    # Triton keys its tuning cache by the listed arguments and the pointer dtypes only: without
    # PRECISION and SINCOS, tiles tuned for tf32 would be reused for ieee products.
    for kernel in (te._forward_kernel, te._weight_kernel):
        assert {"M", "D", "PRECISION", "SINCOS"} <= set(kernel.keys)
    monkeypatch.setattr(te, "INTERPRETED", False)
    configs = [object(), object()]
    assert te._prune_configs(configs, {}, ACC=tl.float64, PRECISION="ieee") == [te.FP64_CONFIG]
    assert te._prune_configs(configs, {}, ACC=tl.float32, PRECISION="tf32") is configs


def test_sorf_kernels_fit_hopper_shared_memory_at_every_launchable_width_with_the_launch_options():
    """The SORF kernels compiled as they launch (triton_hadamard.launch_options: num_stages set
    explicitly; Triton's default of 3 needed 200 KiB at D = 2048, ieee), at every block width D
    they take, in both precisions: each must fit H100's 227 KiB per block. Wider blocks are
    refused (t is materialised instead)."""
    import torch

    from spectral_kernels.ops import triton_hadamard as th

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", "--sorf"], capture_output=True, text=True, env=env, timeout=1800
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    compiled = {(row["kernel"], row["width"], row["precision"]) for row in rows}
    widths = th.launchable_widths()
    assert widths[0] == th.MIN_WIDTH and widths[-1] == th.MAX_WIDTH
    assert compiled == {(k, w, p) for k in ("sorf_forward", "sorf_backward") for w in widths for p in ("tf32", "ieee")}
    for row in rows:
        stages = th.launch_options(row["width"])["num_stages"]
        assert row["config"].endswith(f"s{stages}") and row["shared_bytes"] <= 227 * 1024, row
    x = torch.empty(1, 4)
    assert th.supports(x, th.MAX_WIDTH) and not th.supports(x, 2 * th.MAX_WIDTH)
