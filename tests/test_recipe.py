"""The recipe's mechanisms on CPU with generated data (issue 9): linear probe then fine-tune
(LP-FT) from a warm start, validation-picked checkpoints, the learning-rate schedule.

conftest's `learned_sample` (a --preset=cpu model trained from scratch on the sample's train
split) stands in for ImageNet: the LP-FT run warm-starts from it, as users warm-start from the
ImageNet InceptionV3."""
import glob
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from conftest import check_run, run_script, run_train
from nets import (linear_probe, model, optimization, recipe, restoring, train_dir, variants,
                  warm_start)
from train_records import write_records

# The sample's small images and network (--preset=cpu) with the GPU recipe's fine-tuning rate.
# Without the test-time variants' choice at the end (tests/test_variants.py tests it): 8 s of
# scoring per run that nothing here reads.
LPFT_FLAGS = ["--preset=cpu", "--learning_rate=0.002", "--warmup_steps=5", "--max_steps=30",
              "--save_every_steps=15", "--probe_epochs=40", "--nochoose_variant"]


def val_lines(stdout):
    """{(step, what): {metric: (model, popularity)}} from train.py's `val at step` lines."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"val at step (\d+) \(([^,]+), \d+ images\): (.*)$", line)
        if match:
            found[int(match.group(1)), match.group(2)] = {
                name: (float(a), float(b)) for name, a, b in
                re.findall(r"([\w@]+) ([\d.]+) \(popularity ([\d.]+)\)", match.group(3))}
    return found


@pytest.fixture(scope="module")
def lpft(learned_sample, tmp_path_factory):
    train_dir_path = str(tmp_path_factory.mktemp("lpft") / "train")
    result = check_run(run_script("train.py", *LPFT_FLAGS,
                                  f"--records_dir={learned_sample['records_dir']}",
                                  f"--train_dir={train_dir_path}",
                                  f"--warm_start={learned_sample['train_dir']}"))
    return dict(learned_sample, lpft_dir=train_dir_path, lpft=result,
                val=val_lines(result.stdout))


def test_the_probe_beats_popularity_and_the_kept_model_is_at_least_the_probe(lpft):
    probe = lpft["val"][0, "linear probe"]
    assert probe["precision@1"][0] > probe["precision@1"][1] + 10, probe
    fine_tuned = {step: metrics for (step, what), metrics in lpft["val"].items() if step > 0}
    assert sorted(fine_tuned) == [15, 30]
    for metrics in fine_tuned.values():  # fine-tuning does not wreck what the probe found
        assert metrics["precision@1"][0] > metrics["precision@1"][1], metrics
    # The model the scripts use (best.json) is never worse on val than the probe: on this tiny
    # sample (432 train images the stand-in already fitted) fine-tuning overfits and the probe
    # itself may stay the best, which is what validation-picked checkpoints are for. (Longer
    # runs do beat it: at --learning_rate=0.01, val map 53.6 for the probe, 60.5 at step 80.)
    assert 100 * train_dir.best(lpft["lpft_dir"])["value"] >= probe["map"][0] - 0.01
    assert "does NOT beat the popularity baseline" not in lpft["lpft"].stderr


def test_the_probe_leaves_the_warm_start_backbone_bit_identical(lpft):
    # A train_dir warm-starts from the checkpoint evaluate.py uses: its best on val.
    warm = tf.train.load_checkpoint(train_dir.default_checkpoint(lpft["train_dir"])[0])
    probed = tf.train.load_checkpoint(os.path.join(lpft["lpft_dir"], "model.ckpt-0"))
    heads = model.get_backbone("inception_v3").heads
    backbone = [name for name in warm.get_variable_to_shape_map()  # weights and BN statistics
                if name.startswith("InceptionV3/") and "/RMSProp" not in name
                and not name.endswith(restoring.AVERAGE_SUFFIX)
                and not name.startswith(("InceptionV3/Logits", "InceptionV3/AuxLogits"))]
    assert len(backbone) > 100
    for name in backbone:
        np.testing.assert_array_equal(warm.get_tensor(name), probed.get_tensor(name), name)
        # The moving average of a new run starts from its start: the warm-start weights.
        np.testing.assert_array_equal(warm.get_tensor(name),
                                      probed.get_tensor(name + restoring.AVERAGE_SUFFIX), name)
    # ... and the main head is the probe's fitted head, not the prior start.
    head = tf.train.load_checkpoint(os.path.join(lpft["lpft_dir"], "probe", "head.ckpt"))
    np.testing.assert_array_equal(head.get_tensor(heads[0] + "/weights"),
                                  probed.get_tensor(heads[0] + "/weights"))
    assert np.abs(probed.get_tensor(heads[0] + "/weights")).max() > 0


def test_the_best_val_checkpoint_is_kept_and_every_script_uses_it_by_default(lpft, tmp_path):
    directory = lpft["lpft_dir"]
    best = train_dir.best(directory)
    by_step = {step: metrics["map"][0] for (step, _), metrics in lpft["val"].items()}
    assert best["metric"] == "map" and best["step"] == max(by_step, key=by_step.get)
    assert 100 * best["value"] == pytest.approx(by_step[best["step"]], abs=0.01)
    steps = [step for step, _ in train_dir.list_checkpoints(directory)]
    assert 0 in steps and best["step"] in steps and 30 in steps  # probe, best, newest
    says = f"{directory}: using model.ckpt-{best['step']}, the best checkpoint on the val split"
    evaluated = check_run(run_script("evaluate.py", f"--model={directory}", "--batch_size=64",
                                     f"--eval_dir={tmp_path / 'eval'}"))
    assert says in evaluated.stderr
    assert f"model.ckpt-{best['step']} (step {best['step']})" in evaluated.stdout
    exported = check_run(run_script("export.py", f"--model={directory}",
                                    f"--export_dir={tmp_path / 'export'}"))
    assert says in exported.stderr and f"model.ckpt-{best['step']} to" in exported.stdout


def test_a_resumed_run_never_redoes_a_finished_stage(lpft, tmp_path):
    copy = str(tmp_path / "train")

    shutil.copytree(lpft["lpft_dir"], copy)
    features = sorted(glob.glob(os.path.join(copy, "probe", "features-*.npz")))
    stamps = [os.path.getmtime(path) for path in features]
    # Stage 1's model (model.ckpt-0) exists: a rerun with more steps resumes stage 2.
    again = check_run(run_script("train.py", *LPFT_FLAGS[:3], "--max_steps=32",
                                 "--save_every_steps=15", "--probe_epochs=40", "--nochoose_variant",
                                 f"--records_dir={lpft['records_dir']}", f"--train_dir={copy}",
                                 f"--warm_start={lpft['train_dir']}"))
    assert "resuming from" in again.stdout and "linear probe" not in again.stdout
    # Killed between the probe's features and its model: the features are not computed again.
    # (One step of stage 2 then: what is checked is stage 1.)
    for prefix in [p for _, p in train_dir.list_checkpoints(copy)]:
        train_dir.remove_checkpoint(prefix)
    os.remove(os.path.join(copy, "best.json"))
    third = check_run(run_script("train.py", *LPFT_FLAGS[:3], "--max_steps=1",
                                 "--save_every_steps=15", "--probe_epochs=40", "--nochoose_variant",
                                 f"--records_dir={lpft['records_dir']}", f"--train_dir={copy}",
                                 f"--warm_start={lpft['train_dir']}"))
    assert "linear probe:" in third.stdout and "probe features" not in third.stderr
    assert [os.path.getmtime(path) for path in features] == stamps


def test_cached_features_resume_at_the_last_written_chunk(tmp_path, monkeypatch):
    records = str(tmp_path / "records")
    write_records(records, {"train": 40, "test": 4})
    config = {"backbone": "inception_v3", "depth_multiplier": 0.1, "num_tags": 5,
              "loss": "sigmoid", "image_size": 75}
    monkeypatch.setattr(linear_probe, "CHUNK_IMAGES", 16)

    # A random backbone saved once, restored by every run.
    backbone = save_random_backbone(str(tmp_path / "backbone" / "model.ckpt"))

    def restore():
        return warm_start.build_restorer(backbone, "")[0]

    first = linear_probe.cache_features(str(tmp_path), config, records, "train", 40, restore,
                                        backbone, batch_size=8)
    chunks = sorted(glob.glob(str(tmp_path / "probe" / "features-train-*.npz")))
    assert len(chunks) == 3 and first[0].shape[0] == 40 and first[0].dtype == np.float16
    stamps = [os.path.getmtime(path) for path in chunks]
    os.remove(chunks[-1])  # the chunk a kill interrupted
    again = linear_probe.cache_features(str(tmp_path), config, records, "train", 40, restore,
                                        backbone, batch_size=8)
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])
    assert [os.path.getmtime(path) for path in chunks[:2]] == stamps[:2]


def test_cached_features_are_computed_again_when_what_made_them_differs(tmp_path, caplog):
    # Issue 18 item 4: the cache was reused whatever checkpoint, records or image size the
    # rerun had. Each change below is seen, named in one warning, and the features recomputed.
    records, other_records = str(tmp_path / "records"), str(tmp_path / "other_records")
    write_records(records, {"train": 16, "test": 4})
    write_records(other_records, {"train": 16, "test": 4}, seed=1)
    config = {"backbone": "inception_v3", "depth_multiplier": 0.1, "num_tags": 5,
              "loss": "sigmoid", "image_size": 75}
    backbone = save_random_backbone(str(tmp_path / "backbone" / "model.ckpt"))
    other = save_random_backbone(str(tmp_path / "other" / "model.ckpt"))  # another random draw

    def cache(checkpoint, records_dir, **changes):
        caplog.clear()
        features = linear_probe.cache_features(
            str(tmp_path), dict(config, **changes), records_dir, "train", 16,
            lambda: warm_start.build_restorer(checkpoint, "")[0], checkpoint, batch_size=8)[0]
        warnings = [record.getMessage() for record in caplog.records
                    if "cached probe features" in record.getMessage()]
        return features, warnings

    first, warnings = cache(backbone, records)
    assert warnings == []
    chunk = glob.glob(str(tmp_path / "probe" / "features-train-*.npz"))[0]
    stamp = os.path.getmtime(chunk)
    again, warnings = cache(backbone, records)  # the same set-up: read back, not recomputed
    assert warnings == [] and os.path.getmtime(chunk) == stamp
    np.testing.assert_array_equal(again, first)
    for checkpoint, records_dir, changes, named in [
            (other, records, {}, "another warm_start"),
            (other, other_records, {}, "another records"),
            (other, other_records, {"image_size": 91}, "another image_size")]:
        features, warnings = cache(checkpoint, records_dir, **changes)
        assert len(warnings) == 1 and named in warnings[0], warnings
        assert not np.array_equal(features, first)
        first = features


def save_random_backbone(path, num_tags=5, depth_multiplier=0.1):
    """A slim InceptionV3 (of `depth_multiplier`) at its random initialization, saved as a
    checkpoint: a from-scratch backbone to warm-start from."""
    with tf.Graph().as_default():
        model.build_logits(tf.zeros([1, 75, 75, 3]), num_tags, "inception_v3", depth_multiplier)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            tf.train.Saver().save(session, path, write_meta_graph=False)
    return path


def test_a_model_no_better_than_popularity_is_reported_loudly(tmp_path):
    # A warm start whose head starts at the tag priors (zero weights) and does not move (a rate
    # of 1e-9, no probe) ranks the tags exactly as the popularity baseline: not better.
    records = str(tmp_path / "records")
    write_records(records, {"train": 32, "val": 16, "test": 4})
    backbone = save_random_backbone(str(tmp_path / "backbone" / "model.ckpt"))
    result = check_run(run_train(records, str(tmp_path / "train"), "--max_steps=2",
                                 "--learning_rate=1e-9", "--probe_epochs=0",
                                 "--nochoose_variant", f"--warm_start={backbone}"))
    assert "does NOT beat the popularity baseline on the val split" in result.stderr


def test_the_recipe_schedule_warms_up_then_anneals_to_one_percent():
    settings = recipe.settings("gpu")
    total = 6000
    with tf.Graph().as_default():
        step = tf.placeholder(tf.int64, [])
        rate = optimization.learning_rate_schedule(
            step, settings["learning_rate"], total, settings["warmup_steps"],
            settings["learning_rate_decay"])
        with tf.Session() as session:
            values = {s: session.run(rate, {step: s}) for s in (0, 249, 499, 500, 3250, total)}
    peak, warmup = settings["learning_rate"], settings["warmup_steps"]
    assert (peak, warmup) == (0.002, 500)
    assert values[0] == pytest.approx(peak / warmup)
    assert values[249] == pytest.approx(peak * 250 / warmup)
    assert values[499] == pytest.approx(peak) and values[500] == pytest.approx(peak)
    assert values[3250] == pytest.approx(peak * (0.01 + 0.99 * 0.5))  # half way: the mean
    assert values[total] == pytest.approx(0.01 * peak)


def test_a_large_photo_gets_the_same_scores_from_predict_and_from_its_records(learned_sample,
                                                                               tmp_path):
    # Images are prepared the same way everywhere: a 2000 px photo through predict.py (reduced
    # exactly as preprocess.py stores it: shorter side image_size / 0.875, antialiased) and
    # through preprocess.py + evaluate.py (central crop) reach the model alike.
    # (With an antialiased resize of the whole photo instead, scores were up to 0.11 apart.)
    import csv

    from PIL import Image, ImageFilter
    rng = np.random.default_rng(5)
    pixels = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).resize(
        (2000, 1600), Image.BICUBIC)
    detail = rng.normal(0, 25, (1600, 2000, 3))  # fine texture: what aliasing would fold in
    photo = Image.fromarray(np.clip(np.asarray(pixels) + detail, 0, 255).astype(np.uint8))
    photo = photo.filter(ImageFilter.GaussianBlur(0.7))
    dataset = tmp_path / "HARRISON"
    (dataset / "instagram_dataset" / "big").mkdir(parents=True)
    photo.save(dataset / "photo.jpg", quality=95)
    names = [f"instagram_dataset/big/image_{i}.jpg" for i in range(4)]
    for name in names:
        os.link(dataset / "photo.jpg", dataset / name)
    sample_lists = json.load(open(os.path.join(learned_sample["records_dir"],
                                               "manifest.json")))["dataset_dir"]
    shutil.copy(os.path.join(sample_lists, "vocab_index.txt"), dataset / "vocab_index.txt")
    vocab = open(dataset / "vocab_index.txt").read().split()[::2]
    (dataset / "data_list.txt").write_text("".join(name + "\n" for name in names))
    # Every photo has every tag: the records keep the model's vocabulary, in its order.
    (dataset / "tag_list.txt").write_text((" ".join(vocab) + " \n") * len(names))
    image_size = json.load(open(os.path.join(learned_sample["train_dir"],
                                             "train_config.json")))["image_size"]
    records = str(tmp_path / "records")
    check_run(run_script("preprocess.py", f"--dataset_dir={dataset}", f"--records_dir={records}",
                         f"--shorter_side={round(image_size / 0.875)}", "--test_size=2",
                         "--val_size=0"))
    # At the larger test-time variant: the training size's crop, enlarged, from records and
    # photos alike.
    larger = f"--test_image_size={variants.larger_size(image_size)}"
    check_run(run_script("evaluate.py", f"--model={learned_sample['train_dir']}",
                         f"--records_dir={records}", f"--eval_dir={tmp_path / 'eval'}", larger))
    with open(tmp_path / "eval" / "predictions.csv", newline="") as stream:
        row = next(csv.DictReader(stream))
    from_records = {row[f"predicted_{k}"]: float(row[f"score_{k}"]) for k in range(1, 11)}
    predicted = check_run(run_script("predict.py", f"--model={learned_sample['train_dir']}",
                                     "--format=json", "--top_k=0", larger,
                                     str(dataset / "photo.jpg")))
    scores = dict(zip(*[json.loads(predicted.stdout)[key] for key in ("tags", "scores")]))
    differences = [abs(scores[tag] - score) for tag, score in from_records.items()]
    assert max(differences) < 1e-4, sorted(zip(differences, from_records))[-3:]
