"""The start-up the five scripts share (a library module, not a script).

Every script ends with `cli.run(main)`, which gives them the same behaviour:
- a problem the user must fix is a `UserError` (or a subclass): printed as one line,
  `<script>.py: error: <message>`, on stderr, exit code 2, no traceback; a bad flag value too;
- absl logs at WARNING unless --verbosity is given (TensorFlow's INFO lines such as "Restoring
  parameters from ..." bury the scripts' own output), and TensorFlow's C++ logs at level 2 unless
  TF_CPP_MIN_LOG_LEVEL is set (hence: a script imports this module before TensorFlow);
- flags renamed in this release keep their old name for one release (`deprecated_alias`), with a
  warning naming the new one.
"""
import contextlib
import math
import os
import signal
import sys
import threading

from absl import app, flags, logging

# Before TensorFlow is imported (scripts import this module first): its C++ INFO and WARNING lines
# bury the scripts' own output. TF_CPP_MIN_LOG_LEVEL=0 in the environment brings them back.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
_ALIASES = {}  # old flag name -> new flag name


class UserError(Exception):
    """Something the user must fix (a path, a flag, a file); the message is one line."""


def first_line(error):
    """The line of an exception that says what is wrong (TensorFlow's errors start with
    "Graph execution error:", where the node was defined (`File "train.py", line 320`) and its
    name, and end with node traces)."""
    message = getattr(error, "message", None) or str(error)
    message = message.split("Original stack trace for", 1)[0]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith((
        "Graph execution error", "[[", "Detected at node", "Node: ", 'File "'))]
    return (useful or lines or [type(error).__name__])[0]


@contextlib.contextmanager
def interruptible():
    """SIGTERM and SIGHUP, in the block, stop it as Ctrl-C does (KeyboardInterrupt), so its
    cleanups (`finally`, `with`) run: a temporary folder is removed when a job is killed. Outside
    the main thread, where Python cannot set handlers, the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number, frame):
        raise KeyboardInterrupt(signal.Signals(number).name)

    previous = {number: signal.signal(number, interrupt)
                for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def check_utf8_path(flag, path):
    """UserError unless `path` is valid UTF-8: a folder name of other bytes cannot be written
    into the JSON and CSV files that record it (it fails at the end of the work, every time)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"--{flag}={path.encode('utf-8', 'surrogateescape')!r} is not a UTF-8 "
                        "name: rename it, or give a link to it with a UTF-8 name") from None


def deprecated_alias(old, new):
    """Keeps `--old` working as another name of `--new` (one release), with a warning."""
    flags.DEFINE_alias(old, new)
    FLAGS[old].help = f"Deprecated: use --{new} (this name goes in the next release)."
    _ALIASES[old] = new


def check_range(name, low=None, high=None, low_inclusive=True, high_inclusive=True):
    """Refuses a float flag's value outside [low, high] (open ends where not inclusive), and NaN
    or infinity, with a one-line message at parse time. (absl's bounds let NaN through.)"""
    def valid(value):
        if value is None:
            return True
        if not math.isfinite(value):
            return False
        if low is not None and (value < low or (value == low and not low_inclusive)):
            return False
        return high is None or value < high or (value == high and high_inclusive)

    left = "" if low is None else ("[" if low_inclusive else "(") + f"{low}"
    right = "" if high is None else f"{high}" + ("]" if high_inclusive else ")")
    if low is not None and high is not None:
        wanted = f"in {left}, {right}"
    elif low is not None:
        wanted = f"{'>=' if low_inclusive else '>'} {low}"
    elif high is not None:
        wanted = f"{'<=' if high_inclusive else '<'} {high}"
    else:
        wanted = ""
    flags.register_validator(name, valid, f"--{name} must be a finite number {wanted}".strip())


def define_flags(table, help_text):
    """Defines an absl flag for each row of `table` (nets/settings.py's Setting rows: name,
    default, kind, choices, range, check) with the help `help_text(row)`, in the calling
    script's module (so its --help lists them), with the range checked at parse time: absl's
    bounds for integers, `check_range` (NaN refused) for floats."""
    caller = sys._getframe(1).f_globals["__name__"]
    module = {"module_name": sys.argv[0] if caller == "__main__" else caller}
    for row in table:
        text = help_text(row)
        if row.kind == "enum":
            flags.DEFINE_enum(row.name, row.default, list(row.choices), text, **module)
        elif row.kind is bool:
            flags.DEFINE_bool(row.name, row.default, text, **module)
        elif row.kind is int:
            flags.DEFINE_integer(row.name, row.default, text, lower_bound=row.low,
                                 upper_bound=row.high, **module)
        elif row.kind is float:
            flags.DEFINE_float(row.name, row.default, text, **module)
            check_range(row.name, row.low, row.high, row.ends[0] == "[", row.ends[1] == "]")
        elif row.kind == "list":
            flags.DEFINE_list(row.name, row.default, text, **module)
        else:
            flags.DEFINE_string(row.name, row.default, text, **module)
        if row.check:
            flags.register_validator(row.name, *row.check)


def _program():
    return os.path.basename(sys.argv[0]) or "script"


def fail(message):
    """Prints `<script>: error: <message>` on stderr and exits 2."""
    print(f"{_program()}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(first_line(error))


def _set_up_logging():
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    for old, new in _ALIASES.items():
        if FLAGS[old].present:
            logging.warning("--%s is deprecated and goes in the next release: use --%s", old, new)


def run(main):
    """Runs `main(argv)` as a script: flags parsed, logs set up, UserError -> one line, exit 2."""

    def guarded(argv):
        _set_up_logging()
        try:
            return main(argv)
        except UserError as error:
            fail(error)
        except KeyboardInterrupt:
            print(f"{_program()}: interrupted", file=sys.stderr)
            sys.exit(130)

    app.run(guarded, flags_parser=_parse_flags)
