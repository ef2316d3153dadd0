"""The distillation driver and the spectral-distill CLI, at toy sizes."""

import json
import math
import pickle

import numpy as np
import pytest
import torch

from spectral_kernels.cli import main as cli
from spectral_kernels.distill.augment import siamese_augment
from spectral_kernels.distill.data import DataError, load_dataset, long_tail_counts
from spectral_kernels.distill.loop import DistillConfig, distill
from spectral_kernels.distill.models import ConvNet, depth_for

from .conftest import FAST_CLI

FAST = dict(
    dataset="digits",
    ipc=2,
    iterations=4,
    width=16,
    batch_real=8,
    num_freqs=64,
    num_eval=0,
    quiet=True,
    checkpoint_every=2,
)


# ----------------------------------------------------------------------------- datasets


def test_digits_is_a_fixed_stratified_split():
    data = load_dataset("digits")
    assert data.train_x.shape[1:] == (1, 8, 8) and data.num_classes == 10
    assert data.train_x.shape[0] + data.test_x.shape[0] == 1797
    test_share = torch.bincount(data.test_y) / (torch.bincount(data.test_y) + torch.bincount(data.train_y))
    assert ((test_share - 0.3).abs() < 0.01).all()
    assert torch.equal(load_dataset("digits").train_x, data.train_x)  # fixed split
    assert abs(float(data.train_x.mean())) < 1e-5 and abs(float(data.train_x.std()) - 1) < 1e-2


def test_long_tailed_variant_follows_the_exponential_profile():
    base = load_dataset("digits").class_counts.numpy()
    data = load_dataset("digits-lt", imbalance=10)
    n_max = base.max()
    expected = [min(math.floor(n_max * 10 ** (-c / 9)), base[c]) for c in range(10)]
    assert data.class_counts.tolist() == expected
    assert load_dataset("digits-lt").class_counts.tolist() == expected  # default imbalance 10
    assert torch.equal(
        load_dataset("digits-lt", imbalance=10).test_y, load_dataset("digits").test_y
    )  # test stays balanced
    assert long_tail_counts(np.array([100, 100, 100]), 100.0).tolist() == [100, 10, 1]


def test_animals_loads_from_the_package_data_files():
    data = load_dataset("animals")
    assert data.train_x.shape[1:] == (1, 28, 28) and data.num_classes == 10
    assert data.train_x.shape[0] == 8000 and data.test_x.shape[0] == 2000
    assert torch.bincount(data.test_y).tolist() == [200] * 10


def _fake_cifar(root, which, per_batch=6):
    rng = np.random.default_rng(0)
    if which == "cifar10":
        folder, files, key, classes = (
            root / "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            b"labels",
            10,
        )
    else:
        folder, files, key, classes = root / "cifar-100-python", ["train", "test"], b"fine_labels", 100
    folder.mkdir(parents=True)
    for i, name in enumerate(files):
        labels = [(i * per_batch + j) % classes for j in range(per_batch)]
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), key: labels}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("which", ["cifar10", "cifar100"])
def test_cifar_loads_from_a_torchvision_format_root(tmp_path, which):
    _fake_cifar(tmp_path, which)
    data = load_dataset(which, data_root=tmp_path)
    assert data.train_x.shape[1:] == (3, 32, 32)
    assert data.train_x.shape[0] == (30 if which == "cifar10" else 6)
    assert data.test_x.shape[0] == 6


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    evil = pickle.dumps({b"data": __import__("os").system, b"fine_labels": []})
    for name in ("train", "test"):
        (folder / name).write_bytes(evil)
    with pytest.raises(DataError, match="refusing to load posix.system"):
        load_dataset("cifar100", data_root=tmp_path)


def test_imagefolder_loads_a_folder_per_class(tmp_path):
    from PIL import Image

    for c in range(3):
        (tmp_path / f"class{c}").mkdir()
        for i in range(5):
            Image.fromarray(np.full((12, 10, 3), 40 * c + i, dtype=np.uint8)).save(tmp_path / f"class{c}" / f"{i}.png")
    data = load_dataset("imagefolder", data_root=tmp_path, image_size=16)
    assert data.num_classes == 3 and data.train_x.shape[1:] == (3, 16, 16)
    assert data.train_x.shape[0] + data.test_x.shape[0] == 15


def test_missing_cifar_root_says_how_to_get_the_data(tmp_path):
    with pytest.raises(DataError, match="never downloads"):
        load_dataset("cifar10", data_root=tmp_path)


# ----------------------------------------------------------------------------- pieces


def test_convnet_depth_and_feature_size_follow_the_image_size():
    assert (depth_for(32), depth_for(28), depth_for(8)) == (3, 3, 1)
    assert ConvNet(3, 10, 32).feature_dim == 2048
    assert ConvNet(1, 10, 28, width=8)(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_augmentation_is_siamese_and_differentiable():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    a, b = siamese_augment(x, 123), siamese_augment(x, 123)
    assert torch.equal(a, b) and not torch.equal(a, siamese_augment(x, 124))
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- the loop


@pytest.mark.parametrize("method", ["random", "dm", "mmd", "ncfm", "sdd", "csdm"])
def test_every_method_runs_and_writes_a_complete_run_directory(tmp_path, method):
    run = distill(DistillConfig(method=method, out=str(tmp_path / method), **FAST))
    saved = torch.load(run / "synthetic.pt")
    assert saved["images"].shape == (20, 1, 8, 8) and saved["labels"].tolist() == [
        c for c in range(10) for _ in range(2)
    ]
    assert (run / "grid.png").stat().st_size > 0
    assert json.loads((run / "config.json").read_text())["method"] == method
    start = load_dataset("digits")
    from spectral_kernels.distill.loop import initial_synthetic

    initial, _ = initial_synthetic(start, 2, 0)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "iteration" in row]  # the others record each phase's device
    if method == "random":
        assert torch.equal(saved["images"], initial) and steps == []
    else:
        assert not torch.allclose(saved["images"], initial)
        assert [s["iteration"] for s in steps] == [0, 1, 2, 3] and all(math.isfinite(s["loss"]) for s in steps)


def test_ncfm_with_a_learned_sampler_moves_the_sampler(tmp_path):
    run = distill(DistillConfig(method="ncfm", learned_sampler=True, out=str(tmp_path / "n"), **FAST))
    state = torch.load(run / "checkpoint.pt")
    log_scales = state["maximisers"][0]["log_scales"]
    from spectral_kernels import FrequencySampler

    initial = FrequencySampler(
        ConvNet(1, 10, 8, width=16).feature_dim, num_freqs=64, bandwidth=(2.0 * 256) ** 0.5
    ).log_scales
    assert not torch.allclose(log_scales, initial.detach())


def test_resume_after_an_interruption_gives_the_same_synthetic_set(tmp_path):
    config = dict(FAST, method="csdm", dataset="digits-lt", iterations=6)
    whole = distill(DistillConfig(out=str(tmp_path / "whole"), **config))

    def interrupt(iteration):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(DistillConfig(out=str(tmp_path / "cut"), **config), on_iteration=interrupt)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt")["iteration"] == 2
    assert not (tmp_path / "cut" / "synthetic.pt").exists()
    resumed = distill(DistillConfig(out=str(tmp_path / "cut"), **config), resume=True)
    assert torch.equal(torch.load(resumed / "synthetic.pt")["images"], torch.load(whole / "synthetic.pt")["images"])
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    iterations = [row["iteration"] for row in rows if "iteration" in row]
    assert iterations == list(range(6))  # no duplicated rows from the interrupted attempt


def test_evaluation_reports_mean_and_std_over_seeds(tmp_path):
    run = distill(DistillConfig(method="dm", out=str(tmp_path / "e"), **dict(FAST, num_eval=2, eval_epochs=3)))
    result = json.loads((run / "eval.json").read_text())
    assert len(result["accuracies"]) == 2 and 0.0 <= result["accuracy_mean"] <= 1.0
    assert result["accuracy_std"] == pytest.approx(float(np.std(result["accuracies"], ddof=1)))  # the sample std


# ----------------------------------------------------------------------------- the CLI


def _argv(tmp_path, *extra):
    return ["distill", *FAST_CLI, "--out", str(tmp_path / "run"), *extra]


@pytest.mark.parametrize(
    "extra,words",
    [
        (["--dataset", "mnist"], ["unknown dataset", "mnist"]),
        (["--method", "gan"], ["unknown method", "gan"]),
        (["--kernel", "rbf"], ["unknown kernel", "rbf"]),
        (["--ipc", "0"], ["--ipc", "0"]),
        (["--imbalance", "0.5"], ["--imbalance", "0.5"]),
        (["--dataset", "cifar10"], ["cifar10", "--data-root"]),
        (["--dataset", "cifar10", "--data-root", "/nonexistent/cifar"], ["/nonexistent/cifar", "does not exist"]),
    ],
)
def test_bad_options_exit_2_with_one_line_and_no_traceback(tmp_path, capsys, extra, words):
    assert cli(_argv(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert all(w in err for w in words), err


def test_unwritable_output_and_existing_runs_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli(_argv(tmp_path)[:-2] + ["--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot write to --out" in err and len(err.strip().splitlines()) == 1, err
    assert cli(_argv(tmp_path)) == 0
    assert cli(_argv(tmp_path)) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli(_argv(tmp_path, "--overwrite")) == 0


def test_config_file_supplies_options_and_flags_win(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("method: sdd\nipc: 2\nnum-freqs: 32\nseed: 5\n")
    assert cli(_argv(tmp_path, "--config", str(cfg), "--ipc", "1")) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["method"], saved["ipc"], saved["num_freqs"], saved["seed"]) == ("sdd", 1, 32, 5)
    bad = tmp_path / "bad.json"
    bad.write_text('{"ipcs": 3}')
    assert cli(_argv(tmp_path, "--config", str(bad), "--overwrite")) == 2
    assert "ipcs" in capsys.readouterr().err


def test_show_prints_config_metrics_and_grid(tmp_path, capsys):
    assert cli(_argv(tmp_path, "--method", "dm")) == 0
    capsys.readouterr()
    assert cli(["show", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "method: dm" in out and "iterations run: 2" in out and "grid.png" in out


def test_network_pool_is_trained_once_cached_and_reused_on_resume(tmp_path):
    config = dict(FAST, method="dm", iterations=4, net_pool=2, pool_epochs=1)
    run = distill(DistillConfig(out=str(tmp_path / "p"), **config))
    pool = torch.load(run / "net_pool.pt")
    assert len(pool) == 2 and not torch.equal(
        pool[0]["trained"]["classifier.weight"], pool[1]["trained"]["classifier.weight"]
    )
    assert not torch.equal(pool[0]["init"]["classifier.weight"], pool[0]["trained"]["classifier.weight"])
    fresh = distill(DistillConfig(out=str(tmp_path / "f"), **dict(config, net_pool=0)))
    assert not torch.equal(torch.load(run / "synthetic.pt")["images"], torch.load(fresh / "synthetic.pt")["images"])

    def interrupt(iteration):
        if iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(DistillConfig(out=str(tmp_path / "c"), **config), on_iteration=interrupt)
    cached = (tmp_path / "c" / "net_pool.pt").stat().st_mtime_ns
    resumed = distill(DistillConfig(out=str(tmp_path / "c"), **config), resume=True)
    assert (tmp_path / "c" / "net_pool.pt").stat().st_mtime_ns == cached  # not retrained
    assert torch.equal(torch.load(resumed / "synthetic.pt")["images"], torch.load(run / "synthetic.pt")["images"])


def test_the_grid_is_a_row_per_class_enlarged_with_each_class_name():
    """grid.png (distill/pictures.py): each stored pixel becomes a block of scale x scale equal
    pixels (nearest neighbour), a row per class holding that class's images, its name on the left."""
    import numpy as np
    from PIL import Image

    from spectral_kernels.distill.pictures import MIN_CELL, PAD, labelled_grid

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 8, 8, generator=gen)
    labels = torch.tensor([0, 0, 2, 2, 2, 0])  # class 1 has no image: no row
    grid = np.asarray(labelled_grid(images, labels, ("zero", "one", "two"), per_row=3))
    scale = MIN_CELL // 8
    assert grid.shape[0] == 2 * (8 * scale + PAD) + PAD  # two rows
    label_w = grid.shape[1] - 3 * (8 * scale + PAD) - PAD
    for row, members in enumerate([[0, 1, 5], [2, 3, 4]]):
        top = PAD + row * (8 * scale + PAD)
        assert (grid[top : top + 8 * scale, :label_w] < 128).any(), "no class name drawn"
        for col, i in enumerate(members):
            left = label_w + PAD + col * (8 * scale + PAD)
            cell = grid[top : top + 8 * scale, left : left + 8 * scale, 0].astype(int)
            want = (images[i, 0] * 255).round().int().repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
            assert np.array_equal(cell, want)
    assert Image.fromarray(grid).size == (grid.shape[1], grid.shape[0])
