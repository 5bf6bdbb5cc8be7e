import numpy as np
import pytest
import torch
from conftest import tiny_config, write_images
from PIL import Image

from unitgan.data import ArrayDomain, ImageFolderDomain, InfiniteSampler, SyntheticDomain, build_domain
from unitgan.data.filelist import list_images
from unitgan.data.io import load_image
from unitgan.errors import UnitganError


def test_folder_domain_is_recursive_and_normalised(tmp_path):
    write_images(tmp_path / "A" / "x" / "y", 3, size=(20, 24))
    (tmp_path / "A" / "notes.txt").write_text("not an image")
    Image.new("RGB", (30, 20), (255, 0, 0)).save(tmp_path / "A" / "red.jpg")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(tmp_path / "A" / "blue.webp")
    Image.new("RGB", (20, 20), (0, 255, 0)).save(tmp_path / "A" / "green.bmp")
    ds = ImageFolderDomain(tmp_path / "A", channels=3, crop_size=16, train=False)
    assert len(ds) == 6
    x = ds[[p.name for p in ds.files].index("red.jpg")]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x[0].mean() > 0.95 and x[1].mean() < -0.9  # red in [-1, 1]


def test_augmentation_is_a_function_of_the_sample_seed(tmp_path):
    write_images(tmp_path / "A", 2, size=(32, 32))
    ds = ImageFolderDomain(tmp_path / "A", channels=3, crop_size=16, train=True)
    assert torch.equal(ds[(0, 123)], ds[(0, 123)])
    crops = {tuple(ds[(0, s)].flatten()[:8].tolist()) for s in range(20)}
    assert len(crops) > 5  # random crops and flips differ between seeds


def test_load_size_resizes_before_crop(tmp_path):
    write_images(tmp_path / "A", 1, size=(10, 8))
    with pytest.raises(UnitganError, match="10x8, smaller than data.crop_size=16"):
        ImageFolderDomain(tmp_path / "A", 3, crop_size=16)
    ds = ImageFolderDomain(tmp_path / "A", 3, crop_size=16, load_size=18)
    assert ds[(0, 1)].shape == (3, 16, 16)


def test_odd_modes_are_converted(tmp_path):
    arr16 = (np.arange(400, dtype=np.uint16).reshape(20, 20) * 150).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    Image.new("P", (20, 20), 3).save(tmp_path / "palette.png")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(tmp_path / "alpha.png")
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(tmp_path / "cmyk.jpg")
    for p in tmp_path.iterdir():
        for channels, mode in ((1, "L"), (3, "RGB")):
            assert load_image(p, channels).mode == mode
    grey = np.asarray(load_image(tmp_path / "deep.png", 1))
    assert grey.max() > 200 and grey.min() == 0  # 16-bit range scaled, not clipped
    assert np.asarray(load_image(tmp_path / "alpha.png", 3)).min() == 255  # transparent -> white


def test_list_images_survives_symlink_loops(tmp_path):
    write_images(tmp_path / "A", 2)
    (tmp_path / "A" / "loop").symlink_to(tmp_path / "A")
    assert len(list_images(tmp_path / "A")) == 2


def test_array_domain_from_npz(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (10, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(10), x_test=x[:3], y_test=np.arange(3))
    ds = ArrayDomain(str(tmp_path / "d.npz"), "train", channels=3, crop_size=32, return_labels=True)
    img, label = ds[(4, 0)]
    assert img.shape == (3, 32, 32) and int(label) == 4
    assert len(ArrayDomain(str(tmp_path / "d.npz"), "test", 1, 32)) == 3
    with pytest.raises(UnitganError, match="does not exist"):
        ArrayDomain(str(tmp_path / "missing.npz"), "train", 1, 32)
    with pytest.raises(UnitganError, match="not found .*data.download=true"):
        ArrayDomain("usps", "train", 1, 32, cache_dir=str(tmp_path / "cache"))


def test_sampler_is_endless_resumable_and_rank_disjoint():
    s = InfiniteSampler(7, seed=3)
    it = iter(s)
    stream = [next(it) for _ in range(21)]
    for epoch in range(3):  # each epoch is a permutation
        assert sorted(i for i, _ in stream[7 * epoch : 7 * epoch + 7]) == list(range(7))
    resumed = iter(InfiniteSampler(7, seed=3, start=9))
    assert [next(resumed) for _ in range(12)] == stream[9:]
    r0 = iter(InfiniteSampler(8, seed=3, rank=0, world_size=2))
    r1 = iter(InfiniteSampler(8, seed=3, rank=1, world_size=2))
    a, b = [next(r0)[0] for _ in range(4)], [next(r1)[0] for _ in range(4)]
    assert sorted(a + b) == list(range(8))


def test_synthetic_test_pairs_share_scenes_and_train_does_not(tmp_path):
    a_test, b_test = SyntheticDomain("a", "test", 32, 5), SyntheticDomain("b", "test", 32, 5)
    assert a_test.scene(3) == b_test.scene(3)
    assert torch.equal(a_test.ground_truth(3, "b"), b_test[3])
    a_train, b_train = SyntheticDomain("a", "train", 32, 5), SyntheticDomain("b", "train", 32, 5)
    assert a_train.scene(0) != b_train.scene(0)
    assert a_test[0].shape == (1, 32, 32) and b_test[0].shape == (3, 32, 32)
    # sketch: white background, dark outlines; paint: no pure white, shape colours by kind
    assert a_test[0].max() == 1 and a_test[0].min() < -0.5
    assert b_test[0].max() < 1


def test_build_domain_checks_channels(tmp_path):
    with pytest.raises(UnitganError, match="model.input_nc_a' must be 1"):
        build_domain(tiny_config(tmp_path, **{"model.input_nc_a": 3}), "a")
