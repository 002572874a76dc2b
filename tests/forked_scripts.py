"""The project's scripts run as users run them, minus the TensorFlow start-up each would pay.

Importing TensorFlow (and tearing it down at exit) costs 4-10 s of CPU per process on our
2-core machines, and the suite runs the scripts about a hundred times. So a long-lived process,
a zygote (this file run as a script), imports once what scripts import (TensorFlow, slim, the
project's packages) and defines no flag. For each run it forks a child
that does what `python3 <script>.py <args>` (or `python3 -c <code> <args>`) does after those
imports: argv, sys.path, working folder, environment and standard streams set, then the
script's file executed as `__main__`, its flags defined then, in that child alone (absl's flags
are process-global: one fresh child per run, and never two scripts in one process). The child
is a real process: exit codes, signals, atexit handlers, multiprocessing pools and file locks
behave as in a fresh interpreter. `Zygote.run` gives its exit code, stdout and stderr as
subprocess.run does; `Zygote.start` a handle on a child that runs on, as subprocess.Popen does.

What differs from a fresh interpreter, on purpose:
- modules are already imported, so settings read at TensorFlow's import or the interpreter's
  start (TF_CPP_MIN_LOG_LEVEL, PYTHONHASHSEED) are the zygote's: the client refuses an `env`
  that changes them (PYTHONPATH is honoured: it only extends sys.path);
- preprocess.py has a zygote of its own, without TensorFlow: the script imports it only once
  its pool of processes has forked, and with TensorFlow imported absl's app.run already
  initializes CUDA (which a fork does not survive);
- at exit, after the non-daemon threads, the atexit handlers and the flush of stdout and
  stderr, the child skips the teardown of every module (seconds of copy-on-write of
  TensorFlow's memory, for nothing a script can observe).
The suite keeps fresh interpreters where the process's start is what is tested, and one per
script and exit path (conftest.run_script(..., fresh=True), demo.sh, the notebook).
"""
import ast
import atexit
import gc
import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a zygote imports: the top-level imports of these scripts, then modules their code
# imports inside functions, heavy enough to import once.
# (tf-keras' legacy layers: slim's batch_norm, reached through nets/compat.py, 0.3-0.5 s each.)
PRELOADS = {"tensorflow": (("train.py", "evaluate.py", "predict.py", "export.py"),
                           ("tensorflow", "tf_slim", "pandas", "matplotlib",
                            "tf_keras.src.legacy_tf_layers.normalization")),
            "preprocess": (("preprocess.py",), ("pandas",))}
# Read at the interpreter's start or at TensorFlow's import (with the value cli.py gives when
# unset): a child cannot change them.
START_SETTINGS = {"PYTHONHOME": None, "PYTHONHASHSEED": None, "TF_CPP_MIN_LOG_LEVEL": "2",
                  "TF_ENABLE_ONEDNN_OPTS": None}
BASE_PATH = []  # the zygote's sys.path without its own folder and PYTHONPATH (serve sets it)


# ------------------------------------------------------------------ the zygote

def preload(scripts, lazy):
    """Imports the scripts' top-level imports (cli first: it sets TensorFlow's log level before
    TensorFlow loads, as in the scripts), then `lazy`. What fails to import is left to the
    child, which then fails as the script would."""
    names = ["cli"]
    for script in scripts:
        with open(os.path.join(REPO, script), encoding="utf-8") as stream:
            tree = ast.parse(stream.read())
        for node in tree.body:
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    for name in names + list(lazy):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # `from module import function`: the module itself is imported above


def become(request):
    """In the forked child: sets up the process as the interpreter would, runs the code and
    exits; never returns."""
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                           (2, request["stderr"], os.O_WRONLY)):
        opened = os.open(path, mode)  # a FIFO's reader is the client: it opens it too
        os.dup2(opened, fd)
        os.close(opened)
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if request["env"].get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    argv = request["argv"]
    # sys.path as the interpreter makes it: the script's folder ("" for -c), PYTHONPATH, the rest.
    sys.path[:] = ([os.path.dirname(os.path.abspath(argv[0])) if argv[0] != "-c" else ""]
                   + _python_path(request["env"]) + BASE_PATH)
    if argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        os._exit(finish(exec, compile(argv[1], "<string>", "exec"), main.__dict__))
    sys.argv = list(argv)
    import runpy
    os._exit(finish(runpy.run_path, argv[0], run_name="__main__"))


def _python_path(env):
    return [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]


def finish(function, *args, **kwargs):
    """Runs the code as the interpreter runs a script, then ends as it does (non-daemon threads
    joined, atexit handlers, stdout and stderr flushed) but for the teardown of the modules.
    Returns the exit code; an uncaught KeyboardInterrupt ends the process by SIGINT."""
    interrupted = False
    try:
        function(*args, **kwargs)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt as error:
        _print_traceback(error)
        code, interrupted = 1, True
    except BaseException as error:  # pylint: disable=broad-except
        _print_traceback(error)
        code = 1
    threading._shutdown()  # pylint: disable=protected-access
    atexit._run_exitfuncs()  # pylint: disable=protected-access
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code & 0xFF


def _print_traceback(error):
    """As the interpreter prints an uncaught exception: from the script's frames on."""
    import runpy
    frames = error.__traceback__
    while frames and frames.tb_frame.f_code.co_filename in (__file__, runpy.__file__):
        frames = frames.tb_next
    traceback.print_exception(type(error), error, frames)


def serve(preloads):
    """Imports PRELOADS[preloads], then forks a child per JSON request line on stdin, several
    at a time; replies {"id", "pid"} once forked and {"id", "exit", "cpu"} once it has ended."""
    replies = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints never reach the replies
    os.close(devnull)
    BASE_PATH[:] = [path for path in sys.path[1:] if path not in _python_path(os.environ)]
    sys.path.insert(0, REPO)
    preload(*PRELOADS[preloads])
    gc.freeze()  # the children's collections then leave the preloaded objects' pages shared
    wakeup, wakeup_writer = os.pipe()
    os.set_blocking(wakeup_writer, False)
    signal.set_wakeup_fd(wakeup_writer)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe

    def reply(message):
        os.write(replies, json.dumps(message).encode() + b"\n")

    reply({"ready": True})
    running, received = {}, b""  # pid -> request id
    while True:
        ready = select.select([0, wakeup], [], [])[0]
        if wakeup in ready:
            os.read(wakeup, 4096)
        while running:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if not pid:
                break
            reply({"id": running.pop(pid), "exit": os.waitstatus_to_exitcode(status),
                   "cpu": usage.ru_utime + usage.ru_stime})
        if 0 not in ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            os._exit(0)  # the client is gone; no teardown either
        received += chunk
        while b"\n" in received:
            line, received = received.split(b"\n", 1)
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (replies, wakeup, wakeup_writer):
                    os.close(fd)
                try:
                    become(request)  # ends the process
                except BaseException:  # pylint: disable=broad-except
                    traceback.print_exc()  # its set-up failed (a missing cwd): as Popen's would
                os._exit(1)  # never back into this loop
            running[pid] = request["id"]
            reply({"id": request["id"], "pid": pid})


# ------------------------------------------------------------------ the client

class Zygote:
    """Starts the zygote (importing PRELOADS[preloads]) at its first run, ends it with this
    process."""

    def __init__(self, preloads="tensorflow"):
        self.preloads, self.process, self.replies, self.received = preloads, None, {}, b""
        self.started = 0
        self.cpu_seconds = 0.0  # the ended children's, for measurements of the suite

    def _start(self):
        self.log = tempfile.TemporaryFile()  # pylint: disable=consider-using-with
        self.folder = tempfile.mkdtemp(prefix="zygote-")
        self.environment = dict(os.environ)
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, os.path.abspath(__file__), self.preloads], cwd=REPO, bufsize=0,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        atexit.register(self.close)
        self._wait_for("ready", 600)

    def _wait_for(self, key, timeout, child=None):
        """Reads replies until child's (or the zygote's) has `key`; its value, or None once
        `timeout` seconds have passed."""
        deadline = time.monotonic() + timeout
        while key not in self.replies.get(child, {}):
            left = max(deadline - time.monotonic(), 0)
            if not select.select([self.process.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                self.log.seek(0)
                raise RuntimeError("the zygote of tests/forked_scripts.py died:\n"
                                   + self.log.read().decode(errors="replace")[-3000:])
            self.received += chunk
            while b"\n" in self.received:
                line, self.received = self.received.split(b"\n", 1)
                reply = json.loads(line)
                self.cpu_seconds += reply.get("cpu", 0.0)
                self.replies.setdefault(reply.pop("id", None), {}).update(reply)
        return self.replies[child][key]

    def start(self, argv, cwd, env, new_session=False, stdout_pipe=False):
        """`python3 *argv` (argv[0] a script's path, or "-c" and code) in a forked child that
        runs on: a Child. With `stdout_pipe`, its stdout is a stream to read as it writes."""
        if self.process is None or self.process.poll() is not None:
            self._start()
        changed = [name for name, unset in START_SETTINGS.items()
                   if env.get(name, unset) != self.environment.get(name, unset)]
        if changed:
            raise ValueError(f"a forked child cannot change {changed}: run a fresh interpreter")
        self.started += 1
        folder = os.path.join(self.folder, str(self.started))
        os.mkdir(folder)
        out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
        if stdout_pipe:
            os.mkfifo(out)
        else:
            open(out, "wb").close()
        open(err, "wb").close()
        request = {"id": self.started, "argv": [str(word) for word in argv], "cwd": str(cwd),
                   "env": dict(env), "stdout": out, "stderr": err, "new_session": new_session}
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        return Child(self, self.started, self._wait_for("pid", 60, self.started), out, err,
                     stdout_pipe, new_session)

    def run(self, argv, cwd, env, timeout, new_session=False):
        """start(...) to the end: a subprocess.CompletedProcess with text stdout and stderr."""
        child = self.start(argv, cwd, env, new_session)
        stdout, stderr = child.communicate(timeout)
        return subprocess.CompletedProcess([sys.executable, *argv], child.returncode, stdout,
                                           stderr)

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)
            shutil.rmtree(self.folder, ignore_errors=True)


class Child:
    """A forked child as subprocess.Popen gives one: pid, returncode, poll, wait, send_signal,
    kill, communicate, and `stdout` when it is a pipe. Timeouts kill it, as subprocess.run's
    do."""

    def __init__(self, zygote, number, pid, out, err, stdout_pipe, new_session):
        self.zygote, self.number, self.pid, self.returncode = zygote, number, pid, None
        self.paths, self.new_session = (out, err), new_session
        # A FIFO opens once both ends do: the child opens it for writing as it starts.
        self.stdout = open(out, encoding="utf-8", errors="replace") if stdout_pipe else None

    def poll(self):
        return self.wait(0, raise_timeout=False)

    def wait(self, timeout=None, raise_timeout=True):
        if self.returncode is None:
            self.returncode = self.zygote._wait_for(  # pylint: disable=protected-access
                "exit", 10 ** 9 if timeout is None else timeout, self.number)
            if self.returncode is None and raise_timeout:
                raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)
        return self.returncode

    def send_signal(self, signum):
        if self.poll() is None:
            (os.killpg if self.new_session else os.kill)(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout=None):
        """Waits for the end (killing the child after `timeout` seconds, then raising
        TimeoutExpired); returns (the rest of) its stdout and its stderr, as text."""
        try:
            if self.stdout is not None:  # drained as it runs: a full pipe would block it
                rest = self.stdout.read()
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        outputs = []
        for path in self.paths:
            if path == self.paths[0] and self.stdout is not None:
                outputs.append(rest)
                continue
            with open(path, encoding="utf-8", errors="replace") as stream:
                outputs.append(stream.read())
        return tuple(outputs)


if __name__ == "__main__":
    serve(sys.argv[1])
