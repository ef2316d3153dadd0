"""The Python API of distillation (spectral_kernels.distill.distill / evaluate, distill/api.py)
over user data (lazy sources, distill/sources.py), user networks and loss modules. One-line
refusals of bad input are in the catalogue (tests/test_bad_input.py, round 4 api); the
promises that need more than a table row are here."""

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import spectral_kernels as sk
from spectral_kernels.distill import DistillResult, distill, evaluate
from spectral_kernels.distill import api as api_module
from spectral_kernels.distill.sources import MEAN_SAMPLE, Source

from .conftest import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(ipc=2, iterations=3, width=8, batch_real=4, num_freqs=32, quiet=True)


def blobs(n=60, classes=3, size=8, channels=1, scale=1.0, offset=0.0, seed=0):
    """Images with a class-dependent bright row band, plus noise, in [offset, offset + scale]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    images = 0.2 * torch.rand(n, channels, size, size, generator=g)
    for i, c in enumerate(labels.tolist()):
        images[i, :, c * size // classes : (c + 1) * size // classes] += 0.7
    return offset + scale * images, labels


def mlp(generator):
    """A user's feature network: flatten -> linear -> ReLU, weights from the generator."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU())
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=generator))
    return net


class Counting(Dataset):
    """A map-style dataset over tensors that counts item reads (and keeps labels as ints)."""

    def __init__(self, images, labels, *, targets=True):
        self.images, self.label_list, self.reads = images, labels.tolist(), 0
        if targets:
            self.targets = list(self.label_list)

    def __len__(self):
        return len(self.label_list)

    def __getitem__(self, i):
        assert isinstance(i, int)
        self.reads += 1
        return self.images[i], self.label_list[i]


# ----------------------------------------------------------------------------- docs example


def _docs_example() -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## Distilling your own data", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_docs_example_runs_verbatim_and_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    temporary = tmp_path / "tmp"  # where a run without out= makes its folder (torch may cache there too)
    temporary.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temporary))
    scope = {}
    exec(compile(_docs_example(), "docs/api.md", "exec"), scope)
    result, summary = scope["result"], scope["summary"]
    assert isinstance(result, DistillResult)
    assert result.images.shape == (6, 1, 12, 12)
    assert result.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert summary["num_eval"] == 2 and 0.0 <= summary["accuracy_mean"] <= 1.0
    assert list(tmp_path.iterdir()) == [temporary]
    assert [p.name for p in temporary.iterdir() if p.name.startswith("spectral-distill")] == []
    assert "torch.Size([6, 1, 12, 12])" in capsys.readouterr().out  # what the example says it prints


# ----------------------------------------------------------------------------- data


def test_a_tensor_pair_gives_images_in_the_datas_own_scale(tmp_path):
    # method random copies real images: after undoing the normalisation they are the data's own
    # values (here around 1000, far from the normalised space's 0 and 1).
    x, y = blobs(scale=50.0, offset=1000.0)
    result = distill((x, y), method="random", ipc=2, quiet=True)
    assert result.images.shape == (6, 1, 8, 8)
    assert result.labels.tolist() == [0, 0, 1, 1, 2, 2]
    for image, label in zip(result.images, result.labels):
        distance = (x - image).flatten(1).abs().amax(1)
        nearest = int(distance.argmin())
        assert float(distance[nearest]) < 1e-3 and int(y[nearest]) == int(label)
    assert torch.allclose(result.normalised * result.std + result.mean, result.images)
    assert result.run is None and result.config.dataset == "python"


def test_clamp_pixels_keeps_the_images_in_the_datas_own_range():
    # data in [100, 150]: clamping to [0, 1] (the bundled sets' range) would pull every pixel below 1
    x, y = blobs(scale=50.0, offset=100.0)
    result = distill((x, y), method="dm", clamp_pixels=True, lr=1.0, **FAST)
    low, high = float(x.min()), float(x.max())  # 60 items: the statistics' sample is the whole set
    assert low - 1e-3 <= float(result.images.min()) and float(result.images.max()) <= high + 1e-3


def test_a_bundled_dataset_by_name_with_a_user_network_and_its_own_test_set():
    result = distill("digits", method="dm", network=mlp, **FAST)
    assert result.images.shape == (20, 1, 8, 8) and result.config.dataset == "digits"
    assert result.config.network.startswith("python:") and result.config.data_fingerprint is None
    summary = evaluate(result, num_eval=1, epochs=1, quiet=True)
    assert summary["num_eval"] == 1 and len(summary["per_class_accuracy"]) == 10
    with pytest.raises(ValueError, match="test_data: the run distilled the bundled dataset digits"):
        evaluate(result, blobs(), num_eval=1, epochs=1)


def test_the_pool_cache_tells_user_datasets_apart():
    # every user dataset is dataset "python": only the fingerprint tells their trained pools apart
    from spectral_kernels.distill.config import DistillConfig
    from spectral_kernels.distill.pool import pool_key

    one, other = (Source(blobs(seed=seed)).fingerprint() for seed in (0, 1))
    assert one != other and Source(blobs(seed=0)).fingerprint() == one
    key = lambda fingerprint: pool_key(DistillConfig(dataset="python", data_fingerprint=fingerprint, net_pool=2))
    assert key(one) != key(other) and key(one) == key(one)


def test_channels_and_size_are_the_datas_own():
    x, y = blobs(n=30, size=12, channels=3)
    result = distill(TensorDataset(x, y), method="dm", **FAST)
    assert result.images.shape == (6, 3, 12, 12)


def test_a_dataset_with_targets_is_read_per_batch_never_whole():
    x, y = blobs(n=3 * MEAN_SAMPLE)  # more items than the statistics' sample
    data = Counting(x, y)
    result = distill(data, method="sdd", **FAST)
    assert result.images.shape == (6, 1, 8, 8)
    # statistics (MEAN_SAMPLE) + fingerprint (64) + the first item + initial images + 3 steps x 3 x 4
    assert data.reads < len(data) / 2, data.reads


def test_a_dataset_without_targets_is_indexed_in_one_pass():
    x, y = blobs(n=90)
    data = Counting(x, y, targets=False)
    source = Source(data)
    assert data.reads == 2 * len(data)  # the labels' pass, then the statistics' sample (all 90 < MEAN_SAMPLE)
    assert [m.tolist() for m in source.members] == [list(range(c, 90, 3)) for c in range(3)]
    batch = source[torch.tensor([4, 7])]
    assert data.reads == 2 * len(data) + 2  # gathered on demand, nothing kept
    expected = (x[[4, 7]] - source.mean[None, :, None, None]) / source.std[None, :, None, None]
    assert torch.allclose(batch, expected)


def test_normalisation_statistics_come_from_a_fixed_sample_of_the_items():
    x, y = blobs(n=2 * MEAN_SAMPLE)
    source = Source((x, y))
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:MEAN_SAMPLE]
    assert torch.allclose(source.mean, x[idx].mean(dim=(0, 2, 3)))
    assert torch.allclose(source.std, x[idx].std(dim=(0, 2, 3)))
    assert torch.equal(Source((x, y)).mean, source.mean)  # the same sample every time


def test_image_size_resizes_mixed_sizes():
    x, y = blobs(n=30, size=8)
    items = [(x[i], int(y[i])) for i in range(30)]
    items[5] = (torch.rand(1, 10, 10), int(y[5]))
    with pytest.raises(ValueError, match="item 5.*mixed sizes.*image_size"):
        Source(items)
    assert Source(items, image_size=8).image_shape == (1, 8, 8)


def test_with_targets_an_image_of_another_size_is_named_when_gathered():
    n = MEAN_SAMPLE + 100
    sampled = set(torch.randperm(n, generator=torch.Generator().manual_seed(0))[:MEAN_SAMPLE].tolist())
    bad = min(set(range(1, n)) - sampled)  # an item the statistics' sample does not read
    x, y = blobs(n=n)
    data = Counting(x, y)
    data.images = [x[i] if i != bad else torch.rand(1, 9, 9) for i in range(n)]
    source = Source(data)  # targets: the images are not read up front (but for the statistics' sample)
    with pytest.raises(ValueError, match=rf"item {bad}'s image has shape \(1, 9, 9\), item 0's \(1, 8, 8\)"):
        source[torch.tensor([0, bad])]


# ----------------------------------------------------------------------------- network, loss, run folder


def test_a_user_network_draws_each_steps_network_from_a_generator():
    calls = []

    def network(generator):
        calls.append(type(generator))
        return mlp(generator)

    result = distill(blobs(), method="dm", network=network, **FAST)
    assert result.images.shape == (6, 1, 8, 8) and result.config.network.endswith("network")
    assert set(calls) == {torch.Generator} and len(calls) >= FAST["iterations"] + 1


@pytest.mark.parametrize("kind", ["sdd", "csdm", "ncfd", "mmd", "user", "method="])
def test_a_loss_module_is_the_objective(kind):
    calls = []

    class Mine(nn.Module):
        def forward(self, real, syn, real_labels, syn_labels):
            calls.append((real.shape, syn.shape))
            return (real.mean(0) - syn.mean(0)).pow(2).sum()

    module = {
        "sdd": lambda: sk.SDDLoss(bandwidth=2.0, num_freqs=32),
        "csdm": lambda: sk.CSDMLoss([20, 20, 20], bandwidth=2.0, num_freqs=32),
        "ncfd": lambda: sk.NCFDLoss(),
        "mmd": lambda: sk.MMDLoss(bandwidth=2.0),
        "user": Mine,
        "method=": Mine,
    }[kind]()
    chosen = dict(method=module) if kind == "method=" else dict(loss=module)
    result = distill(blobs(), network=mlp, **chosen, **FAST)
    assert result.config.method == "python"
    assert result.config.loss.startswith(f"python:{type(module).__qualname__}")
    assert bool(torch.isfinite(result.images).all())
    if kind in ("user", "method="):
        assert len(calls) == FAST["iterations"] + 1  # the first-batch check, then one per step
        assert calls[-1][1][0] == 6  # the synthetic features: C x IPC


def test_out_writes_the_cli_run_folder_that_show_reads_and_evaluate_refuses_in_one_line(tmp_path):
    run = tmp_path / "run"
    result = distill(blobs(), method="csdm", network=mlp, out=run, **FAST)
    assert result.run == run
    for name in ("config.json", "manifest.json", "checkpoint.pt", "synthetic.pt", "metrics.jsonl", "grid.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "python" and len(config["data_fingerprint"]) == 32
    shown = run_cli("show", run)
    assert shown.returncode == 0 and "dataset: python" in shown.stdout
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = assert_one_line_error(run_cli("evaluate", run), "from Python", "spectral_kernels.distill.evaluate")
    assert "test_data" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_evaluate_a_run_folder_writes_eval_rows_and_a_result_writes_nothing(tmp_path):
    train, test = blobs(), blobs(n=30, seed=1)
    run = tmp_path / "run"
    result = distill(train, method="dm", out=run, **FAST)
    summary = evaluate(run, test, num_eval=2, epochs=2, quiet=True)
    assert summary["num_eval"] == 2 and len(summary["per_class_accuracy"]) == 3
    assert json.loads((run / "eval.json").read_text()) == summary
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1] == summary
    files = sorted(p.name for p in run.iterdir())
    again = evaluate(result, TensorDataset(*test), num_eval=2, epochs=2, quiet=True)
    assert set(again) == set(summary) and sorted(p.name for p in run.iterdir()) == files
    for accuracy in again["accuracies"]:
        assert accuracy * 30 == pytest.approx(round(accuracy * 30))  # a count of the 30 test images


def test_resume_continues_to_the_uninterrupted_result_and_refuses_other_data(tmp_path, monkeypatch):
    data = blobs()
    options = dict(FAST, iterations=4, checkpoint_every=2)
    whole = distill(data, method="sdd", network=mlp, out=tmp_path / "whole", **options)

    real = api_module.run_distillation

    def interrupted(config, **kw):
        def stop(iteration):
            if iteration == 3:
                raise KeyboardInterrupt

        return real(config, on_iteration=stop, **kw)

    monkeypatch.setattr(api_module, "run_distillation", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill(data, method="sdd", network=mlp, out=tmp_path / "cut", **options)
    monkeypatch.setattr(api_module, "run_distillation", real)
    kept = (tmp_path / "cut" / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="data: not the data"):
        distill(blobs(seed=5), method="sdd", network=mlp, out=tmp_path / "cut", resume=True, **options)
    assert (tmp_path / "cut" / "checkpoint.pt").read_bytes() == kept
    resumed = distill(data, method="sdd", network=mlp, out=tmp_path / "cut", resume=True, **options)
    assert torch.equal(resumed.images, whole.images)


# ----------------------------------------------------------------------------- bad input writes nothing


def _bad_item_data():
    x, y = blobs(n=30)
    return [(x[i], "cat" if i == 4 else int(y[i])) for i in range(30)]


def _flat_network(generator):
    return nn.Conv2d(1, 2, 3)  # (N, 2, 6, 6): not (N, d)


@pytest.mark.parametrize(
    "data, options, error, words",
    [
        (_bad_item_data, {}, TypeError, ["item 4", "int"]),
        (lambda: (blobs()[0], blobs()[1][:59]), {}, ValueError, ["60 images", "59 labels"]),
        (lambda: (blobs()[0], blobs()[1] * 3), {"num_classes": 3}, ValueError, ["item 1", "label 3", "3 classes"]),
        (blobs, {"network": _flat_network}, ValueError, ["network", "(N, d)", "(6, 2, 6, 6)"]),
        (
            blobs,
            {
                "network": lambda g: nn.Sequential(nn.Flatten(), nn.Linear(64, 4, bias=False)).apply(
                    lambda m: m.weight.data.fill_(float("inf")) if isinstance(m, nn.Linear) else None
                )
            },
            ValueError,
            ["network", "not finite"],
        ),
        (blobs, {"network": 7}, TypeError, ["network", "callable", "7"]),
    ],
    ids=["item not (tensor, int)", "mismatched lengths", "label outside", "network 4-D", "network inf", "network 7"],
)
def test_bad_input_is_refused_before_the_run_folder_is_created(tmp_path, data, options, error, words):
    with pytest.raises(error) as info:
        distill(data(), method="dm", out=tmp_path / "run", **{**FAST, **options})
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not (tmp_path / "run").exists()


def test_the_cli_is_built_on_the_python_api(monkeypatch, tmp_path):
    """`spectral-distill distill` calls spectral_kernels.distill.distill once, with the bundled
    dataset's name and every option the command line parsed, and writes the same run."""
    from spectral_kernels import cli
    from spectral_kernels.distill.rundir import saved_config

    from .conftest import FAST_CLI

    calls = []
    real = api_module.distill

    def spy(data, **kwargs):
        calls.append((data, kwargs))
        return real(data, **kwargs)

    monkeypatch.setattr(api_module, "distill", spy)
    argv = ["distill", *FAST_CLI, "--method", "dm", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    parsed = cli.parse_distill(argv)
    assert len(calls) == 1 and calls[0][0] == parsed.dataset == "digits"
    kwargs = calls[0][1]
    assert (kwargs["method"], kwargs["ipc"], kwargs["iterations"]) == ("dm", 1, 2)
    assert kwargs["resume"] is False and kwargs["overwrite"] is False
    assert saved_config(tmp_path / "run") == parsed
