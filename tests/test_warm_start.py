"""nets/warm_start.py: restoring a slim-format InceptionV3 checkpoint with 1001 ImageNet classes
(saved here, V1 single file as in the official 2016 archive and V2 prefix), the `imagenet`
download through a loopback HTTP server (train.py end to end), safe extraction, clear errors."""
import functools
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest

from nets import tagging, warm_start
from train_records import VOCAB, write_records

tf = tagging.tf
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTH = 0.1
HEAD = ("InceptionV3/Logits/", "InceptionV3/AuxLogits/")


@pytest.fixture(scope="module")
def imagenet_checkpoints(tmp_path_factory):
    """A slim InceptionV3 (depth 0.1, 1001 classes, both heads) with random values in every
    variable (batch-norm statistics included), saved as V1 `inception_v3.ckpt` and as a V2
    prefix; returns (folder, {variable name: value})."""
    folder = tmp_path_factory.mktemp("imagenet")
    with tf.Graph().as_default():
        tagging.build_logits(tf.zeros([1, 299, 299, 3]), 1001, "inception_v3", DEPTH,
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


def build_tagging_graph(num_tags=len(VOCAB)):
    tagging.build_logits(tf.zeros([2, 107, 107, 3]), num_tags, "inception_v3", DEPTH,
                         is_training=True)


# A V1 file named directly, and a folder holding a V2 prefix (no `checkpoint` index file).
@pytest.mark.parametrize("which", ["v1/inception_v3.ckpt", "v2"])
def test_restores_every_backbone_variable_and_none_of_the_head(imagenet_checkpoints, which):
    folder, values = imagenet_checkpoints
    with tf.Graph().as_default():
        build_tagging_graph()
        checkpoint = warm_start.resolve(str(folder / which))
        restore, report = warm_start.build_restorer(checkpoint)
        model_variables = tagging.slim.get_model_variables()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            restore(session)
            restored = dict(zip([v.op.name for v in model_variables],
                                session.run(model_variables)))
    head = [n for n in restored if n.startswith(HEAD)]
    backbone = [n for n in restored if not n.startswith(HEAD)]
    assert report["restored"] == len(backbone) and report["excluded"] == len(head) > 0
    assert any("moving_mean" in n for n in backbone)
    for name in backbone:
        np.testing.assert_array_equal(restored[name], values[name], err_msg=name)
    for name in head:  # re-sized to the vocabulary and left at their initial values
        assert name not in values or restored[name].shape != values[name].shape or not (
            np.array_equal(restored[name], values[name]))


def test_head_of_another_size_or_other_backbone_is_a_clear_error(imagenet_checkpoints):
    folder, _ = imagenet_checkpoints
    with tf.Graph().as_default():
        build_tagging_graph()
        with pytest.raises(warm_start.WarmStartError, match="another shape.*Logits"):
            warm_start.build_restorer(str(folder / "v2" / "model.ckpt"),
                                      exclude_scopes="InceptionV3/AuxLogits")
    with tf.Graph().as_default():
        tagging.build_logits(tf.zeros([1, 64, 64, 3]), 5, "inception_v2", 0.25)
        with pytest.raises(warm_start.WarmStartError, match="not in .*InceptionV2/"):
            warm_start.build_restorer(str(folder / "v2" / "model.ckpt"))
    with pytest.raises(warm_start.WarmStartError, match="no checkpoint at"):
        warm_start.resolve(str(folder / "nothing-here"))


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


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        CountingHandler.requests.append(self.path)


@pytest.fixture(scope="module")
def imagenet_server(imagenet_checkpoints, tmp_path_factory):
    """A loopback HTTP server holding an archive laid out like the official one: a single V1
    `inception_v3.ckpt` at the top level."""
    folder, _ = imagenet_checkpoints
    root = tmp_path_factory.mktemp("www")
    os.makedirs(root / "models")
    with tarfile.open(root / "models" / "inception_v3_2016_08_28.tar.gz", "w:gz") as tar:
        tar.add(folder / "v1" / "inception_v3.ckpt", arcname="inception_v3.ckpt")
    handler = functools.partial(CountingHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/models/inception_v3_2016_08_28.tar.gz"
    server.shutdown()
    thread.join()


def test_train_py_warm_starts_from_imagenet_through_a_loopback_download(imagenet_server,
                                                                        tmp_path):
    write_records(str(tmp_path / "records"), {"train": 8, "test": 2})
    cache = tmp_path / "pretrained"
    CountingHandler.requests.clear()
    command = [sys.executable, "train.py", "--preset=cpu", f"--records_dir={tmp_path / 'records'}",
               f"--train_dir={tmp_path / 'train'}", "--checkpoint_path=imagenet",
               f"--imagenet_url={imagenet_server}", f"--pretrained_dir={cache}",
               f"--depth_multiplier={DEPTH}", "--image_size=107", "--batch_size=4",
               "--max_steps=1"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warm start from" in result.stdout and "restored" in result.stdout, result.stdout
    assert CountingHandler.requests == ["/models/inception_v3_2016_08_28.tar.gz"]
    # Only the finished extraction stays in the cache: no archive, no partial files.
    assert os.listdir(cache) == ["inception_v3_2016_08_28"]
    assert os.listdir(cache / "inception_v3_2016_08_28") == ["inception_v3.ckpt"]
    # Cached: a second resolution does not download again.
    checkpoint = warm_start.resolve("imagenet", imagenet_server, str(cache))
    assert checkpoint == str(cache / "inception_v3_2016_08_28" / "inception_v3.ckpt")
    assert len(CountingHandler.requests) == 1


def test_unreachable_download_is_a_clear_error(tmp_path):
    with pytest.raises(warm_start.WarmStartError, match="cannot download .*--imagenet_url"):
        warm_start.download_imagenet("http://127.0.0.1:9/none.tar.gz", str(tmp_path))
    assert os.listdir(tmp_path) == []
