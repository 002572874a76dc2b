"""predict.py as users run it: good and bad files, folders, formats, exit codes, the same
scores as evaluate.py on the same image; special files, huge photos and transparency."""
import csv
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

from conftest import REPO, run_python, run_script

# The peak resident memory of this process since it started (VmHWM, MB). Not ru_maxrss: that
# keeps the parent's (pytest's) resident memory at the fork, which exec does not reset.
PEAK = ("int(next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))"
        ".split()[1]) // 1024")
# Runs a script (argv: script, its arguments) and prints PEAK as the last line of stderr.
PEAK_MEMORY = f"""
import os, runpy, sys
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("peak_mb", {PEAK}, file=sys.stderr)
"""


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
    result = run_script("predict.py", f"--model={trained_dir}", "--format=csv",
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
    result = run_script("predict.py", f"--model={tmp_path}", image)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"predict.py: error: no checkpoint in {tmp_path}")
    assert "Traceback" not in result.stderr and result.stdout == ""
    result = run_script("predict.py", f"--model={tmp_path}")
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
    from data import image_files
    for name in ("b.png", "a.JPEG", ".hidden.jpg", "notes.txt", "sub/c.jpg", ".git/d.jpg"):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    os.mkfifo(tmp_path / "e.jpg")  # listed: load() gives it its own error line
    os.mkdir(tmp_path / "folder.jpg")
    flat = image_files.expand([str(tmp_path), "given.txt"])
    assert flat == [(str(tmp_path / "a.JPEG"), None), (str(tmp_path / "b.png"), None),
                    (str(tmp_path / "e.jpg"), None),
                    ("given.txt", None)]  # a file named explicitly is always tried
    deep = image_files.expand([str(tmp_path)], recursive=True)
    assert [path for path, _ in deep] == [str(tmp_path / n) for n in
                                          ("a.JPEG", "b.png", "e.jpg", "sub/c.jpg")]
    os.makedirs(tmp_path / "nothing" / "sub")
    (empty,) = image_files.expand([str(tmp_path / "nothing")])
    assert empty[0] == str(tmp_path / "nothing") and "no image files" in empty[1]


def test_photos_stored_rotated_are_turned_upright_like_the_training_images():
    from data import image_files
    image = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[image_files.EXIF_ORIENTATION] = 6  # "rotate 90 CW to view", as phones write
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    data, size = image_files.model_bytes(buffer.getvalue(), 75)
    upright = Image.open(io.BytesIO(data))
    assert upright.format == "PNG" and upright.size == size == (20, 40)
    plain = io.BytesIO()
    image.save(plain, format="JPEG")
    # passed through unchanged
    assert image_files.model_bytes(plain.getvalue(), 75) == (plain.getvalue(), (40, 20))


def test_large_photos_are_reduced_as_preprocess_stores_the_records():
    """A photo larger than preprocess.py stores images for the model (shorter side
    image_size / 0.875) is reduced to exactly what preprocess.py would store: JPEG via draft
    mode, upright, an antialiased bicubic resize, aspect ratio kept, the same JPEG encoding."""
    from data import image_files
    assert image_files.stored_side(299) == 342 and image_files.stored_side(139) == 159
    gradient = np.linspace(0, 255, 4200, dtype=np.uint8)
    photo = Image.fromarray(np.stack([np.tile(gradient, (1800, 1))] * 3, axis=-1))
    for orientation, expected in ((1, (201, 86)), (6, (86, 201))):  # 6: stored rotated
        exif = Image.Exif()
        exif[image_files.EXIF_ORIENTATION] = orientation
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"large-{os.getpid()}.jpg")
        photo.save(path, format="JPEG", quality=95, exif=exif)
        with open(path, "rb") as stream:
            data, size = image_files.model_bytes(stream.read(), 75)
        record, height, width = image_files.convert_image(path, 86)  # what preprocess stores
        os.remove(path)
        assert data == record and size == (width, height) == expected
    reduced = Image.open(io.BytesIO(data))
    reference = photo.resize((201, 86), Image.BICUBIC).transpose(Image.Transpose.ROTATE_270)
    assert np.abs(np.asarray(reduced, np.int16) - np.asarray(reference, np.int16)).max() <= 3
    smaller = io.BytesIO()
    Image.fromarray(np.zeros((80, 90, 3), np.uint8)).save(smaller, format="PNG")
    assert image_files.model_bytes(smaller.getvalue(), 75) == (smaller.getvalue(), (90, 80))


def solid_png(width, height, rgb):
    """A PNG of one colour, written row by row ("Up" filter: rows of zeros), so a few hundred kB
    even at 81 megapixels and made without holding the pixels."""
    def chunk(kind, body):
        checksum = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + checksum

    packer = zlib.compressobj(1)
    row = b"\x02" + bytes(3 * width)
    stream = [packer.compress(b"\x00" + bytes(rgb) * width)]
    stream += [packer.compress(row) for _ in range(height - 1)]
    stream.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(stream))
            + chunk(b"IEND", b""))


def test_a_huge_png_is_tagged_reduced_and_a_bomb_refused(tmp_path, trained_dir):
    """An 81-megapixel PNG (a small file) took 2.7 GB of memory; it is now decoded and reduced by
    PIL first and scored as the same colour at 90x90 px. Over 128 megapixels is refused."""
    colour = (30, 120, 200)
    paths = [tmp_path / name for name in ("huge.png", "bomb.png", "small.png")]
    for path, side in zip(paths, (9000, 12000, 90)):
        path.write_bytes(solid_png(side, side, colour))
    result = subprocess.run([sys.executable, "-c", PEAK_MEMORY, os.path.join(REPO, "predict.py"),
                             f"--model={trained_dir}", "--format=json", "--top_k=0",
                             *map(str, paths)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    huge, small = [json.loads(line) for line in result.stdout.splitlines()]
    assert [huge["path"], small["path"]] == [str(paths[0]), str(paths[2])]
    assert huge["tags"] == small["tags"]
    np.testing.assert_allclose(huge["scores"], small["scores"], atol=1e-5)
    assert f"{paths[1]}: error: too large: Image size (144000000 pixels) exceeds limit" in (
        result.stderr)
    assert "DecompressionBomb" not in result.stderr and "Traceback" not in result.stderr
    peak_mb = int(result.stderr.split("peak_mb")[-1])
    print(f"predict.py peak RSS with a 9000x9000 PNG: {peak_mb} MB")
    # Measured: 2725 MB before (TensorFlow decoding it whole), 1115 MB after, of which ~800 MB
    # is TensorFlow and the model with any photo.
    assert peak_mb < 1800


def test_special_files_get_their_own_error_line_and_never_hang(tmp_path, trained_dir,
                                                               sample_photos):
    """A FIFO (in a folder and as an argument), a link to /dev/zero, a socket and an oversized
    file among good photos: each gets its one-line error, the photos their tags (a link to a
    photo is followed)."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(sample_photos["in_folder"][0], folder / "a_photo.jpg")
    os.mkfifo(folder / "b_fifo.jpg")
    os.symlink("/dev/zero", folder / "c_zero.jpg")
    with open(folder / "d_huge.jpg", "wb") as stream:
        stream.truncate(65 * 2**20)  # sparse: no disk used
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "e_socket.png"))
    os.symlink(folder / "a_photo.jpg", folder / "sub" / "f_link.jpg")
    lone_fifo = tmp_path / "lone.jpg"
    os.mkfifo(lone_fifo)
    try:
        result = run_script("predict.py", f"--model={trained_dir}", "--format=json",
                            "--recursive", "--batch_size=8", str(folder), str(lone_fifo),
                            timeout=120)  # a FIFO used to hang it forever
    finally:
        listener.close()
    assert result.returncode == 1, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(folder / "a_photo.jpg"),
                                             str(folder / "sub" / "f_link.jpg")]
    assert rows[0]["tags"] == rows[1]["tags"] and rows[0]["scores"] == rows[1]["scores"]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors == [
        f"{folder / 'b_fifo.jpg'}: error: not a regular file (a FIFO)",
        f"{folder / 'c_zero.jpg'}: error: not a regular file (a link to /dev/zero, a character "
        "device)",
        f"{folder / 'd_huge.jpg'}: error: file too large (65 MB; photos are read up to 64 MB)",
        f"{folder / 'e_socket.png'}: error: not a regular file (a socket)",
        f"{lone_fifo}: error: not a regular file (a FIFO)"]
    assert result.stderr.rstrip().endswith("5 of 7 failed, 2 tagged")


# Prints, for each (batch_size, max_pixels) of argv[2], nets/photos.batches on the files of
# argv[1]: their names without extension ("error" for an error line).
BATCHES = r"""
import json, os, sys
from nets import photos
paths, limits = json.loads(sys.argv[1]), json.loads(sys.argv[2])
name = lambda path: os.path.splitext(os.path.basename(path))[0]
print(json.dumps([[[name(path) if isinstance(item, bytes) else "error" for path, item in batch]
                   for batch in photos.batches([(path, None) for path in paths], 75, *limit)]
                  for limit in limits]))
"""


def test_a_batch_ends_at_batch_size_images_or_its_pixel_budget(tmp_path):
    """photos.batches on real files, counting the pixels each makes in the graph of a 75 px
    model (brought to the stored 86 px): 10x10 photos (86x86 = 7,396 px), one 10x40 (86x344:
    four times as many), errors."""
    names = ["missing", "a", "b", "missing", "c", "big", "e", "f", "g", "h"]
    paths = []
    for name in names:
        path = tmp_path / f"{name}.png"
        if name != "missing":
            Image.new("RGB", (10, 40) if name == "big" else (10, 10)).save(path)
        paths.append(str(path))

    result = run_python(BATCHES, json.dumps(paths), json.dumps([[3, 18_490], [3, 10**9]]),
                        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    by_pixels, by_count = json.loads(result.stdout.splitlines()[-1])
    # An error line waits only for the images before it; an image over the budget runs alone.
    assert by_pixels == [["error"], ["a", "b", "error"], ["c"], ["big"], ["e", "f"], ["g", "h"]]
    assert by_count == [["error"], ["a", "b", "error", "c"], ["big", "e", "f"], ["g", "h"]]


def write_transparent_photos(folder):
    """{name: path}: blue made fully transparent in PNG (passed to TensorFlow as it is), GIF
    (its transparent palette index) and WebP (prepared by PIL); white and opaque blue; a noisy
    half-transparent PNG and PIL's composite of it on white."""
    rng = np.random.default_rng(0)
    veil = rng.integers(0, 256, size=(40, 40, 4), dtype=np.uint8)
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([255, 255, 255, 0, 0, 255] + [0] * 762)
    images = {"clear_blue.png": (Image.new("RGBA", (40, 40), (0, 0, 255, 0)), {}),
              "clear_blue.gif": (palette, {"transparency": 1}),
              "clear_blue.webp": (Image.new("RGBA", (40, 40), (0, 0, 255, 0)), {"lossless": True}),
              "white.png": (Image.new("RGB", (40, 40), (255, 255, 255)), {}),
              "blue.png": (Image.new("RGB", (40, 40), (0, 0, 255)), {}),
              "veil.png": (Image.fromarray(veil, "RGBA"), {}),
              "veil_on_white.png": (None, {})}
    from data import image_files
    images["veil_on_white.png"] = (image_files.to_rgb(images["veil.png"][0]), {})
    paths = {}
    for name, (image, options) in images.items():
        paths[name] = str(folder / name)
        image.save(paths[name], **options)
    return paths


def assert_transparency_on_white(scores_of, tolerance=1e-5):
    """scores_of: {photo name: {tag: score}} (its top-k tags) of write_transparent_photos'
    photos, or of some of them."""
    def difference(first, second):
        if scores_of[first].keys() != scores_of[second].keys():
            return float("inf")
        return max(abs(scores_of[first][tag] - scores_of[second][tag])
                   for tag in scores_of[first])

    # The few-step test model scores every photo alike (~1e-4 apart), but blue and white apart
    # by more than the tolerance: blue seen through a transparent pixel would fail below.
    assert difference("blue.png", "white.png") > tolerance
    clear = [name for name in scores_of if name.startswith("clear_blue.")]
    assert len(clear) >= 2
    for name in clear:
        assert difference(name, "white.png") <= tolerance, name
    assert difference("veil.png", "veil_on_white.png") <= tolerance


def test_transparent_pixels_are_scored_as_white_as_in_training(tmp_path, trained_dir):
    paths = write_transparent_photos(tmp_path)
    result = run_script("predict.py", f"--model={trained_dir}", "--format=json", "--top_k=0",
                        *paths.values())
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["path"] for row in rows] == list(paths.values())
    assert_transparency_on_white({os.path.basename(row["path"]): dict(zip(row["tags"],
                                                                          row["scores"]))
                                  for row in rows})


def test_a_model_that_is_not_an_export_is_a_one_line_error(tmp_path, sample_photos):
    """--model names an export of export.py (a SavedModel folder, a .tar.gz) that is not one."""
    import tarfile
    photo = sample_photos["in_folder"][0]
    page = tmp_path / "page.tar.gz"
    page.write_bytes(b"<!DOCTYPE html><html>moved</html>")
    photos = tmp_path / "photos.tar.gz"
    with tarfile.open(photos, "w:gz") as tar:
        tar.add(photo, arcname="photos/a.jpg")
    folder = tmp_path / "half_export"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    expected = {str(page): f"{page} is not a tar archive (starts with '<!DOCTYPE html><html')",
                str(photos): f"{photos} holds no SavedModel (saved_model.pb): is it an archive "
                             "of export.py --archive?",
                str(folder): f"{folder} is not a model of export.py: assets/train_config.json "
                             "is missing"}
    for model, message in expected.items():
        result = run_script("predict.py", f"--model={model}", photo)
        assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"predict.py: error: {message}"
