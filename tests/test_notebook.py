"""colab.ipynb cannot drift from the code: every `!python3 <script>.py ...` command in it is
accepted by that script's own absl flag parser (without running the job)."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

NOTEBOOK = os.path.join(REPO, "colab.ipynb")
# Scripts whose positional arguments are inputs; the others refuse any.
TAKES_PATHS = {"predict.py"}
# Imports the script as a module (its main is behind `if __name__ == "__main__"`), then parses
# each argv with the script's own FLAGS, as app.run would. Prints one JSON result per argv.
PARSE = r"""
import importlib.util, json, sys
from absl import flags
script, argvs = sys.argv[1], json.loads(sys.argv[2])
spec = importlib.util.spec_from_file_location("notebook_script", script)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
for argv in argvs:
    flags.FLAGS.unparse_flags()
    try:
        rest = flags.FLAGS(argv)
        print(json.dumps({"ok": True, "positional": rest[1:]}))
    except flags.Error as error:
        print(json.dumps({"ok": False, "error": str(error)}))
"""


def notebook_cells():
    with open(NOTEBOOK, encoding="utf-8") as stream:
        notebook = json.load(stream)
    assert notebook["nbformat"] == 4
    return notebook["cells"]


def script_commands():
    """[(script, argv)] of every `!python3 X.py ...` line of the code cells (continuation
    backslashes joined)."""
    commands = []
    for cell in notebook_cells():
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]).replace("\\\n", " ")
        for line in source.splitlines():
            line = line.strip()
            if line.startswith(("!python3 ", "!python ")):
                words = shlex.split(line[1:], comments=True)
                assert words[1].endswith(".py"), line
                commands.append((words[1], words[1:]))
    return commands


def test_the_notebook_runs_every_step_of_the_pipeline():
    scripts = {script for script, _ in script_commands()}
    assert scripts == {"preprocess.py", "train.py", "evaluate.py", "predict.py", "export.py"}
    code = "".join("".join(cell["source"]) for cell in notebook_cells()
                   if cell["cell_type"] == "code")
    for needed in ("pip install -q -r requirements.txt", "drive.mount(", "files.upload()",
                   "%tensorboard", "--all_checkpoints", "bash demo.sh", "nvidia-smi",
                   "HARRISON_fixed.zip", "contact_sheet.png", "tf.saved_model.load("):
        assert needed in code, needed
    assert code.count("REPO_URL = ") == 1  # the one place to set the repository


@pytest.mark.parametrize("script", ["preprocess.py", "train.py", "evaluate.py", "predict.py",
                                    "export.py"])
def test_every_notebook_command_is_accepted_by_the_script_flag_parser(script):
    argvs = [argv for name, argv in script_commands() if name == script]
    assert argvs, f"the notebook never runs {script}"
    assert os.path.isfile(os.path.join(REPO, script))
    result = subprocess.run([sys.executable, "-c", PARSE, os.path.join(REPO, script),
                             json.dumps(argvs)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(outcomes) == len(argvs)
    for argv, outcome in zip(argvs, outcomes):
        assert outcome["ok"], f"{' '.join(argv)}: {outcome.get('error')}"
        if script in TAKES_PATHS:
            assert outcome["positional"], f"{' '.join(argv)}: no image to tag"
        else:
            assert outcome["positional"] == [], f"{' '.join(argv)}: unexpected arguments"


def test_the_parser_check_catches_a_drifted_flag():
    """The check itself fails on an unknown flag and a bad value (so it can fail)."""
    result = subprocess.run([sys.executable, "-c", PARSE, os.path.join(REPO, "export.py"),
                             json.dumps([["export.py", "--export_directory=x"],
                                         ["export.py", "--top_k=ten"],
                                         ["export.py", "--top_k=3"]])],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    outcomes = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [outcome["ok"] for outcome in outcomes] == [False, False, True]
