"""Running model-written code: in a separate, limited process, never in pruneviz's own.

:func:`run_program` starts a fresh interpreter (``python -I -S -B``: no site-packages, no ``PYTHON*`` variables, no bytecode files written) in a
new empty temporary directory, with a scrubbed environment (``HOME`` and ``TMPDIR`` = that directory), in its own
session, and a bootstrap that, before the program runs:

1. sets resource limits: address space (``RLIMIT_AS``, default 1 GiB), CPU seconds, file size (16 MiB), open
   files, no core dumps, and no new processes (``RLIMIT_NPROC`` = 0; the kernel does not apply it to root);
2. moves into new user, network and mount namespaces (``unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS)``
   through ctypes; Python 3.11 has no ``os.unshare``): no network interface but a loopback that is down. Where
   the kernel refuses (containers without user namespaces), it goes on without, and says so in
   :attr:`SandboxResult.isolation` (``"namespaces"`` or ``"audit hook"``);
3. on x86-64 Linux, installs a seccomp filter (:data:`REFUSED_SYSCALLS`): the kernel refuses sockets, new
   processes (``clone`` only starts threads), running programs, ``ptrace``, ``kill``, mounts and new namespaces
   with ``EPERM``, whatever the program does to the audit hook (``isolation`` then ends in ``", seccomp"``);
4. installs an audit hook (``sys.addaudithook``, which cannot be removed) that refuses, with ``PermissionError``:
   sockets; new processes (``os.fork``, ``os.forkpty``, ``os.system``, ``os.exec*``, ``os.posix_spawn``,
   ``os.spawn*``, ``subprocess.Popen``); ``ctypes``; opening for writing, and changing (remove, rename, chmod,
   mkdir ...), anything outside the temporary directory; reading or listing anything outside it and the standard
   library; links; more than :data:`MAX_NEW_FILES` new files and folders (with the file-size limit, at most 256 MiB
   of disk). The namespaces add a network that does not exist, the filter a kernel boundary under the hook.

The parent waits at most ``timeout`` seconds of wall time, then kills the whole process group; output goes
to files in the temporary directory (a flood of output cannot fill the parent's memory), of which it reads the
last 2,000 characters. The program passes only if the bootstrap prints, after it, a random token it was
given on standard input: a program that exits early (``sys.exit(0)``, ``os._exit(0)``) fails.

Measured on a 2-core machine (2026-12-06): 48 ms per trivial program with the namespaces, 40 ms with the audit
hook alone, against 14 ms for a bare ``python -I -S -B`` start.
Audit hooks are not a boundary against code written to escape them; they catch what a language model
writes by mistake (an endless loop, a fork, a stray file write). Under them, the seccomp filter, the user
``nobody`` (when started as root) and the namespaces are enforced by the kernel. What code written to cheat can
still do: read the pass token from the bootstrap's frame (``sys._getframe`` must stay, for ``typing`` and
``dataclasses``) and forge a pass, and, having disarmed the hook, read files that ``nobody`` may read. Limits: a
program can write up to :data:`MAX_NEW_FILES` files of the file-size limit in its own directory, and use the CPU of
one core for ``timeout`` seconds.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import SettingError

MEMORY_BYTES = 1 << 30
NOBODY = 65534  # the user and group a program runs as when pruneviz runs as root
MAX_TIMEOUT_SECONDS = 86_400.0
MIN_MEMORY_BYTES = 64 << 20  # below this the interpreter itself cannot start
FILE_BYTES = 16 << 20
MAX_NEW_FILES = 16  # with FILE_BYTES, at most 256 MiB of the temporary folder's disk
TIMEOUT_SECONDS = 10.0
SHOWN_CHARACTERS = 2000

# x86-64 system calls a sandboxed program never needs: socket, fork, vfork, execve, execveat, ptrace; signals to
# other processes (kill, tkill, rt_sigqueueinfo, pidfd_open, pidfd_send_signal); mounts, old and new API (mount,
# umount2, pivot_root, open_tree, move_mount, fsopen, fsconfig, fsmount, mount_setattr: inside its own namespaces a
# tmpfs would get past the file quota); chroot, unshare, setns, process_vm_readv/writev, bpf, and io_uring (whose
# operations would bypass a filter on socket). clone is refused unless it starts a thread, clone3 says "not
# implemented" so that the C library starts threads with clone, and tgkill / rt_tgsigqueueinfo reach only the
# program's own process (raise() needs them)
REFUSED_SYSCALLS = (41, 57, 58, 59, 322, 101, 62, 200, 129, 434, 424, 165, 166, 155, 428, 429, 430, 431, 432, 442, 161, 272,
                    308, 310, 311, 321, 425, 426, 427)

# installs the kernel filter (seccomp) under the audit hook; run in the child before the program, and by the tests alone
SECCOMP_SOURCE = r'''
def install_seccomp(ctypes, libc, refused):
    # a seccomp filter: system calls the audit hook already refuses, refused again by the kernel with EPERM, so that
    # code that disarmed the hook still cannot open a socket, start a process or run a program. x86-64 only
    import platform, struct
    if platform.machine() != "x86_64":
        return False
    allow, deny, missing = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38  # SECCOMP_RET_ALLOW, RET_ERRNO(EPERM/ENOSYS)
    load, equal, at_least, test, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    program = [
        (load, 0, 0, 4), (equal, 1, 0, 0xC000003E), (ret, 0, 0, deny),  # another ABI (i386 via int 0x80): refused
        (load, 0, 0, 0), (at_least, 0, 1, 0x40000000), (ret, 0, 0, deny),  # the x32 ABI: refused
        (equal, 0, 4, 56), (load, 0, 0, 16), (test, 0, 1, 0x00010000), (ret, 0, 0, allow), (ret, 0, 0, deny),  # clone: threads only
        (equal, 0, 1, 435), (ret, 0, 0, missing),  # clone3
    ]
    for number in refused:
        program += [(equal, 0, 1, number), (ret, 0, 0, deny)]
    import os
    program += [  # tgkill and rt_tgsigqueueinfo: to this process only
        (equal, 2, 0, 234), (equal, 1, 0, 297), (ret, 0, 0, allow),
        (load, 0, 0, 16), (equal, 0, 1, os.getpid()), (ret, 0, 0, allow), (ret, 0, 0, deny),
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *step) for step in program))

    class Filter(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    described = Filter(len(program), ctypes.addressof(code))
    # PR_SET_NO_NEW_PRIVS (needed without CAP_SYS_ADMIN), then PR_SET_SECCOMP with SECCOMP_MODE_FILTER
    return libc.prctl(38, 1, 0, 0, 0) == 0 and libc.prctl(22, 2, ctypes.byref(described), 0, 0) == 0
'''

# the child's first code: limits, namespaces, the kernel filter and the audit hook, then the program; {…} are filled
# in by run_program
_BOOTSTRAP = SECCOMP_SOURCE + r'''
def _sandbox():
    # everything lives in this function's locals and closures, none in __main__ (where `import __main__` finds it):
    # the program runs in fresh globals, and the hook refuses the garbage collector, tracing and swapping a function's
    # code. Frames stay reachable (namedtuple, typing and dataclasses need sys._getframe and code objects): code
    # written to forge a pass could still read the token from this frame (see the module docstring)
    import os, resource, sys
    token = sys.stdin.readline().strip()
    work = os.path.realpath(os.getcwd())
    for limit, value in ((resource.RLIMIT_AS, {memory}), (resource.RLIMIT_CPU, {cpu}), (resource.RLIMIT_FSIZE, {fsize}),
                         (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, 0)):
        resource.setrlimit(limit, (value, value))
    isolation = "audit hook"
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        uid, gid = os.getuid(), os.getgid()
        if {namespaces} and libc.unshare(0x10000000 | 0x40000000 | 0x00020000) == 0:  # CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS
            # map this user to itself, so the program can still create files in its own directory
            for name, text in (("setgroups", "deny"), ("uid_map", f"{{uid}} {{uid}} 1"), ("gid_map", f"{{gid}} {{gid}} 1")):
                with open(f"/proc/self/{{name}}", "w") as handle:
                    handle.write(text)
            isolation = "namespaces"
    except OSError:
        pass
    try:  # on its own: a kernel that refused the namespaces half way may still take the filter
        import ctypes
        if install_seccomp(ctypes, ctypes.CDLL(None, use_errno=True), {refused}):
            isolation += ", seccomp"
    except OSError:
        pass
    ctypes = libc = None  # the program must not find them in this frame
    for name in [name for name in sys.modules if name == "ctypes" or name.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]
    stdlib = os.path.dirname(os.__file__)  # this interpreter's own standard library: imports read it
    readable = (os.path.realpath(stdlib), os.path.realpath(os.path.join(stdlib, "lib-dynload")), work)
    exact = ("/dev/null", "/dev/urandom", "/dev/random")
    refused = ("socket.", "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.",
               "ctypes.", "os.link", "os.symlink", "pty.", "os.kill", "os.killpg", "signal.pthread_kill", "winreg.",
               "_posixsubprocess", "sys._current_frames", "sys.settrace", "sys.setprofile", "gc.get_objects", "gc.get_referrers",
               "gc.get_referents", "sys.addaudithook", "code.__new__", "function.__new__", "os.fchdir")
    changes = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
               "os.chdir", "os.chroot", "shutil.", "os.mkfifo", "os.mknod", "os.setxattr", "os.removexattr")
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    directory_flags = getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_PATH", 0)
    realpath, fsdecode, isdir, exists, sep, permission = os.path.realpath, os.fsdecode, os.path.isdir, os.path.exists, os.sep, PermissionError

    created = [0]

    def count_new_file():
        created[0] += 1
        if created[0] > {files}:
            raise permission("the sandbox refuses to create more than {files} files or folders")

    def inside(path, roots):
        if isinstance(path, int):
            return False  # a descriptor: only the guard's own checks opened those, and chdir by one is refused
        path = realpath(fsdecode(path))
        return path in exact or any(path == root or path.startswith(root + sep) for root in roots)

    def guard(event, args):
        if event.startswith(refused) or event == "import" and args[0] in ("ctypes", "_ctypes", "_posixsubprocess", "socket", "_socket", "gc"):
            raise permission(f"the sandbox refuses {{event}}")
        if event == "object.__setattr__" and args[1] == "__code__":  # swapping a function's code (the guard's) is refused
            raise permission("the sandbox refuses to replace a function's code")
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            if flags is not None and (flags & directory_flags or isdir(fsdecode(path))):
                # a descriptor of a folder would let os.open(..., dir_fd=...) reach outside the working directory
                raise permission(f"the sandbox refuses to open the folder {{path!r}}")
            writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & write_flags)
            if not inside(path, (work,) if writing else readable):
                raise permission(f"the sandbox refuses to open {{path!r}}")
            if writing and not exists(fsdecode(path)):
                count_new_file()
        elif event == "os.mkdir":
            if not inside(args[0], (work,)):
                raise permission(f"the sandbox refuses {{event}} outside its directory")
            count_new_file()
        elif event.startswith(changes) or event in ("os.listdir", "os.scandir"):
            roots = readable if event in ("os.listdir", "os.scandir") else (work,)
            if any(isinstance(a, (str, bytes, os.PathLike)) and not inside(a, roots) or isinstance(a, int) and event.startswith("os.chdir")
                   for a in args):
                raise permission(f"the sandbox refuses {{event}} outside its directory")

    with open("program.py") as handle:
        source = handle.read()
    program = compile(source, "program.py", "exec")
    print(token, "isolation", isolation, flush=True)
    sys.addaudithook(guard)
    exec(program, {{"__name__": "__sandbox__", "__builtins__": __builtins__}})
    print(token, "passed", flush=True)


_sandbox()
'''


@dataclass(frozen=True)
class SandboxResult:
    """What became of one program.

    Attributes:
        passed: it ran to its end without an exception, within the limits.
        status: ``"passed"``, ``"failed"`` (an exception, an early exit, a refused operation), ``"timeout"`` or
            ``"crashed"`` (killed by a signal: out of CPU time, a segfault).
        detail: the end of its error output (empty when it passed).
        isolation: ``"namespaces"`` or ``"audit hook"``, followed by ``", seccomp"`` where the kernel filter is on
            (see the module docstring); ``""`` if it never started.
    """

    passed: bool
    status: str
    detail: str
    isolation: str


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - SHOWN_CHARACTERS))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _others_can_run(path: str) -> bool:
    """Whether a user without privileges (nobody) can run ``path``: every folder above it searchable, the file executable."""
    real = Path(os.path.realpath(path))
    try:
        return all(folder.stat().st_mode & 0o001 for folder in real.parents) and bool(real.stat().st_mode & 0o001)
    except OSError:
        return False


def interpreter(as_nobody: bool = False) -> str:
    """The Python the sandbox starts: this one, or where the sandbox's user may not run it (a virtualenv built on an
    interpreter in root's home, run as nobody), the same ``pythonX.Y`` in the system's folders (the child needs only
    the standard library).

    Raises:
        SettingError: neither can be run.
    """
    runnable = _others_can_run if as_nobody else (lambda path: os.access(path, os.X_OK))
    if runnable(sys.executable):
        return sys.executable
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
    if found is None or not runnable(found):
        who = "nobody (the sandbox's user when pruneviz runs as root)" if as_nobody else "this user"
        raise SettingError(f"The sandbox cannot run {sys.executable} as {who} and finds no {name} in /usr/local/bin, /usr/bin "
                           f"or /bin; install {name}.")
    return found


def run_program(
    program: str, timeout: float = TIMEOUT_SECONDS, memory_bytes: int = MEMORY_BYTES, namespaces: bool = True
) -> SandboxResult:
    """Run the Python source ``program`` in the sandbox (see the module docstring).

    Args:
        program: source code; it passes if it runs to its end (tests are ``assert`` statements in it).
        timeout: wall-clock seconds before the process group is killed (CPU seconds are limited to
            ``ceil(timeout) + 1``).
        memory_bytes: the address-space limit.
        namespaces: try the namespaces; ``False`` runs with the audit hook alone, as where the kernel refuses them.

    Raises:
        SettingError: ``timeout`` or ``memory_bytes`` not positive; no interpreter can be run (:func:`interpreter`).
    """
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS or memory_bytes < MIN_MEMORY_BYTES:
        raise SettingError(
            f"The sandbox needs a time limit of at most a day and at least {MIN_MEMORY_BYTES >> 20} MiB of memory "
            f"(got {timeout} s, {memory_bytes} bytes)."
        )
    token = secrets.token_hex(16)
    bootstrap = _BOOTSTRAP.format(memory=memory_bytes, cpu=math.ceil(timeout) + 1, fsize=FILE_BYTES, namespaces=bool(namespaces),
                                  refused=REFUSED_SYSCALLS, files=MAX_NEW_FILES)
    with tempfile.TemporaryDirectory(prefix="pruneviz-sandbox-") as work:
        folder = Path(work)
        (folder / "program.py").write_text(program, encoding="utf-8", errors="surrogatepass")
        environment = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        as_nobody = {}
        if os.geteuid() == 0:
            # root is exempt from RLIMIT_NPROC and may write anywhere: the program runs as nobody instead
            for path in (folder, folder / "program.py"):
                os.chown(path, NOBODY, NOBODY)
            as_nobody = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
        with open(folder / "stdout", "wb") as stdout, open(folder / "stderr", "wb") as stderr:
            process = subprocess.Popen(
                [interpreter(bool(as_nobody)), "-I", "-S", "-B", "-c", bootstrap], cwd=work, env=environment, stdin=subprocess.PIPE,
                stdout=stdout, stderr=stderr, start_new_session=True, close_fds=True, **as_nobody,
            )
            try:
                process.communicate(f"{token}\n".encode(), timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # the program and anything it may have started
                except (ProcessLookupError, PermissionError):
                    pass
                process.wait()
        said = _tail(folder / "stdout").splitlines()
        error = _tail(folder / "stderr").strip()
    marks = [line.split(" ", 1)[1] for line in said if line.startswith(token + " ")]
    isolation = next((m.removeprefix("isolation ") for m in marks if m.startswith("isolation ")), "")
    if timed_out:
        return SandboxResult(False, "timeout", f"still running after {timeout:g} s", isolation)
    if process.returncode == 0 and "passed" in marks:
        return SandboxResult(True, "passed", "", isolation)
    if process.returncode < 0:
        name = signal.Signals(-process.returncode).name
        return SandboxResult(False, "crashed", f"killed by {name}" + (f": {error[-500:]}" if error else ""), isolation)
    return SandboxResult(False, "failed", error[-500:] or "it exited before its end", isolation)
