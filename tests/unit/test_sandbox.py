"""The sandbox that runs model-written code (pruneviz.evaluation.sandbox): a correct program passes, a wrong one
fails, and each hostile program fails without harming the test process (the parent), which goes on to run a
correct program afterwards. Each hostile program runs with the namespaces and with the audit hook alone (what
happens where the kernel refuses namespaces). Runs as root (CI) and as a normal user alike."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import pytest

from pruneviz.core.errors import SettingError
from pruneviz.evaluation.sandbox import run_program

SOLUTION = "def add(a, b):\n    return a + b\n"
TESTS = "\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n\ncheck(add)\n"


ISOLATIONS = [pytest.param(True, id="namespaces"), pytest.param(False, id="audit-hook")]


def parent_survives():
    """The test process still runs programs in the sandbox."""
    assert run_program(SOLUTION + TESTS).passed


def test_a_correct_solution_passes_and_a_wrong_one_fails():
    passed = run_program(SOLUTION + TESTS)
    assert passed.passed and passed.status == "passed" and passed.isolation.startswith(("namespaces", "audit hook"))
    assert run_program(SOLUTION + TESTS, namespaces=False).isolation.startswith("audit hook")
    wrong = run_program("def add(a, b):\n    return a - b\n" + TESTS)
    assert not wrong.passed and wrong.status == "failed" and "AssertionError" in wrong.detail


def test_an_early_exit_is_not_a_pass():
    for exit_call in ("import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n"):
        result = run_program(SOLUTION + exit_call + TESTS)
        assert not result.passed, exit_call


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_an_endless_loop_is_stopped_at_the_time_limit(namespaces):
    started = time.perf_counter()
    result = run_program(SOLUTION + "while True:\n    pass\n" + TESTS, timeout=2, namespaces=namespaces)
    assert not result.passed and result.status == "timeout"
    assert time.perf_counter() - started < 10
    parent_survives()


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_a_fork_bomb_is_refused(namespaces):
    for bomb in ("import os\nwhile True:\n    os.fork()\n",
                 "import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])\n",
                 "import os\nos.system('sleep 100 &')\n",
                 "import multiprocessing\nmultiprocessing.Process(target=print).start()\n"):
        result = run_program(SOLUTION + bomb + TESTS, timeout=5, namespaces=namespaces)
        assert not result.passed and result.status in ("failed", "crashed"), (bomb, result)
    parent_survives()


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_allocating_ten_gigabytes_fails(namespaces):
    result = run_program(SOLUTION + "block = bytearray(10 * 1024 ** 3)\nblock[::4096] = b'x' * len(block[::4096])\n" + TESTS, namespaces=namespaces)
    assert not result.passed and "MemoryError" in result.detail
    parent_survives()


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_a_crash_is_a_failure(namespaces):
    result = run_program(SOLUTION + "import faulthandler\nfaulthandler._sigsegv()\n" + TESTS, namespaces=namespaces)
    assert not result.passed and result.status == "crashed" and "SIGSEGV" in result.detail
    parent_survives()


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_writing_outside_its_directory_is_refused(tmp_path, namespaces):
    target = tmp_path / "escaped.txt"
    for write in (f"open({str(target)!r}, 'w').write('out')\n",
                  f"import os\nos.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))\n",
                  f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w').write('out')\n",
                  f"import shutil\nopen('here.txt', 'w').write('x')\nshutil.copy('here.txt', {str(target)!r})\n"):
        result = run_program(SOLUTION + write + TESTS, namespaces=namespaces)
        assert not result.passed and "PermissionError" in result.detail, (write, result)
        assert not target.exists()
    # its own directory is writable
    assert run_program(SOLUTION + "open('scratch.txt', 'w').write('fine')\n" + TESTS, namespaces=namespaces).passed


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_opening_a_socket_is_refused(namespaces):
    for connect in ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)\n",
                    "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:8501', timeout=1)\n"):
        result = run_program(SOLUTION + connect + TESTS, timeout=5, namespaces=namespaces)
        assert not result.passed and result.status == "failed", (connect, result)
    parent_survives()


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_the_users_home_cannot_be_read(tmp_path, monkeypatch, namespaces):
    home = tmp_path / "home"
    home.mkdir()
    canary = home / "canary.txt"
    canary.write_text("CANARY-7f3a")
    monkeypatch.setenv("HOME", str(home))
    # each tries to show what it read in its error output, which the parent gets back
    for read, secret in (("import os\nraise RuntimeError(open(os.path.expanduser('~/canary.txt')).read())\n", "CANARY-7f3a"),
                         (f"raise RuntimeError(open({str(canary)!r}).read())\n", "CANARY-7f3a"),
                         (f"import os\nraise RuntimeError(os.listdir({str(home)!r}))\n", "canary.txt"),
                         ("import os\nraise RuntimeError(dict(os.environ))\n", str(home))):
        result = run_program(SOLUTION + read, namespaces=namespaces)
        assert not result.passed and secret not in result.detail, (read, result)
    reader = run_program(f"import os\nassert os.environ['HOME'] != {str(home)!r}\nassert 'PRUNEVIZ_CACHE_DIR' not in os.environ\n", namespaces=namespaces)
    assert reader.passed, reader


@pytest.mark.parametrize("timeout, memory", [(0, 1 << 30), (float("nan"), 1 << 30), (1, 0), (1e12, 1 << 30), (1, 10)])
def test_bad_limits_are_one_sentence(timeout, memory):
    with pytest.raises(SettingError):
        run_program(SOLUTION, timeout=timeout, memory_bytes=memory)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
def test_it_works_as_a_normal_user():
    """The same checks from a process that runs as ``nobody`` (CI runs as root; users do not)."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="pruneviz-as-user-"))  # pytest's tmp_path is private to root
    script = folder / "as_user.py"
    script.write_text(
        "from pruneviz.evaluation.sandbox import run_program\n"
        f"ok = run_program({(SOLUTION + TESTS)!r})\n"
        "bomb = run_program('import os\\nwhile True:\\n    os.fork()\\n', timeout=5)\n"
        "socket = run_program('import socket\\nsocket.create_connection((\"127.0.0.1\", 22), timeout=1)\\n', timeout=5)\n"
        "print(ok.passed, bomb.passed, socket.passed, ok.isolation)\n"
    )
    os.chmod(folder, 0o755)
    os.chmod(script, 0o644)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    environment = {"PATH": "/usr/bin:/bin", "PYTHONPATH": repo, "HOME": "/nonexistent"}
    # the virtualenv's interpreter may live under root's home; the sandbox needs only the standard library
    runnable = [p for p in (sys.executable, "/usr/bin/python3")
                if subprocess.run([*as_nobody, p, "-c", "import pruneviz.evaluation.sandbox"], capture_output=True, cwd="/", env=environment).returncode == 0]
    if not runnable:
        pytest.skip("no Python interpreter here can be run by an unprivileged user")
    result = subprocess.run([*as_nobody, runnable[0], str(script)], capture_output=True, text=True, timeout=120, cwd="/", env=environment)
    script.unlink()
    folder.rmdir()
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[:3] == ["True", "False", "False"], result.stdout


# the third hostile pass (docs/RELIABILITY.md): ways a program tried to forge a pass or reach outside, fixed since


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_the_token_is_not_in_main_for_a_program_to_print(namespaces):
    forged = "import __main__, os\nprint(getattr(__main__, 'token', 'none'), 'passed', flush=True)\nos._exit(0)\n"
    result = run_program(SOLUTION + forged + "assert False\n", namespaces=namespaces)
    assert not result.passed and result.status == "failed", result


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_a_folder_descriptor_cannot_reach_outside_the_working_directory(namespaces):
    # the standard library may be read, so its folder could be opened; a descriptor of it would let
    # os.open(..., dir_fd=...) create files there
    program = (
        "import os\n"
        "fd = os.open(os.path.dirname(os.__file__), os.O_RDONLY)\n"
        "os.close(os.open('escaped.txt', os.O_CREAT | os.O_WRONLY, dir_fd=fd))\n"
    )
    result = run_program(program, namespaces=namespaces)
    assert not result.passed and "refuses to open the folder" in result.detail, result
    chdir = run_program("import os\nfd = os.open('.', os.O_RDONLY)\nos.fchdir(fd)\n", namespaces=namespaces)
    assert not chdir.passed and "refuses" in chdir.detail


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_the_guard_cannot_be_disarmed_by_swapping_code_or_the_garbage_collector(namespaces):
    swap = run_program("def f():\n    pass\nf.__code__ = (lambda: None).__code__\n", namespaces=namespaces)
    assert not swap.passed and "refuses to replace a function's code" in swap.detail
    collector = run_program("import gc\ngc.get_objects()\n", namespaces=namespaces)
    assert not collector.passed and "refuses" in collector.detail
    # what HumanEval solutions import still works: typing, dataclasses, functools, collections
    common = ("from typing import List\nimport dataclasses, functools, collections, math, re, itertools\n"
              "@dataclasses.dataclass\nclass P:\n    x: int\n"
              "assert P(1).x == 1 and collections.namedtuple('T', 'a')(2).a == 2\n")
    assert run_program(common, namespaces=namespaces).passed


def test_a_program_that_is_not_valid_text_fails_without_harm():
    result = run_program("x = '\ud800'\n")
    assert not result.passed and result.status == "failed"
    parent_survives()


def test_started_as_root_the_program_runs_as_nobody():
    """Root is exempt from the process limit and may write anywhere; the program must not run as root."""
    expected = 65534 if os.geteuid() == 0 else os.geteuid()
    result = run_program(f"import os\nassert os.geteuid() == {expected}, os.geteuid()\n")
    assert result.passed, result


# the fourth pass (session 9): a total quota for the folder, and a kernel boundary under the audit hook


@pytest.mark.parametrize("namespaces", ISOLATIONS)
def test_a_program_creates_at_most_a_few_files(namespaces):
    """Each file was limited to 16 MiB, but not their number: the temporary folder's disk had no total quota."""
    from pruneviz.evaluation.sandbox import MAX_NEW_FILES

    within = f"for i in range({MAX_NEW_FILES}):\n    open(f'f{{i}}', 'w').write('x')\n"
    assert run_program(within, namespaces=namespaces).passed
    for flood in (f"for i in range({MAX_NEW_FILES + 1}):\n    open(f'f{{i}}', 'w').write('x')\n",
                  f"import os\nfor i in range({MAX_NEW_FILES + 1}):\n    os.mkdir(f'd{{i}}')\n"):
        result = run_program(flood, namespaces=namespaces)
        assert not result.passed and f"more than {MAX_NEW_FILES} files or folders" in result.detail, result
    # rewriting one file again and again creates nothing new
    assert run_program("for i in range(100):\n    open('same', 'w').write(str(i))\n", namespaces=namespaces).passed


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter is written for x86-64 system call numbers")
def test_the_kernel_refuses_processes_sockets_and_programs_whatever_becomes_of_the_audit_hook():
    """The filter alone, without the audit hook (as after code that disarmed it): fork, socket, exec and signals to
    other processes fail with EPERM, while threads still start (clone3 is answered "not implemented", so the C
    library falls back to clone) and a process may still signal itself (raise() needs tgkill)."""
    from pruneviz.evaluation.sandbox import REFUSED_SYSCALLS, SECCOMP_SOURCE

    probe = SECCOMP_SOURCE + (
        "import ctypes, os, socket, threading\n"
        f"assert install_seccomp(ctypes, ctypes.CDLL(None, use_errno=True), {REFUSED_SYSCALLS!r})\n"
        "said = []\n"
        "for name, call in (('fork', os.fork), ('socket', socket.socket), ('exec', lambda: os.execv('/bin/true', ['true']))):\n"
        "    try:\n"
        "        call()\n"
        "        said.append(name + ' allowed')\n"
        "    except PermissionError:\n"
        "        said.append(name + ' refused')\n"
        "thread = threading.Thread(target=lambda: said.append('thread ran'))\n"
        "thread.start()\n"
        "thread.join()\n"
        "import signal\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "parent = os.getppid()\n"
        # signal 0 only asks whether the target exists: harmless, and refused with EPERM (-1) by the filter
        "said.append('tkill to the parent ' + ('refused' if libc.syscall(200, parent, 0) == -1 and ctypes.get_errno() == 1 else 'allowed'))\n"
        "said.append('tgkill to the parent ' + ('refused' if libc.syscall(234, parent, parent, 0) == -1 and ctypes.get_errno() == 1 else 'allowed'))\n"
        "signal.pthread_kill(threading.get_ident(), 0)\n"
        "said.append('a signal to itself works')\n"
        "print(', '.join(said))\n"
    )
    ran = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == ("fork refused, socket refused, exec refused, thread ran, tkill to the parent refused, "
                                  "tgkill to the parent refused, a signal to itself works"), ran.stderr[-1000:]
    assert run_program(SOLUTION + TESTS).isolation.endswith(", seccomp")
