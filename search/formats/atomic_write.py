"""The one way losstune writes a file or a directory a user named: safely, atomically, never over an input.

:func:`atomic_file` and :func:`atomic_directory` write into a temporary entry that is

- **unpredictable and created exclusively** (``tempfile.mkstemp`` / ``mkdtemp``: ``O_CREAT | O_EXCL``, a random
  name, mode 0600/0700), so an existing ``OUT.tmp`` (a symbolic link planted to redirect the write, or a user's
  own file) is never followed, overwritten or deleted;
- **in the destination's directory**, so the final step is a rename within one filesystem: ``os.replace`` for a
  file (atomic: readers see the old file or the new one, never a half file), ``os.rename`` onto a missing or empty
  directory for a directory;
- **removed on every exit path**: an error, Ctrl-C, and SIGTERM (turned into ``KeyboardInterrupt`` while the
  write is in progress, :func:`search.formats.interrupts.sigterm_interrupts`, so the cleanup runs), leaving an
  earlier ``OUT`` as it was.

An output that is one of the command's inputs (``predict test.csv -o test.csv``, also through another path or a
hard link) is refused before anything is written, and so is an output path that is a directory where a file is
wanted. A failed write (a full disk, a read-only directory) is one line, :class:`LosstuneError`, naming the
output and saying that it is unchanged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from objectives.errors import LosstuneError
from search.formats.interrupts import sigterm_interrupts


def refuse_input_as_output(out: Path, inputs: Iterable[Path], what: str = "output") -> None:
    """Refuse ``out`` when it is one of ``inputs``: the same path, or the same file through another path, a
    symbolic link or a hard link."""
    out = Path(out)
    for source in inputs:
        source = Path(source)
        if os.path.abspath(out) == os.path.abspath(source) or _same_file(out, source):
            raise LosstuneError(f"the {what} {out} is also an input of this command ({source}): write to another file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: not the same file
        return False


def check_output(out: Path, inputs: Iterable[Path] = (), directory: bool = False) -> None:
    """What :func:`atomic_file` (``directory=False``) or :func:`atomic_directory` checks before it writes, for a
    command to call before its long work (training): not an input, a directory that exists and can be written,
    and for a directory an ``out`` that is missing or empty."""
    out = Path(out)
    refuse_input_as_output(out, inputs)
    parent = out.parent
    if not parent.is_dir():
        raise LosstuneError(f"output directory does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise LosstuneError(f"cannot write {out}: directory {parent} is not writable")
    if directory:
        if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
            raise LosstuneError(f"{out} already exists and is not empty: choose another -o or remove it")
    elif out.is_dir() and not out.is_symlink():
        raise LosstuneError(f"output {out} is a directory: give a file name")


def _write_error(out: Path, exc: OSError) -> LosstuneError:
    return LosstuneError(f"cannot write {out}: {exc.strerror or exc}; {out} is unchanged")


@contextmanager
def atomic_file(
    out: Path, *, inputs: Iterable[Path] = (), encoding: str | None = "utf-8", newline: str | None = ""
) -> Iterator[IO]:
    """An open file (text, or binary with ``encoding=None``) whose content becomes ``out`` when the block ends
    without an exception; see the module's docstring for what is guaranteed."""
    out = Path(out)
    check_output(out, inputs, directory=False)
    with sigterm_interrupts():
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        except OSError as exc:
            raise _write_error(out, exc) from None
        tmp = Path(tmp_name)
        try:
            mode = "wb" if encoding is None else "w"
            with os.fdopen(fd, mode, encoding=encoding, newline=None if encoding is None else newline) as f:
                yield f
            _keep_mode(out, tmp)
            os.replace(tmp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _write_error(out, exc) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _keep_mode(out: Path, tmp: Path) -> None:
    """The new file gets the old file's permission bits, or the umask's default for a new one (mkstemp: 0600)."""
    try:
        mode = out.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def write_text_atomic(out: Path, text: str, *, inputs: Iterable[Path] = ()) -> None:
    """``out`` holds ``text`` (UTF-8), written by :func:`atomic_file`."""
    with atomic_file(out, inputs=inputs, newline=None) as f:
        f.write(text)


@contextmanager
def atomic_directory(out: Path, *, inputs: Iterable[Path] = ()) -> Iterator[Path]:
    """A new empty staging directory beside ``out`` whose content becomes ``out`` (which must be missing or an
    empty directory) when the block ends without an exception; otherwise it is removed with everything in it."""
    out = Path(out)
    check_output(out, inputs, directory=True)
    with sigterm_interrupts():
        try:
            stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        except OSError as exc:
            raise _write_error(out, exc) from None
        try:
            yield stage
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(stage, 0o777 & ~umask)
            os.rename(stage, out)  # POSIX: replaces an empty directory, fails on a non-empty one
        except OSError as exc:
            shutil.rmtree(stage, ignore_errors=True)
            raise _write_error(out, exc) from None
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
