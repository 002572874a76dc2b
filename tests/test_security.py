"""Files from strangers (docs/security.md), each replayed from the case that found it, the hostile
file made here: a model archive is data, never code; an archive cannot write outside its folder
nor more than a cap declared before anything is written; a photo's memory is bounded by the
pixels made from it, not by what it claims."""
import glob
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, check_run, run_script
from data import harrison_archive, image_files
from nets import warm_start
from test_predict import PEAK, PEAK_MEMORY, solid_png

ZEROS_MIB = gzip.compress(bytes(2**20))  # one gzip member of 1 MiB of zeros (about 1 kB)


def tar_member(name, data=b"", size=None, kind=tarfile.REGTYPE, linkname=""):
    """One member of a tar stream: its header (GNU format: any size), its data padded."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.linkname, info.mtime = (
        len(data) if size is None else size, kind, linkname, 1463406695)
    padding = bytes(-len(data) % tarfile.BLOCKSIZE)
    return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data + padding


def write_zeros_bomb(path, members, big_name, mebibytes):
    """A .tar.gz of `members` (tar_member bytes) and then `big_name`, that many MiB of zeros,
    declared and present: a few kB per GiB, since gzip members of zeros are concatenated."""
    with open(path, "wb") as stream:
        stream.write(gzip.compress(b"".join(members) + tar_member(big_name, size=mebibytes
                                                                  * 2**20)))
        for _ in range(mebibytes):
            stream.write(ZEROS_MIB)
        stream.write(gzip.compress(bytes(2 * tarfile.BLOCKSIZE)))
    return str(path)


def one_line_error(result, script):
    """The one-line error of a script run (exit 2, no traceback)."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{script}: error: "), result.stderr[-3000:]
    return line


def peak_mb(result):
    return int(result.stderr.split("peak_mb")[-1])


def run_measured(script, *args, env=None):
    """The script run in a child that prints its peak resident memory (test_predict)."""
    return subprocess.run([sys.executable, "-c", PEAK_MEMORY, os.path.join(REPO, script), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, folder)] = stream.read()
    return found


# ------------------------------------------------------------------------- model archives

@pytest.fixture(scope="module")
def model_archive(trained_dir, tmp_path_factory):
    """export.py --archive of the tiny model: (archive, its members extracted into a folder)."""
    root = tmp_path_factory.mktemp("model_archive")
    archive = str(root / "hashtags.tar.gz")
    check_run(run_script("export.py", f"--model={trained_dir}", f"--archive={archive}",
                         "--top_k=5"))
    with tarfile.open(archive) as tar:
        tar.extractall(root / "unpacked", filter="data")
    return archive, str(root / "unpacked")


def add_write_file_op(saved_model_pb, target):
    """saved_model.pb whose graph writes `target` whenever its `tags` output is computed: what
    someone could send (tf.io.write_file as a control input of the output)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    with open(saved_model_pb, "rb") as stream:
        saved_model = saved_model_pb2.SavedModel.FromString(stream.read())
    graph = saved_model.meta_graphs[0].graph_def
    for name, value in (("sender_path", target.encode()), ("sender_data", b"sender was here")):
        node = graph.node.add(name=name, op="Const")
        node.attr["dtype"].type = tf.string.as_datatype_enum
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    graph.node.add(name="sender_write", op="WriteFile", input=["sender_path", "sender_data"])
    next(node for node in graph.node if node.name == "tags").input.append("^sender_write")
    with open(saved_model_pb, "wb") as stream:
        stream.write(saved_model.SerializeToString())


def pack(folder, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=os.path.basename(archive).split(".")[0])
    return str(archive)


RUN_SAVED_MODEL = r"""
import sys, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
print(serve(images=tf.constant([open(sys.argv[2], "rb").read()]))["tags"].numpy()[0][0])
"""


def test_a_model_archive_runs_this_projects_graph_never_its_own(model_archive, tmp_path,
                                                                sample_photos):
    """Replays issue 17's case 1: an archive whose SavedModel graph holds tf.io.write_file. TF
    loading it runs the op (the control: the file is written); predict.py and export.py give
    the honest archive's tags and write nothing."""
    archive, unpacked = model_archive
    hostile_folder = tmp_path / "hostile"
    shutil.copytree(os.path.join(unpacked, "hashtags"), hostile_folder)
    target = str(tmp_path / "written_by_the_sender.txt")
    add_write_file_op(str(hostile_folder / "saved_model.pb"), target)
    hostile = pack(hostile_folder, tmp_path / "hostile.tar.gz")
    photo = sample_photos["in_folder"][0]

    control = subprocess.run([sys.executable, "-c", RUN_SAVED_MODEL, str(hostile_folder), photo],
                             capture_output=True, text=True, timeout=300)
    assert control.returncode == 0, control.stderr[-3000:]
    assert open(target).read() == "sender was here"  # the archive is hostile to a naive loader
    os.remove(target)

    honest = check_run(run_script("predict.py", f"--model={archive}", "--format=json", photo))
    for model in (hostile, str(hostile_folder)):
        result = check_run(run_script("predict.py", f"--model={model}", "--format=json", photo))
        assert json.loads(result.stdout)["tags"] == json.loads(honest.stdout)["tags"]
        np.testing.assert_allclose(json.loads(result.stdout)["scores"],
                                   json.loads(honest.stdout)["scores"], atol=1e-6)
        assert not os.path.exists(target)
    # Re-exported: its weights in this project's graph, a SavedModel safe to serve.
    safe = str(tmp_path / "safe" / "1")
    check_run(run_script("export.py", f"--model={hostile}", f"--export_dir={safe}"))
    served = subprocess.run([sys.executable, "-c", RUN_SAVED_MODEL, safe, photo],
                            capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-3000:]
    assert served.stdout.strip() == repr(json.loads(honest.stdout)["tags"][0].encode())
    assert not os.path.exists(target)


def test_a_model_archive_bomb_is_refused_before_a_byte_is_written(model_archive, tmp_path,
                                                                  sample_photos):
    """Replays case 3's "a 2 MB archive wrote 2,025 MB into the temp folder": the declared
    sizes are checked first, against the bytes the model's variables take."""
    archive, unpacked = model_archive
    members = [tar_member(f"hashtags/{name}", open(os.path.join(unpacked, "hashtags", name),
                                                     "rb").read())
               for name in ("saved_model.pb", "assets/train_config.json", "assets/vocab.txt",
                            "variables/variables.index")]
    bomb = write_zeros_bomb(tmp_path / "bomb.tar.gz", members,
                            "hashtags/variables/variables.data-00000-of-00001", 2048)
    assert os.path.getsize(bomb) < 3 * 2**20
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = dict(os.environ, TMPDIR=str(temporary))
    result = run_script("predict.py", f"--model={bomb}", sample_photos["in_folder"][0], env=env)
    assert "its variables declare 2,147,483,648 bytes, more than the" in one_line_error(
        result, "predict.py")
    assert os.listdir(temporary) == []
    # Beyond the cap of any archive: refused at its header, never decompressed.
    huge = write_zeros_bomb(tmp_path / "huge.tar.gz", members, "hashtags/extra", 5 * 1024)
    result = run_script("predict.py", f"--model={huge}", sample_photos["in_folder"][0], env=env)
    assert "its files declare more than 4,096 MB" in one_line_error(result, "predict.py")
    assert os.listdir(temporary) == []


def test_sigterm_while_an_archive_is_extracted_removes_what_it_extracted(model_archive,
                                                                         tmp_path, sample_photos):
    """Replays case 12: the extracted files stay only while the weights are read; SIGTERM then
    removes them (the model archive's temporary folder), as Ctrl-C does."""
    archive, _ = model_archive
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "predict.py"), f"--model={archive}",
         sample_photos["in_folder"][0]], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=dict(os.environ, TMPDIR=str(temporary)))
    deadline = time.monotonic() + 300
    while not glob.glob(str(temporary / "exported-model-*" / "*")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.005)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130 and out == "", err[-3000:]
    assert err.strip().splitlines()[-1] == "predict.py: interrupted" and "Traceback" not in err
    assert os.listdir(temporary) == []


def test_a_received_config_that_builds_no_model_is_one_line(model_archive, tmp_path,
                                                            sample_photos):
    """Replays case 7 in a received archive: image_size "abc", null, 0; an unknown backbone."""
    _, unpacked = model_archive
    folder = tmp_path / "hashtags"
    shutil.copytree(os.path.join(unpacked, "hashtags"), folder)
    config_path = folder / "assets" / "train_config.json"
    config = json.loads(config_path.read_text())
    for field, value, message in [  # the other values: test_bad_input.py, in-process
            ("image_size", "abc", "image_size 'abc' is not a whole number of pixels in [75, 1024]"),
            ("backbone", "resnet_v9", "backbone 'resnet_v9' is not one of inception_v2, "
                                      "inception_v3")]:
        config_path.write_text(json.dumps(dict(config, **{field: value})))
        hostile = pack(folder, tmp_path / "hashtags.tar.gz")
        result = run_script("predict.py", f"--model={hostile}", sample_photos["in_folder"][0])
        assert message in one_line_error(result, "predict.py")


# ----------------------------------------------------------------------- dataset archives

def cve_2025_4517_tar(path, outside):
    """A tar built as the CVE-2025-4517 exploit is: symbolic links through directories whose
    names are so long that os.path.realpath gives up (so tarfile's "data" filter cannot follow
    them), then a link through them out of the destination and a file written through it."""
    component = "d" * 247
    steps = "abcdefghijklmnop"
    members, path_so_far = [], ""
    for step in steps:
        members.append(tar_member(os.path.join(path_so_far, component), kind=tarfile.DIRTYPE))
        members.append(tar_member(os.path.join(path_so_far, step), kind=tarfile.SYMTYPE,
                                  linkname=component))
        path_so_far = os.path.join(path_so_far, component)
    long_link = os.path.join(*steps, "l" * 254)
    members.append(tar_member(long_link, kind=tarfile.SYMTYPE, linkname="../" * len(steps)))
    members.append(tar_member("escape", kind=tarfile.SYMTYPE, linkname=(
        f"{long_link}{'/..' * len(steps)}/{outside.lstrip('/')}")))
    members.append(tar_member("escape/flag", b"written outside"))
    with open(path, "wb") as stream:
        stream.write(b"".join(members) + bytes(2 * tarfile.BLOCKSIZE))
    return str(path)


def test_a_link_exploit_is_refused_before_anything_is_written(tmp_path):
    """Replays case 3: the CVE-2025-4517 tar wrote outside/flag through HARRISON's extraction
    (tarfile's data filter alone on Python 3.11.7); any link is now refused, and so is a hard
    link, for HARRISON, a warm-start checkpoint and a model archive alike."""
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = cve_2025_4517_tar(tmp_path / "HARRISON_full.tar", str(outside))
    destination = tmp_path / "dataset"
    with pytest.raises(harrison_archive.ArchiveError) as error:
        harrison_archive.extract(evil, str(destination), progress=False)
    assert str(error.value).startswith(f"{evil}: refusing a member: archive holds a link ")
    assert os.listdir(outside) == [] and os.listdir(destination) == []
    with pytest.raises(warm_start.WarmStartError, match="holds a link"):
        warm_start.safe_extract(evil, str(destination))
    assert os.listdir(outside) == [] and os.listdir(destination) == []
    hard = tmp_path / "hard.tar"
    hard.write_bytes(tar_member("instagram_dataset/a.jpg", b"\xff\xd8")
                     + tar_member("instagram_dataset/b.jpg", kind=tarfile.LNKTYPE,
                                  linkname="instagram_dataset/a.jpg") + bytes(1024))
    with pytest.raises(harrison_archive.ArchiveError, match="holds a link"):
        harrison_archive.extract(str(hard), str(destination), progress=False)
    assert os.listdir(destination) == []


def test_declared_sizes_and_headers_are_capped_before_anything_is_written(tmp_path):
    """A HARRISON archive (or checkpoint archive) declaring more bytes than the cap is refused
    at that header, never decompressed: a 7 GB one in a few MB; a pax header that would make
    tarfile hold 512 MB in memory is refused at its size."""
    bomb = write_zeros_bomb(tmp_path / "HARRISON_full.tar.gz",
                            [tar_member("instagram_dataset/sea/image_1.jpg", b"\xff\xd8")],
                            "instagram_dataset/sea/image_2.jpg", 6 * 1024)
    destination = tmp_path / "dataset"
    started = time.monotonic()
    with pytest.raises(harrison_archive.ArchiveError) as error:
        harrison_archive.extract(bomb, str(destination), progress=False)
    assert "its files declare more than 5,787 MB" in str(error.value)
    assert time.monotonic() - started < 10  # the 6 GiB were never decompressed
    assert os.listdir(destination) == []
    small = write_zeros_bomb(tmp_path / "checkpoint.tar.gz", [], "inception_v3.ckpt", 1025)
    with pytest.raises(warm_start.WarmStartError, match="declare more than 1,024 MB"):
        warm_start.safe_extract(small, str(destination), max_bytes=2**30)
    assert os.listdir(destination) == []
    pax = tmp_path / "pax.tar.gz"
    with open(pax, "wb") as stream:
        stream.write(gzip.compress(tar_member("PaxHeader/x", size=512 * 2**20,
                                              kind=tarfile.XHDTYPE)))
        for _ in range(512):
            stream.write(ZEROS_MIB)
        stream.write(gzip.compress(bytes(1024)))
    measured = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]);"
         "from data import harrison_archive as h\ntry: h.extract(sys.argv[2], sys.argv[3], "
         f"progress=False)\nexcept h.ArchiveError as e: print(e)\nprint({PEAK})",
         REPO, str(pax), str(destination)], capture_output=True, text=True, timeout=300)
    message, peak = measured.stdout.strip().splitlines()
    assert message == (f"{pax}: refusing a member: a header of 536,870,912 bytes (a pax header "
                       "or a long name, at most 1,048,576); refusing it")
    assert int(peak) < 100, peak  # MB: the header was never read
    assert os.listdir(destination) == []


def test_the_fixed_zip_replaces_only_its_two_images_reading_in_chunks(tmp_path):
    """Replays case 3: a data_list.txt member overwrote the dataset's list, and a 1.5 GiB member
    of a 1.5 MB zip was read into memory. Only the two known images, of a photo's size."""
    root = tmp_path / "HARRISON"
    (root / "instagram_dataset" / "sun").mkdir(parents=True)
    (root / "data_list.txt").write_text("instagram_dataset/sun/image_99.jpg\n")
    before = snapshot(root)
    cases = {
        "data_list.txt": (b"instagram_dataset/sun/../../../etc/passwd\n",
                          "HARRISON_fixed.zip replaces only "
                          "instagram_dataset/family/image_2411.jpg and "
                          "instagram_dataset/sun/image_99.jpg"),
        "instagram_dataset/sea/image_1.jpg": (b"\xff\xd8", "replaces only"),
        "instagram_dataset/sun/image_99.jpg": (bytes(64 * 2**20), "67,108,864 bytes, more than "
                                                                 "the 16,777,216 a replacement"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / "HARRISON_fixed.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("instagram_dataset/family/image_2411.jpg", b"\xff\xd8fine")
            archive.writestr(name, data)
        with pytest.raises(harrison_archive.ArchiveError) as error:
            harrison_archive.apply_fixed(str(path), str(root))
        assert message in str(error.value) and str(error.value).startswith(f"{path}: refusing")
        assert snapshot(root) == before  # not even the good image: checked before writing


# ----------------------------------------------------------------------------------- photos

def test_a_thin_image_is_refused_before_it_is_resized(tmp_path, trained_dir, sample_photos):
    """Replays case 2: a 118-byte 1x20000 PNG took 4.06 GB in predict.py with a 75 px model (its
    shorter side upsampled to 86 px in float32), a folder with a 1x60000 one 13.8 GB. Beyond
    20:1 an image is refused, by PIL here and by the graph of the SavedModel."""
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_line.png").write_bytes(solid_png(20000, 1, (200, 10, 10)))
    (folder / "b_longer_line.png").write_bytes(solid_png(1, 60000, (10, 200, 10)))
    (folder / "c_panorama.png").write_bytes(solid_png(1600, 80, (10, 10, 200)))  # 20:1 passes
    shutil.copy(sample_photos["in_folder"][0], folder / "d_photo.jpg")
    # The guard first, in this process (PIL only): without it the run below would take GBs.
    with pytest.raises(image_files.PhotoError, match=r"20000x1 pixels: an aspect ratio beyond"):
        image_files.model_bytes((folder / "a_line.png").read_bytes(), 75)
    result = run_measured("predict.py", f"--model={trained_dir}", "--format=json", str(folder))
    assert result.returncode == 1, result.stderr[-3000:]
    tagged = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    assert tagged == [str(folder / "c_panorama.png"), str(folder / "d_photo.jpg")]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors == [
        f"{folder / 'a_line.png'}: error: 20000x1 pixels: an aspect ratio beyond 20:1, not a "
        "photo the model can take",
        f"{folder / 'b_longer_line.png'}: error: 1x60000 pixels: an aspect ratio beyond 20:1, "
        "not a photo the model can take"]
    baseline = run_measured("predict.py", f"--model={trained_dir}", str(folder / "d_photo.jpg"))
    print(f"predict.py peak RSS: {peak_mb(result)} MB with the lines, {peak_mb(baseline)} MB "
          "with one photo")
    assert peak_mb(result) < peak_mb(baseline) + 150


SERVE_BOMBS = r"""
import sys, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
for path in sys.argv[2:]:
    try:
        serve(images=tf.constant([open(path, "rb").read()]))
        print(path, "tagged")
    except tf.errors.InvalidArgumentError as error:
        print(path, [line for line in error.message.splitlines() if "assertion" in line][0])
print(PEAK)
""".replace("PEAK", PEAK)


def test_the_saved_model_refuses_bombs_before_decoding_them(model_archive, tmp_path):
    """The exported graph (what TF Serving exposes): a 20000x20000 PNG header (1.6 GB decoded),
    a 1x20000 line and a WebP are refused from their headers; a 64-megapixel PNG is taken."""
    _, unpacked = model_archive
    paths = {name: tmp_path / name for name in ("square.png", "line.png", "tiny.webp",
                                                "largest.png")}
    paths["square.png"].write_bytes(solid_png(20000, 20000, (1, 2, 3)))
    paths["line.png"].write_bytes(solid_png(1, 20000, (1, 2, 3)))
    Image.new("RGB", (30, 30)).save(paths["tiny.webp"])
    paths["largest.png"].write_bytes(solid_png(8000, 8000, (1, 2, 3)))
    result = subprocess.run([sys.executable, "-c", SERVE_BOMBS,
                             os.path.join(unpacked, "hashtags"), *map(str, paths.values())],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    *lines, peak = result.stdout.strip().splitlines()
    assert lines == [
        f"{paths['square.png']} assertion failed: [20000x20000 pixels: more than the "
        "64,000,000 an image may have]",
        f"{paths['line.png']} assertion failed: [1x20000 pixels: an aspect ratio beyond 20:1, "
        "not a photo the model can take]",
        f"{paths['tiny.webp']} assertion failed: [not a JPEG, PNG, GIF or BMP image (the formats "
        "this model decodes)]",
        f"{paths['largest.png']} tagged"]
    print(f"SavedModel peak RSS with a 64-megapixel PNG: {peak} MB")
    assert int(peak) < 4000
