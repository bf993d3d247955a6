"""What a failed write says: one line naming the path and the cause, what was kept and how to continue.

Every write of every entry point (checkpoints, the final model, figures, the model card, the run record,
``mixpro-evaluate``'s results, ``mixpro-card``) runs inside :func:`reporting_write_failures`, which turns a write
failure (:func:`write_error`: an ``OSError`` in the exception's ``__cause__`` chain, safetensors'
``SafetensorError`` such as ``Error while serializing: I/O error: No space left on device (os error 28)``, or
torch's failed archive write, ``unexpected pos 576 vs 534``) into :class:`WriteFailed`, whose ``str()`` is one
line; the scripts print it and exit 1. Any other exception passes through unchanged.

Files are written so that nothing half-written is left where it would be taken for complete: checkpoints and the
final model go through a staging folder (:class:`~mixpro_hf.trainer.MixProTrainer`); single files through
:func:`atomic_write_text` / :func:`atomic_write` (a hidden temporary file beside the target, renamed over it with
``os.replace`` once complete, removed on failure).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

#: Suffix of the temporary files of :func:`atomic_write` (hidden, so never taken for a complete output).
PARTIAL_SUFFIX = ".mixpro-partial"
_OS_ERROR_CODE = re.compile(r"\bos error (\d+)", re.IGNORECASE)
#: Messages of torch's archive writer (``torch.save``), which carry no ``errno``.
_WRITE_FAILURE_TEXT = ("PytorchStreamWriter failed writing", "file write failed", "unexpected pos")
#: Error numbers only a write gives (a read never fails for these): what the entry points' safety net takes.
WRITE_ONLY_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class WriteFailed(RuntimeError):
    """A file could not be written (a full disk, a read-only or vanished folder, ...); ``str()`` is one line that
    names the path and the cause, what was kept and how to continue."""


@dataclass(frozen=True)
class WriteError:
    """The cause of a failed write, found by :func:`write_error`."""

    errno: int | None
    reason: str  #: e.g. ``"No space left on device"``
    path: str | None = None  #: the file the operating system named, when it did
    #: The writer's own error type said so (safetensors, torch): never a read's error.
    from_writer: bool = False

    def fix(self, folder: str | os.PathLike[str]) -> str:
        """What to do about it, for the message's last part (``..., then <continue>``)."""
        if self.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or (self.errno is None and "full" in self.reason):
            return f"free some space on the volume of {folder} (or choose another --output_dir)"
        if self.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"make {folder} writable (or choose another --output_dir)"
        if self.errno == errno.ENOENT:
            return f"{folder} or a folder in it was removed during the run: give an --output_dir that stays"
        return "fix the cause"


def _from_os_error(err: OSError) -> WriteError:
    reason = err.strerror or (str(err).splitlines()[0] if str(err) else type(err).__name__)
    filename = err.filename if isinstance(err.filename, str) else None
    return WriteError(err.errno, reason, filename)


def _from_message(err: BaseException) -> WriteError | None:
    """A writer's own error type: safetensors' serialisation error (its ``os error N``), torch's archive writer."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    if type(err).__name__ == "SafetensorError" and re.search(r"\bserializ", text):  # not a read's (deserializing) error
        match = _OS_ERROR_CODE.search(text)
        if match:
            code = int(match.group(1))
            return WriteError(code, os.strerror(code), from_writer=True)
        return WriteError(None, first, from_writer=True)
    if any(mark in text for mark in _WRITE_FAILURE_TEXT):  # torch.save's archive writer gives no errno
        detail = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", first)
        return WriteError(None, f"torch's writer stopped short ({detail}): the volume is likely full", from_writer=True)
    return None


def write_error(err: BaseException) -> WriteError | None:
    """The write failure behind ``err`` (``err`` itself or an exception of its ``__cause__`` chain): an
    ``OSError`` with an errno (its errno, text and file), safetensors' ``SafetensorError`` (the ``os error N`` its
    text names) or torch's failed archive write; ``None`` for anything else. Whether an ``OSError`` came from a
    write is for the caller to say: :func:`reporting_write_failures` wraps writes only, or takes only what no read
    gives (``writes_only=False``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:  # (no errno: a message of the code itself)
            return _from_os_error(current)
        found = _from_message(current) if not isinstance(current, WriteFailed) else None
        if found is not None:
            return found
        current = current.__cause__  # (not __context__: an error raised while handling an OSError is no write's)
    return None


def failure_line(what: str | os.PathLike[str], cause: WriteError, kept: str, then: str, folder: Any = None) -> str:
    """``could not write <what> (<the file the system named>): <cause>; <kept>; <fix>, then <then>``: one line.
    ``what`` is a path or says what was written (``"the final model to out"``); ``folder``, the one to free or
    make writable, defaults to ``what``'s parent."""
    code = f" (errno {cause.errno})" if cause.errno is not None else ""
    named = f" ({cause.path})" if cause.path and Path(cause.path).name not in str(what) else ""
    fix = cause.fix(folder if folder is not None else Path(what).parent)
    return f"could not write {what}{named}: {cause.reason}{code}; {kept}; {fix}, then {then}"


@contextlib.contextmanager
def reporting_write_failures(
    describe: Callable[[WriteError], str],
    *,
    cleanup: Callable[[], None] | None = None,
    error: type[WriteFailed] = WriteFailed,
    writes_only: bool = True,
    within: str | os.PathLike[str] | None = None,
) -> Iterator[None]:
    """Turn a write failure inside the block (:func:`write_error`) into ``error(describe(cause))`` (one line),
    after ``cleanup()`` (e.g. removing a staging folder); a :class:`WriteFailed` raised inside (a more precise
    line) and every other exception pass through unchanged.

    ``writes_only=False`` (a block that also reads, e.g. a whole run: the entry points' safety net) takes only
    causes no read can have (:data:`WRITE_ONLY_ERRNOS`, a ``SafetensorError`` or torch's failed write) and
    errors naming a path under the output folder ``within``, so a missing input file is never reported as a
    failed write."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as err:
        cause = write_error(err)
        if cause is None or not (writes_only or _only_a_write(cause, within)):
            raise
        if cleanup is not None:
            cleanup()
        raise error(describe(cause)) from err


def kept_and_next(output_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """For the line of a training run's failed write: what its ``output_dir`` keeps (the last complete checkpoint)
    and how to continue (resume it, or run again)."""
    from .pipeline import last_complete_checkpoint  # (pipeline imports the trainer, which imports this module)

    last = last_complete_checkpoint(output_dir)[0] if os.path.isdir(output_dir) else None
    if last is not None:
        return f"the last complete checkpoint {last} is intact", "continue with --resume_from_checkpoint last"
    return "no complete checkpoint was saved", "run again with --overwrite_output_dir True"


def run_write_failure(
    output_dir: str | os.PathLike[str], path: str | os.PathLike[str] | None = None
) -> Callable[[WriteError], str]:
    """The ``describe`` of :func:`reporting_write_failures` for a training run into ``output_dir``: the path (``path``,
    else the file the operating system named, else the folder), :func:`kept_and_next`."""

    def describe(cause: WriteError) -> str:
        kept, then = kept_and_next(output_dir)
        return failure_line(path or cause.path or output_dir, cause, kept, then, folder=output_dir)

    return describe


def _only_a_write(cause: WriteError, within: str | os.PathLike[str] | None) -> bool:
    if cause.from_writer or cause.errno in WRITE_ONLY_ERRNOS:
        return True
    if within is None or not cause.path:
        return False
    path, folder = Path(cause.path).absolute(), Path(within).absolute()
    return path == folder or folder in path.parents


def check_folder_exists(folder: str | os.PathLike[str]) -> None:
    """Raise ``FileNotFoundError`` (ENOENT) when ``folder`` vanished during a run: writing would silently make a
    new, partial folder (``os.makedirs``) without the run's earlier checkpoints and record."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, "the folder was removed during the run", str(folder))


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(file)`` into a hidden temporary file beside it (``.<name>.*`` +
    :data:`PARTIAL_SUFFIX`), then rename it over ``path``: a reader sees the old file or the complete new one; on
    any failure the temporary file is removed and the error re-raised (``path`` untouched; an ``OSError`` that
    names no file names ``path``)."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(temp)
        if isinstance(err, OSError) and err.filename is None:  # a failed write() names no file: name the target
            err.filename = str(path)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of ``text`` (UTF-8)."""
    return atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_savefig(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """``fig.savefig`` through :func:`atomic_write` (the format from ``path``'s suffix)."""
    fmt = kwargs.pop("format", None) or Path(path).suffix.lstrip(".") or None
    return atomic_write(path, lambda file: fig.savefig(file, format=fmt, **kwargs))


__all__ = [
    "PARTIAL_SUFFIX",
    "WriteError",
    "WriteFailed",
    "atomic_savefig",
    "atomic_write",
    "atomic_write_text",
    "check_folder_exists",
    "kept_and_next",
    "run_write_failure",
    "failure_line",
    "reporting_write_failures",
    "write_error",
]
