"""Data at its own size (issue 25, item 2): images keep their size and channel count unless
--image-size resizes them; image folders are map-style datasets that decode one image per item;
the ConvNet, multi-formation and the run folder follow a non-square H x W. (Bad input: the
"round 4 imgsize" cases of tests/test_bad_input.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from spectral_kernels.distill import formation
from spectral_kernels.distill.config import DistillConfig
from spectral_kernels.distill.data import DataError, load_dataset
from spectral_kernels.distill.imagefolder import ImageFolderDataset, open_image_folders
from spectral_kernels.distill.models import ConvNet, depth_for
from spectral_kernels.distill.rundir import FORMAT_KEY, RUN_FORMAT, saved_config

from .conftest import FAST_CLI, assert_one_line_error, run_cli


def _folder(root, height, width, *, classes=("cats", "dogs"), per_class=3, mode="RGB", sizes=None, seed=0):
    """root/<class>/<i>.png of random pixels, height x width (or sizes[k] = (h, w) for the k-th image)."""
    rng = np.random.default_rng(seed)
    k = 0
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = sizes[k] if sizes else (height, width)
            shape = (h, w) if mode == "L" else (h, w, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / c / f"{i}.png")  # L or RGB
            k += 1
    return root


IMAGES = ["distill", *FAST_CLI, "--dataset", "imagefolder", "--method", "dm"]


def _distil(tmp_path, *extra):
    out = tmp_path / "run"
    proc = run_cli(*IMAGES, "--data-root", tmp_path / "images", "--out", out, *extra, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return torch.load(out / "synthetic.pt")["images"], out


# ----------------------------------------------------------------------------- through the CLI


def test_a_folder_of_24x24_images_gives_24x24_synthetic_images(tmp_path):
    _folder(tmp_path / "images", 24, 24)
    images, out = _distil(tmp_path)
    assert tuple(images.shape) == (2, 3, 24, 24)  # 2 classes x IPC 1, RGB
    assert (out / "grid.png").is_file()


def test_a_20x28_folder_without_image_size_gives_20x28_also_with_factor_2_and_evaluates(tmp_path):
    _folder(tmp_path / "images", 20, 28)
    images, out = _distil(tmp_path, "--factor", "2")
    assert tuple(images.shape[1:]) == (3, 20, 28)
    assert json.loads((out / "config.json").read_text())["image_size"] is None  # the data's own size
    proc = run_cli("evaluate", out, "--num-eval", "1", "--eval-epochs", "1", "--quiet", timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "eval.json").read_text())["num_eval"] == 1


def test_image_size_resizes_a_folder_of_mixed_sizes(tmp_path):
    _folder(tmp_path / "images", 0, 0, sizes=[(20, 28), (24, 24), (9, 31), (16, 16), (30, 10), (24, 24)])
    images, out = _distil(tmp_path, "--image-size", "12", "16")
    assert tuple(images.shape[1:]) == (3, 12, 16)
    assert json.loads((out / "config.json").read_text())["image_size"] == [12, 16]


def test_mixed_sizes_without_image_size_fail_in_one_line_writing_nothing(tmp_path):
    _folder(tmp_path / "images", 0, 0, sizes=[(24, 24), (24, 24), (24, 24), (24, 24), (20, 28), (24, 24)])
    out = tmp_path / "run"
    proc = run_cli(*IMAGES, "--data-root", tmp_path / "images", "--out", out, timeout=300)
    images = tmp_path / "images"
    assert_one_line_error(
        proc, "--image-size", f"{images / 'cats' / '0.png'} is 24 x 24", f"{images / 'dogs' / '1.png'} is 20 x 28"
    )
    assert not out.exists()


# ----------------------------------------------------------------------------- sizes and channels


def test_a_grey_folder_gives_one_channel_and_a_colour_one_three(tmp_path):
    grey = load_dataset("imagefolder", data_root=_folder(tmp_path / "grey", 10, 12, mode="L"))
    colour = load_dataset("imagefolder", data_root=_folder(tmp_path / "colour", 10, 12))
    assert grey.image_shape == (1, 10, 12) and colour.image_shape == (3, 10, 12)


def test_one_colour_image_makes_the_folder_rgb_and_grey_images_repeat_their_channel(tmp_path):
    root = _folder(tmp_path, 8, 8, mode="L")
    _folder(tmp_path, 8, 8, classes=("cats",), per_class=1, seed=1)  # cats/0.png now in colour
    (dataset,) = open_image_folders([tmp_path], None)
    assert dataset.image_shape == (3, 8, 8)
    grey_path = root / "dogs" / "0.png"
    index = [path for path, _ in dataset.samples].index(str(grey_path))
    image, _ = dataset[index]
    expected = torch.from_numpy(np.asarray(Image.open(grey_path), dtype=np.float32) / 255)
    for channel in image:
        torch.testing.assert_close(channel, expected)


def test_a_16_bit_grey_image_keeps_its_values(tmp_path):
    values = lambda i: (np.arange(48, dtype=np.uint16) * 1361 + 100 * i).reshape(6, 8)  # up to 64067 of 65535
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(values(i)).save(tmp_path / c / f"{i}.png")  # PIL mode I;16
    (dataset,) = open_image_folders([tmp_path], None)
    image, _ = dataset[1]
    assert dataset.image_shape == (1, 6, 8)
    torch.testing.assert_close(image[0], torch.from_numpy(values(1) / 65535).float())


@pytest.mark.parametrize("dtype, mode", [(np.float32, "F"), (np.int32, "I")])
def test_32_bit_pixels_are_refused_naming_the_file_and_mode(tmp_path, dtype, mode):
    _folder(tmp_path, 4, 4, mode="L")
    Image.fromarray(np.full((4, 4), 7, dtype=dtype)).save(tmp_path / "cats" / "x.tiff")
    with pytest.raises(DataError, match=f"x.tiff holds 32-bit .*mode {mode}\\)"):
        load_dataset("imagefolder", data_root=tmp_path)


def test_the_folder_item_is_the_file_in_0_1_without_resizing(tmp_path):
    _folder(tmp_path, 6, 9, per_class=2)
    (dataset,) = open_image_folders([tmp_path], None)
    path, label = dataset.samples[3]
    image, got_label = dataset[3]
    expected = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(2, 0, 1)
    assert image.dtype == torch.float32 and got_label == label == 1
    torch.testing.assert_close(image, expected)


def test_image_size_resizes_every_dataset_and_one_value_is_a_square(tmp_path):
    digits = load_dataset("digits", image_size=(16, 12))
    assert digits.image_shape == (1, 16, 12)
    assert load_dataset("digits", image_size=16).image_shape == (1, 16, 16)
    assert load_dataset("digits").image_shape == (1, 8, 8)


def test_a_folders_own_size_is_read_from_headers_without_decoding(tmp_path, monkeypatch):
    _folder(tmp_path, 14, 10)
    decoded = []
    real_load = ImageFile.ImageFile.load  # what decodes a file PIL opened (PNG included)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (decoded.append(self), real_load(self))[1])
    (dataset,) = open_image_folders([tmp_path], None)
    assert dataset.image_shape == (3, 14, 10) and decoded == []
    assert dataset.targets == [0, 0, 0, 1, 1, 1] and decoded == []  # a per-class index costs no decode
    dataset[4]
    assert len({id(image) for image in decoded}) == 1  # one image per item (PIL may call load on it more than once)
    assert isinstance(dataset, torch.utils.data.Dataset) and isinstance(dataset, ImageFolderDataset)


def test_the_driver_reads_an_image_folder_lazily_decoding_only_what_a_step_draws(tmp_path, monkeypatch):
    """No whole-set load: loading decodes only the normalisation sample (here 4 of 30 training
    images) and the first item of each set; a batch decodes its own images; values as an eager read gives."""
    from spectral_kernels.distill import sources
    from spectral_kernels.distill.loop import class_members

    _folder(tmp_path, 8, 8, classes=("a", "b", "c"), per_class=12)
    monkeypatch.setattr(sources, "MEAN_SAMPLE", 4)
    decoded = []  # the images themselves: an id() alone can be reused once its image is freed
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: (decoded.append(self), real_load(self))[1])
    data = load_dataset("imagefolder", data_root=tmp_path)
    assert not isinstance(data.train_x, torch.Tensor) and len(data.train_x) == 30  # 36 less 20 % held out
    assert len(decoded) <= 2 * (4 + 2), decoded  # the sample, and the first item of each set (its shape)
    members = class_members(data)
    idx = torch.cat([m[:2] for m in members])
    decoded.clear()
    batch = sources.take(data.train_x, idx, torch.device("cpu"))
    assert tuple(batch.shape) == (6, 3, 8, 8) and len({id(image) for image in decoded}) == 6
    eager = torch.stack([data.train_x.dataset[int(i)][0] for i in idx])  # the folder's own items, [0, 1]
    expected = (eager - data.mean[None, :, None, None]) / data.std[None, :, None, None]
    torch.testing.assert_close(batch, expected)


def test_a_file_that_changes_size_after_the_folder_was_read_is_refused(tmp_path):
    _folder(tmp_path, 8, 8)
    (dataset,) = open_image_folders([tmp_path], None)
    Image.fromarray(np.zeros((8, 9, 3), dtype=np.uint8)).save(tmp_path / "cats" / "1.png")
    with pytest.raises(DataError, match="cats/1.png is now 8 x 9"):
        dataset[1]


# ----------------------------------------------------------------------------- network and formation


def test_the_convnet_pools_until_the_shorter_side_is_at_most_4():
    for (h, w), map_shape in [((20, 28), (2, 3)), ((8, 64), (4, 32)), ((32, 32), (4, 4)), ((28, 20), (3, 2))]:
        net = ConvNet(3, 5, (h, w), width=4)
        assert net.embed(torch.randn(2, 3, h, w)).shape == (2, net.feature_dim)
        assert net.feature_dim == 4 * map_shape[0] * map_shape[1]
        assert len([m for m in net.features if isinstance(m, torch.nn.AvgPool2d)]) == depth_for(min(h, w))
    assert ConvNet(3, 10, 32).feature_dim == ConvNet(3, 10, (32, 32)).feature_dim  # an int is a square


def test_the_factor_must_divide_both_sides():
    formation.check_factor(2, (20, 28))
    with pytest.raises(ValueError, match="--factor 2 .* 20 x 27.*--image-size"):
        formation.check_factor(2, (20, 27))
    decoded = formation.decode(torch.randn(1, 3, 20, 28), 2)
    assert decoded.shape == (4, 3, 20, 28)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("value, stored", [(24, [24, 24]), ([24], [24, 24]), ([20, 28], [20, 28]), (None, None)])
def test_the_config_takes_an_int_or_a_pair_and_stores_height_width(value, stored):
    assert DistillConfig(image_size=value).validate().image_size == stored


def test_a_config_json_without_image_size_means_32_for_an_image_folder(tmp_path):
    for name, dataset, expected in [("old", "imagefolder-lt", [32, 32]), ("digits", "digits", None)]:
        (tmp_path / name).mkdir()
        values = {FORMAT_KEY: RUN_FORMAT, "dataset": dataset, "data_root": "x"}
        (tmp_path / name / "config.json").write_text(json.dumps(values))
        assert saved_config(tmp_path / name).image_size == expected
    (tmp_path / "int").mkdir()
    values = {FORMAT_KEY: RUN_FORMAT, "dataset": "imagefolder", "data_root": "x", "image_size": 24}
    (tmp_path / "int" / "config.json").write_text(json.dumps(values))
    assert saved_config(tmp_path / "int").image_size == [24, 24]
