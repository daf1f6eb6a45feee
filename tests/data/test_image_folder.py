"""Tests of qrobust_keras/data/image_folder.py: formats, label order, clear errors."""

import numpy as np
import pytest
from PIL import Image

from qrobust_keras.data.errors import CorruptDataError, DataNotFoundError
from qrobust_keras.data.image_folder import list_image_folder, load_image_folder


def _tree(root, per_class=3, classes=("b_cls", "a_cls")):
    rng = np.random.default_rng(0)
    made = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / name / f"{j}.png")
            made[(name, j)] = img
    return made


def test_sorted_classes_and_explicit_order(tmp_path):
    made = _tree(tmp_path)
    x, y, classes = load_image_folder(tmp_path)
    assert classes == ["a_cls", "b_cls"] and y.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(x[3], made[("b_cls", 0)])
    x2, y2, _ = load_image_folder(tmp_path, class_names=["b_cls", "a_cls"], num_workers=1)
    np.testing.assert_array_equal(x2[0], made[("b_cls", 0)])
    assert y2.tolist() == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("decoder", ["tf", "pil"])
def test_grayscale_and_jpeg(tmp_path, decoder):
    (tmp_path / "c").mkdir()
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(gray, mode="L").save(tmp_path / "c" / "g.png")
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(tmp_path / "c" / "j.jpg", quality=95)
    x, _, _ = load_image_folder(tmp_path, decoder=decoder)
    np.testing.assert_array_equal(x[0], np.repeat(gray[..., None], 3, axis=2))
    assert np.abs(x[1].astype(int) - 200).max() <= 2


@pytest.mark.parametrize("decoder", ["tf", "pil"])
def test_errors(tmp_path, decoder):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "none")
    _tree(tmp_path, classes=("a",))
    with pytest.raises(ValueError, match=r"class folders \['a'\] that are not among"):
        list_image_folder(tmp_path, class_names=["x"])
    with pytest.raises(DataNotFoundError, match="class folder .* is missing"):
        list_image_folder(tmp_path, class_names=["a", "z"])
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a" / "small.png")
    with pytest.raises(CorruptDataError, match="small.png' is 16x16 pixels; expected 32x32"):
        load_image_folder(tmp_path, decoder=decoder)
    (tmp_path / "a" / "small.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(CorruptDataError, match="cannot decode image .*small.png"):
        load_image_folder(tmp_path, decoder=decoder)
    with pytest.raises(ValueError, match="decoder must be one of"):
        load_image_folder(tmp_path, decoder="cv2")
