"""Compile the Triton kernels ahead of time for Hopper (sm_90) without a GPU, printing one JSON
line per kernel variant. Run by test_triton_compile.py in a process without TRITON_INTERPRET
(the interpreter never compiles, so it cannot catch a kernel that fails to build)."""
import json
import os
import re

assert os.environ.get("TRITON_INTERPRET", "0") != "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from spectral_kernels.ops import triton_ecf as te  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)
VARIANTS = [("*fp32", "*fp32", tl.float32, "tf32"), ("*fp32", "*fp32", tl.float32, "ieee"),
            ("*bf16", "*fp32", tl.float32, "tf32"), ("*fp16", "*fp32", tl.float32, "ieee"),
            ("*fp64", "*fp64", tl.float64, "ieee")]

for x_type, acc_ptr, acc, precision in VARIANTS:
    consts = {"BLOCK_N": 128, "BLOCK_M": 128, "BLOCK_K": 32, "PRECISION": precision, "ACC": acc}
    common = {"x_ptr": x_type, "t_ptr": x_type, "perm_ptr": "*i64"}
    scalars = {"stride_x": "i32", "stride_t": "i32", **{k: "constexpr" for k in consts}}
    kernels = {
        "forward": (te._forward_kernel.fn, {**common, "item_start_ptr": "*i64", "item_end_ptr": "*i64",
                                            "partial_ptr": acc_ptr, "M": "i32", "D": "i32", **scalars}),
        "weight": (te._weight_kernel.fn, {**common, "row_class_ptr": "*i64", "grad_ptr": acc_ptr, "w_ptr": acc_ptr,
                                          "num_rows": "i32", "M": "i32", "D": "i32", **scalars}),
    }
    for name, (fn, signature) in kernels.items():
        compiled = triton.compile(ASTSource(fn, signature, consts), target=TARGET, options={"num_warps": 8, "num_stages": 3})
        ptx = compiled.asm["ptx"]
        print(json.dumps({"kernel": name, "x": x_type, "precision": precision,
                          "wgmma": sorted(set(re.findall(r"wgmma\.mma_async\S*", ptx))), "cubin_bytes": len(compiled.asm["cubin"])}))

reduce = triton.compile(ASTSource(te._class_reduce_kernel, {"partial_ptr": "*fp32", "item_offsets_ptr": "*i64", "out_ptr": "*fp32",
                                                            "M": "i32", "BLOCK": "constexpr"}, {"BLOCK": 256}), target=TARGET)
print(json.dumps({"kernel": "class_reduce", "cubin_bytes": len(reduce.asm["cubin"])}))
