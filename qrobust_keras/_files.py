"""Atomic file writes: how the library's own code writes every file (Keras writes its checkpoints itself).

Every file goes through a temporary file in the destination folder and ``os.replace``, which is atomic on POSIX and
Windows when both names are on one file system. A run killed part way leaves the old file or the new one, never half
of one, and a failed write removes its temporary file. New files get the permissions the user's umask gives (as
``open`` would), a replaced file keeps its own.

Example:

>>> import os, tempfile
>>> from qrobust_keras._files import atomic_write
>>> path = os.path.join(tempfile.mkdtemp(), "sub", "note.txt")
>>> atomic_write(path, "hello") == path, open(path).read()
(True, 'hello')
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator


def atomic_write(path: str | os.PathLike, data: str | bytes, overwrite: bool = True, make_dirs: bool = True) -> str:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; returns the path as a string.

    Args:
        path: destination file.
        data: the whole content.
        overwrite: replace an existing file; when False an existing ``path`` raises FileExistsError.
        make_dirs: create missing parent folders; when False a missing folder raises FileNotFoundError.

    Raises:
        FileExistsError, FileNotFoundError: as above, before anything is written.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return atomic_save(path, lambda tmp: _write_bytes(tmp, payload), overwrite=overwrite, make_dirs=make_dirs)


def atomic_save(path: str | os.PathLike, save: Callable[[str], Any], overwrite: bool = True,
                make_dirs: bool = True) -> str:
    """Call ``save(tmp)`` to write a temporary file beside ``path``, then move it onto ``path``.

    For writers that take a file name (``model.save``); the temporary name keeps ``path``'s suffix, so writers that
    pick a format from the suffix (``.h5``) choose the right one. Arguments and errors as in :func:`atomic_write`.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        if not make_dirs:
            raise FileNotFoundError(f"path={path!r}: folder {folder!r} does not exist")
        os.makedirs(folder, exist_ok=True)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"path={path!r} exists; pass overwrite=True to replace it")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        save(tmp)
        if os.path.isfile(tmp):  # mkstemp makes 0600 files; give the mode a plain open() would
            os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[str]:
    """Yield a scratch folder beside ``path`` to fill; when the block ends normally it replaces ``path`` (an existing
    folder is swapped out, then removed), when it raises the scratch folder is removed and ``path`` is untouched.
    So a long build of a folder never leaves it half-written or gone."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-partial-", dir=parent)
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    old = None
    if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-old-", dir=parent)
        os.replace(path, os.path.join(old, "folder"))
    os.replace(scratch, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _file_mode(path: str) -> int:
    """The mode for ``path``: an existing file keeps its own, a new one gets 0666 minus the process umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mask = os.umask(0)  # reading the umask means setting it; put it back at once
        os.umask(mask)
        return 0o666 & ~mask


def new_figure(figsize: tuple[float, float], **kwargs: Any) -> Any:
    """A matplotlib ``Figure`` on an Agg canvas: no pyplot, no global backend switch, nothing left open."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike, dpi: int | None = None) -> str:
    """Render a matplotlib figure to PNG (at ``dpi``, default the figure's) and write it atomically to ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return atomic_write(path, buf.getvalue())


def _write_bytes(path: str, payload: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
