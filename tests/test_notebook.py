"""colab.ipynb as a user runs it, top to bottom in a real Jupyter kernel (nbclient + ipykernel),
on this machine's CPU, checked section by section.

The cells run exactly as they are in the file. Only the settings change, through the NOTEBOOK_*
environment variables the settings cell (the first code cell) reads: /content becomes a
temporary folder, the repository a local clone of this working tree (file://), the archive
check takes the size of the test's archive, the dataset's lists and HARRISON_fixed.zip come
from file:// URLs, training is a tiny from-scratch run, and section 1's demo is skipped
(RUN_DEMO): conftest's demo_run runs the same `bash demo.sh`. `google.colab` is the local stand-in
in tests/colab_standin (Drive: a temporary folder; upload: three test photos; download: a copy),
put on the kernel's PYTHONPATH here only. Where a user puts HARRISON_full.tar sits the built-in
sample (40 images) packed as a tar with one image cut short, and the fixed zip holds that image
whole. Nothing reaches the network: pip runs with PIP_NO_INDEX, and the archive is on the
"Drive", so the BitTorrent branch is not taken (it needs the real swarm).

The kernel's `python3` is the interpreter running the tests (a virtualenv's too), and a `!`
command that fails fails the test with its own output (kernel_settings). The training cell runs
twice, as after a disconnect: the kernel is interrupted (the stop
button) as soon as the first run has saved a checkpoint, and again once the second run has
resumed from it and saved a newer one. No timing is asserted: each interruption waits for a
file to appear.

Besides, every `!python3 <script>.py ...` line, with the settings' values filled in as IPython
does, is accepted by that script's own flags (tests/script_flags.py).
"""
import asyncio
import collections
import copy
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile

import nbformat
import pytest
from IPython.utils.text import DollarFormatter
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from PIL import Image

from conftest import (REPO, TINY_PREPROCESS_FLAGS, TINY_SAMPLE_IMAGES, TINY_TRAIN_FLAGS,
                      checkpoint_steps)
from script_flags import parse_argvs, problem

NOTEBOOK = os.path.join(REPO, "colab.ipynb")
STANDIN = os.path.join(REPO, "tests", "colab_standin")
PIPELINE = {"preprocess.py", "train.py", "evaluate.py", "predict.py", "export.py"}
PREDICTION = re.compile(r"^(?P<path>\S+): (?P<tags>(?:#\S+ [01]\.\d\d ?){10})$")
# Settings of the run: a tiny model from scratch, checkpoints every 2 steps, and more steps than
# the test lets it take (each run is interrupted once a checkpoint shows up).
TRAIN_FLAGS = [*TINY_TRAIN_FLAGS, "--max_steps=100000", "--save_every_steps=2"]
PREPROCESS_FLAGS = [flag for flag in TINY_PREPROCESS_FLAGS
                    if not flag.startswith("--sample_images")] + [
    f"--test_size={TINY_SAMPLE_IMAGES // 5}"]
PHOTOS = {"beach.jpg": "JPEG", "night.png": "PNG", "forest.webp": "WEBP"}


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def settings_values(environment=None):
    """The settings cell run alone, as on Colab (no NOTEBOOK_* variable), or with them."""
    source = code_cells(read_notebook())[0].source
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update({key: value for key, value in saved.items()
                       if not key.startswith("NOTEBOOK_")}, **(environment or {}))
    try:
        namespace = {}
        exec(source, namespace)  # pylint: disable=exec-used
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return namespace


def script_commands(notebook, namespace):
    """[(script, argv)] of every `!python3 X.py ...` line of the code cells (continuation
    backslashes joined), its variables filled in from `namespace` as IPython does."""
    commands = []
    for cell in code_cells(notebook):
        for line in cell.source.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith(("!python3 ", "!python ")):
                expanded = DollarFormatter().vformat(line[1:], args=[], kwargs=namespace)
                words = shlex.split(expanded, comments=True)
                assert words[1].endswith(".py"), line
                assert not any("$" in word or "{" in word for word in words), expanded
                commands.append((words[1], words[1:]))
    return commands


def default_commands():
    namespace = settings_values()
    # Set by earlier cells: the dataset found in the archive, a checkpoint picked in section 6.
    namespace.update(DATASET_DIR=f"{namespace['EXTRACT_DIR']}/HARRISON",
                     CHECKPOINT=f"{namespace['TRAIN_DIR']}/model.ckpt-2000")
    return script_commands(read_notebook(), namespace)


# ------------------------------------------------------------------ the notebook as a file

def test_settings_come_first_and_hold_every_url_it_fetches_from():
    cells = code_cells(read_notebook())
    assert "import" not in cells[0].source.replace("import os\n", "")  # runs before the clone
    assert [cell.source for cell in cells[1:] if "://" in cell.source] == []
    values = settings_values()
    urls = {name: value for name, value in values.items()
            if isinstance(value, str) and "://" in value}
    assert sorted(urls) == ["FIXED_ZIP_URL", "IMAGENET_URL", "LISTS_URL", "REPO_URL",
                            "TORRENT_URL"]
    dataset = "minstone/HARRISON-Dataset/"
    assert urls["LISTS_URL"] == f"https://raw.githubusercontent.com/{dataset}master/HARRISON"
    assert urls["TORRENT_URL"].endswith(f"{dataset}raw/master/HARRISON/HARRISON_dataset.torrent")
    assert urls["FIXED_ZIP_URL"].endswith(f"{dataset}raw/master/HARRISON_fixed.zip")
    from nets import warm_start  # the URL train.py would use without --imagenet_url
    assert urls["IMAGENET_URL"] == warm_start.IMAGENET_URL
    assert values["ARCHIVE_BYTES"] == 6_067_998_720
    assert values["TRAIN_FLAGS"] == "--warm_start=imagenet"  # the recipe, default gpu preset
    assert values["ROOT"] == "/content" and values["DRIVE_DIR"].startswith("/content/drive/")


def test_every_cell_compiles_as_ipython_runs_it():
    """Also the branches the executed run does not take (the BitTorrent download)."""
    from IPython.core.inputtransformer2 import TransformerManager
    for cell in code_cells(read_notebook()):
        compile(TransformerManager().transform_cell(cell.source), cell.id, "exec")


@pytest.mark.parametrize("script", sorted(PIPELINE))
def test_every_notebook_command_is_accepted_by_the_script_flag_parser(script):
    argvs = [argv for name, argv in default_commands() if name == script]
    assert argvs, f"the notebook never runs {script}"
    for argv, outcome in zip(argvs, parse_argvs(script, argvs)):
        assert problem(script, outcome) is None, f"{' '.join(argv)}: {problem(script, outcome)}"
        assert not outcome["deprecated"], argv


def test_the_parser_check_catches_a_drifted_flag():
    """The check itself fails on an unknown flag, a bad value and a stray argument (so it can
    fail)."""
    argvs = [["export.py", "--export_directory=x"], ["export.py", "--top_k=ten"],
             ["export.py", "--top_k=3"], ["export.py", "stray"]]
    outcomes = parse_argvs("export.py", argvs)
    assert [problem("export.py", outcome) is None for outcome in outcomes] == [
        False, False, True, False]


# ------------------------------------------------------------------ the notebook, executed

def snapshot_repository(destination):
    """This working tree (tracked and new files, uncommitted changes included) as a one-commit
    git repository: what `git clone` of the project's URL gives a Colab user."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=REPO, check=True, capture_output=True)
    for name in listed.stdout.decode().split("\0"):
        if name and os.path.isfile(os.path.join(REPO, name)):
            os.makedirs(os.path.dirname(os.path.join(destination, name)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, name), os.path.join(destination, name))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + command, cwd=destination, check=True, capture_output=True)
    return f"file://{destination}"


def make_dataset(root):
    """The built-in sample as HARRISON publishes it: HARRISON_full.tar (the images only, one of
    them cut short as two are in the real archive), the lists in the repository's HARRISON/,
    and HARRISON_fixed.zip holding the whole image. Returns (tar, lists_url, zip_url, the
    image cut short)."""
    from data import harrison_archive, sample
    dataset_dir = sample.ensure_sample(str(root / "sample"), TINY_SAMPLE_IMAGES)
    with open(os.path.join(dataset_dir, "data_list.txt"), encoding="utf-8") as stream:
        paths = stream.read().split()
    # The image cut short takes the name of one that HARRISON_fixed.zip replaces (apply_fixed
    # writes those two only).
    cut = harrison_archive.FIXED_IMAGES[1]
    os.makedirs(os.path.dirname(os.path.join(dataset_dir, cut)), exist_ok=True)
    os.replace(os.path.join(dataset_dir, paths[5]), os.path.join(dataset_dir, cut))
    with open(os.path.join(dataset_dir, "data_list.txt"), "w", encoding="utf-8") as stream:
        stream.write("".join(f"{path}\n" for path in paths[:5] + [cut] + paths[6:]))
    whole = open(os.path.join(dataset_dir, cut), "rb").read()
    published = root / "HARRISON-Dataset"
    (published / "HARRISON").mkdir(parents=True)
    for name in ("data_list.txt", "tag_list.txt", "vocab_index.txt"):
        shutil.copy(os.path.join(dataset_dir, name), published / "HARRISON" / name)
    with zipfile.ZipFile(published / "HARRISON_fixed.zip", "w") as archive:
        archive.writestr(cut, whole)
    with open(os.path.join(dataset_dir, cut), "wb") as stream:
        stream.write(whole[:len(whole) // 3])
    tar = root / "HARRISON_full.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(os.path.join(dataset_dir, "instagram_dataset"), arcname="instagram_dataset")
    return (str(tar), f"{(published / 'HARRISON').as_uri()}",
            (published / "HARRISON_fixed.zip").as_uri(), cut)


def make_photos(folder, dataset_dir):
    """The photos the "user" uploads: a JPEG, a PNG and a WebP made from sample images, 80 px:
    no larger than the test model's stored size (86 px for 75), so predict.py passes the JPEG
    and PNG bytes as they are and the SavedModel sees the same bytes. (Larger photos predict.py
    reduces with PIL as preprocess.py does, the SavedModel in its graph: close, not equal.)"""
    folder.mkdir()
    sources = sorted(glob.glob(os.path.join(dataset_dir, "instagram_dataset", "*", "*.jpg")))
    for (name, kind), source in zip(PHOTOS.items(), sources[-3:]):
        photo = Image.open(source).convert("RGB").resize((80, 80), Image.BICUBIC)
        photo.save(folder / name, kind, **({"lossless": True} if kind == "WEBP" else {}))


def cell_text(cell, streams=("stdout", "stderr")):
    """What a cell printed (`!` commands' output is all stdout), with \\r\\n as \\n."""
    return "".join(output.get("text", "") for output in cell.outputs
                   if output.output_type == "stream" and output.name in streams).replace(
        "\r\n", "\n")


def displayed(cell, mime):
    return [output for output in cell.outputs
            if output.output_type in ("display_data", "execute_result") and mime in output.data]


# Run by the kernel at its start (an IPython startup file): a `!` command that fails raises in
# its cell, where IPython only keeps its exit code in `_exit_code` and runs the next line, so the
# test stops at that command, with its output, not at a later symptom. A command stopped by the
# stop button is no failure (the test interrupts training): IPython then ends it as it can
# (^C, then SIGHUP or SIGKILL), so the interruption is noticed by its SIGINT, not its exit code.
# The command runs as in ipykernel's ZMQInteractiveShell.system_piped (its variables expanded in
# the cell's frame).
FAIL_ON_COMMAND_ERROR = """
import signal

from IPython.utils.process import system as _run_in_shell


class CommandFailed(Exception):
    \"\"\"A `!` command of a cell exited with an error.\"\"\"


def _system_checked(cmd):
    shell, interrupted = get_ipython(), []
    if cmd.rstrip().endswith("&"):
        raise OSError("Background processes not supported.")

    def on_interrupt(signum, frame):
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        exit_code = _run_in_shell(shell.var_expand(cmd, depth=1))
    finally:
        signal.signal(signal.SIGINT, previous)
    shell.user_ns["_exit_code"] = exit_code
    if exit_code and not interrupted:
        raise CommandFailed(f"!{cmd} exited with {exit_code}")


get_ipython().system = get_ipython().system_piped = _system_checked
"""


def kernel_settings(root):
    """IPYTHONDIR and PATH for the kernel: the startup file above, and `python3` as on Colab,
    the interpreter running the tests. A script that execs it, not a symlink: a virtualenv's
    interpreter reached through a link in another folder finds no pyvenv.cfg beside it and
    starts without the virtualenv's packages."""
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "fail_on_command_error.py").write_text(FAIL_ON_COMMAND_ERROR)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    return {"IPYTHONDIR": str(root / "ipython"),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_the_kernels_python3_is_this_interpreter_in_its_own_environment(tmp_path):
    """In a virtualenv too: its packages, not the base interpreter's (a symlink to a venv's
    interpreter starts the base one: no pyvenv.cfg beside the link)."""
    environment = dict(os.environ, **kernel_settings(tmp_path))
    found = subprocess.run(["python3", "-c", "import sys; print(sys.prefix)"], env=environment,
                           capture_output=True, text=True, check=True)
    assert found.stdout.strip() == sys.prefix


async def execute_cell(client, cell, index, interrupt_when=None):
    """Runs the cell; interrupts the kernel (the stop button) once `interrupt_when()` holds. A
    cell that fails fails the test with its error and the last lines it printed."""
    task = asyncio.ensure_future(client.async_execute_cell(cell, index))
    while interrupt_when and not task.done() and not interrupt_when():
        await asyncio.sleep(0.1)
    if not task.done():
        await client.km.interrupt_kernel()
    try:
        await task
    except CellExecutionError as error:
        printed = "\n".join(cell_text(cell).rstrip().splitlines()[-40:])
        raise AssertionError(f"cell {cell.id} failed: {error.ename}: {error.evalue}\n"
                             f"its last output lines:\n{printed}") from None


async def execute(notebook, root, environment, train_dir):
    """Runs every cell in order; the training cell twice (interrupted). Returns {cell id:
    seconds} and the outputs of the first training run."""
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(root)}})
    seconds, first_run = collections.OrderedDict(), None
    async with client.async_setup_kernel(env=environment):
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            start = time.monotonic()
            if "!python3 train.py" in cell.source:
                await execute_cell(client, cell, index, lambda: checkpoint_steps(train_dir))
                first_run = copy.deepcopy(cell)
                before = max(checkpoint_steps(train_dir))
                await execute_cell(client, cell, index,
                                   lambda: max(checkpoint_steps(train_dir), default=0) > before)
            else:
                await execute_cell(client, cell, index)
            seconds[cell.id] = time.monotonic() - start
    return seconds, first_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """colab.ipynb executed; dict: cells (by id), seconds (by id), first_train (the interrupted
    first run of the training cell), settings (the values the cells saw), paths."""
    root = tmp_path_factory.mktemp("colab")
    content, drive, uploads, downloads = (root / name for name in
                                          ("content", "drive", "uploads", "downloads"))
    for folder in (content, downloads, drive / "MyDrive" / "harrison"):
        folder.mkdir(parents=True)
    tar, lists_url, zip_url, cut = make_dataset(root)
    shutil.copy(tar, drive / "MyDrive" / "harrison" / "HARRISON_full.tar")
    make_photos(uploads, str(root / "sample" / "HARRISON"))
    settings = {"REPO_URL": snapshot_repository(str(root / "repository")),
                "ROOT": str(content), "ARCHIVE_BYTES": str(os.path.getsize(tar)),
                "LISTS_URL": lists_url, "FIXED_ZIP_URL": zip_url, "TENSORBOARD": "0",
                "RUN_DEMO": "0",  # conftest's demo_run runs it
                "PREPROCESS_FLAGS": " ".join(PREPROCESS_FLAGS),
                "TRAIN_FLAGS": " ".join(TRAIN_FLAGS)}
    source = code_cells(read_notebook())[0].source
    for name in settings:  # a misspelt name would silently change nothing
        assert f'setting("{name}",' in source, name
    environment = dict(
        os.environ, **{f"NOTEBOOK_{name}": value for name, value in settings.items()},
        COLAB_STANDIN_DRIVE=str(drive), COLAB_STANDIN_UPLOADS=str(uploads),
        COLAB_STANDIN_DOWNLOADS=str(downloads), PYTHONPATH=STANDIN, PIP_NO_INDEX="1",
        **kernel_settings(root))
    values = settings_values({f"NOTEBOOK_{name}": value for name, value in settings.items()})
    notebook = read_notebook()
    start = time.monotonic()
    seconds, first_run = asyncio.run(execute(notebook, content, environment,
                                             values["TRAIN_DIR"]))
    total = time.monotonic() - start
    print(f"\ncolab.ipynb executed in {total:.0f} s:")
    for cell_id, value in seconds.items():
        print(f"  {cell_id:<18} {value:6.1f} s")
    return {"cells": {cell.id: cell for cell in notebook.cells}, "seconds": seconds,
            "first_train": first_run, "settings": values, "cut": cut, "uploads": str(uploads),
            "downloads": str(downloads), "drive": str(drive)}


def test_no_cell_failed_and_the_file_is_unchanged(run):
    for cell_id, cell in run["cells"].items():
        errors = [output for output in cell.get("outputs", [])
                  if output.output_type == "error"]
        assert not errors, (cell_id, errors)
    assert [cell.source for cell in read_notebook().cells] == [
        cell.source for cell in run["cells"].values()]


def test_section_1_clones_the_project_and_runs_the_demo(run, demo_run):
    cells, values = run["cells"], run["settings"]
    assert "GPUs: none" in cell_text(cells["gpu-check"])
    assert "Cloning into" in cell_text(cells["clone"])
    assert os.path.isfile(os.path.join(values["REPO_DIR"], "colab.ipynb"))
    # The cell's `!bash demo.sh` is what conftest's demo_run runs (the smallest settings, its
    # work folder elsewhere): the notebook does not run it twice, and says it skipped it.
    assert cell_text(cells["demo"]).strip() == "demo skipped (RUN_DEMO in section 0)"
    assert "!bash demo.sh" in cells["demo"].source
    demo = demo_run["result"].stdout.rstrip().splitlines()
    sheet = os.path.join(demo_run["train_dir"], "eval", "contact_sheet.png")
    assert demo[-1] == f"contact sheet: {sheet}", demo[-20:]


def test_section_2_extracts_the_archive_from_drive_with_the_lists_and_the_fixed_image(run):
    cells, values = run["cells"], run["settings"]
    assert cell_text(cells["mount-drive"]).strip() == f"Mounted at {values['DRIVE']}"
    assert cell_text(cells["get-archive"]).strip() == (
        f"{values['ARCHIVE']} is on your Drive ({values['ARCHIVE_BYTES']:,} bytes): nothing "
        "to fetch")
    dataset_dir = os.path.join(values["ROOT"], "HARRISON")
    assert "extracting HARRISON_full.tar: 100%" in cell_text(cells["extract"], ["stderr"])
    assert cell_text(cells["extract"], ["stdout"]).strip().splitlines() == [
        f"extracted {TINY_SAMPLE_IMAGES} files (kept 0 already there) from {values['ARCHIVE']}",
        f"dataset: {dataset_dir}"]
    lines = cell_text(cells["lists-and-fixes"]).strip().splitlines()
    assert lines[:4] == [f"{name}: fetched from {values['LISTS_URL']} (kept on your Drive)"
                         for name in ("data_list.txt", "tag_list.txt", "vocab_index.txt")] + [
        f"replaced {run['cut']}"]
    listed = set(" ".join(lines[4:]).split())  # !ls
    assert listed == {"data_list.txt", "instagram_dataset", "tag_list.txt", "vocab_index.txt"}
    for name in ("data_list.txt", "tag_list.txt", "vocab_index.txt", "HARRISON_fixed.zip"):
        assert os.path.isfile(os.path.join(values["DRIVE_DIR"], name))  # fetched once


def test_section_3_builds_the_records_of_every_image(run):
    """The image cut short in the archive was replaced by HARRISON_fixed.zip: none skipped."""
    text = cell_text(run["cells"]["preprocess"])
    test_size = TINY_SAMPLE_IMAGES // 5
    assert (f"wrote train {TINY_SAMPLE_IMAGES - test_size}, test {test_size} images in "
            in text), text[-2000:]
    assert "skipped" not in text
    assert os.path.isfile(os.path.join(run["settings"]["RECORDS_DIR"], "manifest.json"))


def test_section_4_training_resumes_after_an_interruption(run):
    train_dir = run["settings"]["TRAIN_DIR"]
    first = cell_text(run["first_train"])
    assert "initialized at random" in first and "^C" in first, first[-2000:]
    second = cell_text(run["cells"]["train"])
    resumed = re.search(rf"resuming from {re.escape(train_dir)}/model\.ckpt-(\d+) \(step (\d+)\)",
                        second)
    assert resumed and resumed.group(1) == resumed.group(2), second[-2000:]
    assert int(resumed.group(1)) >= 2 and "initialized at random" not in second
    assert max(checkpoint_steps(train_dir)) > int(resumed.group(1))
    assert "TensorBoard off" in cell_text(run["cells"]["tensorboard"])


def test_section_5_shows_the_metrics_table_and_the_contact_sheet(run):
    cells = run["cells"]
    assert "metric (%)" in cell_text(cells["evaluate"])
    table = cells["metrics-table"]
    checkpoint = re.search(r"model\.ckpt-(\d+) \(step (\d+)\), (\d+) test images",
                           cell_text(table))
    assert checkpoint and checkpoint.group(3) == str(TINY_SAMPLE_IMAGES // 5)
    (frame,) = displayed(table, "text/html")
    assert "precision@1" in frame.data["text/html"] and "popularity" in frame.data["text/html"]
    assert len(displayed(table, "image/png")) == 1  # the contact sheet


def test_section_6_re_evaluates_every_checkpoint_and_one_chosen(run):
    cells, values = run["cells"], run["settings"]
    text = cell_text(cells["evaluate-all"])
    kept = checkpoint_steps(values["TRAIN_DIR"])
    assert text.count("test split, 8 images, raw weights, 75 px, one view:") == len(kept) >= 2
    assert len(displayed(cells["evaluate-all"], "image/png")) == 1  # metrics against the step
    assert f"model.ckpt-{kept[0]} (step {kept[0]}), test split" in cell_text(cells["evaluate-one"])
    assert os.path.isfile(os.path.join(values["DRIVE_DIR"], "eval_oldest", "metrics.json"))


def predictions(cell):
    """{photo name: its '#tag score' line part} of predict.py's text output."""
    lines = [PREDICTION.match(line) for line in cell_text(cell).splitlines()]
    return {os.path.basename(match.group("path")): match.group("tags").strip()
            for match in lines if match}


def test_section_7_tags_the_uploaded_photos(run):
    cells, values = run["cells"], run["settings"]
    assert cell_text(cells["upload"]).splitlines() == [f"Saving {name} to {name}"
                                                       for name in sorted(PHOTOS)]
    assert len(displayed(cells["upload"], "image/png")) == len(PHOTOS)
    assert sorted(os.listdir(values["PHOTOS_DIR"])) == sorted(PHOTOS)
    assert sorted(predictions(cells["predict"])) == sorted(PHOTOS)


def test_section_8_shares_the_model_that_gives_the_same_tags(run):
    cells, values = run["cells"], run["settings"]
    assert (f"to {values['EXPORT_DIR']} and {values['MODEL_ARCHIVE']}: signature"
            in cell_text(cells["export"]))
    from_train_dir = predictions(cells["predict"])
    assert predictions(cells["predict-archive"]) == from_train_dir  # same tags and scores
    served = dict(line.split(" ", 1) for line in cell_text(cells["load-savedmodel"]).splitlines())
    assert served == {name: tags for name, tags in from_train_dir.items()
                      if not name.endswith(".webp")}  # the SavedModel takes JPEG and PNG
    archive = os.path.join(run["downloads"], os.path.basename(values["MODEL_ARCHIVE"]))
    with open(archive, "rb") as downloaded, open(values["MODEL_ARCHIVE"], "rb") as on_drive:
        assert downloaded.read() == on_drive.read()


def test_section_9_opens_the_web_page_inline(run):
    """The page is served from the kernel (its launch waits for the server to answer) and shown
    below the cell; the cell returns, so the notebook goes on (and this test ends)."""
    cell = run["cells"]["web-page"]
    url = re.search(r"serving the page on (http://127\.0\.0\.1:\d+/)", cell_text(cell))
    assert url, cell_text(cell)[-2000:]
    (frame,) = displayed(cell, "text/html")
    assert f'<iframe src="{url.group(1)}"' in frame.data["text/html"]
