"""qrobust_keras._files: atomic writes keep the old file or the new one, never half of one."""

import os

import pytest

from qrobust_keras._files import atomic_save, atomic_write, new_figure, save_figure


def test_atomic_write_text_and_bytes_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "note.md"
    assert atomic_write(path, "héllo") == str(path)
    assert path.read_text(encoding="utf-8") == "héllo"
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(path.parent) == ["note.md"]


def test_atomic_write_refusals_happen_before_writing(tmp_path):
    path = tmp_path / "keep.txt"
    path.write_text("old")
    with pytest.raises(FileExistsError, match=r"path=.*keep.txt.* exists; pass overwrite=True"):
        atomic_write(path, "new", overwrite=False)
    assert path.read_text() == "old"
    missing = tmp_path / "nope" / "x.txt"
    with pytest.raises(FileNotFoundError, match=r"folder .*nope.* does not exist"):
        atomic_write(missing, "x", make_dirs=False)
    assert not (tmp_path / "nope").exists()
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_failed_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.h5"
    path.write_bytes(b"old model")
    seen = []

    def half_write_then_fail(tmp):
        seen.append(tmp)
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise KeyboardInterrupt  # a kill part way: BaseException, not Exception

    with pytest.raises(KeyboardInterrupt):
        atomic_save(path, half_write_then_fail)
    assert path.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["model.h5"]
    # the temporary file sat beside the target and kept its suffix (writers such as h5py choose a format by it)
    assert os.path.dirname(seen[0]) == str(tmp_path) and seen[0].endswith("model.h5")


def test_save_figure_writes_a_png(tmp_path):
    fig = new_figure((2, 2))
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "plot.png", dpi=50)
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["plot.png"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_get_the_mode_the_umask_gives_and_replaced_files_keep_theirs(tmp_path, umask):
    # issue 26: every file was 0600 whatever the umask (mkstemp's mode survived os.replace)
    old = os.umask(umask)
    try:
        path = tmp_path / "report.md"
        atomic_write(path, "a")
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        assert os.stat(path).st_mode & 0o777 == os.stat(plain).st_mode & 0o777  # what open() gives
        os.chmod(path, 0o640)
        atomic_save(path, lambda tmp: open(tmp, "w").write("b"))
        assert os.stat(path).st_mode & 0o777 == 0o640 and path.read_text() == "b"
    finally:
        os.umask(old)


def test_atomic_folder_replaces_on_success_and_keeps_the_old_folder_on_failure(tmp_path):
    import pytest

    from qrobust_keras._files import atomic_folder

    target = tmp_path / "entry"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as scratch:
            open(f"{scratch}/new.txt", "w").write("new")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"] and (target / "old.txt").read_text() == "old"
    with atomic_folder(target) as scratch:
        open(f"{scratch}/new.txt", "w").write("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
