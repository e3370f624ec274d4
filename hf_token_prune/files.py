"""Writing a model or export folder so that a kill, a full disk or a read-only target never leaves a half-written or
mixed folder: everything is written to a staging folder beside the target and moved into place only when complete.

A new target is one `os.replace` (atomic). Replacing an existing one (`--overwrite_output_dir`) takes two renames:
the old folder to `<target>.old`, the staging folder to `<target>`, then the old one is deleted. A kill between the
two renames leaves no `<target>` but the old model whole in `<target>.old` and the new one whole in the staging
folder; the next write into that target refuses to start until `<target>.old` is moved back or deleted.
"""

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


OVERWRITE_FLAG = "--overwrite_output_dir"
OVERWRITE_HELP = "replace a non-empty --output_dir whole (the old folder is deleted once the new one is complete)"


def old_copy(target) -> Path:
    target = Path(target)
    return target.with_name(target.name + ".old")


def check_output_dir(target, overwrite: bool, flag: str = "--output_dir", allowed=()):
    """Refuse a target that cannot be written whole before any work starts: a file, a non-empty folder without
    `overwrite` (entries named in `allowed` do not count), a folder whose parent cannot be written, a leftover old
    copy of an interrupted replacement."""
    target = Path(target).expanduser()
    if target.exists() and not target.is_dir():
        raise ValueError(f"{flag} {target}: a file, not a folder; give a new folder.")
    leftover = old_copy(target)
    if leftover.exists():
        raise ValueError(
            f"{flag} {target}: {leftover} holds the previous model from an interrupted replacement: move it back to "
            f"{target} (or delete it), then run again."
        )
    if target.is_dir() and not overwrite and any(entry.name not in allowed for entry in target.iterdir()):
        raise ValueError(
            f"{flag} {target} is not empty: choose a new folder, or pass {OVERWRITE_FLAG} to replace it whole."
        )
    parent = _existing_parent(target)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"{flag} {target}: cannot write in {parent} (read-only or not yours)")


def _existing_parent(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def commit(staging, target):
    """Move the complete `staging` folder to `target`, replacing whatever `target` held (see the module docstring)."""
    staging, target = Path(staging), Path(target)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.replace(staging, target)
        return
    old = old_copy(target)
    os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old)


@contextmanager
def written_whole(target, overwrite: bool, flag: str = "--output_dir"):
    """Yield a fresh staging folder beside `target`; on success it becomes `target`, on any error it is deleted and
    `target` is left as it was."""
    target = Path(target).expanduser()
    check_output_dir(target, overwrite, flag)
    target.absolute().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.absolute().parent))
    try:
        yield staging
        commit(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def same_or_nested(a, b) -> bool:
    """Whether folders `a` and `b` are the same or one holds the other (symlinks resolved)."""
    a, b = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return a == b or a in b.parents or b in a.parents


__all__ = ["OVERWRITE_FLAG", "OVERWRITE_HELP", "check_output_dir", "commit", "same_or_nested", "written_whole"]
