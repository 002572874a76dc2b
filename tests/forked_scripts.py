"""The project's scripts run as users run them, minus the TensorFlow start-up each would pay.

Importing TensorFlow (and tearing it down at exit) costs 5-10 s of CPU per process on our
2-core machines, and the suite runs the scripts about a hundred times. So a long-lived process,
a zygote (this file run as a script), imports once what some scripts import (TensorFlow, slim,
the project's packages) and defines no flag. For each run it forks a child
that does what `python3 <script>.py <args>` (or `python3 -c <code> <args>`) does after those
imports: argv, sys.path[0], working folder, environment and standard streams set, then the
script's file executed as `__main__`, its flags defined then, in that child alone (absl's flags
are process-global: one fresh child per run, and never two scripts in one process). The child
is a real process: exit codes, signals, atexit handlers, multiprocessing pools and file locks
behave as in a fresh interpreter. Its exit code, stdout and stderr come back as
subprocess.run's would.

What differs from a fresh interpreter, on purpose:
- modules are already imported, so settings read at TensorFlow's import or the interpreter's
  start (TF_CPP_MIN_LOG_LEVEL, PYTHONHASHSEED) are the zygote's: `Zygote.run` refuses an `env`
  that changes them (PYTHONPATH is honoured: it only extends sys.path);
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
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_PATH = []  # the zygote's sys.path without its own folder and PYTHONPATH (serve sets it)
# What a zygote imports: the top-level imports of these scripts, and modules their code imports
# inside functions, heavy enough to import once. preprocess.py imports TensorFlow only once its
# pool of processes has started (so that no TensorFlow is forked into it): its own zygote.
PRELOADS = {"tensorflow": (("train.py", "evaluate.py", "predict.py", "export.py"),
                           ("tensorflow", "tf_slim", "pandas", "matplotlib")),
            "preprocess": (("preprocess.py",), ("pandas",))}
# Read at the interpreter's start or at TensorFlow's import (with the value cli.py gives when
# unset): a child cannot change them.
START_SETTINGS = {"PYTHONHOME": None, "PYTHONHASHSEED": None, "TF_CPP_MIN_LOG_LEVEL": "2",
                  "TF_ENABLE_ONEDNN_OPTS": None}


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


def become(request, replies):
    """In the forked child: sets up the process as the interpreter would, runs the code and
    exits; never returns."""
    os.close(replies)
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY),
                           (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
                           (2, request["stderr"], os.O_WRONLY | os.O_TRUNC)):
        opened = os.open(path, mode)
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
    signal.signal(signal.SIGINT, signal.default_int_handler)
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
    """Preloads PRELOADS[preloads], then reads one JSON request per line on stdin; replies
    {"pid"} once forked, then {"exit"}."""
    replies = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # stray prints never reach the replies
    os.close(devnull)
    global BASE_PATH  # pylint: disable=global-statement
    BASE_PATH = [path for path in sys.path[1:] if path not in _python_path(os.environ)]
    sys.path.insert(0, REPO)
    preload(*PRELOADS[preloads])
    gc.freeze()  # the children's collections then leave the preloaded objects' pages shared
    os.write(replies, b'{"ready": true}\n')
    for line in sys.stdin.buffer:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                become(request, replies)  # ends the process
            except BaseException:  # pylint: disable=broad-except
                traceback.print_exc()  # its set-up failed (a missing cwd): as Popen's would
            os._exit(1)  # never back into this loop
        os.write(replies, json.dumps({"pid": pid}).encode() + b"\n")
        _, status, usage = os.wait4(pid, 0)
        os.write(replies, json.dumps({"exit": os.waitstatus_to_exitcode(status),
                                      "cpu": usage.ru_utime + usage.ru_stime}).encode() + b"\n")
    os._exit(0)  # the client closed stdin: no teardown either


class Zygote:
    """The client: starts the zygote (preloading PRELOADS[preloads]) at its first run. One run
    at a time."""

    def __init__(self, preloads="tensorflow"):
        self.preloads, self.process = preloads, None
        self.cpu_seconds = 0.0  # the children's, for measurements of the suite

    def _start(self):
        self.log = tempfile.TemporaryFile()  # pylint: disable=consider-using-with
        self.received = b""
        self.environment = dict(os.environ)
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, os.path.abspath(__file__), self.preloads], cwd=REPO, bufsize=0,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log)
        atexit.register(self.close)
        self._reply("ready", 600)

    def _reply(self, key, timeout):
        """The zygote's next reply's `key`; None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.received:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                self.log.seek(0)
                raise RuntimeError("the zygote of tests/forked_scripts.py died:\n"
                                   + self.log.read().decode(errors="replace")[-3000:])
            self.received += chunk
        line, self.received = self.received.split(b"\n", 1)
        reply = json.loads(line)
        self.cpu_seconds += reply.get("cpu", 0.0)
        return reply[key]

    def run(self, argv, cwd, env, timeout, new_session=False):
        """`python3 *argv` (argv[0] a script's path, or "-c" and code) in a forked child;
        returns a subprocess.CompletedProcess with text stdout and stderr."""
        if self.process is None or self.process.poll() is not None:
            self._start()
        changed = [name for name, unset in START_SETTINGS.items()
                   if env.get(name, unset) != self.environment.get(name, unset)]
        if changed:
            raise ValueError(f"a forked child cannot change {changed}: run a fresh interpreter")
        with tempfile.TemporaryDirectory() as folder:
            out, err = os.path.join(folder, "stdout"), os.path.join(folder, "stderr")
            for path in (out, err):
                open(path, "wb").close()
            request = {"argv": [str(word) for word in argv], "cwd": str(cwd), "env": dict(env),
                       "stdout": out, "stderr": err, "new_session": new_session}
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
            pid = self._reply("pid", 60)
            code = self._reply("exit", timeout)
            if code is None:
                (os.killpg if new_session else os.kill)(pid, signal.SIGKILL)
                self._reply("exit", 60)
                raise subprocess.TimeoutExpired(argv, timeout)
            outputs = []
            for path in (out, err):
                with open(path, encoding="utf-8", errors="replace") as stream:
                    outputs.append(stream.read())
        return subprocess.CompletedProcess([sys.executable, *argv], code, *outputs)

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


if __name__ == "__main__":
    serve(sys.argv[1])
