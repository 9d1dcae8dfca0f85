"""Checkpoint writes: a full disk is reported as such, the temporary file is removed and the previous
file stays loadable; a damaged file is named when read."""

import os
import subprocess

import pytest
import torch

from transferkit.errors import CheckpointError, StorageError
from transferkit.training import checkpoint as ckpt


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KB file system (tmpfs; needs root)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_disk_full_mid_write_on_a_real_file_system(small_disk):
    target = small_disk / "last.pt"
    previous = {"step": 1, "w": torch.arange(10.0)}
    ckpt.atomic_save(previous, target)
    # 6,000 one-number tensors: about 24 KB of data (the free-space check passes), but each one costs a
    # record in torch's zip file, so the file outgrows the disk while it is written
    many = {f"t{i}": torch.tensor([float(i)]) for i in range(6000)}
    assert ckpt.tensor_bytes(many) < ckpt.free_bytes(small_disk)
    with pytest.raises(StorageError) as e:
        ckpt.atomic_save(many, target)
    assert f"no space left on device while writing '{target}'" in str(e.value) and "--resume" in str(e.value)
    assert sorted(p.name for p in small_disk.iterdir()) == ["last.pt"]  # no temporary left filling the disk
    assert torch.equal(ckpt.load(target)["w"], previous["w"])


def test_free_space_checked_before_writing(small_disk):
    with pytest.raises(StorageError, match=r"no space left on device .* free, about 1.0 MB needed"):
        ckpt.atomic_save({"w": torch.zeros(256 * 1024)}, small_disk / "big.pt")
    assert list(small_disk.iterdir()) == []


def test_torch_write_error_is_a_storage_error(tmp_path, monkeypatch):
    """What torch raises when a write fails (seen on a full disk) becomes the same message."""
    target = tmp_path / "last.pt"
    ckpt.atomic_save({"step": 1}, target)

    def failing_save(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(ckpt.torch, "save", failing_save)
    monkeypatch.setattr(ckpt, "free_bytes", lambda folder: 1000)
    with pytest.raises(StorageError, match="no space left on device"):
        ckpt.atomic_save({"w": torch.zeros(4096)}, target)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"] and ckpt.load(target) == {"step": 1}


def test_interrupted_write_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(obj, f):
        f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save({"w": torch.zeros(3)}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_is_named(tmp_path, damage):
    path = tmp_path / "last.pt"
    ckpt.atomic_save({"w": torch.randn(1000)}, path)
    raw = path.read_bytes()
    path.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"\x00not a zip" * 10, "empty": b""}[damage])
    with pytest.raises(CheckpointError) as e:
        ckpt.load(path)
    assert f"checkpoint '{path}' is damaged" in str(e.value)
    assert not ckpt.readable(path)
