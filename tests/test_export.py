"""export.py's SavedModel, loaded by a process that never imports this project, tags images as
predict.py does."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import check_run, run_script

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
    result = check_run(run_script("export.py", f"--checkpoint_path={trained_dir}",
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
    # JPEG, PNG and JPEG again (a batch of images of different sizes and formats).
    rows = [predicted_json[0], predicted_json[2], predicted_json[4]]
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
    result = run_script("export.py", f"--checkpoint_path={trained_dir}",
                        f"--export_dir={export_dir}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"export.py: error: {export_dir} already exists; pass --overwrite to replace it or "
        "choose another --export_dir")
    assert os.path.getmtime(os.path.join(export_dir, "saved_model.pb")) == before
    assert sorted(os.listdir(os.path.dirname(export_dir))) == ["1"]  # no staging left behind
