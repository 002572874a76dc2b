"""The moving average of the weights (train.py --moving_average_decay) and the test-time variants
chosen on val (nets/variants.py): kept in the checkpoints, chosen at the end of training into
best.json, and used alike by evaluate.py, predict.py, export.py's SavedModel and the web page."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import assert_one_line_error, check_run, run_python, run_script, run_train
from test_export import serve_in_fresh_process

DECAY = 0.5
# preprocess.py --sample with a val split: the validation and the variants' choice run.
VAL_PREPROCESS_FLAGS = ["--sample_images=60", "--shorter_side=86", "--val_size=10",
                        "--test_size=10"]
LARGER = 86  # nets/variants.larger_size(75): round(75 * 8 / 7)

READ = r"""
import json, sys
import tensorflow as tf
reader = tf.train.load_checkpoint(sys.argv[1])
names = sys.argv[2:]
shapes = reader.get_variable_to_shape_map()
print(json.dumps({"names": sorted(shapes), "values": {
    name: reader.get_tensor(name).ravel()[:50].tolist() for name in names if name in shapes}}))
"""
WATCHED = ("InceptionV3/Logits/Conv2d_1c_1x1/weights", "InceptionV3/Logits/Conv2d_1c_1x1/biases",
           "InceptionV3/Conv2d_1a_3x3/BatchNorm/moving_mean",
           "InceptionV3/Mixed_7c/Branch_3/Conv2d_0b_1x1/weights")
AVERAGE = "/ExponentialMovingAverage"


def read_checkpoint(prefix):
    names = [name + suffix for name in WATCHED for suffix in ("", AVERAGE)]
    result = check_run(run_python(READ, prefix, *names))
    return json.loads(result.stdout.strip().splitlines()[-1])


def ema_decay(step):
    """TF's ExponentialMovingAverage with num_updates=global_step, after the step to `step`."""
    return min(DECAY, (1.0 + step) / (10.0 + step))


@pytest.fixture(scope="module")
def val_records(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    records = str(root / "records")
    check_run(run_script("preprocess.py", "--sample", f"--sample_dir={root / 'sample'}",
                         f"--records_dir={records}", *VAL_PREPROCESS_FLAGS))
    return records


@pytest.fixture(scope="module")
def averaged_run(val_records, tmp_path_factory):
    """3 steps with the moving average and a val split, a checkpoint at every step; at the end
    the variants chosen on val."""
    train = str(tmp_path_factory.mktemp("averaged") / "train")
    result = check_run(run_train(val_records, train, f"--moving_average_decay={DECAY}",
                                 "--max_steps=3", "--save_every_steps=1"))
    with open(os.path.join(train, "best.json"), encoding="utf-8") as stream:
        best = json.load(stream)
    return {"train_dir": train, "result": result, "best": best}


def test_the_checkpoints_keep_a_moving_average_of_every_model_variable_that_moves(averaged_run):
    train = averaged_run["train_dir"]
    steps = [read_checkpoint(os.path.join(train, f"model.ckpt-{step}")) for step in (1, 2, 3)]
    names = set(steps[-1]["names"])
    averaged = {name[:-len(AVERAGE)] for name in names if name.endswith(AVERAGE)}
    model_variables = {name for name in names if name.startswith("InceptionV3/")
                       and not name.endswith((AVERAGE, "/RMSProp", "/RMSProp_1"))}
    assert averaged == model_variables and len(averaged) > 300
    for before, after, step in ((steps[0], steps[1], 2), (steps[1], steps[2], 3)):
        decay = ema_decay(step)
        for name in WATCHED:
            raw, average = (np.array(after["values"][name + s]) for s in ("", AVERAGE))
            expected = decay * np.array(before["values"][name + AVERAGE]) + (1 - decay) * raw
            np.testing.assert_allclose(average, expected, rtol=1e-5, atol=1e-7)
    # The average moved, and lags the weights it averages.
    head = "InceptionV3/Logits/Conv2d_1c_1x1/biases"
    assert steps[0]["values"][head + AVERAGE] != steps[2]["values"][head + AVERAGE]
    assert steps[2]["values"][head + AVERAGE] != steps[2]["values"][head]


def test_best_json_names_the_chosen_variant_and_every_variants_val_scores(averaged_run):
    best, output = averaged_run["best"], averaged_run["result"].stdout
    recorded = [entry["variant"] for entry in best["variants"]]
    assert recorded == [{"weights": w, "image_size": s, "mirror": m}
                        for w in ("raw", "averaged") for s in (75, LARGER)
                        for m in (False, True)]
    maps = [entry["scores"]["map"] for entry in best["variants"]]
    # The first is the model as trained, which the validation scored: the same number.
    assert maps[0] == pytest.approx(best["value"], abs=1e-9)
    winner = recorded[maps.index(max(maps))]  # the first best: the default wins ties
    assert best["variant"] == winner
    assert "test-time variants of step" in output and "chosen: " in output


def test_evaluate_scores_the_chosen_variant_and_says_so_and_flags_override_it(
        averaged_run, val_records, tmp_path):
    train, best = averaged_run["train_dir"], averaged_run["best"]
    scored = {}
    for name, flags in (("auto", []),
                        ("forced", ["--weights=averaged", f"--test_image_size={LARGER}",
                                    "--mirror=on"]),
                        ("all", ["--all_checkpoints"])):
        eval_dir = str(tmp_path / name)
        result = check_run(run_script("evaluate.py", f"--model={train}", "--split=val",
                                      f"--eval_dir={eval_dir}", "--contact_sheet_images=0",
                                      *flags))
        metrics_json = os.path.join(eval_dir, *([f"step-{best['step']}"] if name == "all"
                                                else []), "metrics.json")
        with open(metrics_json, encoding="utf-8") as stream:
            scored[name] = (json.load(stream), result.stdout)
    document, output = scored["auto"]
    assert document["global_step"] == best["step"] and document["variant"] == best["variant"]
    chosen = next(e for e in best["variants"] if e["variant"] == best["variant"])
    assert document["model"]["map"] == pytest.approx(chosen["scores"]["map"], abs=1e-6)
    assert "the variant chosen on the val split" in output
    forced = {"weights": "averaged", "image_size": LARGER, "mirror": True}
    document, output = scored["forced"]
    assert document["variant"] == forced and "as the flags ask" in output
    expected = next(e for e in best["variants"] if e["variant"] == forced)
    assert document["model"]["map"] == pytest.approx(expected["scores"]["map"], abs=1e-6)
    # Every checkpoint of a curve in one variant, the best one too: as trained.
    document, output = scored["all"]
    as_trained = {"weights": "raw", "image_size": 75, "mirror": False}
    assert document["variant"] == as_trained and best["variant"] != as_trained
    expected = next(e for e in best["variants"] if e["variant"] == as_trained)
    assert document["model"]["map"] == pytest.approx(expected["scores"]["map"], abs=1e-6)
    assert output.count("raw weights, 75 px, one view, as every checkpoint") == 3  # steps 1-3


def small_photos(val_records, folder, count=3):
    """JPEGs of the sample whose shorter side is below 86 px, what preprocess.py stores for the
    75 px model: predict.py passes them on as they are at every size of this model (it reduces
    larger ones in PIL, the SavedModel in its graph: close, not equal), so both score the same
    bytes."""
    from PIL import Image
    with open(os.path.join(val_records, "manifest.json"), encoding="utf-8") as stream:
        dataset = json.load(stream)["dataset_dir"]
    sources = sorted(os.path.join(root, name) for root, _, names in os.walk(dataset)
                     for name in names if name.endswith(".jpg"))[:count]
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index, source in enumerate(sources):
        path = os.path.join(folder, f"photo_{index}.jpg")
        with Image.open(source) as image:
            image.convert("RGB").resize((96, 70 + 5 * index)).save(path, quality=95)
        paths.append(path)
    return paths


@pytest.mark.parametrize("flags", [[], ["--weights=averaged", f"--test_image_size={LARGER}",
                                        "--mirror=on"]], ids=["chosen", "forced"])
def test_the_saved_model_gives_predict_scores_in_the_variant(averaged_run, val_records, tmp_path,
                                                             flags):
    train = averaged_run["train_dir"]
    photos = small_photos(val_records, str(tmp_path / "photos"))
    export_dir = str(tmp_path / "export")
    exported = check_run(run_script("export.py", f"--model={train}", f"--export_dir={export_dir}",
                                    "--top_k=5", *flags))
    predicted = check_run(run_script("predict.py", f"--model={train}", "--format=json",
                                     "--top_k=5", *flags, *photos))
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    served = serve_in_fresh_process(export_dir, photos, str(tmp_path))
    variant = (averaged_run["best"]["variant"] if not flags
               else {"weights": "averaged", "image_size": LARGER, "mirror": True})
    with open(os.path.join(export_dir, "assets", "train_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    assert config["image_size"] == variant["image_size"]
    assert bool(config.get("mirror")) == variant["mirror"]
    assert f"{variant['image_size']} px" in exported.stdout
    for row, tags, scores in zip(rows, served["tags"], served["scores"]):
        assert row["tags"] == tags
        np.testing.assert_allclose(row["scores"], scores, atol=1e-5)
    # The export, opened again, runs the same computation: predict.py on it gives the same.
    again = check_run(run_script("predict.py", f"--model={export_dir}", "--format=json",
                                 "--top_k=5", *photos))
    for row, line in zip(rows, again.stdout.splitlines()):
        np.testing.assert_allclose(row["scores"], json.loads(line)["scores"], atol=1e-5)


def test_mirror_averaging_is_the_mean_of_a_photo_and_its_mirror_image():
    code = r"""
import numpy as np, tensorflow.compat.v1 as tf
tf.disable_eager_execution()
from nets import model
config = {"num_tags": 7, "backbone": "inception_v3", "depth_multiplier": 0.1, "loss": "sigmoid",
          "image_size": 75}
images = tf.placeholder(tf.float32, [None, 75, 75, 3])
plain, mirrored = model.mirrored_scores(images, config)
with tf.variable_scope("", reuse=True):
    alone = model.build_scores(images, config)
with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    x = np.random.RandomState(0).uniform(-1, 1, [2, 75, 75, 3]).astype(np.float32)
    flipped = x[:, :, ::-1]
    p, m = session.run([plain, mirrored], {images: x})
    p_flip, m_flip = session.run([plain, mirrored], {images: flipped})
    a = session.run(alone, {images: x})
np.testing.assert_allclose(p, a, atol=1e-6)
np.testing.assert_allclose(m, (p + p_flip) / 2, atol=1e-6)
np.testing.assert_allclose(m_flip, m, atol=1e-6)
assert np.abs(p - p_flip).max() > 1e-4
print("ok")
"""
    assert check_run(run_python(code)).stdout.strip().endswith("ok")


def test_a_checkpoint_without_averages_resumes_and_they_start_from_its_weights(
        val_records, tmp_path):
    """A train_dir of a run without them (--moving_average_decay=0, or of an earlier version of
    train.py) resumes with them: they start at the resumed weights."""
    train = str(tmp_path / "train")
    check_run(run_train(val_records, train, "--moving_average_decay=0", "--max_steps=1",
                        "--nochoose_variant"))
    first = read_checkpoint(os.path.join(train, "model.ckpt-1"))
    assert not any(name.endswith(AVERAGE) for name in first["names"])
    resumed = check_run(run_train(val_records, train, f"--moving_average_decay={DECAY}",
                                  "--max_steps=2", "--nochoose_variant"))
    assert "the moving average of the weights starts from them" in resumed.stdout
    second = read_checkpoint(os.path.join(train, "model.ckpt-2"))
    for name in WATCHED:
        expected = (ema_decay(2) * np.array(first["values"][name])
                    + (1 - ema_decay(2)) * np.array(second["values"][name]))
        np.testing.assert_allclose(second["values"][name + AVERAGE], expected, rtol=1e-5,
                                   atol=1e-7)
    with open(os.path.join(train, "best.json"), encoding="utf-8") as stream:
        assert "variant" not in json.load(stream)  # --nochoose_variant
    # Its raw weights score; asking for averages of a checkpoint without them is one line.
    result = run_script("evaluate.py", f"--model={train}/model.ckpt-1", "--split=val",
                        "--weights=averaged", f"--eval_dir={tmp_path / 'eval'}")
    assert_one_line_error(result, "evaluate.py", "holds no moving averages", "--weights=raw")


def test_a_damaged_variant_in_best_json_is_one_line(averaged_run, tmp_path):
    train = str(tmp_path / "train")
    shutil.copytree(averaged_run["train_dir"], train)
    best = dict(averaged_run["best"], variant={"weights": "averaged", "image_size": 5000,
                                               "mirror": False})
    with open(os.path.join(train, "best.json"), "w", encoding="utf-8") as stream:
        json.dump(best, stream)
    result = run_script("predict.py", f"--model={train}", __file__)
    assert_one_line_error(result, "predict.py", "best.json is damaged", "image_size 5000")
    result = run_script("predict.py", f"--model={averaged_run['train_dir']}",
                        "--test_image_size=5000", __file__)
    assert_one_line_error(result, "predict.py", "--test_image_size=5000", "75 to 1024 px")


def test_an_export_holds_one_set_of_weights(averaged_run, tmp_path):
    export_dir = str(tmp_path / "export")
    check_run(run_script("export.py", f"--model={averaged_run['train_dir']}",
                         f"--export_dir={export_dir}", "--weights=averaged"))
    result = run_script("predict.py", f"--model={export_dir}", "--weights=raw", __file__)
    assert_one_line_error(result, "predict.py", "is an export",
                          "holds the averaged weights it was exported with",
                          "--weights=auto or averaged")


def test_the_auto_decay_spans_the_end_of_the_run():
    code = r"""
from nets import optimization
for steps, decay in ((6235, 1 - 1 / 311.75), (300, 1 - 1 / 15), (20, 0.9), (10**7, 0.9999)):
    assert abs(optimization.moving_average_decay(None, steps) - decay) < 1e-12, steps
assert optimization.moving_average_decay(0.0, 300) == 0.0
assert optimization.moving_average_decay(0.99, 300) == 0.99
print("ok")
"""
    assert check_run(run_python(code)).stdout.strip().endswith("ok")

