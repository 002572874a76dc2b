"""export.py's SavedModel, loaded by a process that never imports this project, tags images as
predict.py does."""
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from conftest import check_run, run_script
from test_predict import assert_transparency_on_white, write_transparent_photos

TOP_K = 7

# Runs in a fresh interpreter, cwd = a temporary folder, no PYTHONPATH: only TensorFlow.
SERVE = r"""
import importlib.util, json, sys
for module in ("nets", "data", "evaluation"):
    assert importlib.util.find_spec(module) is None, module
import tensorflow as tf
export_dir, paths = sys.argv[1], sys.argv[2:]
serve = tf.saved_model.load(export_dir).signatures["serving_default"]
images = tf.constant([open(path, "rb").read() for path in paths])
out = serve(images=images)
assert not {"nets", "data", "evaluation", "tf_slim"} & {name.split(".")[0] for name in sys.modules}
empty = serve(images=tf.constant([], dtype=tf.string))
print(json.dumps({"tags": [[t.decode("utf-8") for t in row] for row in out["tags"].numpy()],
                  "scores": out["scores"].numpy().tolist(),
                  "empty_shapes": [empty["tags"].shape.as_list(), empty["scores"].shape.as_list()],
                  "inputs": {name: [spec.dtype.name, spec.shape.as_list()] for name, spec in
                             serve.structured_input_signature[1].items()}}))
"""


@pytest.fixture(scope="module")
def exported(trained_dir, tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("export") / "hashtags" / "1")
    result = check_run(run_script("export.py", f"--model={trained_dir}",
                                  f"--export_dir={export_dir}", f"--top_k={TOP_K}"))
    return export_dir, result


def serve_in_fresh_process(export_dir, paths, cwd):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", SERVE, export_dir, *paths], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_saved_model_in_a_fresh_process_gives_predict_tags_and_scores(
        exported, sample_photos, predicted_json, tmp_path):
    export_dir, _ = exported
    # A batch of the test records' JPEGs, at the size preprocess.py stores for this model,
    # which predict.py passes on as they are. (A larger photo is reduced by PIL in predict.py
    # and in the graph by the SavedModel: close, not bit-identical.)
    rows = [row for row in predicted_json if row["path"] in sample_photos["record_images"]][:3]
    assert len(rows) == 3
    served = serve_in_fresh_process(export_dir, [row["path"] for row in rows], str(tmp_path))
    assert served["inputs"] == {"images": ["string", [None]]}
    assert served["empty_shapes"] == [[0, TOP_K], [0, TOP_K]]  # an empty request: empty answers
    for row, tags, scores in zip(rows, served["tags"], served["scores"]):
        assert tags == row["tags"][:TOP_K], row["path"]
        np.testing.assert_allclose(scores, row["scores"][:TOP_K], atol=1e-5)


def test_vocabulary_and_config_ship_inside_the_export(exported, trained_dir):
    export_dir, result = exported
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
    for name in ("vocab.txt", "train_config.json"):
        with open(os.path.join(export_dir, "assets", name), "rb") as copy, \
                open(os.path.join(trained_dir, name), "rb") as original:
            assert copy.read() == original.read()
    assert f"[None, {TOP_K}]" in result.stdout


def test_an_existing_export_is_kept_unless_overwrite(exported, trained_dir):
    export_dir, _ = exported
    before = os.path.getmtime(os.path.join(export_dir, "saved_model.pb"))
    result = run_script("export.py", f"--model={trained_dir}",
                        f"--export_dir={export_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"export.py: error: {export_dir} already exists; pass --overwrite to replace it or "
        "choose another --export_dir")
    assert os.path.getmtime(os.path.join(export_dir, "saved_model.pb")) == before
    assert sorted(os.listdir(os.path.dirname(export_dir))) == ["1"]  # no staging left behind


def test_saved_model_scores_transparent_pixels_as_white_as_predict_does(exported, tmp_path):
    """The SavedModel takes the PNG and GIF bytes as they are: its own decode composites them on
    white. (WebP is not a format it takes: predict.py converts it.)"""
    export_dir, _ = exported
    paths = {name: path for name, path in write_transparent_photos(tmp_path).items()
             if not name.endswith(".webp")}
    served = serve_in_fresh_process(export_dir, list(paths.values()), str(tmp_path))
    assert_transparency_on_white({name: dict(zip(tags, scores)) for name, tags, scores in
                                  zip(paths, served["tags"], served["scores"])})


@pytest.fixture(scope="module")
def archived(exported, trained_dir, tmp_path_factory):
    """export.py --archive alone, from a working folder: (archive path, that folder)."""
    cwd = tmp_path_factory.mktemp("cwd")
    archive = str(tmp_path_factory.mktemp("share") / "hashtags.tar.gz")
    check_run(run_script("export.py", f"--model={trained_dir}", f"--archive={archive}",
                         f"--top_k={TOP_K}", cwd=str(cwd)))
    return archive, cwd


def test_the_archive_is_one_self_contained_folder(archived, trained_dir):
    archive, cwd = archived
    assert os.listdir(cwd) == []  # --archive alone: no work/export beside it
    with tarfile.open(archive) as tar:
        names = sorted(member.name for member in tar.getmembers() if member.isfile())
        assert names == ["hashtags/assets/train_config.json", "hashtags/assets/vocab.txt",
                         "hashtags/saved_model.pb",
                         "hashtags/variables/variables.data-00000-of-00001",
                         "hashtags/variables/variables.index"]
        for name in ("vocab.txt", "train_config.json"):
            with open(os.path.join(trained_dir, name), "rb") as original:
                assert tar.extractfile(f"hashtags/assets/{name}").read() == original.read()
        assert {(member.uname, member.gname) for member in tar.getmembers()} == {("", "")}


def test_predict_takes_the_export_folder_or_archive_with_the_same_tags_and_scores(
        exported, archived, sample_photos, predicted_json):
    """predict.py --model=<the SavedModel folder> and --model=<the archive> against predict.py
    --model=<the train_dir> (conftest's predicted_json, every tag): the export's TOP_K."""
    for model in (exported[0], archived[0]):
        result = check_run(run_script("predict.py", f"--model={model}", "--format=json",
                                      "--top_k=0", "--recursive", sample_photos["folder"],
                                      sample_photos["from_records"]))
        assert result.stderr.count(f"{model}: using the exported model ({TOP_K} tags per "
                                   "image") == 1
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [row["path"] for row in rows] == [row["path"] for row in predicted_json]
        for row, reference in zip(rows, predicted_json):
            assert row["tags"] == reference["tags"][:TOP_K], row["path"]
            np.testing.assert_allclose(row["scores"], reference["scores"][:TOP_K], atol=1e-6)


def test_more_tags_than_exported_is_a_one_line_error(archived, sample_photos):
    archive, _ = archived
    result = run_script("predict.py", f"--model={archive}", f"--top_k={TOP_K + 1}",
                        sample_photos["in_folder"][0])
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        f"predict.py: error: {archive} returns {TOP_K} tags per image (export.py --top_k): ask "
        f"for at most {TOP_K}, or export it again with --top_k={TOP_K + 1}")


def test_an_existing_archive_is_kept_unless_overwrite_and_names_are_checked(archived,
                                                                            trained_dir):
    archive, cwd = archived
    before = os.path.getmtime(archive)
    result = run_script("export.py", f"--model={trained_dir}", f"--archive={archive}",
                        cwd=str(cwd))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"export.py: error: {archive} already exists; pass --overwrite to replace it or choose "
        "another --archive")
    assert os.path.getmtime(archive) == before
    result = run_script("export.py", f"--model={trained_dir}", "--archive=model.zip",
                        cwd=str(cwd))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "export.py: error: flag --archive=model.zip: --archive must name a .tar.gz or .tgz file")
    assert os.listdir(cwd) == []
