"""The recipe ingredients of the distillation driver (distill/formation.py, pool.py, the loop's
optimiser, schedule, clamping and calibration, evaluation with CutMix) and the --recipe presets."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from spectral_kernels.cli import main as cli
from spectral_kernels.distill import formation
from spectral_kernels.distill.config import RECIPES, DistillConfig
from spectral_kernels.distill.data import load_dataset
from spectral_kernels.distill.evaluation import cutmix
from spectral_kernels.distill.loop import distill, initial_synthetic
from spectral_kernels.distill.models import ConvNet
from spectral_kernels.distill.pool import cache_dir, pool_key, pool_network

from .conftest import FAST_CLI

FAST = dict(
    dataset="digits",
    ipc=2,
    iterations=6,
    width=16,
    batch_real=8,
    num_freqs=64,
    num_eval=0,
    quiet=True,
    checkpoint_every=2,
    eval_epochs=2,
)
RECIPE = dict(FAST, recipe="ncfm", net_pool=2, pool_epochs=1)


def _config(out, **values):
    return DistillConfig.from_dict({**values, "out": str(out)})


# ----------------------------------------------------------------------------- presets


def test_a_recipe_sets_its_values_and_explicit_options_win(tmp_path):
    config = _config(tmp_path / "r", recipe="ncfm", factor=1, lr=0.005)
    for name, value in RECIPES["ncfm"].items():
        if name not in ("factor", "lr"):
            assert getattr(config, name) == value, name
    assert (config.factor, config.lr) == (1, 0.005)
    assert _config(tmp_path / "t").to_dict() == DistillConfig(out=str(tmp_path / "t")).to_dict()  # thin: the defaults


def test_the_cli_records_the_resolved_recipe_and_flags_win(tmp_path, capsys):
    recipe = "--net-pool 1 --pool-epochs 1 --recipe ncfm --no-pool-interpolate --eval-cutmix 0".split()
    argv = ["distill", *FAST_CLI, *recipe, "--out", str(tmp_path / "run")]
    assert cli(argv) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["recipe"] == "ncfm" and saved["factor"] == 2 and saved["optimizer"] == "adamw"
    assert saved["pool_interpolate"] is False and saved["eval_cutmix"] == 0.0 and saved["net_pool"] == 1


# ----------------------------------------------------------------------------- multi-formation


def test_decoding_cuts_each_image_into_factor_squared_upsampled_tiles():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    decoded = formation.decode(images, 2)
    assert decoded.shape == (8, 1, 4, 4)
    # Tile (i, j) of image k is decoded image 4k + 2i + j: its mean is the tile's mean.
    for k in range(2):
        for i in range(2):
            for j in range(2):
                tile = images[k, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                assert torch.allclose(decoded[4 * k + 2 * i + j].mean(), tile.mean(), atol=0.3)
    assert formation.decoded_labels(torch.tensor([3, 5]), 2).tolist() == [3, 3, 3, 3, 5, 5, 5, 5]
    assert formation.decode(images, 1) is images


def test_encoding_then_decoding_gives_back_smooth_images_and_gradients_flow():
    smooth = (
        torch.linspace(0, 1, 16).repeat(16, 1)[None, None].repeat(8, 3, 1, 1) + torch.arange(8.0)[:, None, None, None]
    )
    stored = formation.encode(smooth, 2).requires_grad_(True)
    assert stored.shape == (2, 3, 16, 16)
    decoded = formation.decode(stored, 2)
    assert (decoded - smooth).abs().max() < 0.1
    decoded.sum().backward()
    assert stored.grad is not None and stored.grad.abs().sum() > 0


def test_initialisation_tiles_real_images_of_the_class():
    data = load_dataset("digits")
    images, labels = initial_synthetic(data, 3, seed=0, factor=2)
    assert images.shape == (30, 1, 8, 8) and labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert not torch.equal(images, initial_synthetic(data, 3, seed=0, factor=1)[0])


def test_a_short_class_is_filled_with_noise_or_with_augmented_copies_of_its_images():
    """digits-lt at imbalance 50 leaves its last four classes 2-9 images, fewer than 3 x 2^2 tiles."""
    data = load_dataset("digits-lt", imbalance=50)
    counts = torch.bincount(data.train_y, minlength=10).tolist()
    per_class, short = 12, [c for c in range(10) if counts[c] < 12]
    assert short and short != list(range(10))
    noise, _ = initial_synthetic(data, 3, seed=1, factor=2)
    repeat, labels = initial_synthetic(data, 3, seed=1, factor=2, fill="repeat")
    assert repeat.shape == noise.shape and torch.isfinite(repeat).all()
    low, high = data.train_x.min(), data.train_x.max()
    # The classes before the first short one draw the same real images either way.
    head = labels < short[0]
    assert torch.equal(noise[head], repeat[head])
    for c in short:
        n = counts[c]
        real = data.train_x[data.train_y == c]
        tiles = {fill: formation.decode(x[labels == c], 2) for fill, x in (("noise", noise), ("repeat", repeat))}
        # Decoding upsamples half-size tiles, so compare against the real images sent through the same round trip.
        # (each tile makes the trip on its own: four copies of the set make a whole number of stored images).
        seen = formation.decode(formation.encode(real.repeat(4, 1, 1, 1), 2), 2)[:n]
        for decoded in tiles.values():
            assert decoded.shape[0] == per_class
            # The first n tiles are the class's real images, in some order.
            dist = torch.cdist(decoded[:n].flatten(1), seen.flatten(1))
            assert dist.min(dim=1).values.max() < 1e-5 and dist.argmin(dim=1).unique().numel() == n
        extra_noise, extra_repeat = tiles["noise"][n:], tiles["repeat"][n:]
        # Each copy looks like one of the class's images (best correlation, centred: a rotated, scaled,
        # shifted or flipped image still correlates); a noise tile like none (measured: about 0.1 against 0.7-0.85).
        unit = lambda z: F.normalize(z.flatten(1) - z.flatten(1).mean(1, keepdim=True), dim=1)
        best = {
            k: (unit(v) @ unit(seen).T).max(dim=1).values.mean()
            for k, v in (("noise", extra_noise), ("repeat", extra_repeat))
        }
        assert best["noise"] < 0.35 < 0.5 < best["repeat"]
        # The copies stay within the pixel range (geometric transforms, zero padding), and none is an
        # exact copy of another tile or of a real image (a copy would stay one).
        assert extra_repeat.min() >= min(low, 0.0) - 1e-6 and extra_repeat.max() <= high + 1e-6
        flat = tiles["repeat"].flatten(1)
        gaps = torch.cdist(flat, flat) + torch.eye(per_class) * 1e9
        assert gaps.min() > 1e-3
        assert torch.cdist(extra_repeat.flatten(1), seen.flatten(1)).min() > 1e-3


def test_init_fill_reaches_the_run_and_is_recorded(tmp_path):
    out = tmp_path / "run"
    args = ["distill", *FAST_CLI, "--dataset", "digits-lt", "--imbalance", "50", "--factor", "2", "--ipc", "3"]
    assert cli([*args, "--init-fill", "repeat", "--iterations", "0", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["init_fill"] == "repeat"
    data = load_dataset("digits-lt", imbalance=50)
    expected, _ = initial_synthetic(data, 3, seed=config["seed"], factor=2, fill="repeat")
    stored = torch.load(out / "synthetic.pt", weights_only=True)["images"]
    assert torch.equal(stored, expected)


# ----------------------------------------------------------------------------- the network pool


def test_pool_networks_interpolate_every_parameter_between_init_and_trained():
    a, b = ConvNet(1, 10, 8, width=8).state_dict(), ConvNet(1, 10, 8, width=8).state_dict()
    entry = {"init": a, "trained": b}
    net = pool_network(entry, 0.25, ConvNet(1, 10, 8, width=8))
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, 0.25 * a[name] + 0.75 * b[name])
    trained = pool_network(entry, None, ConvNet(1, 10, 8, width=8))
    assert all(torch.equal(v, b[n]) for n, v in trained.state_dict().items())


def test_the_pool_is_trained_once_and_reused_by_later_runs_on_the_same_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECTRAL_KERNELS_CACHE", str(tmp_path / "cache"))
    from spectral_kernels.distill import pool as pool_module

    trained = []
    real_train = pool_module._train_pool
    monkeypatch.setattr(pool_module, "_train_pool", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    first = distill(_config(tmp_path / "a", **RECIPE))
    second = distill(_config(tmp_path / "b", **RECIPE))  # another run, same data and pool settings
    assert len(trained) == 1
    assert (cache_dir() / f"{pool_key(_config(tmp_path / 'x', **RECIPE))}.pt").is_file()
    assert torch.equal(torch.load(first / "synthetic.pt")["images"], torch.load(second / "synthetic.pt")["images"])
    distill(_config(tmp_path / "c", **dict(RECIPE, pool_epochs=2)))  # other settings: another pool
    assert len(trained) == 2
    assert pool_key(_config(tmp_path / "x", **RECIPE)) != pool_key(_config(tmp_path / "x", **dict(RECIPE, seed=1)))


# ----------------------------------------------------------------------------- the loop


def test_the_full_recipe_resumes_to_the_uninterrupted_result(tmp_path):
    config = dict(RECIPE, method="csdm", iterations=7, lr_schedule="plateau", calib_weight=1.0)  # every state resumes
    whole = distill(_config(tmp_path / "whole", **config))

    def interrupt(iteration):
        if iteration == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(_config(tmp_path / "cut", **config), on_iteration=interrupt)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt")
    assert state["iteration"] == 4 and state["scheduler"] is not None
    resumed = distill(_config(tmp_path / "cut", **config), resume=True)
    assert torch.equal(torch.load(resumed / "synthetic.pt")["images"], torch.load(whole / "synthetic.pt")["images"])
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "iteration" in r]  # not the rows recording each phase's device
    assert [r["iteration"] for r in rows] == list(range(7)) and all("calibration" in r for r in rows)


def test_clamped_pixels_stay_in_the_valid_range_and_adamw_is_used(tmp_path):
    run = distill(_config(tmp_path / "r", **dict(RECIPE, lr=0.5, iterations=4)))
    data = load_dataset("digits")
    images = torch.load(run / "synthetic.pt")["images"]
    low, high = (0 - data.mean) / data.std, (1 - data.mean) / data.std
    assert float(images.min()) >= float(low.min()) - 1e-6 and float(images.max()) <= float(high.max()) + 1e-6
    state = torch.load(run / "checkpoint.pt")
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == RECIPES["ncfm"]["weight_decay"]


def test_evaluation_decodes_the_set_and_trains_with_cutmix(tmp_path):
    evaluation = dict(eval_optimizer="adamw", eval_schedule="steps", eval_cutmix=0.5)
    run = distill(_config(tmp_path / "r", **dict(RECIPE, num_eval=2, eval_epochs=2, **evaluation)))
    result = json.loads((run / "eval.json").read_text())
    assert len(result["accuracies"]) == 2 and all(0 <= a <= 1 for a in result["accuracies"])


def test_cutmix_pastes_a_box_of_the_shuffled_batch_and_weights_by_area():
    x = torch.arange(4.0)[:, None, None, None].expand(4, 1, 8, 8).clone()
    labels = torch.arange(4)
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        mixed, a, b, lam = cutmix(x, labels, gen, prob=1.0)
        assert torch.equal(a, labels) and sorted(b.tolist()) == [0, 1, 2, 3]
        kept = (mixed == x).float().mean(dim=(1, 2, 3))
        own = kept[b != a]  # images that received another's box: the area kept is lam
        assert torch.allclose(own, torch.full_like(own, lam))
    assert cutmix(x, labels, gen, prob=0.0)[3] == 1.0


@pytest.mark.skipif(not os.environ.get("SPECTRAL_KERNELS_CACHE"), reason="conftest sets the cache folder")
def test_the_test_session_never_writes_to_the_users_cache():
    assert not str(cache_dir()).startswith(os.path.expanduser("~/.cache"))
