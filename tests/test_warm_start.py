"""nets/warm_start.py: restoring a slim-format InceptionV3 checkpoint with 1001 ImageNet classes
(saved here, V1 single file as in the official 2016 archive and V2 prefix), the `imagenet`
download through a loopback HTTP server (train.py end to end), safe extraction, clear errors,
and a cache that keeps only whole checkpoints, one entry per URL, and no temporaries of killed
runs."""
import gzip
import http.server
import io
import logging
import os
import signal
import tarfile
import threading
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
import tf_slim as slim

from conftest import run_script, start_python
from nets import model, warm_start
from train_records import VOCAB, write_records

DEPTH = 0.1
HEAD_LAST_LAYERS = ("InceptionV3/Logits/Conv2d_1c_1x1/", "InceptionV3/AuxLogits/Conv2d_2b_1x1/")


@pytest.fixture(scope="module")
def imagenet_checkpoints(tmp_path_factory):
    """A slim InceptionV3 (depth 0.1, 1001 classes, both heads) with random values in every
    variable (batch-norm statistics included), saved as V1 `inception_v3.ckpt` and as a V2
    prefix; returns (folder, {variable name: value})."""
    folder = tmp_path_factory.mktemp("imagenet")
    with tf.Graph().as_default():
        model.build_logits(tf.zeros([1, 299, 299, 3]), 1001, "inception_v3", DEPTH,
                           is_training=False, aux_logits=True)
        variables = tf.global_variables()
        randomize = tf.group([v.assign(tf.random.normal(v.shape, seed=i))
                              for i, v in enumerate(variables)])
        with tf.Session() as session:
            session.run(randomize)
            values = dict(zip([v.op.name for v in variables], session.run(variables)))
            os.makedirs(folder / "v1")
            tf.train.Saver(write_version=tf.train.SaverDef.V1).save(
                session, str(folder / "v1" / "inception_v3.ckpt"), write_meta_graph=False,
                write_state=False)
            tf.train.Saver().save(session, str(folder / "v2" / "model.ckpt"),
                                  write_meta_graph=False, write_state=False)
    return folder, values


def build_tagging_graph(num_tags=len(VOCAB), image_size=107):
    model.build_logits(tf.zeros([2, image_size, image_size, 3]), num_tags, "inception_v3",
                       DEPTH, is_training=True)


def restore_into_tagging_graph(checkpoint, image_size, **options):
    """(restored {model variable name: value}, report) of a warm start into the training
    graph of a 5-tag model at `image_size` with the default exclusions."""
    with tf.Graph().as_default():
        build_tagging_graph(image_size=image_size)
        restore, report = warm_start.build_restorer(
            checkpoint, warm_start.default_exclude_scopes("inception_v3"),
            optional_scopes=model.aux_scope("inception_v3"), **options)
        model_variables = slim.get_model_variables()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            restore(session)
            return dict(zip([v.op.name for v in model_variables],
                            session.run(model_variables))), report


# A V1 file named directly, and a folder holding a V2 prefix (no `checkpoint` index file).
@pytest.mark.parametrize("which", ["v1/inception_v3.ckpt", "v2"])
def test_restores_every_variable_but_the_last_layer_of_each_head(imagenet_checkpoints, which):
    # At the checkpoint's 299 px the auxiliary head's lower layers have its shapes: they
    # restore from ImageNet; only the layers that output one logit per class are new.
    folder, values = imagenet_checkpoints
    restored, report = restore_into_tagging_graph(warm_start.checkpoint_for(str(folder / which)),
                                                  299)
    last_layers = [n for n in restored if n.startswith(HEAD_LAST_LAYERS)]
    kept = [n for n in restored if not n.startswith(HEAD_LAST_LAYERS)]
    assert report["restored"] == len(kept) and report["excluded"] == len(last_layers) == 4
    assert report["initialized"] == 0
    assert any("moving_mean" in n for n in kept)
    assert any(n.startswith("InceptionV3/AuxLogits/Conv2d_2a_5x5/") for n in kept)
    for name in kept:
        np.testing.assert_array_equal(restored[name], values[name], err_msg=name)
    for name in last_layers:  # re-sized to the vocabulary and left at their initial values
        assert restored[name].shape != values[name].shape or not (
            np.array_equal(restored[name], values[name]))


def test_the_aux_head_restores_what_fits_at_a_small_image_size(imagenet_checkpoints):
    # At 107 px the auxiliary head's 5x5 convolution is 1x1 (slim's reduced kernel): not in an
    # ImageNet checkpoint, it starts initialized and is counted; everything else restores.
    folder, values = imagenet_checkpoints
    restored, report = restore_into_tagging_graph(str(folder / "v2" / "model.ckpt"), 107)
    new = [n for n in restored if n.startswith("InceptionV3/AuxLogits/Conv2d_2a_1x1/")]
    assert new and report["initialized"] == len(new)
    for name in restored:
        if not name.startswith(HEAD_LAST_LAYERS) and name not in new:
            np.testing.assert_array_equal(restored[name], values[name], err_msg=name)


def test_head_of_another_size_or_other_backbone_is_a_clear_error(imagenet_checkpoints):
    folder, _ = imagenet_checkpoints
    with tf.Graph().as_default():
        build_tagging_graph()
        with pytest.raises(warm_start.WarmStartError, match="another shape.*Logits"):
            warm_start.build_restorer(str(folder / "v2" / "model.ckpt"),
                                      exclude_scopes="InceptionV3/AuxLogits")
    with tf.Graph().as_default():
        model.build_logits(tf.zeros([1, 64, 64, 3]), 5, "inception_v2", 0.25)
        with pytest.raises(warm_start.WarmStartError, match="not in .*InceptionV2/"):
            warm_start.build_restorer(str(folder / "v2" / "model.ckpt"),
                                      warm_start.default_exclude_scopes("inception_v2"))
    with pytest.raises(warm_start.WarmStartError, match="no checkpoint at"):
        warm_start.checkpoint_for(str(folder / "nothing-here"))


def make_tar(path, entries):
    """entries: (name, bytes) for files, or (name, tarfile type, linkname)."""
    with tarfile.open(path, "w:gz") as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry[0])
            if len(entry) == 2:
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
            else:
                info.type, info.linkname = entry[1], entry[2]
                tar.addfile(info)


@pytest.mark.parametrize("entry", [("../escaped.ckpt", b"x"), ("/tmp/absolute.ckpt", b"x"),
                                   ("a/../../escaped.ckpt", b"x"),
                                   ("link.ckpt", tarfile.SYMTYPE, "/etc/passwd"),
                                   ("hard.ckpt", tarfile.LNKTYPE, "../outside")])
def test_unsafe_archives_are_refused_and_nothing_escapes(tmp_path, entry):
    archive = tmp_path / "evil.tar.gz"
    make_tar(archive, [("inception_v3.ckpt", b"fine"), entry])
    (tmp_path / "out").mkdir()
    with pytest.raises(warm_start.WarmStartError, match="unsafe path|link"):
        warm_start.safe_extract(str(archive), str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path)) == ["evil.tar.gz", "out"]
    assert os.listdir(tmp_path / "out") == []


class LoopbackHandler(http.server.BaseHTTPRequestHandler):
    """Serves ROUTES: path -> (body bytes, how): "file" (with Content-Length), "html" (a 200 HTML
    page), "cut" (half the body, no Content-Length, then the connection closes), "short" (half the
    body under the whole body's Content-Length), "stall" (half the body, then waits for
    RELEASE)."""
    ROUTES = {}
    RELEASE = threading.Event()
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        LoopbackHandler.requests.append(self.path)
        if self.path not in self.ROUTES:
            self.send_error(404)
            return
        body, how = self.ROUTES[self.path]
        half = body[:len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if how == "html" else "application/gzip")
        if how != "cut":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if how in ("file", "html") else half)
        self.wfile.flush()
        if how == "stall":
            LoopbackHandler.RELEASE.wait(120)


def tar_bytes(files):
    """A tar.gz archive holding `files` ({name: path on disk}), as bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, path in files.items():
            tar.add(path, arcname=name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Two small checkpoints with different values: {"a": V1 file, "b": V2 prefix}."""
    folder = tmp_path_factory.mktemp("tiny")
    with tf.Graph().as_default():
        variable = tf.Variable([1.0, 2.0, 3.0], name="InceptionV3/Conv2d_1a_3x3/weights")
        with tf.Session() as session:
            session.run(variable.initializer)
            tf.train.Saver(write_version=tf.train.SaverDef.V1).save(
                session, str(folder / "a.ckpt"), write_meta_graph=False, write_state=False)
            session.run(variable.assign([4.0, 5.0, 6.0]))
            tf.train.Saver().save(session, str(folder / "b" / "model.ckpt"),
                                  write_meta_graph=False, write_state=False)
    return {"a": str(folder / "a.ckpt"), "b": str(folder / "b" / "model.ckpt")}


@pytest.fixture(scope="module")
def server(imagenet_checkpoints, tiny_checkpoints):
    """A loopback HTTP server; its base URL. The official-looking path holds an archive laid out
    like the official one: a single V1 `inception_v3.ckpt` at the top level."""
    folder, _ = imagenet_checkpoints
    name = "inception_v3_2016_08_28.tar.gz"
    tiny_a = tar_bytes({"inception_v3.ckpt": tiny_checkpoints["a"]})
    prefix = tiny_checkpoints["b"]
    folder_b = os.path.dirname(prefix)
    tiny_b = tar_bytes({f: os.path.join(folder_b, f) for f in os.listdir(folder_b)})
    html = b"<!DOCTYPE html>\n<html><body>Moved to our new site</body></html>\n"
    LoopbackHandler.ROUTES = {
        f"/models/{name}": (tar_bytes({"inception_v3.ckpt": folder / "v1" / "inception_v3.ckpt"}),
                            "file"),
        f"/a/{name}": (tiny_a, "file"),
        f"/b/{name}": (tiny_b, "file"),
        f"/html/{name}": (html, "html"),
        f"/cut/{name}": (tiny_a, "cut"),
        f"/short/{name}": (tiny_a, "short"),
        f"/stall/{name}": (tiny_a + b"\0" * (1 << 20), "stall"),
        f"/index-only/{name}": (tar_bytes({"model.ckpt.index": prefix + ".index"}), "file"),
        f"/zip/{name}": (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\0" * 100, "file"),
        f"/gzip-text/{name}": (gzip.compress(b"just some text, no tar\n" * 40), "file"),
    }
    LoopbackHandler.RELEASE.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LoopbackHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    LoopbackHandler.RELEASE.set()
    httpd.shutdown()
    thread.join()


NAME = "inception_v3_2016_08_28.tar.gz"


def test_train_py_warm_starts_from_imagenet_through_a_loopback_download(server, tmp_path):
    url = f"{server}/models/{NAME}"
    write_records(str(tmp_path / "records"), {"train": 8, "test": 2})
    cache = tmp_path / "pretrained"
    LoopbackHandler.requests.clear()
    result = run_script("train.py", "--preset=cpu", f"--records_dir={tmp_path / 'records'}",
                        f"--train_dir={tmp_path / 'train'}", "--warm_start=imagenet",
                        f"--imagenet_url={url}", f"--pretrained_dir={cache}",
                        f"--depth_multiplier={DEPTH}", "--image_size=107", "--batch_size=4",
                        "--probe_epochs=0",  # its random batch-norm statistics: no real backbone's
                        "--max_steps=1", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warm start from" in result.stdout and "restored" in result.stdout, result.stdout
    assert LoopbackHandler.requests == [f"/models/{NAME}"]
    # Only the finished extraction stays in the cache: no archive, no partial files.
    entry = warm_start.cache_entry(url, str(cache))
    assert os.path.basename(entry).startswith("inception_v3_2016_08_28-")
    assert os.listdir(cache) == [os.path.basename(entry)]
    assert os.listdir(entry) == ["inception_v3.ckpt"]
    # Cached: a second resolution does not download again.
    checkpoint = warm_start.checkpoint_for("imagenet", url, str(cache))
    assert checkpoint == os.path.join(entry, "inception_v3.ckpt")
    assert len(LoopbackHandler.requests) == 1


def checkpoint_values(checkpoint):
    reader = tf.train.load_checkpoint(checkpoint)
    return reader.get_tensor("InceptionV3/Conv2d_1a_3x3/weights").tolist()


def test_html_page_served_as_the_archive_is_refused_then_a_good_url_works(server, tmp_path):
    cache = str(tmp_path / "pretrained")
    bad, good = f"{server}/html/{NAME}", f"{server}/a/{NAME}"
    for _ in range(2):  # refused every time: nothing of it was cached
        with pytest.raises(warm_start.WarmStartError) as error:
            warm_start.download_imagenet(bad, cache)
        assert str(error.value) == f"{bad} is not a tar archive (starts with '<!DOCTYPE html>')"
        assert os.listdir(cache) == []
    assert checkpoint_values(warm_start.download_imagenet(good, cache)) == [1.0, 2.0, 3.0]
    assert os.listdir(cache) == [os.path.basename(warm_start.cache_entry(good, cache))]


def test_html_page_is_a_one_line_error_of_train_py(server, tmp_path):
    write_records(str(tmp_path / "records"), {"train": 4, "test": 2})
    result = run_script("train.py", "--preset=cpu", f"--records_dir={tmp_path / 'records'}",
                        f"--train_dir={tmp_path / 'train'}", "--warm_start=imagenet",
                        f"--imagenet_url={server}/html/{NAME}",
                        f"--pretrained_dir={tmp_path / 'pretrained'}", "--max_steps=1")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors == [f"train.py: error: {server}/html/{NAME} is not a tar archive "
                      "(starts with '<!DOCTYPE html>')"], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path / "pretrained") == []


@pytest.mark.parametrize("route, message", [
    ("cut", "is truncated or corrupt"),  # no Content-Length: only the gzip stream tells
    ("short", "stopped after .* of .* bytes"),
    ("index-only", "incomplete checkpoint: model.ckpt.index without its model.ckpt.data-"),
    ("zip", r"not a tar archive \(starts with 'PK"),
    ("gzip-text", r"not a tar archive \(gzip data without a tar archive inside\)"),
])
def test_bad_downloads_are_one_line_errors_and_never_cached(server, tmp_path, route, message):
    cache = str(tmp_path / "pretrained")
    with pytest.raises(warm_start.WarmStartError, match=message) as error:
        warm_start.download_imagenet(f"{server}/{route}/{NAME}", cache)
    assert "\n" not in str(error.value)
    assert os.listdir(cache) == []


def test_non_tar_file_is_a_one_line_error(tmp_path):
    archive = tmp_path / "inception_v3_2016_08_28.tar.gz"
    archive.write_bytes(b"\x00\x01 not an archive at all")
    (tmp_path / "out").mkdir()
    with pytest.raises(warm_start.WarmStartError) as error:
        warm_start.safe_extract(str(archive), str(tmp_path / "out"))
    assert str(error.value) == (f"{archive} is not a tar archive "
                                "(starts with '\\x00\\x01 not an archive at')")


def test_cache_is_keyed_by_url_and_a_damaged_entry_is_downloaded_again(server, tmp_path,
                                                                       caplog):
    cache = str(tmp_path / "pretrained")
    url_a, url_b = f"{server}/a/{NAME}", f"{server}/b/{NAME}"  # same file name, other archives
    assert checkpoint_values(warm_start.download_imagenet(url_a, cache)) == [1.0, 2.0, 3.0]
    assert checkpoint_values(warm_start.download_imagenet(url_b, cache)) == [4.0, 5.0, 6.0]
    entry_a, entry_b = (warm_start.cache_entry(u, cache) for u in (url_a, url_b))
    assert sorted(os.listdir(cache)) == sorted(os.path.basename(e) for e in (entry_a, entry_b))
    # What an older version could leave: a "checkpoint" that is an HTML page, and one whose data
    # is gone. Each is discarded with a warning and downloaded again; the other entry is kept.
    with open(os.path.join(entry_a, "inception_v3.ckpt"), "wb") as stream:
        stream.write(b"<!DOCTYPE html><html></html>")
    data_b = [f for f in os.listdir(entry_b) if ".data-" in f][0]
    os.remove(os.path.join(entry_b, data_b))
    LoopbackHandler.requests.clear()
    with caplog.at_level(logging.WARNING):
        assert checkpoint_values(warm_start.download_imagenet(url_a, cache)) == [1.0, 2.0, 3.0]
        assert checkpoint_values(warm_start.download_imagenet(url_b, cache)) == [4.0, 5.0, 6.0]
    assert LoopbackHandler.requests == [f"/a/{NAME}", f"/b/{NAME}"]
    warnings = [r.getMessage() for r in caplog.records if "discarding" in r.getMessage()]
    assert len(warnings) == 2 and "unreadable checkpoint" in warnings[0], warnings
    assert "without its model.ckpt.data-" in warnings[1], warnings
    assert sorted(os.listdir(cache)) == sorted(os.path.basename(e) for e in (entry_a, entry_b))
    # Whole entries are used as they are.
    warm_start.download_imagenet(url_a, cache)
    assert len(LoopbackHandler.requests) == 2


def test_temporaries_of_a_killed_download_are_removed_by_the_next_run(server, tmp_path):
    cache = tmp_path / "pretrained"
    stalled = f"{server}/stall/{NAME}"
    child = start_python("import sys; from nets import warm_start; "
                         "warm_start.download_imagenet(sys.argv[1], sys.argv[2])", stalled,
                         str(cache))
    try:
        deadline = time.monotonic() + 120  # polls for the half-written download, then kill -9
        while not any(os.path.getsize(os.path.join(root, f))
                      for root, _, files in os.walk(cache) for f in files):
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    leftovers = os.listdir(cache)
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-inception_v3_2016_08_28-")
    # An older version's download temporary of the dead process, and a live process's ones.
    (cache / f"{NAME}.part-{child.pid}").write_bytes(b"x")
    live = [f"{NAME}.part-{os.getpid()}", f".tmp-inception_v3_2016_08_28-0123456789ab-"
            f"{os.getpid()}-abc"]
    (cache / live[0]).write_bytes(b"x")
    (cache / live[1]).mkdir()
    good = f"{server}/a/{NAME}"  # another URL: leftovers of every URL are removed
    warm_start.download_imagenet(good, str(cache))
    assert sorted(os.listdir(cache)) == sorted(
        live + [os.path.basename(warm_start.cache_entry(good, str(cache)))])


def test_unreachable_download_is_a_clear_error(tmp_path):
    with pytest.raises(warm_start.WarmStartError, match="cannot download .*--imagenet_url"):
        warm_start.download_imagenet("http://127.0.0.1:9/none.tar.gz", str(tmp_path))
    assert os.listdir(tmp_path) == []
