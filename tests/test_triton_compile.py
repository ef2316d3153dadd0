import json
import os
import pathlib
import subprocess
import sys

import pytest

import spectral_kernels as sk

pytestmark = pytest.mark.skipif("triton" not in sk.available_backends(), reason="triton is not installed")


def test_triton_kernels_compile_for_hopper_and_use_tensor_cores():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = pathlib.Path(__file__).with_name("triton_aot_compile.py")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 11 and all(r["cubin_bytes"] > 0 for r in rows)
    for row in rows:
        if row["kernel"] == "class_reduce":
            continue
        # tf32 on float32/bf16 inputs must reach Hopper's tensor cores; ieee float32 cannot.
        if row["precision"] == "tf32":
            assert any(".tf32.tf32" in op for op in row["wgmma"]), row
