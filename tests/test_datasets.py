"""The dataset readers against damaged, hostile and awkward folders and files: each refusal is
one DataError naming the file and the value, raised before anything sized by the file is
allocated and without opening anything that is not a regular file; awkward but sound layouts
(a class of one image, hidden folders, a class folder that is a link) load."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import tracemalloc

import numpy as np
import pytest
import torch

from spectral_kernels.distill import data as data_module
from spectral_kernels.distill.data import DataError, load_dataset

from . import _bad_data as bad
from .conftest import CLI_SCRIPT, FAST_CLI, assert_one_line_error


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail instead of hanging: SIGALRM interrupts a blocking open() of a FIFO."""

    def expire(signum, frame):
        raise TimeoutError(f"still reading after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _refused(root, *words, name="imagefolder"):
    with _deadline(120), pytest.raises(DataError) as info:
        load_dataset(name, data_root=root)
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert str(word) in message, f"{word!r} not in {message!r}"
    return message


# ----------------------------------------------------------------------------- imagefolder


@pytest.mark.parametrize("kind", ["bomb", "bomb below PIL's error", "bomb below PIL's warning"])
def test_an_image_with_too_many_pixels_is_refused_before_decoding(tmp_path, kind):
    bad.hostile_image_folder(tmp_path, kind)
    message = _refused(tmp_path, tmp_path / "dogs" / "huge.png", "pixels")
    from spectral_kernels.distill.imagefolder import MAX_IMAGE_PIXELS

    assert f"{MAX_IMAGE_PIXELS}" in message and "cannot read" not in message


@pytest.mark.parametrize("kind", ["fifo", "socket", "link to /dev/zero"])
def test_a_file_that_is_not_a_regular_file_is_refused_without_opening_it(tmp_path, kind):
    cleanup = bad.hostile_image_folder(tmp_path, kind)
    try:
        _refused(tmp_path, tmp_path / "dogs" / "x.png", "not a regular file")
    finally:
        if cleanup:
            cleanup()


def test_a_broken_link_and_a_link_loop_are_named(tmp_path):
    bad.hostile_image_folder(tmp_path / "a", "broken link")
    _refused(tmp_path / "a", tmp_path / "a" / "dogs" / "x.png", "cannot be read")
    bad.hostile_image_folder(tmp_path / "b", "link loop file")
    _refused(tmp_path / "b", tmp_path / "b" / "dogs" / "x.png", "cannot be read", "symbolic links")


@pytest.mark.parametrize(
    "kind, again, first",
    [
        ("class links to itself", "cats/again", "cats"),
        ("classes link to each other", "cats/dogs", "dogs"),
        ("link to the root", "cats/up", ""),
        ("image linked twice", "cats/copy.png", "cats/0.png"),
        ("image hard-linked into another class", "dogs/cat.png", "cats/0.png"),
        ("two classes are one folder", "kittens", "cats"),
    ],
)
def test_a_file_or_folder_reached_twice_through_links_is_refused(tmp_path, kind, again, first):
    bad.hostile_image_folder(tmp_path, kind)
    _refused(tmp_path, f"{tmp_path / again} is {(tmp_path / first) if first else tmp_path} again")


def test_a_class_folder_that_is_a_link_to_elsewhere_loads(tmp_path):
    bad.image_folder(tmp_path / "elsewhere", {"cats": 3})
    bad.image_folder(tmp_path / "root", {"dogs": 3})
    os.symlink(tmp_path / "elsewhere" / "cats", tmp_path / "root" / "cats")
    data = load_dataset("imagefolder", data_root=tmp_path / "root")
    assert data.class_names == ("cats", "dogs") and len(data.train_y) + len(data.test_y) == 6


@pytest.mark.parametrize("kind", ["hidden folder", "hidden file"])
def test_hidden_entries_are_skipped(tmp_path, kind):
    bad.hostile_image_folder(tmp_path, kind)
    data = load_dataset("imagefolder", data_root=tmp_path)
    assert data.class_names == ("cats", "dogs") and len(data.train_y) + len(data.test_y) == 6


@pytest.mark.parametrize(
    "classes, train, test",
    [
        ({"a": 1, "b": 3}, [1, 2], [0, 1]),  # a single image trains; b holds round(0.2 * 3) = 1 out
        ({"a": 2, "b": 2}, [1, 1], [1, 1]),  # two images: one of each class is held out
        ({"a": 1, "b": 2, "c": 10}, [1, 1, 8], [0, 1, 2]),
    ],
)
def test_a_class_of_one_or_two_images_works(tmp_path, classes, train, test):
    bad.image_folder(tmp_path, classes)
    data = load_dataset("imagefolder", data_root=tmp_path)
    assert data.num_classes == len(classes)
    assert torch.bincount(data.train_y, minlength=len(classes)).tolist() == train
    assert torch.bincount(data.test_y, minlength=len(classes)).tolist() == test


def test_a_class_of_one_image_works_in_train_and_test_folders(tmp_path):
    bad.image_folder(tmp_path / "train", {"a": 1, "b": 1})
    bad.image_folder(tmp_path / "test", {"a": 1, "b": 1})
    data = load_dataset("imagefolder", data_root=tmp_path)
    assert data.train_y.tolist() == [0, 1] and data.test_y.tolist() == [0, 1]


@pytest.mark.parametrize("classes", [{"a": 1, "b": 1}, {"a": 1}])
def test_no_image_to_hold_out_is_a_clear_error(tmp_path, classes):
    bad.image_folder(tmp_path, classes)
    _refused(tmp_path, tmp_path, "two images")


def test_the_image_order_and_split_are_torchvisions(tmp_path):
    """The folder walk replaced torchvision's ImageFolder: a user's existing split must not move."""
    from torchvision.datasets import ImageFolder

    value = iter(range(1, 250, 7))
    for path in ["b/x/1.png", "b/0.png", "b/x/y/2.png", "b/Z.png", "a/3.png", "a/b.png", "a/a/c.png", "c/1.jpeg"]:
        for i in range(3):
            bad.save_image(tmp_path / path.replace(".", f"{i}."), next(value))
    folder = ImageFolder(str(tmp_path))
    grey = np.asarray([np.asarray(folder[i][0])[0, 0, 0] for i in range(len(folder))], dtype=np.float32) / 255
    labels = np.asarray(folder.targets)
    train_grey, train_y, test_grey, test_y = data_module._stratified_split(grey, labels, 0.2, seed=0)
    data = load_dataset("imagefolder", data_root=tmp_path, image_size=8)
    undo = lambda x: (x * data.std[None, :, None, None] + data.mean[None, :, None, None])[:, 0, 0, 0].numpy()
    # image folders are read lazily: [:] gathers every item
    np.testing.assert_allclose(undo(data.train_x[:]), train_grey, atol=1e-5)
    np.testing.assert_allclose(undo(data.test_x[:]), test_grey, atol=1e-5)
    assert data.train_y.tolist() == train_y.tolist() and data.test_y.tolist() == test_y.tolist()


# ----------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize(
    "which, labels, words",
    [
        ("cifar10", [0, 10**6, 0, 1], ["1000000", "[0, 10)"]),
        ("cifar10", [0, 2**70, 0, 1], [str(2**70), "[0, 10)"]),
        ("cifar10", [0, -1, 0, 1], ["-1", "[0, 10)"]),
        ("cifar10", [0, 10, 0, 1], ["10", "[0, 10)"]),
        ("cifar100", [0, 100, 0, 1], ["100", "[0, 100)"]),
        ("cifar10", [0, 0.5, 0, 1], ["0.5", "integer"]),
        ("cifar10", [0, 1.0, 0, 1], ["1.0", "integer"]),
        ("cifar10", [0, True, 0, 1], ["True", "integer"]),
        ("cifar10", [0, b"1", 0, 1], ["b'1'", "integer"]),
        ("cifar10", np.asarray([0, 1, 0, 1], dtype=np.float64), ["float64", "integer"]),
        ("cifar10", np.asarray([0, 1, 12, 1], dtype=np.uint8), ["12", "[0, 10)"]),
    ],
)
def test_a_label_that_is_not_an_integer_in_range_is_refused(tmp_path, which, labels, words):
    _, files, key, _ = bad.CIFAR[which]
    folder = bad.cifar_folder(tmp_path, which, {files[0]: bad.cifar_batch(labels=labels, label_key=key)})
    _refused(tmp_path, folder / files[0], "label", *words, name=which)


@pytest.mark.parametrize(
    "labels", [[np.int64(3), np.int32(9), 0, 1], np.asarray([3, 9, 0, 1], dtype=np.uint8), [3, 9, 0, 1]]
)
def test_integer_labels_of_any_integer_type_load(tmp_path, labels):
    bad.cifar_folder(tmp_path, "cifar10", {"data_batch_1": bad.cifar_batch(labels=labels)})
    data = load_dataset("cifar10", data_root=tmp_path)
    assert data.num_classes == 10 and data.train_y.tolist()[:4] == [3, 9, 0, 1]


def _declared_bytes_refused(tmp_path, raw, *words):
    folder = bad.cifar_folder(tmp_path, "cifar10", {"data_batch_2": raw})
    tracemalloc.start()
    try:
        _refused(tmp_path, folder / "data_batch_2", f"in a file of {len(raw)} bytes", *words, name="cifar10")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, f"{peak} bytes allocated before refusing"


def test_an_array_called_into_being_larger_than_its_file_is_refused_before_allocation(tmp_path):
    raw = bad.cifar_batch(data=bad.DeclaredArray((40000, 3072)), labels=bad.DeclaredArray((40000,), "i8"))
    assert len(raw) < 300
    _declared_bytes_refused(tmp_path, raw, "(40000, 3072)", f"{40000 * 3072} bytes")


def test_a_reconstructed_array_larger_than_its_file_is_refused_before_allocation(tmp_path):
    raw = bad.cifar_batch(data=bad.ReconstructedArray((40000, 3072), "u1", b"", empty_shape=(40000, 3072)))
    _declared_bytes_refused(tmp_path, raw, "(40000, 3072)", f"{40000 * 3072} bytes")


def test_an_array_whose_state_declares_more_than_its_data_is_refused(tmp_path):
    raw = bad.cifar_batch(data=bad.ReconstructedArray((40000, 3072), "u1", b"\0" * 3072))
    _declared_bytes_refused(tmp_path, raw, "(40000, 3072)", f"{40000 * 3072} bytes")


def test_arrays_sharing_one_piece_of_data_count_against_the_file_each(tmp_path):
    shared = bytes(64 * 1024)
    many = [bad.ReconstructedArray((64 * 1024,), "u1", shared) for _ in range(400)]
    raw = bad.cifar_batch(extra={b"more": many})
    assert len(raw) < 100 * 1024  # the file holds the 64 KiB once, the arrays declare 25 MiB
    _declared_bytes_refused(tmp_path, raw, "bytes")


@pytest.mark.parametrize(
    "data, words",
    [
        (np.zeros((4, 3072), dtype=object), ["object"]),
        pytest.param(bad.ReconstructedArray((4, 3072), "O", [0, 1]), ["object"], id="object state numpy crashes on"),
        (np.zeros((4, 3072), dtype=np.float32), ["float32", "uint8"]),
        (np.zeros((4, 3072), dtype=np.int64), ["int64", "uint8"]),
        (np.zeros((4, 100), dtype=np.uint8), ["(4, 100)", "3072"]),
        (np.zeros((4, 3, 32, 32), dtype=np.uint8), ["(4, 3, 32, 32)", "3072"]),
        (np.zeros((4, 3072), dtype=[("a", "u1")]), ["('a', 'u1')"]),
        (list(range(3072)) * 4, ["list", "uint8"]),
        (bytes(4 * 3072), ["bytes", "uint8"]),
    ],
)
def test_images_that_are_not_a_uint8_array_of_rows_of_3072_are_refused(tmp_path, data, words):
    folder = bad.cifar_folder(tmp_path, "cifar10", {"test_batch": bad.cifar_batch(data=data)})
    _refused(tmp_path, folder / "test_batch", *words, name="cifar10")


def test_protocol_5_buffers_are_refused(tmp_path):
    folder = bad.cifar_folder(tmp_path / "a", "cifar10", {"data_batch_1": bad.out_of_band_batch()})
    _refused(tmp_path / "a", folder / "data_batch_1", "out-of-band", name="cifar10")
    folder = bad.cifar_folder(tmp_path / "b", "cifar10", {"data_batch_1": bad.in_band_bytearray_batch()})
    _refused(tmp_path / "b", folder / "data_batch_1", "bytearray", name="cifar10")


def test_a_batch_that_is_a_fifo_is_refused_without_opening_it(tmp_path):
    folder = bad.cifar_folder(tmp_path, "cifar10")
    (folder / "data_batch_4").unlink()
    os.mkfifo(folder / "data_batch_4")
    _refused(tmp_path, folder / "data_batch_4", "not a regular file", name="cifar10")


def test_running_out_of_memory_while_loading_is_a_data_error_not_advice_about_ipc(tmp_path, monkeypatch):
    folder = bad.cifar_folder(tmp_path, "cifar10")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(data_module.np, "concatenate", no_memory)
    message = _refused(tmp_path, folder, "memory", name="cifar10")
    assert "--ipc" not in message


def test_under_a_memory_cap_a_hostile_batch_is_named_not_blamed_on_ipc(tmp_path):
    """Six files of a few hundred bytes that each name 1.2 GB, under an address-space cap: the
    CLI names the first file (before, it allocated until the cap and advised lowering --ipc)."""
    huge = bad.cifar_batch(data=bad.DeclaredArray((400000, 3072)), labels=bad.DeclaredArray((400000,), "i8"))
    _, files, _, _ = bad.CIFAR["cifar10"]
    folder = bad.cifar_folder(tmp_path, "cifar10", dict.fromkeys(files, huge))
    cap = 6 * 2**30  # far above what the CLI needs for a tiny run, far below what the files name

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    argv = [CLI_SCRIPT, "distill", *FAST_CLI, "--dataset", "cifar10", "--data-root", str(tmp_path)]
    proc = subprocess.run(
        [*argv, "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, preexec_fn=limit
    )
    line = assert_one_line_error(proc, str(folder / "data_batch_1"), "bytes")
    assert "--ipc" not in line and not (tmp_path / "run").exists()


def test_running_out_of_memory_after_reading_is_a_data_error_naming_the_dataset(tmp_path, monkeypatch):
    # A bundled set is held in memory whole (an image folder is read lazily: no whole-set copy).
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(data_module.np, "ascontiguousarray", no_memory)
    message = _refused(tmp_path, "digits", "memory", tmp_path, name="digits")
    assert "--ipc" not in message
