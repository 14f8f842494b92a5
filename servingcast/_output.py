"""Writing result files: never over a user's files unless asked, never half a result.

Every command that writes a folder of results (``servingcast-simulate --output``,
``servingcast-solve --output``) checks the folder before doing any work and writes through
:func:`write_outputs`: the files are staged in a temporary folder beside the targets and moved
into place only when all of them are complete, so an error leaves nothing behind. Files of the
same names are replaced only with ``--force``; other files in the folder are never touched.

:func:`folder_lock` keeps two runs from writing one folder at once: an exclusive, non-blocking
``flock`` on the folder itself (no lock file is left behind; the kernel releases it when the
process ends, however it ends). The second run is refused before it does any work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from servingcast.errors import ConfigError


def check_output_dir(folder: Path, names: Iterable[str], force: bool) -> None:
    """Raise :class:`ConfigError` when ``folder`` cannot take files ``names``.

    A file in the way, files of those names already there (unless ``force``), or an unwritable
    location are errors; call this before the work that produces the files.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--output {folder} is a file, not a folder. To fix: choose a folder")
    clashes = sorted(name for name in names if (folder / name).exists())
    if clashes and not force:
        raise ConfigError(
            f"{folder} already holds {', '.join(clashes)}; nothing was written. To fix: choose "
            "another --output folder, remove them, or pass --force to overwrite")
    parent = folder.resolve()
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write to {folder}: {parent} is not writable. To fix: choose "
                          "a writable --output folder")


def write_outputs(files: Mapping[str, bytes | str], folder: str | Path,
                  force: bool = False) -> list[Path]:
    """Write ``files`` (name → content) into ``folder``, atomically, refusing to overwrite files
    of the same names unless ``force``; return the paths written."""
    target = Path(folder)
    check_output_dir(target, files, force)
    try:
        target.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".servingcast-", dir=target))
    except OSError as exc:
        raise ConfigError(f"cannot write to {target} ({exc.strerror}). To fix: choose a "
                          "writable --output folder") from None
    written = []
    try:
        for name, data in files.items():
            path = stage / name
            if isinstance(data, bytes):
                path.write_bytes(data)
            else:
                path.write_text(data, encoding="utf-8")
        for name in files:
            os.replace(stage / name, target / name)
            written.append(target / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return written


@contextlib.contextmanager
def folder_lock(folder: Path, command: str = "servingcast-solve") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block;
    :class:`ConfigError` at once when another process holds it. A folder it created is removed
    again if it is still empty at the end (a run that failed before writing leaves nothing).
    Without ``fcntl`` (Windows) nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(f"cannot use {folder} ({exc.strerror}). To fix: choose a writable "
                          "--output folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(
                f"another {command} run is writing to {folder} right now; nothing was done. "
                "To fix: wait for it to finish (rerunning the same command then resumes its "
                "study), or choose another --output folder") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
