"""Hardware leftovers of issue 27: the GPU of each torchrun process, one compilation per ConvNet
architecture under --compile, and native bf16/fp16 products in the Triton ECF kernels."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from torch._dynamo import register_backend

import spectral_kernels as sk
from spectral_kernels.distill import evaluation, hardware, loop
from spectral_kernels.distill.config import ConfigError, DistillConfig
from spectral_kernels.distill.data import load_dataset
from spectral_kernels.distill.hardware import COMPILE_BACKEND_ENV, Hardware

from .conftest import max_error, sums_and_grads

ROOT = pathlib.Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- torchrun


@pytest.fixture
def four_gpus(monkeypatch):
    """A machine with 4 CUDA devices, as far as the device resolution can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def _torchrun(monkeypatch, world, local):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(local))


@pytest.mark.parametrize("local", [0, 1, 3])
def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(monkeypatch, four_gpus, local):
    _torchrun(monkeypatch, world=4, local=local)
    config = DistillConfig(device="cuda")
    assert config.validate().device == "cuda"  # the config keeps what was asked for
    assert Hardware.of(config).device == torch.device("cuda", local)  # every phase's device


def test_alone_cuda_stays_as_named_and_the_cpu_stays_the_cpu(monkeypatch, four_gpus):
    _torchrun(monkeypatch, world=1, local=0)
    assert Hardware.of(DistillConfig(device="cuda")).device == torch.device("cuda")
    assert Hardware.of(DistillConfig(device="cuda:2")).device == torch.device("cuda:2")
    _torchrun(monkeypatch, world=4, local=3)
    assert Hardware.of(DistillConfig(device="cpu")).device == torch.device("cpu")  # gloo


def test_torchrun_refuses_an_explicit_index_a_missing_local_rank_and_too_many_processes(monkeypatch, four_gpus):
    _torchrun(monkeypatch, world=2, local=1)
    for index in (0, 1):  # refused even where it matches LOCAL_RANK: the other process would fail
        with pytest.raises(ConfigError, match=f"--device cuda:{index} under torchrun.*pass --device cuda"):
            DistillConfig(device=f"cuda:{index}").validate()
    _torchrun(monkeypatch, world=8, local=5)
    with pytest.raises(ConfigError, match="LOCAL_RANK=5 but this machine has 4 cuda device"):
        DistillConfig(device="cuda").validate()
    monkeypatch.delenv("LOCAL_RANK")
    with pytest.raises(ConfigError, match="needs LOCAL_RANK"):
        Hardware.of(DistillConfig(device="cuda"))


def test_the_cli_refuses_an_explicit_index_under_torchrun_in_one_line(monkeypatch, four_gpus, tmp_path, capsys):
    from spectral_kernels.cli import main

    _torchrun(monkeypatch, world=2, local=0)
    out = tmp_path / "run"
    assert main(["distill", "--dataset", "digits", "--device", "cuda:0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda:0 under torchrun" in err and "LOCAL_RANK" in err, err
    assert not out.exists()


def test_the_process_group_starts_on_the_processs_own_gpu(monkeypatch, four_gpus):
    """torch.cuda.set_device(cuda:LOCAL_RANK) comes before init_process_group("nccl"): NCCL binds
    a process to the device current at its first collective."""
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", torch.device(device))))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append(("init", backend)))
    monkeypatch.setattr(dist, "get_rank", lambda *a: 2)
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 4)
    monkeypatch.setattr(dist, "group", type("G", (), {"WORLD": "world"}))
    _torchrun(monkeypatch, world=4, local=2)
    device = hardware.process_device("cuda")
    assert loop._distributed(device) == ("world", 2, 4)
    assert calls == [("set_device", torch.device("cuda:2")), ("init", "nccl")]


# ----------------------------------------------------------------------------- --compile

COMPILES = []  # one entry per graph the counting backend was asked to compile
CALLS = [0]  # calls of the graphs it compiled


@register_backend(name="spectral_kernels_test_counting")
def _counting_backend(gm, example_inputs):
    from torch._dynamo.backends.debugging import aot_eager

    COMPILES.append(len(gm.graph.nodes))
    compiled = aot_eager(gm, example_inputs)

    def run(*args):
        CALLS[0] += 1
        return compiled(*args)

    return run


def test_compile_compiles_once_per_architecture_and_matches_eager(tmp_path, monkeypatch):
    """One process, no dynamo reset: first ConvNets of more widths than dynamo's recompile limit
    (8) are compiled, as a sweep over settings in one process does (or earlier tests did), then
    a run with four pool networks, a matching phase and five evaluation networks. The sweep
    and every network of the run go through compiled code (with one dynamo cache for
    ConvNet.forward, the ninth width hit the recompile limit: a hard error under fullgraph, an
    eager run without a word otherwise), all compilations happen for the first network of each
    phase, later networks reuse them, and the run gives the eager run's images and accuracies."""
    from spectral_kernels.distill.models import ConvNet

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "spectral_kernels_test_counting")
    limit = torch._dynamo.config.recompile_limit
    for width in range(5, 5 + limit + 1):  # the sweep
        calls = CALLS[0]
        Hardware(compile=True).compiled(ConvNet(1, 10, 8, width=width))(torch.randn(2, 1, 8, 8))
        assert CALLS[0] == calls + 1, f"width {width} ran eagerly"
    monkeypatch.delenv(COMPILE_BACKEND_ENV)

    windows = []  # per trained network: (compilations, compiled calls) at its start and at its end
    train = evaluation.train_convnet

    def counted(*args, **kwargs):
        start = (len(COMPILES), CALLS[0])
        net = train(*args, **kwargs)
        windows.append((start, (len(COMPILES), CALLS[0])))
        return net

    monkeypatch.setattr(evaluation, "train_convnet", counted)
    tiny = dict(dataset="digits", ipc=1, width=4, batch_real=4, num_freqs=16, quiet=True, seed=0)
    config = dict(tiny, iterations=3, net_pool=4, pool_epochs=1, calib_weight=0.5, num_eval=5, eval_epochs=1)
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "eager-cache"))
    eager = loop.distill(DistillConfig(**config, out=str(tmp_path / "eager")))
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "compiled-cache"))
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "spectral_kernels_test_counting")
    windows.clear()
    phases = []
    phase = Hardware.phase
    monkeypatch.setattr(Hardware, "phase", lambda self, name: phases.append(len(COMPILES)) or phase(self, name))
    before = len(COMPILES)
    compiled = loop.distill(DistillConfig(**config, compile=True, out=str(tmp_path / "compiled")))
    assert len(windows) == 4 + 5 and len(phases) == 3  # pool, matching, evaluation
    for k, ((_, calls), (_, calls_after)) in enumerate(windows):
        assert calls_after > calls, f"network {k} (pool 0-3, evaluation 4-8) ran eagerly"
    pool, evaluations = windows[:4], windows[4:]
    # Pool networks 2-4 compile nothing up to the matching phase; evaluation networks 2-5 nothing
    # to the end (network 1's test pass, after its training, is its own window's).
    assert pool[1][0][0] == phases[1], (pool, phases)
    assert evaluations[1][0][0] == len(COMPILES), (evaluations, len(COMPILES))
    # A handful of graphs in all (grad and no-grad, train and eval, a batch size that becomes
    # dynamic), below the limit past which a network would silently run eagerly.
    assert 0 < len(COMPILES) - before <= limit, COMPILES[before:]
    ours, theirs = (torch.load(run / "synthetic.pt")["images"] for run in (compiled, eager))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    accuracies = [json.loads((run / "eval.json").read_text())["accuracies"] for run in (compiled, eager)]
    step = 1 / len(load_dataset("digits").test_y)  # one test image
    for a, b in zip(*accuracies):  # float noise may flip the argmax of a test image or two
        assert abs(a - b) <= 2 * step + 1e-12, accuracies


def test_a_new_backend_or_architecture_gets_programs_of_its_own():
    """The compiled programs are per (architecture, method, backend), each with its own code
    object, so one architecture's compilations never count against another's limit."""
    from spectral_kernels.distill.models import ConvNet

    a, b, wide = ConvNet(1, 3, 8, width=4), ConvNet(1, 3, 8, width=4), ConvNet(1, 3, 8, width=6)
    programs = {
        name: hardware._program(net, method, backend)[1]
        for name, net, method, backend in [
            ("a", a, "forward", "eager"),
            ("b", b, "forward", "eager"),
            ("a embed", a, "embed", "eager"),
            ("wide", wide, "forward", "eager"),
            ("a aot", a, "forward", "aot_eager"),
        ]
    }
    assert programs["a"] is programs["b"]
    codes = {name: getattr(p, "_torchdynamo_orig_callable", p).__code__ for name, p in programs.items()}
    assert len({id(codes[n]) for n in ("a", "a embed", "wide", "a aot")}) == 4


# ----------------------------------------------------------------------------- Triton: bf16/fp16 dots

needs_triton = pytest.mark.skipif("triton" not in sk.available_backends(), reason="triton is not installed")


@needs_triton
def test_low_precision_inputs_reach_native_tensor_core_products_on_hopper():
    """Compiled for sm_90 (no GPU needed), bf16 and fp16 inputs multiply on the tensor cores in
    their own type (wgmma ...bf16.bf16 / ...f16.f16, float32 accumulators) in both precisions,
    with the launch's own num_warps and num_stages, within H100's shared memory, with no spills
    in the product loop. (tests/test_triton_compile.py compiles bf16/tf32 and fp16/ieee; this adds
    the other two.)"""
    script = (
        "import json, sys\n"
        "sys.path.insert(0, 'benchmarks')\n"
        "import triton.language as tl, triton_resources as tr\n"
        "from spectral_kernels.ops import triton_ecf as te\n"
        "config = te._fixed_config(tl.float32)\n"
        "for kernel in ('forward', 'weight'):\n"
        "    for x, precision in (('*bf16', 'ieee'), ('*fp16', 'tf32')):\n"
        "        row = tr.compile_variant(kernel, x, '*fp32', tl.float32, precision, config, 'reduced')\n"
        "        row['num_stages'] = config.num_stages\n"
        "        print(json.dumps(row), flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 4
    for row in rows:
        kind = {"bf16": "bf16", "fp16": "f16"}[row["x"]]
        assert row["hgmma"] > 0, row
        assert row["wgmma_ptx"] and all(op.endswith(f".f32.{kind}.{kind}") for op in row["wgmma_ptx"]), row
        assert row["config"].endswith(f"s{row['num_stages']}") and row["shared_bytes"] <= 227 * 1024, row
        assert row["k_loop_spills"] == 0, row


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@needs_triton
@pytest.mark.parametrize("precision", ["ieee", "tf32"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_native_low_precision_sums_and_gradients_against_float64(dtype, precision):
    """The native bf16/fp16 products, forward and backward, at most twice the error of the
    reference computed in that precision, both against float64 on the same (rounded) inputs."""
    from spectral_kernels import ops
    from spectral_kernels.classes import class_index
    from spectral_kernels.ops.reference import ecf_sums_reference

    gen = torch.Generator().manual_seed(0)
    n, m, d, sizes = 8192, 1024, 512, [6000, 2000, 192]
    x = torch.randn(n, d, generator=gen).to(dtype).cuda()
    t = (torch.randn(m, d, generator=gen) * (3.0 / d**0.5)).to(dtype).cuda()
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))[torch.randperm(n, generator=gen)]
    index = class_index(labels.cuda(), n, len(sizes), torch.device("cuda"))
    grad = torch.randn(len(sizes), 2, m, generator=gen).cuda()
    ref = lambda a, b: ecf_sums_reference(a, b, index.labels, index.num_classes)
    backend = ops.resolve("triton", x)
    truth = sums_and_grads(ref, x.double(), t.double(), grad.double())
    ours = sums_and_grads(lambda a, b: backend.ecf_sums(a, b, index, precision=precision), x, t, grad)
    theirs = sums_and_grads(ref, x, t, grad.to(dtype))
    assert ours[0].dtype == torch.float32
    for got, base, want in zip(ours, theirs, truth):
        assert max_error(got, want) <= 2 * max_error(base, want), (max_error(got, want), max_error(base, want))
