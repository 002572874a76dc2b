"""The one-line demo (demo.sh) end to end with the smallest settings (conftest.demo_run): it
builds the sample, trains, tags two test images and ends with the metrics table and the path of
the contact sheet."""
import os
import re

from PIL import Image

from conftest import REPO

PREDICTION = re.compile(r"^(?P<path>\S+\.jpg): (#\S+ [01]\.\d\d ?){5}$")


def test_demo_tags_two_test_images(demo_run):
    stdout = demo_run["result"].stdout
    lines = [line for line in stdout.splitlines() if PREDICTION.match(line)]
    assert len(lines) == 2, stdout[-3000:]
    with open(os.path.join(demo_run["records_dir"], "split.csv"), encoding="utf-8") as stream:
        test = {line.split(",")[0] for line in stream if line.rstrip().endswith(",test")}
    for line in lines:
        path = PREDICTION.match(line).group("path")
        assert path.split("HARRISON/", 1)[1] in test  # images the model never trained on
        assert os.path.isfile(os.path.join(REPO, path))  # relative paths are the repo's


def test_demo_ends_with_the_metrics_table_and_the_contact_sheet(demo_run):
    lines = demo_run["result"].stdout.rstrip().splitlines()
    sheet = os.path.join(demo_run["train_dir"], "eval", "contact_sheet.png")
    assert lines[-1] == f"contact sheet: {sheet}"
    assert Image.open(sheet).format == "PNG"
    header = next(i for i, line in enumerate(lines) if line.startswith("metric (%)"))
    assert lines[header].split()[2:4] == ["model", "popularity"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[header + 1:-2]}
    assert {"precision@1", "recall@5", "accuracy@5"} <= set(rows)
    assert all(re.fullmatch(r"\d+\.\d\d", value) for value in rows["precision@1"][:2])
    assert lines[-2].startswith("wrote ")  # evaluate.py's last line, then the sheet's path
