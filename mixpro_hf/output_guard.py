"""The output-folder guard: one run per ``--output_dir``, and what a run may delete in it.

* :class:`OutputDirLock`: a lock file (:data:`LOCK_FILE`) in the output folder, holding the owner's host, process id
  and start time. A second run into a folder in use is refused with one line that names the run holding it. The
  main process of a distributed run takes it; the other ranks of that run never do, so they are not refused, while
  independent single-process runs (a wrong ``accelerate launch``: each "machine" a world of one) each try to take
  it and the second one is refused. A lock left by a killed run (its process gone, on this host) is reported and
  replaced; one left on another host cannot be checked and is named, with the file to delete once that run is gone.
  The lock is released when the run ends, also on an error or SIGTERM (:class:`~mixpro_hf.trainer.TrainingStopped`).
* :func:`check_output_dir` / :func:`remove_run_outputs`: a non-empty folder is refused unless the run resumes or
  replaces it (``--overwrite_output_dir`` deletes only what ``mixpro-train`` writes, :data:`RUN_OUTPUTS`).

Checkpoints and the final model are saved atomically by :class:`~mixpro_hf.trainer.MixProTrainer` (a staging folder,
then renames).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .figures import ALPHA_CURVE_FILE, SAMPLES_FILE
from .model_card import REPLACEABLE
from .trainer import STAGING_DIR
from .write_guard import PARTIAL_SUFFIX, reporting_write_failures, run_write_failure

logger = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_FILE = ".mixpro-run.lock"
RUN_FILE = "mixpro_run.json"
#: What ``mixpro-train`` writes into an output folder (``fnmatch`` patterns), besides a README.md that is its model
#: card: ``--overwrite_output_dir`` deletes exactly these and refuses to touch anything else.
RUN_OUTPUTS = (
    "all_results.json", "*_results.json", "trainer_state.json", RUN_FILE, ALPHA_CURVE_FILE, SAMPLES_FILE,
    "config.json", "preprocessor_config.json", "training_args.bin", "model.safetensors", "model-*.safetensors",
    "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json", "checkpoint-*", STAGING_DIR,
    "runs",  # TensorBoard logs (--report_to tensorboard)
    f".*{PARTIAL_SUFFIX}",  # a file write_guard.atomic_write was writing when the run was killed
)  # fmt: skip


class OutputDirInUse(ValueError):
    """Another run holds the output folder's lock; ``str()`` is one line naming it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _describe(owner: dict[str, Any]) -> str:
    started = owner.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {owner.get('pid')} on host {owner.get('host')!r}, started {when}"


class OutputDirLock:
    """The lock of one output folder (:data:`LOCK_FILE`), taken with :meth:`acquire`, given back with
    :meth:`release`; re-entrant within a process (``mixpro-train`` takes it, then ``MixProTrainer.train`` again)."""

    _held: dict[str, int] = {}  # resolved lock path -> how many holders in this process

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.folder = Path(output_dir).expanduser()
        self.path = self.folder / LOCK_FILE
        self.created_folder = False
        self._acquired = False

    @property
    def key(self) -> str:
        return str(self.path.resolve())

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return owner if isinstance(owner, dict) else {}

    def _mine(self, owner: dict[str, Any] | None) -> bool:
        return bool(owner) and owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid()

    def acquire(self) -> OutputDirLock:
        """Take the lock (creating the folder if needed), or raise :class:`OutputDirInUse` (one line)."""
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"--output_dir {self.folder} is a file, not a folder")
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            self.created_folder = True
        for _ in range(3):
            if self._held.get(self.key) and self._mine(self._owner()):
                self._held[self.key] += 1
                self._acquired = True
                return self
            # the program, not its arguments: a command line may hold a --token or --hub_token
            owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "program": sys.argv[0]}
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._refuse_or_clear_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(owner, file)
            self._held[self.key] = 1
            self._acquired = True
            return self
        raise OutputDirInUse(f"--output_dir {self.folder}: could not take its lock {self.path}")

    def _refuse_or_clear_stale(self) -> None:
        owner = self._owner()
        if owner is None:  # released meanwhile
            return
        same_host = owner.get("host") == socket.gethostname()
        pid = owner.get("pid")
        if same_host and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
            logger.warning(
                "--output_dir %s: removing the stale lock of a run that is gone (%s)", self.folder, _describe(owner)
            )
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            return
        if same_host and pid == os.getpid():
            holder = "this process (an earlier run in it did not release it)"
        elif not owner:
            holder = "an unreadable lock"
        else:
            holder = _describe(owner)
        gone = "" if same_host else f" (if that run is gone, delete {self.path})"
        raise OutputDirInUse(
            f"--output_dir {self.folder} is in use by another run: {holder}{gone}; wait for it to end or choose "
            "another --output_dir (the processes of one run share a folder only when started together by "
            "accelerate launch / torchrun)"
        )

    def release(self) -> None:
        """Give the lock back (delete the file when this process's last holder releases it)."""
        if not self._acquired:
            return
        self._acquired = False
        count = self._held.get(self.key, 0) - 1
        if count > 0:
            self._held[self.key] = count
            return
        self._held.pop(self.key, None)
        if self._mine(self._owner()):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def release_and_clean(self) -> None:
        """Release, and remove the folder again when :meth:`acquire` created it and nothing else was written (a
        run refused by a check leaves nothing behind)."""
        self.release()
        if self.created_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()


@contextlib.contextmanager
def output_dir_lock(output_dir: str | os.PathLike[str], take: bool = True) -> Iterator[OutputDirLock | None]:
    """Hold the lock of ``output_dir`` inside the block; ``take=False`` (a process other than a run's main one)
    holds nothing."""
    if not take:
        yield None
        return
    lock = OutputDirLock(output_dir).acquire()
    try:
        yield lock
    finally:
        lock.release()


# ---------------------------------------------------------------------- what a run may find and delete


def names(paths: list[Path], limit: int = 5) -> str:
    shown = [p.name + ("/" if p.is_dir() else "") for p in paths[:limit]]
    return ", ".join(shown) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def written_by_mixpro(path: Path) -> bool:
    """Whether ``path`` (an entry of an output folder) is something ``mixpro-train`` writes (:data:`RUN_OUTPUTS`,
    or a README.md that is a mixpro_hf / 🤗 Trainer model card)."""
    if path.name == "README.md":
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        return any(mark in text for mark in REPLACEABLE)
    if path.suffix == ".py":
        return is_saved_model_code(path)
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in RUN_OUTPUTS)


def is_saved_model_code(path: Path) -> bool:
    """Whether ``path`` is the copy of one of this package's modules that ``save_pretrained`` writes beside the
    weights of a remote-code model (CA-Swin's ``ca_swin.py``, the segmentation decoders' files): same name, same
    bytes. A file that differs (the user's, or an older version's) is not."""
    own = Path(__file__).resolve().parent / path.name
    try:
        return path.is_file() and not path.is_symlink() and own.is_file() and own.read_bytes() == path.read_bytes()
    except OSError:
        return False


def _inside(path: str, folder: Path) -> bool:
    resolved, root = Path(path).expanduser().resolve(), folder.resolve()
    return resolved == root or root in resolved.parents


def check_output_dir(
    output_dir: str,
    *,
    overwrite: bool,
    resuming: bool,
    evaluating_only: bool,
    inputs: list[str],
) -> list[Path]:
    """Check ``--output_dir`` before training; returns the old run's entries ``--overwrite_output_dir`` deletes.

    An empty or new folder is fine (the lock file :data:`LOCK_FILE` does not count); a resumed run continues in
    its folder, and an evaluation-only run only adds its metrics. Otherwise a non-empty folder is refused, naming
    ``--overwrite_output_dir`` and ``--resume_from_checkpoint``; with ``--overwrite_output_dir`` only what
    :func:`written_by_mixpro` may be deleted (anything else, e.g. a user's own README.md, is named and refused),
    and never one of ``inputs`` (the model, the data, the checkpoint)."""
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output_dir {out} is a file, not a folder")
    entries = sorted(p for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
    if not entries or evaluating_only or (resuming and not overwrite):
        return []
    if not overwrite:
        raise ValueError(
            f"--output_dir {out} already holds a run ({names(entries)}): pass --overwrite_output_dir True to "
            "replace it, or --resume_from_checkpoint last to continue it"
        )
    foreign = [p for p in entries if not written_by_mixpro(p)]
    if foreign:
        what = ", ".join(p.name + (" (not a mixpro_hf model card)" if p.name == "README.md" else "") for p in foreign)
        raise ValueError(
            f"--overwrite_output_dir: {out} holds {what}, which mixpro-train did not write and never deletes; move "
            "it away or choose another --output_dir"
        )
    used = [s for s in inputs if _inside(s, out)]
    if used:
        raise ValueError(
            f"--overwrite_output_dir would delete {used[0]}, which this run reads: choose another --output_dir"
        )
    return entries


def remove_run_outputs(paths: list[Path]) -> None:
    """Delete the entries of an old run found by :func:`check_output_dir` (a link is removed, not followed)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    logger.info("--overwrite_output_dir: removed the previous run's %s", names(paths))


def remove_if_written_by_this_run(output_dir: str | os.PathLike[str], before: set[str]) -> None:
    """After a run refused before its first step: delete the entries of :data:`RUN_OUTPUTS` it created (those not in
    ``before``), so nothing blocks the corrected rerun."""
    out = Path(output_dir)
    if not out.is_dir():
        return
    for path in out.iterdir():
        if path.name not in before and path.name != LOCK_FILE and written_by_mixpro(path):
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def run_holding_the_lock(output_dir: str | os.PathLike[str], take: bool, body: Callable[[list[Any]], T]) -> T:
    """``body(trainers)`` while this process holds ``output_dir``'s lock (``take``: the run's main process). ``body``
    appends its trainer to ``trainers``; a run that fails before its first step removes what it wrote (a folder it
    created, ``mixpro_run.json``, ...), so nothing blocks the corrected rerun. A failed write (the lock on a read-only
    volume, a full disk anywhere in the run) becomes one :class:`~mixpro_hf.write_guard.WriteFailed` line."""
    out = Path(output_dir).expanduser()
    before = {p.name for p in out.iterdir()} if out.is_dir() else set()
    with reporting_write_failures(run_write_failure(out, out / LOCK_FILE)):  # a read-only volume
        lock = OutputDirLock(out).acquire() if take else None
    trainers: list[Any] = []
    try:
        # the entry points' safety net: a failed write anywhere in the run is one line (write_guard)
        with reporting_write_failures(run_write_failure(out), writes_only=False, within=out):
            return body(trainers)
    except BaseException:
        if lock is not None and not (trainers and trainers[0].state.global_step > 0):  # failed before a first step
            remove_if_written_by_this_run(out, before)
        raise
    finally:
        if lock is not None:
            lock.release_and_clean()


__all__ = [
    "LOCK_FILE",
    "RUN_OUTPUTS",
    "OutputDirInUse",
    "OutputDirLock",
    "check_output_dir",
    "is_saved_model_code",
    "output_dir_lock",
    "remove_if_written_by_this_run",
    "remove_run_outputs",
    "run_holding_the_lock",
    "written_by_mixpro",
]
