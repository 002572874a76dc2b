"""Checks command lines against a script's own absl flags without running the job.

The one way the tests keep commands written for people (colab.ipynb, README.md, docs/) true to
the code: the script is imported as a module in a process of its own (its main is behind
`if __name__ == "__main__"`, so nothing runs) and each argv is parsed by the script's FLAGS, as
app.run would. A process of its own (a child of tests/forked_scripts.py's zygote), because
absl's flags are process-global: two scripts, or a script and the test process, would collide
on their flag names.
"""
import json
import os

from conftest import REPO, run_python

# Scripts whose positional arguments are inputs; the others refuse any.
TAKES_PATHS = {"predict.py"}

# Prints one JSON line per argv. `defines_flags`: whether importing the script defined any flag
# (an argparse script such as bench/bench_train.py defines none, so absl cannot judge its
# arguments). `deprecated`: alias flags used (cli.deprecated_alias keeps renamed flags working
# one release; commands written for people should show the new names).
_PARSE = r"""
import importlib.util, json, sys
from absl import flags
script, argvs = sys.argv[1], json.loads(sys.argv[2])
before = set(flags.FLAGS)
spec = importlib.util.spec_from_file_location("script_under_check", script)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
defines_flags = bool(set(flags.FLAGS) - before)
for argv in argvs:
    flags.FLAGS.unparse_flags()
    try:
        rest = flags.FLAGS(argv)
    except flags.Error as error:
        print(json.dumps({"ok": False, "error": str(error), "defines_flags": defines_flags}))
        continue
    deprecated = sorted(name for name in flags.FLAGS
                        if flags.FLAGS[name].present
                        and type(flags.FLAGS[name]).__name__ == "_FlagAlias")
    print(json.dumps({"ok": True, "positional": rest[1:], "deprecated": deprecated,
                      "defines_flags": defines_flags}))
"""


def parse_argvs(script, argvs, timeout=300):
    """One outcome dict per argv (argv[0] is the program name, as in sys.argv) of `script`
    (a path relative to the repository): ok, error or positional + deprecated, defines_flags.

    Raises AssertionError when the script cannot even be imported."""
    result = run_python(_PARSE, os.path.join(REPO, script), json.dumps(argvs), timeout=timeout)
    assert result.returncode == 0, f"importing {script} failed:\n{result.stderr[-3000:]}"
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(outcomes) == len(argvs), result.stdout[-3000:] + result.stderr[-3000:]
    return outcomes


def problem(script, outcome):
    """Why a parse_argvs outcome is not a command line `script` accepts, or None."""
    if not outcome["ok"]:
        return outcome["error"]
    if os.path.basename(script) in TAKES_PATHS:
        return None if outcome["positional"] else "no image to tag"
    if outcome["positional"]:
        return f"unexpected arguments: {' '.join(outcome['positional'])}"
    return None
