"""README.md and docs/ cannot drift from the code: every `python3 <script>.py ...` command they
show is accepted by that script's own absl flags (without running the job) and uses the current
flag names, and every relative link points at a file of the repository (and at a heading of it,
for a `#fragment` into a Markdown file)."""
import collections
import glob
import os
import re
import shlex

import pytest

from conftest import REPO
from script_flags import parse_argvs, problem

PIPELINE = {"preprocess.py", "train.py", "evaluate.py", "predict.py", "export.py"}
# absl.app defines these when app.run starts, not at import, so the parser under test lacks them.
HELP_FLAGS = {"--help", "--helpfull", "--helpshort"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", ">&", "&>"}
PYTHON_COMMAND = re.compile(r"\bpython3?\s+\S+\.py\b")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")

Command = collections.namedtuple("Command", "where text script argv")


def doc_files():
    return ["README.md"] + sorted(os.path.relpath(path, REPO)
                                  for path in glob.glob(os.path.join(REPO, "docs", "*.md")))


def split_markdown(text):
    """(code, prose): lists of (line number, text). Code is the lines of fenced and indented
    blocks, continuation backslashes joined, plus inline code spans of the prose."""
    code, prose = [], []
    fenced = indented = False
    previous_blank, pending = True, None
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced, indented, previous_blank = not fenced, False, False
            continue
        indented = not fenced and (pending is not None or (
            line.startswith("    ") and (previous_blank or indented)))
        if fenced or indented:
            if pending is not None:
                number, line = pending[0], pending[1] + " " + line.strip()
            if line.rstrip().endswith("\\"):
                pending = (number, line.rstrip()[:-1])
                continue
            pending = None
            code.append((number, line.strip()))
        else:
            prose.append((number, line))
            code.extend((number, span) for span in INLINE_CODE.findall(line))
        previous_blank = not line.strip()
    return code, prose


def commands_in(line):
    """[(script, argv)] of the `python3 X.py ...` commands of one shell line."""
    if not PYTHON_COMMAND.search(line):
        return []
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    segments, current = [], []
    for word in words:
        if word in SEPARATORS:
            segments.append(current)
            current = []
        else:
            current.append(word)
    segments.append(current)
    found = []
    for words in segments:
        while words and ENV_ASSIGNMENT.match(words[0]):
            words = words[1:]
        if len(words) < 2 or words[0].lstrip("!") not in ("python", "python3"):
            continue
        if not words[1].endswith(".py"):
            continue  # python3 -m pytest, python3 - <<EOF
        argv = []
        for word in words[1:]:
            if word in REDIRECTS:
                if argv and argv[-1].isdigit():
                    argv.pop()  # the 2 of 2>
                break
            argv.append(word)
        found.append((os.path.normpath(words[1]), argv))
    return found


def doc_commands():
    commands = []
    for name in doc_files():
        with open(os.path.join(REPO, name), encoding="utf-8") as stream:
            code, _ = split_markdown(stream.read())
        for number, line in code:
            try:
                found = commands_in(line)
            except ValueError as error:  # e.g. an unclosed quote
                raise AssertionError(f"{name}:{number}: {line}: {error}") from None
            commands.extend(Command(f"{name}:{number}", line, script, argv)
                            for script, argv in found)
    return commands


def test_the_extractor_finds_commands_in_every_kind_of_code():
    text = "\n".join([
        "Run `python3 predict.py --model=work/train photo.jpg` or:",
        "",
        "    python3 train.py --preset=cpu \\",
        "        --max_steps=50   # a comment",
        "    DEMO_TRAIN_FLAGS=--max_steps=5 bash demo.sh",
        "",
        "```bash",
        "python3 preprocess.py --sample && TF_CPP_MIN_LOG_LEVEL=0 python3 evaluate.py --at_k=1,5",
        "python3 predict.py --format=json photos/ > tags.jsonl 2> errors.txt",
        "python3 -m pytest",
        "```",
        "  - a list item, `--warm_start` is not a command",
    ])
    code, _ = split_markdown(text)
    found = [(number, script, argv) for number, line in code
             for script, argv in commands_in(line)]
    assert found == [
        (1, "predict.py", ["predict.py", "--model=work/train", "photo.jpg"]),
        (3, "train.py", ["train.py", "--preset=cpu", "--max_steps=50"]),
        (8, "preprocess.py", ["preprocess.py", "--sample"]),
        (8, "evaluate.py", ["evaluate.py", "--at_k=1,5"]),
        (9, "predict.py", ["predict.py", "--format=json", "photos/"]),
    ]


def test_the_docs_show_every_script_of_the_pipeline():
    shown = {command.script for command in doc_commands()}
    assert PIPELINE <= shown, f"never shown in README.md or docs/: {sorted(PIPELINE - shown)}"


@pytest.mark.parametrize("script", sorted({command.script for command in doc_commands()}))
def test_every_command_in_the_docs_is_accepted_by_the_script_flags(script):
    commands = [command for command in doc_commands() if command.script == script]
    assert os.path.isfile(os.path.join(REPO, script)), \
        f"{commands[0].where}: {commands[0].text}: no such script"
    argvs = [[word for word in command.argv if word not in HELP_FLAGS] for command in commands]
    failures = []
    for command, argv, outcome in zip(commands, argvs, parse_argvs(script, argvs)):
        if not outcome["defines_flags"] and len(argv) > 1:
            reason = "the script has no absl flags to check these arguments against"
        elif problem(script, outcome):
            reason = problem(script, outcome)
        elif outcome["deprecated"]:
            reason = ("deprecated flag name " + ", ".join(f"--{name}" for name in
                                                          outcome["deprecated"])
                      + ": show the new name (mention the old one in prose)")
        else:
            continue
        failures.append(f"{command.where}: {command.text}\n    -> {reason}")
    assert not failures, "\n".join(failures)


def anchors(name):
    """The `#fragment`s GitHub gives the headings of a Markdown file."""
    with open(os.path.join(REPO, name), encoding="utf-8") as stream:
        _, prose = split_markdown(stream.read())
    seen = collections.Counter()
    for _, line in prose:
        heading = HEADING.match(line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            yield slug if not seen[slug] else f"{slug}-{seen[slug]}"
            seen[slug] += 1


def test_every_relative_link_points_at_a_file():
    missing = []
    for name in doc_files():
        with open(os.path.join(REPO, name), encoding="utf-8") as stream:
            _, prose = split_markdown(stream.read())
        for number, line in prose:
            for target in LINK.findall(line):
                if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                    continue  # a URL
                path, _, fragment = target.partition("#")
                path = os.path.normpath(os.path.join(os.path.dirname(name), path)) if path else name
                if not os.path.exists(os.path.join(REPO, path)):
                    missing.append(f"{name}:{number}: {target}: no such file")
                elif fragment and path.endswith(".md") and fragment not in set(anchors(path)):
                    missing.append(f"{name}:{number}: {target}: no such heading in {path}")
    assert not missing, "links to nothing:\n" + "\n".join(missing)


def flag_table(name, heading):
    """{flag name: [cells after the flag]} of the Markdown table under `heading` in `name`."""
    with open(os.path.join(REPO, name), encoding="utf-8") as stream:
        lines = stream.read().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    rows = {}
    for line in lines:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        flag = re.fullmatch(r"`--(\w+)`", cells[0])
        if line.startswith("|") and flag:
            rows[flag.group(1)] = [cell.replace("`", "") for cell in cells[1:]]
    return rows


def shown_as(value, cell):
    """Whether a cell of a docs table shows `value`: a number as that number, a string as
    itself, a bool as on/off, and an unset value (None) in words, never as a number."""
    if value is None:
        return bool(cell) and not re.fullmatch(r"[-+.\deE]+", cell)
    if isinstance(value, bool):
        return cell == ("on" if value else "off")
    if isinstance(value, (int, float)):
        try:
            return float(cell) == value
        except ValueError:
            return False
    return cell == value


def test_the_train_flag_table_in_the_docs_is_the_recipe_table():
    # One table of settings (nets/recipe.py) makes train.py's flags; docs/train.md shows it: a
    # setting added to (or changed in) one and not the other fails here.
    from nets import recipe
    documented = flag_table("docs/train.md", "Flags")
    assert sorted(documented) == sorted(recipe.BY_NAME), "docs/train.md's flag table vs the table"
    wrong = []
    for name, (default, cpu, *_) in documented.items():
        setting = recipe.BY_NAME[name]
        if not shown_as(setting.default, default):
            wrong.append(f"--{name}: default {default!r} in the docs, {setting.default!r} in code")
        preset = setting.presets.get("cpu")
        if (cpu or preset is not None) and not shown_as(preset, cpu):
            wrong.append(f"--{name}: --preset=cpu {cpu!r} in the docs, {preset!r} in code")
    assert not wrong, "\n".join(wrong)
