"""The `python` that processes forked by tests/prewarmed.py see as sys.executable (run as `python -IS` by the
run's launcher script, so it starts in milliseconds). A submitit job or an xdist worker started with it is forked
from the same server when it can be, with this process's argv, cwd, environment and open file descriptors; it
passes on the signals it receives and exits as the forked process does (killed by the same signal, or with its exit
code); if it is killed, the server kills that process. Anything else it starts as the real interpreter (exec: the same pid).

Only processes that may have another pid than their parent was told are forked: submitit's job finds its job by its
controller's pid (SUBMITIT_LOCAL_JOB_ID), and an xdist worker talks to pytest over stdin/stdout (conftest makes the
workers' python this launcher). Submitit's controller names the job's folder after its own pid, and a loky worker
reports its pid to its executor: those must keep theirs.

usage: python -IS prewarmed_python.py SERVER_NAME REAL_PYTHON [python's own arguments...]
"""

import os
import pickle
import signal
import socket
import struct
import sys

HEADER = struct.Struct("q")  # a length, a pid, an exit code
FORKED = {
    ("-m", "submitit.core._submit"),  # a submitit job
    ("-c", "import sys;exec(eval(sys.stdin.readline()))"),  # an xdist worker: execnet's bootstrap over stdin/stdout
}
OPTIONS = {"-u", "-B"}  # interpreter options a forked child applies itself (submitit and execnet start python with -u)
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2,
             signal.SIGALRM)


def split_options(args: list[str]) -> tuple[list[str], list[str]]:
    """python's arguments as (the leading OPTIONS, the rest: -c code / -m module / script, then its own)."""
    n = 0
    while n < len(args) and args[n] in OPTIONS:
        n += 1
    return list(args[:n]), list(args[n:])


def what_runs(args: list[str]) -> tuple[str, str] | None:
    """("-m", module) or ("-c", code) after the leading options, else None."""
    rest = split_options(args)[1]
    return (rest[0], rest[1]) if len(rest) >= 2 and rest[0] in ("-m", "-c") else None


def send_request(sock: socket.socket, request: dict, fds: list[int]) -> None:
    """One request to the server: its length and the file descriptors, then the pickled dict."""
    payload = pickle.dumps(request)
    socket.send_fds(sock, [HEADER.pack(len(payload))], fds)
    sock.sendall(payload)


def recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the prewarmed server closed the connection")
        data += chunk
    return data


def open_fds() -> list[int]:
    listed = [int(fd) for fd in os.listdir("/proc/self/fd")]
    fds = []
    for fd in listed:  # (one of them was listdir's own, closed by now)
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
    return fds


def main() -> None:
    name, real, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if what_runs(args) not in FORKED:
        os.execv(real, [real, *args])
    fds = open_fds()
    child, pending = [], []

    def forward(signum, frame):
        if child:
            try:
                os.kill(child[0], signum)
            except ProcessLookupError:
                pass
        else:
            pending.append(signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect("\0" + name)
        request = {"argv": [real, *args], "cwd": os.getcwd(), "env": dict(os.environ), "fds": fds, "preexec": None}
        send_request(sock, request, fds)
        forked = recv_exact(sock, 1) == b"F"
    except OSError:  # no server (the test run is over): the real interpreter
        forked = False
    if not forked:
        sock.close()
        os.execv(real, [real, *args])
    child.append(HEADER.unpack(recv_exact(sock, HEADER.size))[0])
    for signum in pending:
        forward(signum, None)
    code = HEADER.unpack(recv_exact(sock, HEADER.size))[0]
    if code < 0:  # killed by a signal: so is this process
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code
    sys.exit(code)


if __name__ == "__main__":
    main()
