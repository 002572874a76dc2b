"""predict.py as users run it: good and bad files, folders, formats, exit codes, and the same
scores as evaluate.py on the same image."""
import csv
import io
import os

import numpy as np
from PIL import Image

from conftest import run_script


def read_vocab(train_dir):
    with open(os.path.join(train_dir, "vocab.txt"), encoding="utf-8") as stream:
        return stream.read().split("\n")[:-1]


def test_folders_are_sorted_recursive_and_every_tag_is_ranked(trained_dir, sample_photos,
                                                              predicted_json):
    expected = (sample_photos["in_folder"] + sample_photos["in_subfolder"]
                + sorted(sample_photos["record_images"]))
    assert [row["path"] for row in predicted_json] == expected
    vocab = read_vocab(trained_dir)
    for row in predicted_json:
        assert sorted(row["tags"]) == sorted(vocab)  # --top_k=0: every tag once
        assert row["scores"] == sorted(row["scores"], reverse=True)
        assert all(0.0 <= score <= 1.0 for score in row["scores"])
    # The lossless PNG and WebP of one photo are the same pixels: the same scores.
    png, webp = predicted_json[2], predicted_json[3]
    assert png["tags"] == webp["tags"]
    np.testing.assert_allclose(png["scores"], webp["scores"], atol=1e-5)


def test_bad_files_get_their_own_error_line_and_the_good_ones_their_tags(
        trained_dir, sample_photos, predicted_json):
    """CSV output with --threshold, broken files among good ones, exit code 1."""
    by_path = {row["path"]: row for row in predicted_json}
    first = by_path[sample_photos["in_folder"][0]]
    threshold = (first["scores"][2] + first["scores"][3]) / 2  # exactly three tags pass
    broken, root = sample_photos["broken"], sample_photos["root"]
    bad = {os.path.join(broken, "text.jpg"): "not an image",
           os.path.join(broken, "missing.jpg"): "no such file",
           os.path.join(broken, "truncated.jpg"): "damaged image",
           os.path.join(broken, "empty.png"): "empty file",
           os.path.join(root, "empty_folder"): "no image files"}
    good = [sample_photos["in_folder"][0], sample_photos["in_subfolder"][0]]
    arguments = [good[0], *list(bad)[:3], os.path.dirname(good[1]), *list(bad)[3:]]
    result = run_script("predict.py", f"--checkpoint_path={trained_dir}", "--format=csv",
                        "--top_k=0", f"--threshold={threshold!r}", "--batch_size=3", *arguments)
    assert result.returncode == 1, result.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["path"] for row in rows] == good
    for row in rows:
        reference = by_path[row["path"]]
        kept = sum(score >= threshold for score in reference["scores"])
        assert row["tags"].split() == reference["tags"][:kept]
        np.testing.assert_allclose([float(s) for s in row["scores"].split()],
                                   reference["scores"][:kept], atol=2e-6)
    assert len(rows[0]["tags"].split()) == 3
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == len(bad)
    for path, reason in bad.items():
        assert any(line.startswith(f"{path}: error: {reason}") for line in errors), (path, errors)
    assert "Traceback" not in result.stderr
    assert result.stderr.rstrip().endswith(f"{len(bad)} of {len(bad) + 2} failed, 2 tagged")


def test_usage_errors_are_one_line_with_exit_code_2(tmp_path, sample_photos):
    image = sample_photos["in_folder"][0]
    result = run_script("predict.py", f"--checkpoint_path={tmp_path}", image)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"predict.py: error: no checkpoint in {tmp_path}")
    assert "Traceback" not in result.stderr and result.stdout == ""
    result = run_script("predict.py", f"--checkpoint_path={tmp_path}")
    assert result.returncode == 2 and "give image files or folders" in result.stderr


def test_predict_scores_are_evaluate_scores_on_the_same_image(trained_dir, sample_photos,
                                                              predicted_json):
    """predict.py on the test records' JPEGs scores every tag as evaluate.py did (the demo's
    predictions.csv: its top 10 per image)."""
    with open(os.path.join(trained_dir, "eval", "predictions.csv"), encoding="utf-8",
              newline="") as stream:
        evaluated = {row["path"]: row for row in csv.DictReader(stream)}
    predicted = {sample_photos["record_images"][row["path"]]: row for row in predicted_json
                 if row["path"] in sample_photos["record_images"]}
    assert sorted(predicted) == sorted(evaluated) and len(evaluated) >= 2
    for path, row in evaluated.items():
        score_of = dict(zip(predicted[path]["tags"], predicted[path]["scores"]))
        for rank in range(1, 11):
            tag, score = row[f"predicted_{rank}"], float(row[f"score_{rank}"])
            assert abs(score_of[tag] - score) <= 1e-5, (path, tag)


def test_expand_lists_image_files_of_folders_sorted(tmp_path):
    from data import photos
    for name in ("b.png", "a.JPEG", ".hidden.jpg", "notes.txt", "sub/c.jpg", ".git/d.jpg"):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    flat = photos.expand([str(tmp_path), "given.txt"])
    assert flat == [(str(tmp_path / "a.JPEG"), None), (str(tmp_path / "b.png"), None),
                    ("given.txt", None)]  # a file named explicitly is always tried
    deep = photos.expand([str(tmp_path)], recursive=True)
    assert [path for path, _ in deep] == [str(tmp_path / n) for n in ("a.JPEG", "b.png", "sub/c.jpg")]
    os.makedirs(tmp_path / "nothing" / "sub")
    (empty,) = photos.expand([str(tmp_path / "nothing")])
    assert empty[0] == str(tmp_path / "nothing") and "no image files" in empty[1]


def test_photos_stored_rotated_are_turned_upright_like_the_training_images():
    from data import photos
    image = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[photos.EXIF_ORIENTATION] = 6  # "rotate 90 CW to view", as phones write
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    upright = Image.open(io.BytesIO(photos.model_bytes(buffer.getvalue())))
    assert upright.format == "PNG" and upright.size == (20, 40)
    plain = io.BytesIO()
    image.save(plain, format="JPEG")
    assert photos.model_bytes(plain.getvalue()) == plain.getvalue()  # passed through unchanged
