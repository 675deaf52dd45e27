"""Safe file I/O for host keys: read a small regular file (never a FIFO or device), create a
file without ever clobbering an existing one, check or create the key directory."""

from __future__ import annotations

import errno
import os
import shlex
import stat
import tempfile

from .errors import HostKeyError

# Host key files are small (a 16384-bit RSA key is ~12 KiB); refuse to slurp
# anything much bigger.
MAX_FILE_SIZE = 64 * 1024


def oserror_text(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def lexists(path: str) -> bool:
    """Whether a directory entry exists (a dangling symlink counts)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot access ({oserror_text(exc)})") from None
    return True


def _read_fd(fd: int) -> bytes:
    """At most MAX_FILE_SIZE + 1 bytes of an open file."""
    chunks = []
    total = 0
    while total <= MAX_FILE_SIZE:
        chunk = os.read(fd, MAX_FILE_SIZE + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_regular_file(path: str) -> tuple[bytes, os.stat_result]:
    """Read a small regular file (symlinks to regular files are followed).

    The type check is done both before opening (so that we never open a FIFO
    or device) and on the open descriptor (so a swap in between is caught).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise HostKeyError(f"{path}: dangling symbolic link") from None
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot access ({oserror_text(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise HostKeyError(f"{path}: is {_kind(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot read ({oserror_text(exc)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HostKeyError(f"{path}: is {_kind(st.st_mode)}, not a regular file")
        data = _read_fd(fd)
    except OSError as exc:
        raise HostKeyError(f"{path}: cannot read ({oserror_text(exc)})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_SIZE:
        raise HostKeyError(f"{path}: file is too large to be a host key")
    return data, st


def _make_directory(directory: str) -> os.stat_result:
    try:
        os.makedirs(directory, mode=0o700)
        os.chmod(directory, 0o700)
    except FileExistsError:
        pass  # created concurrently; checked by the caller
    except OSError as exc:
        raise HostKeyError(f"{directory}: cannot create directory ({oserror_text(exc)})") from None
    try:
        return os.stat(directory)
    except OSError as exc:
        raise HostKeyError(f"{directory}: cannot access ({oserror_text(exc)})") from None


def check_directory(directory: str, *, create: bool) -> None:
    """The key directory exists and is a directory; with ``create``, make it (mode 0700) if missing."""
    try:
        st = os.stat(directory)
    except (FileNotFoundError, NotADirectoryError) as exc:
        if create:
            st = _make_directory(directory)
        elif isinstance(exc, NotADirectoryError):
            raise HostKeyError(f"{directory}: cannot access (Not a directory)") from None
        else:
            raise HostKeyError(
                f"{directory}: directory does not exist "
                f"(run: pymate-relay keygen -k {shlex.quote(directory)})"
            ) from None
    except OSError as exc:
        raise HostKeyError(f"{directory}: cannot access ({oserror_text(exc)})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise HostKeyError(f"{directory}: not a directory")


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]


def _copy_exclusive(tmp: str, final: str) -> bool:
    """Copy ``tmp`` to a new file ``final`` (exclusive create); False if ``final`` exists."""
    with open(tmp, "rb") as src:
        content = src.read()
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)
        _write_all(fd, content)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(final)
        raise
    os.close(fd)
    return True


def _link_into_place(tmp: str, final: str) -> bool:
    """Give the complete temp file its final name without clobbering anything.

    Returns False if ``final`` already exists (nothing is changed then).
    """
    try:
        os.link(tmp, final)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
    # The file system has no hard links: fall back to an exclusive create of
    # the final name (not atomic for readers, but still never clobbers).
    return _copy_exclusive(tmp, final)


def write_new_file(directory: str, name: str, content: bytes, mode: int) -> bool:
    """Atomically create ``directory/name`` with ``content``; never overwrite.

    Returns False if the file already exists (e.g. a concurrent keygen won).
    """
    final = os.path.join(directory, name)
    try:
        # mkstemp creates the file with O_EXCL and mode 0600.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise HostKeyError(f"{directory}: directory is not writable ({oserror_text(exc)})") from None
        raise HostKeyError(f"{final}: cannot create ({oserror_text(exc)})") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # exact, whatever the umask
            _write_all(fd, content)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        linked = _link_into_place(tmp, final)
    except OSError as exc:
        raise HostKeyError(f"{final}: cannot create ({oserror_text(exc)})") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    if linked:
        _fsync_dir(directory)
    return linked
