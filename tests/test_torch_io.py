"""Safe checkpoint reading: numpy arrays and scalars pickled under numpy 1's module names load."""

import io
import zipfile

import numpy as np
import pytest
import torch

from jaxsep.convert.torch_io import load_torch_checkpoint
from jaxsep.convert.vggish import load_torch_arrays
from jaxsep.errors import JaxsepError


def _as_if_saved_with_numpy1(src, dst):
    """Rewrite the pickle of a torch zip checkpoint to numpy 1's `numpy.core` module path."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            zout.writestr(info, data)


def test_numpy1_pickled_arrays_and_scalars_load(tmp_path):
    modern = tmp_path / "modern.pth"
    torch.save({"pca_means": np.arange(3, dtype=np.float32), "max_bin": np.int64(7)}, modern)
    old = tmp_path / "old.pth"
    _as_if_saved_with_numpy1(modern, old)
    checkpoint = load_torch_checkpoint(old)
    np.testing.assert_array_equal(checkpoint["pca_means"], np.arange(3, dtype=np.float32))
    assert checkpoint["max_bin"] == 7
    modern_arrays = tmp_path / "modern_arrays.pth"
    torch.save({"pca_means": np.arange(3, dtype=np.float32)}, modern_arrays)
    old_arrays = tmp_path / "old_arrays.pth"
    _as_if_saved_with_numpy1(modern_arrays, old_arrays)
    arrays = load_torch_arrays(old_arrays)  # the torchvggish PCA-file path
    np.testing.assert_array_equal(arrays["pca_means"], np.arange(3, dtype=np.float32))


def test_foreign_class_is_rejected_by_name(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"x": io.BytesIO(b"data")}, path)
    with pytest.raises(JaxsepError, match=r"foreign\.pth.*_io.BytesIO.*allow-list") as info:
        load_torch_checkpoint(path)
    assert "\n" not in str(info.value)
