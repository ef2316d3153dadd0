"""Compile every Triton kernel variant ahead of time for Hopper (sm_90), with no GPU, and report
what the compiler made of it: registers, stack frame, shared memory, spill instructions and the
tensor-core instructions in the machine code (cuobjdump of the cubin Triton builds).

    python benchmarks/triton_resources.py              # table -> benchmarks/results/triton_resources_sm90.md
    python benchmarks/triton_resources.py --json       # one JSON line per variant (tests/test_triton_compile.py)
    python benchmarks/triton_resources.py --quick      # the first autotune config only
    python benchmarks/triton_resources.py --json --sorf  # the SORF kernels at every launchable D

Static figures, not timings: they say whether a configuration spills or fits in shared memory,
and whether tf32 products reach the wgmma instructions (HGMMA in SASS). Run without
TRITON_INTERPRET (the interpreter never compiles).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("triton_resources.py compiles kernels: run it without TRITON_INTERPRET=1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from spectral_kernels.ops import triton_common as tc  # noqa: E402
from spectral_kernels.ops import triton_ecf as te  # noqa: E402
from spectral_kernels.ops import triton_hadamard as th  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
SORF_PRECISIONS = ("tf32", "ieee")
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
OUT = Path(__file__).resolve().parent / "results" / "triton_resources_sm90.md"
H100_SHARED_PER_BLOCK = 227 * 1024  # the opt-in maximum per thread block on sm_90
# (x pointer type, sums/W pointer type, accumulator, tl.dot precision)
VARIANTS = [
    ("*fp32", "*fp32", tl.float32, "tf32"),
    ("*fp32", "*fp32", tl.float32, "ieee"),
    ("*bf16", "*fp32", tl.float32, "tf32"),
    ("*fp16", "*fp32", tl.float32, "ieee"),
    ("*fp64", "*fp64", tl.float64, "ieee"),
]


def _signature(kernel: str, x_type: str, acc_ptr: str, consts: dict) -> dict:
    common = {"x_ptr": x_type, "t_ptr": x_type}
    tail = {"stride_x": "i32", "stride_t": "i32", **{k: "constexpr" for k in consts}}
    if kernel == "forward":
        return {
            **common,
            "perm_ptr": "*i64",
            "item_start_ptr": "*i64",
            "item_end_ptr": "*i64",
            "partial_ptr": acc_ptr,
            "M": "i32",
            "D": "i32",
            **tail,
        }
    return {
        **common,
        "row_class_ptr": "*i64",
        "grad_ptr": acc_ptr,
        "w_ptr": acc_ptr,
        "num_rows": "i32",
        "M": "i32",
        "D": "i32",
        **tail,
    }


def _machine_code_stats(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run(
            [str(CUOBJDUMP), "-res-usage", f.name], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run([str(CUOBJDUMP), "-sass", f.name], capture_output=True, text=True, check=True).stdout
    regs, stack = re.search(r"REG:(\d+) STACK:(\d+)", usage).groups()
    code = [
        (int(addr, 16), op, rest)
        for addr, op, rest in re.findall(r"^\s+/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(.*)$", sass, re.M)
    ]
    ops = collections.Counter(op for _, op, _ in code)
    return {
        "registers": int(regs),
        "stack_bytes": int(stack),
        "spill_stores": ops["STL"],
        "spill_loads": ops["LDL"],
        "hgmma": ops["HGMMA"],
        "instructions": sum(ops.values()),
        **_k_loop(code),
    }


def _k_loop(code) -> dict:
    """STL/LDL inside the loop that does the products (the smallest loop holding at least half
    of the HGMMA, or of the FFMA/DFMA without tensor cores; an enclosing row loop holds them too):
    spills there cost every K step, spills in the epilogue once per output tile. Returns its
    spill instructions and its length in instructions (None, 0 where no loop does products)."""
    loops = []
    for addr, op, rest in code:
        target = re.search(r"0x([0-9a-f]+)", rest) if op == "BRA" else None
        if target and int(target.group(1), 16) < addr:
            loops.append((int(target.group(1), 16), addr))
    mma = (
        "HGMMA"
        if any(op == "HGMMA" for _, op, _ in code)
        else ("DFMA" if any(op == "DFMA" for _, op, _ in code) else "FFMA")
    )
    count = lambda lo, hi, names: sum(1 for a, op, _ in code if lo <= a <= hi and op in names)
    most = max((count(*loop, {mma}) for loop in loops), default=0)
    if most == 0:
        return {"k_loop_spills": None, "k_loop_instructions": 0}
    k_loop = min((loop for loop in loops if 2 * count(*loop, {mma}) >= most), key=lambda loop: loop[1] - loop[0])
    length = sum(1 for a, _, _ in code if k_loop[0] <= a <= k_loop[1])
    return {"k_loop_spills": count(*k_loop, {"STL", "LDL"}), "k_loop_instructions": length}


def compile_variant(kernel, x_type, acc_ptr, acc, precision, config, sincos) -> dict:
    fn = te._forward_kernel.fn if kernel == "forward" else te._weight_kernel.fn
    consts = {**config.kwargs, "PRECISION": precision, "ACC": acc, "SINCOS": sincos}
    compiled = triton.compile(
        ASTSource(fn, _signature(kernel, x_type, acc_ptr, consts), consts),
        target=TARGET,
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )
    return {
        "kernel": kernel,
        "x": x_type.lstrip("*"),
        "precision": precision,
        "sincos": sincos,
        "config": "{BLOCK_N}x{BLOCK_M}x{BLOCK_K}".format(**config.kwargs)
        + f" w{config.num_warps} s{config.num_stages}",
        "shared_bytes": compiled.metadata.shared,
        "wgmma_ptx": sorted(set(re.findall(r"wgmma\.mma_async\S*", compiled.asm["ptx"]))),
        **_machine_code_stats(compiled.asm["cubin"]),
    }


def reduce_kernel() -> dict:
    compiled = triton.compile(
        ASTSource(
            tc.class_reduce_kernel,
            {"partial_ptr": "*fp32", "item_offsets_ptr": "*i64", "out_ptr": "*fp32", "M": "i32", "BLOCK": "constexpr"},
            {"BLOCK": 256},
        ),
        target=TARGET,
    )
    return {
        "kernel": "class_reduce",
        "x": "fp32",
        "precision": "",
        "sincos": "",
        "config": "BLOCK 256",
        "shared_bytes": compiled.metadata.shared,
        "wgmma_ptx": [],
        **_machine_code_stats(compiled.asm["cubin"]),
    }


def ttir(kernel: str) -> str:
    """The TTIR of a dense kernel (float32, tf32, the first config), for tests that read how it
    forms its addresses."""
    fn = te._forward_kernel.fn if kernel == "forward" else te._weight_kernel.fn
    config = te.gpu_configs()[0]
    consts = {**config.kwargs, "PRECISION": "tf32", "ACC": tl.float32, "SINCOS": "reduced"}
    compiled = triton.compile(
        ASTSource(fn, _signature(kernel, "*fp32", "*fp32", consts), consts),
        target=TARGET,
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )
    return compiled.asm["ttir"]


def hadamard_variant(kernel: str, width: int, precision: str) -> dict:
    """A SORF kernel (ops/triton_hadamard.py) at block width D = width, compiled with the launch's
    own options (num_warps, num_stages: triton_hadamard.launch_options)."""
    a, b = th._factors(width)
    consts = {
        "BLOCK_N": th._block_rows(width),
        "A": a,
        "B": b,
        "PRECISION": th._dot_precision(precision),
        "SINCOS": "reduced",
    }
    common = {"x_ptr": "*fp32", "signs_ptr": "*fp32", "radii_ptr": "*fp32", "ha_ptr": "*fp32", "hb_ptr": "*fp32"}
    if kernel == "sorf_forward":
        fn, signature = (
            th._hadamard_forward_kernel,
            {
                **common,
                "perm_ptr": "*i64",
                "item_start_ptr": "*i64",
                "item_end_ptr": "*i64",
                "partial_ptr": "*fp32",
                "M": "i32",
                "D_IN": "i32",
                "NUM_BLOCKS": "i32",
            },
        )
    else:
        fn, signature = (
            th._hadamard_backward_kernel,
            {
                **common,
                "row_class_ptr": "*i64",
                "grad_ptr": "*fp32",
                "dx_ptr": "*fp32",
                "N": "i32",
                "M": "i32",
                "D_IN": "i32",
                "NUM_BLOCKS": "i32",
            },
        )
    signature.update({k: "constexpr" for k in consts})
    options = th.launch_options(width)
    compiled = triton.compile(ASTSource(fn, signature, consts), target=TARGET, options=options)
    return {
        "kernel": kernel,
        "x": "fp32",
        "precision": precision,
        "sincos": "reduced",
        "width": width,
        "config": f"D={width} ({a}x{b}) rows {consts['BLOCK_N']} w{options['num_warps']} s{options['num_stages']}",
        "shared_bytes": compiled.metadata.shared,
        "wgmma_ptx": sorted(set(re.findall(r"wgmma\.mma_async\S*", compiled.asm["ptx"]))),
        **_machine_code_stats(compiled.asm["cubin"]),
    }


def rows(quick: bool):
    configs = te._configs()[:1] if quick else te._configs()
    # Every autotune config in the main float32 variants and both sin/cos modes; the other
    # input types with the first config (they differ in the loads, and bf16/fp16 in the native
    # low-precision products, whose operand tiles take half the shared memory of float32's).
    for kernel in ("forward", "weight"):
        for i, config in enumerate(configs):
            for x_type, acc_ptr, acc, precision in VARIANTS:
                if i > 0 and x_type != "*fp32":
                    continue
                if acc == tl.float64:  # the autotuner's pruning gives float64 its own single config
                    yield compile_variant(kernel, x_type, acc_ptr, acc, precision, te.FP64_CONFIG, "libdevice")
                    continue
                for sincos in tc.SINCOS_MODES:
                    yield compile_variant(kernel, x_type, acc_ptr, acc, precision, config, sincos)
    yield reduce_kernel()
    for kernel in ("sorf_forward", "sorf_backward"):
        for width in (64, 2048) if quick else (16, 64, 128, 512, 2048):
            for precision in SORF_PRECISIONS:
                yield hadamard_variant(kernel, width, precision)


def _sorf_job(job):
    return hadamard_variant(*job)


def sorf_rows(jobs: int):
    """The SORF kernels at every block width they can be launched with, in both precisions, in
    `jobs` processes (compiles are independent; the widest take tens of seconds each)."""
    work = [
        (k, w, p) for w in th.launchable_widths() for k in ("sorf_forward", "sorf_backward") for p in SORF_PRECISIONS
    ]
    if jobs <= 1:
        yield from map(_sorf_job, work)
        return
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(_sorf_job, work)


def markdown(results: list[dict]) -> str:
    lines = [
        f"Triton {triton.__version__}, target sm_90, compiled without a GPU by `python "
        "benchmarks/triton_resources.py`.",
        "Static counts from cuobjdump: spill stores/loads are STL/LDL instructions in the code (not executions),",
        f'shared memory must stay under {H100_SHARED_PER_BLOCK // 1024} KiB per block on an H100. "Spills in K loop" '
        "counts",
        "STL/LDL inside the product loop (paid every K step); the rest sit in the per-tile epilogue, most in",
        "libdevice's large-argument sin/cos path. Autotuning times every configuration on the GPU; the first one",
        "(the one tests/test_triton_compile.py checks) must be spill-free in its K loop. float64, the gradcheck",
        "path, is not tuned: it always runs FP64_CONFIG.",
        "",
        "| kernel | x | precision | sin/cos | config | registers | stack B | shared KiB | STL | LDL | spills in K "
        "loop | HGMMA | instructions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['kernel']} | {r['x']} | {r['precision']} | {r['sincos']} | {r['config']} | {r['registers']} | "
            f"{r['stack_bytes']} "
            f"| {r['shared_bytes'] / 1024:.0f} | {r['spill_stores']} | {r['spill_loads']} | {r['k_loop_spills']} | "
            f"{r['hgmma']} | {r['instructions']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", action="store_true", help="print one JSON line per variant instead of writing the table"
    )
    parser.add_argument("--quick", action="store_true", help="only the first autotune configuration")
    parser.add_argument(
        "--sorf", action="store_true", help="only the SORF kernels, at every launchable block width and precision"
    )
    parser.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="compile processes for --sorf")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = []
    for result in sorf_rows(args.jobs) if args.sorf else rows(args.quick):
        results.append(result)
        if args.json:
            print(json.dumps(result), flush=True)
    if not args.json:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(markdown(results))
        print(markdown(results))


if __name__ == "__main__":
    main()
