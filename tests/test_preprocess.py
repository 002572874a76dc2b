"""preprocess.py end to end on a small HARRISON-format dataset full of real-world trouble.

The script runs as users run it (a process of its own: conftest.run_script); the records are
read back and checked against the source images and lists.
"""
import filecmp
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import REPO, run_python, run_script
from data import build_records, harrison, image_files, shards

IMAGE_SIZE = 64
TEST_SIZE = 20
SHARD_SIZE = 16
VOCAB = ["love", "sea", "sun", "café", "여행", "night"]
GOOD = 150  # plain RGB photos, enough for several shards and a kill mid-run


def run_preprocess(*args, timeout=180):
    return run_script("preprocess.py", *args, timeout=timeout)


def _photo(rng, width, height):
    """A smooth random picture (a real photo's decode cost and JPEG behaviour, not pure noise)."""
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BICUBIC)


def make_dataset(root):
    """A HARRISON directory; returns {line: expected skip reason} and the special image lines."""
    rng = np.random.default_rng(0)
    folder = os.path.join(root, "instagram_dataset", "sea")
    os.makedirs(folder)
    rows, skips, special = [], {}, {}

    def add(path, tags, skip=None, name=None):
        if skip:
            skips[len(rows)] = skip
        if name:
            special[name] = len(rows)
        rows.append((path, tags))

    for index in range(GOOD):
        path = f"instagram_dataset/sea/image_{index}.jpg"
        _photo(rng, int(rng.integers(120, 200)), int(rng.integers(120, 200))).save(
            os.path.join(root, path), quality=90)
        tags = list(rng.choice(VOCAB, size=int(rng.integers(1, 4)), replace=False))
        if index % 10 == 0:
            tags.append("notinvocab")
        add(path, " ".join(tags) + " ")
        if index == 5:
            add(path, "love ", skip="duplicate")  # the same file listed twice

    def save(name, image, **kwargs):
        path = f"instagram_dataset/sea/{name}"
        image.save(os.path.join(root, path), **kwargs)
        return path

    gray = Image.fromarray(np.tile(np.arange(0, 200, 2, dtype=np.uint8), (80, 1)), "L")
    add(save("gray.jpg", gray), "night ", name="gray")
    add(save("cmyk.jpg", Image.new("RGB", (90, 90), (220, 20, 30)).convert("CMYK")), "sun ",
        name="cmyk")
    rgba = Image.new("RGBA", (90, 90), (0, 0, 255, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 45, 90))  # left half fully transparent
    add(save("alpha.png", rgba), "sea ", name="alpha")
    palette = Image.new("P", (90, 90), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    palette.paste(0, (0, 0, 90, 45))
    add(save("palette.gif", palette, transparency=0), "sea ", name="palette")
    deep = Image.fromarray(np.tile(np.linspace(1000, 60000, 100).astype(np.uint16), (70, 1)))
    add(save("deep.png", deep), "sea ", name="deep")
    rotated = Image.new("RGB", (160, 80), (0, 0, 255))
    rotated.paste((255, 0, 0), (0, 0, 80, 80))  # stored: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: red on top
    add(save("rotated.jpg", rotated, exif=exif.tobytes(), quality=95), "sun ", name="rotated")

    whole = io.BytesIO()
    _photo(rng, 160, 160).save(whole, format="JPEG")
    with open(os.path.join(folder, "truncated.jpg"), "wb") as handle:
        handle.write(whole.getvalue()[:len(whole.getvalue()) // 2])
    add("instagram_dataset/sea/truncated.jpg", "sea ", skip="truncated")
    open(os.path.join(folder, "empty.jpg"), "wb").close()
    add("instagram_dataset/sea/empty.jpg", "sea ", skip="empty")
    with open(os.path.join(folder, "text.jpg"), "w") as handle:
        handle.write("this is not an image\n")
    add("instagram_dataset/sea/text.jpg", "sea ", skip="undecodable")
    add("instagram_dataset/sea/nothere.jpg", "sea ", skip="missing")
    outside = os.path.join(os.path.dirname(root), "outside.jpg")
    _photo(rng, 100, 100).save(outside)  # exists, but must never be read
    add("../outside.jpg", "sea ", skip="outside_dataset_dir")
    add(outside, "sea ", skip="outside_dataset_dir")
    add("instagram_dataset/sea/image_1.jpg".replace("image_1", "image_3"), "sun ",
        skip="duplicate")
    add(save("oov.jpg", _photo(rng, 100, 100)), "unknown1 unknown2 ", skip="no_known_tag")

    # CRLF line endings and UTF-8 hashtags, as a Windows editor would save the lists.
    with open(os.path.join(root, "data_list.txt"), "w", encoding="utf-8", newline="\r\n") as handle:
        handle.write("".join(path + "\n" for path, _ in rows))
    with open(os.path.join(root, "tag_list.txt"), "w", encoding="utf-8", newline="\r\n") as handle:
        handle.write("".join(tags + "\n" for _, tags in rows))
    harrison.write_vocab_index(os.path.join(root, "vocab_index.txt"), VOCAB)
    return rows, skips, special


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data") / "HARRISON")
    os.makedirs(root)
    rows, skips, special = make_dataset(root)
    return {"root": root, "rows": rows, "skips": skips, "special": special}


def common_args(dataset, output_dir, *extra):
    """The reference settings: no val split unless `extra` asks for one."""
    if not any(argument.startswith("--val_size=") for argument in extra):
        extra = ("--val_size=0", *extra)
    return [f"--dataset_dir={dataset['root']}", f"--records_dir={output_dir}",
            f"--shorter_side={IMAGE_SIZE}", f"--test_size={TEST_SIZE}",
            f"--shard_size={SHARD_SIZE}", *extra]


@pytest.fixture(scope="module")
def output(dataset, tmp_path_factory):
    """One uninterrupted run on 2 workers: the reference output."""
    output_dir = str(tmp_path_factory.mktemp("out") / "records")
    result = run_preprocess(*common_args(dataset, output_dir, "--workers=2"))
    assert result.returncode == 0, result.stderr
    return {"dir": output_dir, "result": result}


def read_records(path):
    import tensorflow as tf
    from data import records
    return [records.decode_example(raw.numpy()) for raw in tf.data.TFRecordDataset(path)]


def all_records(output_dir):
    manifest = harrison.load_manifest(output_dir)
    return {split: [record for shard in info["shards"]
                    for record in read_records(os.path.join(output_dir, shard))]
            for split, info in manifest["splits"].items()}


def same_files(dir_a, dir_b):
    names_a, names_b = sorted(os.listdir(dir_a)), sorted(os.listdir(dir_b))
    assert names_a == names_b
    match, mismatch, errors = filecmp.cmpfiles(dir_a, dir_b, names_a, shallow=False)
    assert not mismatch and not errors
    return names_a


def test_skips_are_reported_and_nothing_else_is_lost(dataset, output):
    manifest = harrison.load_manifest(output["dir"])
    skipped = {item["line"]: item["reason"] for item in manifest["skipped"]}
    assert skipped == dataset["skips"]
    assert all(set(item) >= {"line", "path", "reason"} for item in manifest["skipped"])
    kept = len(dataset["rows"]) - len(dataset["skips"])
    assert manifest["images"] == kept
    assert sum(info["images"] for info in manifest["splits"].values()) == kept
    # An undecodable image does not leave the test split short.
    assert manifest["splits"]["test"]["images"] == TEST_SIZE
    assert manifest["dropped_tags"]["most_common"] == [["notinvocab", GOOD // 10],
                                                        ["unknown1", 1], ["unknown2", 1]]
    stdout = output["result"].stdout
    assert f"skipped {len(dataset['skips'])} of {len(dataset['rows'])} entries (" in stdout
    assert "missing: 1" in stdout and "truncated: 1" in stdout
    assert "Traceback" not in output["result"].stderr
    assert harrison.load_records_vocab(output["dir"]) == VOCAB
    assert manifest["vocab_size"] == len(VOCAB) and manifest["image_size"] == IMAGE_SIZE
    assert manifest["seed"] == 42 and manifest["dataset_dir"] == os.path.abspath(dataset["root"])
    shards = {name for name in os.listdir(output["dir"]) if name.endswith(".tfrecord")}
    assert shards == {name for info in manifest["splits"].values() for name in info["shards"]}
    # ~136 train images at most 16 per shard, 20 test images in 2 shards of 10.
    assert "train-00008-of-00009.tfrecord" in shards and "test-00001-of-00002.tfrecord" in shards
    assert len(shards) == 11
    assert not [name for name in os.listdir(output["dir"]) if "tmp" in name]


def test_split_is_disjoint_complete_and_matches_records(dataset, output):
    split = pd.read_csv(os.path.join(output["dir"], "split.csv"))
    assert list(split.columns) == ["path", "line", "split"]
    kept_lines = set(range(len(dataset["rows"]))) - set(dataset["skips"])
    assert set(split["line"]) == kept_lines and split["line"].is_unique
    assert split["path"].is_unique
    assert (split["split"] == "test").sum() == TEST_SIZE
    records = all_records(output["dir"])
    for name, split_records in records.items():
        assert sorted(r["line"] for r in split_records) == sorted(split.line[split.split == name])
    stats = pd.read_csv(os.path.join(output["dir"], "tag_stats.csv"))
    kept, cut = stats[stats["cut"].isna()], stats[stats["cut"].notna()]
    assert list(kept["tag"]) == VOCAB and list(kept["id"]) == list(range(len(VOCAB)))
    for name, split_records in records.items():
        expected = np.bincount([t for r in split_records for t in r["tags"]], minlength=len(VOCAB))
        assert list(kept[name]) == list(expected)
    # The tags outside vocab_index.txt, with the photos that carry them (the most frequent first).
    assert cut[["tag", "photos", "cut"]].values.tolist() == [
        [tag, photos, "not in the vocabulary file"]
        for tag, photos in (("notinvocab", GOOD // 10), ("unknown1", 1), ("unknown2", 1))]
    assert cut[["id", *records]].isna().all().all()


def test_split_is_deterministic_per_seed():
    first, again, other = (shards.split_order(500, seed) for seed in (42, 42, 7))
    assert (first == again).all() and not (first == other).all()
    assert sorted(first) == list(range(500))


def test_records_round_trip_tags_and_pixels(dataset, output):
    records = [r for split in all_records(output["dir"]).values() for r in split]
    by_line = {r["line"]: r for r in records}
    for line, record in by_line.items():
        path, tag_line = dataset["rows"][line]
        assert record["path"] == path and record["format"] == "jpeg"
        known = [t for t in harrison.parse_tags(tag_line) if t in VOCAB]
        assert record["tags"] == [VOCAB.index(t) for t in known]
        source = os.path.join(dataset["root"], path)
        assert record["jpeg"] == image_files.convert_image(source, IMAGE_SIZE)[0]
        pixels = np.asarray(Image.open(io.BytesIO(record["jpeg"])))
        assert pixels.shape == (record["height"], record["width"], 3)
        assert min(record["height"], record["width"]) == IMAGE_SIZE
        with Image.open(source) as original:
            width, height = original.size
        if "rotated" not in path:  # aspect ratio kept
            assert abs(record["width"] / record["height"] - width / height) < 0.03
        if line < 10:  # plain photos: the stored pixels are the source, resized
            with Image.open(source) as original:
                expected = np.asarray(original.convert("RGB").resize(
                    (record["width"], record["height"]), Image.BICUBIC), dtype=np.float32)
            assert np.abs(pixels.astype(np.float32) - expected).mean() < 4.0

    def pixels_of(name):
        record = by_line[dataset["special"][name]]
        return np.asarray(Image.open(io.BytesIO(record["jpeg"]))).astype(int), record

    rotated, record = pixels_of("rotated")  # EXIF orientation honoured: portrait, red on top
    assert (record["width"], record["height"]) == (IMAGE_SIZE, 2 * IMAGE_SIZE)
    assert np.abs(rotated[10, IMAGE_SIZE // 2] - [255, 0, 0]).max() < 30
    assert np.abs(rotated[-10, IMAGE_SIZE // 2] - [0, 0, 255]).max() < 30
    alpha, _ = pixels_of("alpha")  # transparent half on white
    assert np.abs(alpha[32, 5] - [255, 255, 255]).max() < 20
    assert np.abs(alpha[32, -5] - [0, 0, 255]).max() < 30
    palette, _ = pixels_of("palette")
    assert np.abs(palette[5, 32] - [255, 255, 255]).max() < 20
    assert np.abs(palette[-5, 32] - [0, 200, 0]).max() < 30
    cmyk, _ = pixels_of("cmyk")
    assert np.abs(cmyk[32, 32] - [220, 20, 30]).max() < 30
    gray, _ = pixels_of("gray")
    assert np.abs(gray[:, :, 0] - gray[:, :, 2]).max() <= 2 and gray[30, -3, 0] > 150
    deep, _ = pixels_of("deep")  # 16-bit: full range scaled to 0..255, not clipped to white
    assert deep[30, 2, 0] < 30 and deep[30, -3, 0] > 220


def test_worker_count_does_not_change_a_byte(dataset, output, tmp_path):
    single = str(tmp_path / "records")
    result = run_preprocess(*common_args(dataset, single, "--workers=1"))
    assert result.returncode == 0, result.stderr
    names = same_files(output["dir"], single)
    assert len([name for name in names if name.endswith(".tfrecord")]) == 11


# Runs preprocess.py as users do, after `patch` (Python source) has run in its process: a fault
# at a chosen moment of the real code path. argv = script, its arguments.
PATCHED_RUN = r"""
import os, runpy, sys
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))
PATCH
runpy.run_path(sys.argv[0], run_name="__main__")
"""
# SIGKILL to the whole run (its pool's workers too, as kill -9 of a notebook does) just before
# os.replace moves something onto a file named NAME. The run has a session of its own
# (start_new_session), so the kill cannot reach pytest.
KILL_BEFORE_REPLACE = r"""
import signal
assert os.getpgid(0) == os.getpid()
_replace = os.replace
def _replace_or_die(source, target, *args, **kwargs):
    if os.path.basename(target) == NAME:
        os.killpg(0, signal.SIGKILL)
    return _replace(source, target, *args, **kwargs)
os.replace = _replace_or_die
"""


def run_patched(patch, *args, timeout=180):
    return run_python(PATCHED_RUN.replace("PATCH", patch), os.path.join(REPO, "preprocess.py"),
                      *args, timeout=timeout, new_session=True, for_script="preprocess.py")


def run_killed_before_replace(name, *args):
    """preprocess.py killed just before it moves a finished file onto `name`."""
    result = run_patched(KILL_BEFORE_REPLACE.replace("NAME", repr(name)), *args)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    return result


def litter(directory):
    """Temporaries: data/atomic.py's `.tmp-*`, the shards' `.<shard>.tmp`, and the `.HARRISON-*`
    folders of earlier versions' samples."""
    return sorted(name for name in os.listdir(directory)
                  if name.startswith((".tmp", ".HARRISON-")) or name.endswith(".tmp"))


def test_runs_killed_at_chosen_moments_then_a_rerun_give_the_uninterrupted_output(
        dataset, output, tmp_path):
    target = str(tmp_path / "records")
    args = common_args(dataset, target, "--workers=2")
    # A complete shard not yet renamed; everything but the manifest (data/atomic.py's temporary):
    # each killed run removes what the one before left, and leaves its own.
    shard = "train-00002-of-00009.tfrecord"
    for moment, leftover in ((shard, f".{shard}.tmp"), ("manifest.json", ".tmp-manifest.json-")):
        run_killed_before_replace(moment, *args)
        assert [name[:len(leftover)] for name in litter(target)] == [leftover]
        assert "manifest.json" not in os.listdir(target)
    result = run_preprocess(*args)
    assert result.returncode == 0, result.stderr
    assert litter(target) == []
    same_files(output["dir"], target)


# preprocess.py's process, and so its workers, never import TensorFlow (7 s of CPU and ~600 MB
# on 2 cores): here any import of it fails, and the output is the reference's, byte for byte.
NO_TENSORFLOW = "sys.modules['tensorflow'] = None"


def test_preprocess_never_imports_tensorflow(dataset, output, tmp_path):
    target = str(tmp_path / "records")
    result = run_patched(NO_TENSORFLOW, *common_args(dataset, target, "--workers=2"))
    assert result.returncode == 0, result.stderr[-3000:]
    same_files(output["dir"], target)


def test_a_second_run_on_the_same_records_dir_refuses_while_the_first_runs(dataset, output,
                                                                             tmp_path):
    target = str(tmp_path / "records")
    args = common_args(dataset, target, "--workers=2")
    first = subprocess.Popen([sys.executable, os.path.join(REPO, "preprocess.py"), *args],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    lock = os.path.join(target, build_records.LOCK_FILE)
    try:
        while not (os.path.exists(lock) and open(lock).read().startswith("pid")):
            assert first.poll() is None, "the first run ended before it could be caught"
            time.sleep(0.01)
        os.killpg(first.pid, signal.SIGSTOP)  # mid-run, holding the folder, until SIGCONT
        second = run_preprocess(*args)
        os.killpg(first.pid, signal.SIGCONT)
        assert first.wait(timeout=180) == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert second.returncode == 2
    assert second.stderr.strip() == (
        f"preprocess.py: error: {target} is in use by another preprocess.py (pid {first.pid}); "
        "wait for it to finish or choose another --records_dir")
    same_files(output["dir"], target)  # the second run touched nothing


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs: a disk that really fills up."""
    mount_point = str(tmp_path / "disk")
    os.makedirs(mount_point)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount_point],
                                 capture_output=True, text=True)
        problem = mounted.stderr.strip() if mounted.returncode else None
    except OSError as error:
        problem = str(error)
    if problem:
        pytest.skip(f"cannot mount a tmpfs here ({problem}; it needs root): "
                    "test_simulated_full_disk covers the same code path")
    yield mount_point
    subprocess.run(["umount", mount_point], check=True)


def leave_free(disk, pages):
    """Fills `disk` (a tmpfs) with a filler file so that `pages` blocks stay free."""
    filler = os.path.join(disk, "filler")
    if os.path.exists(filler):
        os.remove(filler)
    stats = os.statvfs(disk)
    with open(filler, "wb") as stream:
        stream.write(bytes((stats.f_bavail - pages) * stats.f_frsize))
    return filler


def assert_stopped_by_full_disk(result, target):
    """One error line naming the folder, no temporaries, no manifest; returns the files left."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"preprocess.py: error: no space left on the disk of {target}: " in result.stderr
    assert "Traceback" not in result.stderr
    names = os.listdir(target)
    assert "manifest.json" not in names and litter(target) == []
    return names


def test_full_disk_is_one_line_and_a_rerun_after_freeing_space_completes(dataset, output,
                                                                          small_disk):
    target = os.path.join(small_disk, "records")
    args = common_args(dataset, target, "--workers=2")
    block = os.statvfs(small_disk).f_frsize
    blocks = {name: -(-os.path.getsize(os.path.join(output["dir"], name)) // block)
              for name in os.listdir(output["dir"])}
    shards = {name for name in blocks if name.endswith(".tfrecord")}

    # Full while writing the shards: those complete stay, the one being written goes.
    leave_free(small_disk, sum(blocks[name] for name in shards) // 2)
    names = assert_stopped_by_full_disk(run_preprocess(*args), target)
    assert 0 < len(shards & set(names)) < len(shards)
    # Full while writing the metadata: every shard fits, then the lock file's line, vocab.txt
    # and all of split.csv but one block.
    missing = sum(blocks[name] for name in shards - set(names))
    filler = leave_free(small_disk, missing + 1 + blocks["vocab.txt"] + blocks["split.csv"] - 1)
    names = assert_stopped_by_full_disk(run_preprocess(*args), target)
    assert shards <= set(names) and "split.csv" not in names
    # Space freed: the same command gives the uninterrupted output, byte for byte.
    os.remove(filler)
    result = run_preprocess(*args)
    assert result.returncode == 0, result.stderr
    same_files(output["dir"], target)


# A full disk, simulated: the shards' writes raise what Python raises on ENOSPC once 100 kB are
# written; so does split.csv's, after a few bytes.
FULL_DISK = {"shards": r"""
import errno
from data import shards
class _FullDisk:
    written = 0
    def __init__(self, stream):
        self.stream = stream
    def write(self, data):
        _FullDisk.written += len(data)
        if _FullDisk.written > 100_000:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.stream.write(data)
    def close(self):
        self.stream.close()
shards.open = lambda path, *args, **kwargs: _FullDisk(open(path, *args, **kwargs))
""", "metadata": r"""
import errno
from data import build_records
def _open(path, *args, **kwargs):
    stream = open(path, *args, **kwargs)
    if os.path.basename(path).startswith(".tmp-split.csv"):
        stream.write("path,li")
        stream.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return stream
build_records.open = _open
"""}


@pytest.mark.parametrize("where", sorted(FULL_DISK))
def test_simulated_full_disk(dataset, tmp_path, where):
    target = str(tmp_path / "records")
    result = run_patched(FULL_DISK[where], *common_args(dataset, target, "--workers=2"))
    names = assert_stopped_by_full_disk(result, target)
    written = {name for name in names if name.endswith(".tfrecord")}
    assert (written and "vocab.txt" not in names) if where == "shards" else (
        len(written) == 11 and "vocab.txt" in names and "split.csv" not in names)


def test_other_settings_refuse_then_overwrite_replaces_everything_with_val(dataset, output,
                                                                            tmp_path):
    target = str(tmp_path / "records")
    shutil.copytree(output["dir"], target)
    before = sorted(os.listdir(target))
    result = run_preprocess(*common_args(dataset, target, "--seed=7"))
    assert result.returncode == 2
    assert "different settings: seed 42 -> 7" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(target)) == before
    result = run_preprocess(*common_args(dataset, target, "--seed=7", "--shard_size=64",
                                         "--val_size=10", "--overwrite"))
    assert result.returncode == 0, result.stderr
    manifest = harrison.load_manifest(target)
    assert manifest["seed"] == 7 and manifest["val_size"] == 10
    shards = sorted(name for name in os.listdir(target) if name.endswith(".tfrecord"))
    assert shards == sorted(name for info in manifest["splits"].values() for name in info["shards"])
    assert shards == ["test-00000-of-00001.tfrecord", "train-00000-of-00002.tfrecord",
                      "train-00001-of-00002.tfrecord", "val-00000-of-00001.tfrecord"]
    other = pd.read_csv(os.path.join(target, "split.csv"))
    assert other.split.value_counts().to_dict() == {"train": manifest["images"] - 30,
                                                    "test": TEST_SIZE, "val": 10}
    assert manifest["splits"]["val"]["images"] == 10
    reference = pd.read_csv(os.path.join(output["dir"], "split.csv"))
    assert set(other.line[other.split == "test"]) != set(reference.line[reference.split == "test"])


def _lists(root, data, tags, vocab="love 0\n"):
    os.makedirs(root, exist_ok=True)
    for name, text in (("data_list.txt", data), ("tag_list.txt", tags), ("vocab_index.txt", vocab)):
        if text is not None:
            with open(os.path.join(root, name), "w") as handle:
                handle.write(text)
    return root


@pytest.mark.parametrize("files, message", [
    ((None, "love \n"), "image list not found"),
    (("a.jpg\n", None), "tag list not found"),
    (("a.jpg\nb.jpg\n", "love \n"), "data_list.txt has 2 lines but tag_list.txt has 1"),
    (("a.jpg\n", "love \n", "love 1\n"), "malformed vocabulary file"),
    (("a.jpg\n", "love \n", "love\n"), "malformed vocabulary file"),
    (("a.jpg\n", "love \n"), "only 0 usable images of 1"),
])
def test_unprocessable_input_is_a_one_line_error(tmp_path, files, message):
    root = _lists(str(tmp_path / "H"), *files)
    result = run_preprocess(f"--dataset_dir={root}", f"--records_dir={tmp_path / 'out'}",
                            "--test_size=1")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "out" / "manifest.json")


def test_missing_dataset_dir_flag(tmp_path):
    result = run_preprocess(f"--records_dir={tmp_path}")
    assert result.returncode == 2 and "--dataset_dir is required" in result.stderr


def test_the_default_val_split_is_carved_from_train_and_leaves_the_test_split_as_it_was(
        dataset, output, tmp_path):
    output_dir = str(tmp_path / "records")
    arguments = [a for a in common_args(dataset, output_dir) if a != "--val_size=0"]
    result = run_preprocess(*arguments)
    assert result.returncode == 0, result.stderr[-2000:]
    without_val = harrison.load_manifest(output["dir"])
    manifest = harrison.load_manifest(output_dir)
    left = without_val["splits"]["train"]["images"]  # what is left after the test split
    # Too few images for the default 2,500: a tenth of them, said in one line.
    assert manifest["splits"]["val"]["images"] == manifest["val_size"] == left // 10 > 0
    assert f"val split: {left // 10} images, a tenth of the" in result.stdout
    assert manifest["splits"]["train"]["images"] == left - left // 10
    with open(os.path.join(output_dir, "split.csv")) as a, \
            open(os.path.join(output["dir"], "split.csv")) as b:
        test_paths = [sorted(line for line in stream if line.rstrip().endswith(",test"))
                      for stream in (a, b)]
    assert test_paths[0] == test_paths[1] and test_paths[0]
