"""Warm start from a slim checkpoint: a checkpoint file, a folder holding one, or `imagenet`; or
from a trained model of ours, of any vocabulary (`open_source`): a train_dir or an export.

`imagenet` downloads the TF-Slim ImageNet InceptionV3 archive (or the one at --imagenet_url) once
into a cache folder, with a progress bar. Each URL has its own cache entry (`cache_entry`), and
nothing becomes an entry before it is checked: the download is complete (its Content-Length), it
is a tar(.gz) archive that extracts safely (no absolute paths, no `..`, no links, no devices:
nothing lands outside the cache folder; at most MAX_ARCHIVE_BYTES, refused before anything is
written: data/safe_archive.py), and it holds one checkpoint that TensorFlow reads, with
every `.index` beside its `.data-*`. So an HTML page served with status 200, a download cut short
or a half checkpoint is a one-line error that leaves the cache as it was. The official archive's
size and SHA-256 are not pinned here: no published value of them could be verified. Both
checkpoint formats are accepted: the V1 single file of the official 2016 archive
(`inception_v3.ckpt`) and V2 prefixes (`model.ckpt-123` + `.index` + `.data-*`).

Every model variable outside the excluded scopes must be in the checkpoint with the same shape;
anything else is a WarmStartError naming the variables, never a half-restored model.
"""
import collections
import contextlib
import glob
import hashlib
import http.client
import os
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request

import tensorflow.compat.v1 as tf
import tf_slim as slim
from absl import logging
from tqdm import tqdm

import cli
from data import atomic, safe_archive
from nets import exported, model, restoring, tagger, train_dir

IMAGENET = "imagenet"
IMAGENET_URL = "http://download.tensorflow.org/models/inception_v3_2016_08_28.tar.gz"
_STAGING = re.compile(r"^\.tmp-(.+-[0-9a-f]{12})-\d+-")  # atomic.py's name for an entry's staging
_OLD_PART = re.compile(r"\.part-(\d+)$")  # older versions downloaded to <archive>.part-<pid>
# The most a checkpoint archive may extract to (the official InceptionV3 one: about 0.1 GB).
MAX_ARCHIVE_BYTES = 2 * 2**30
MAX_ARCHIVE_MEMBERS = 10_000


class WarmStartError(cli.UserError):
    """A checkpoint that cannot be found, fetched or restored."""


def find_checkpoint(path):
    """The checkpoint to read for `path`: a V1 checkpoint file, a V2 prefix (or one of its
    files), or a folder holding exactly one checkpoint (or a `checkpoint` index file)."""
    if os.path.isdir(path):
        # Checkpoints named as ours without their train_config.json: the newest (a whole
        # train_dir goes through `open_source`, to its best val checkpoint).
        latest = train_dir.latest_checkpoint(path)
        if latest:
            return latest
        pattern = os.path.join(glob.escape(path), "*")
        candidates = sorted({f[:-len(".index")] for f in glob.glob(pattern + ".index")}
                            | set(glob.glob(pattern + ".ckpt")))
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise WarmStartError(f"no checkpoint in folder {path}")
        raise WarmStartError(f"{len(candidates)} checkpoints in folder {path} "
                             f"({', '.join(os.path.basename(c) for c in candidates[:3])}...): "
                             "give one of them to --warm_start")
    if os.path.isfile(path + ".index"):
        return path
    if path.endswith(".index") and os.path.isfile(path):
        return path[:-len(".index")]
    if ".data-" in os.path.basename(path) and os.path.isfile(path):
        return path[:path.rindex(".data-")]
    if os.path.isfile(path):
        return path  # a V1 single-file checkpoint, such as the official inception_v3.ckpt
    raise WarmStartError(f"no checkpoint at {path} (give a checkpoint file or prefix, a folder "
                         f"holding one, a train_dir, an export of export.py, or {IMAGENET!r})")


def _archive_name(url):
    return os.path.basename(urllib.parse.urlsplit(url).path)


def cache_entry(url, cache_dir):
    """The cache folder of the archive at `url`: a readable stem and a hash of the whole URL, so
    what one URL served is never used for another."""
    stem = re.sub(r"\.(tar\.gz|tgz|tar)$", "", _archive_name(url))
    # Leading dots would hide the folder, and could make it look like an atomic.py temporary.
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).lstrip(".")[:60] or "checkpoint"
    return os.path.join(cache_dir, f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:12]}")


def _content_length(response):
    try:
        length = int(response.headers.get("Content-Length") or 0)
    except ValueError:
        return None
    return length if length > 0 else None


def _download(url, path):
    """Downloads `url` into the file `path` with a progress bar; WarmStartError when the server
    fails, or sends fewer bytes than it announced."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
            total = _content_length(response)
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {_archive_name(url)}", dynamic_ncols=True) as bar:
                received = 0
                while True:
                    chunk = response.read1(1 << 20)  # what has arrived: a stall shows
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise WarmStartError(f"cannot download {url}: {reason} (set --imagenet_url to a mirror, "
                             "or give a downloaded checkpoint to --warm_start)") from None
    if total is not None and received != total:
        raise WarmStartError(f"download of {url} stopped after {received} of {total} bytes")


def safe_extract(archive, folder, source=None, max_bytes=MAX_ARCHIVE_BYTES):
    """Extracts a tar(.gz) archive (a path or an open binary file) into `folder`, refusing any
    member that could escape it, and an archive whose files declare more than `max_bytes`
    (data/safe_archive.py), before anything is written. `source` names the archive in errors
    (default: its path)."""
    source = source or str(getattr(archive, "name", archive))
    try:
        with safe_archive.open_tar(archive) as tar:
            members = safe_archive.scan(tar, MAX_ARCHIVE_MEMBERS, max_bytes)
            if hasattr(tarfile, "data_filter"):  # Python 3.12 / 3.11.4+: a second line of defence
                tar.extractall(folder, members=members, filter="data")
            else:
                tar.extractall(folder, members=members)
    except safe_archive.NotATar as error:
        raise WarmStartError(f"{source} {error}") from None
    except safe_archive.ArchiveRefused as error:
        raise WarmStartError(f"{source}: {error}") from None
    except safe_archive.CORRUPT as error:
        raise WarmStartError(f"{source} is truncated or corrupt ({cli.first_line(error)})") \
            from None
    except (tarfile.TarError, OSError) as error:
        raise WarmStartError(f"cannot extract {source}: {cli.first_line(error)}") from None


def _whole_checkpoint(folder, source):
    """The checkpoint in `folder` (an extracted archive or a cache entry) once it is known to be
    whole: every `.index` has its `.data-*` and reads, and the checkpoint holds a variable.
    WarmStartError naming `source` otherwise."""
    for index in glob.glob(os.path.join(glob.escape(folder), "*.index")):
        prefix = index[:-len(".index")]
        name = os.path.basename(prefix)
        if not glob.glob(glob.escape(prefix) + ".data-*"):
            raise WarmStartError(f"{source} holds an incomplete checkpoint: {name}.index "
                                 f"without its {name}.data-* file")
        reason = train_dir.damage(prefix)
        if reason:
            raise WarmStartError(f"{source} holds an unusable checkpoint {name}: {reason}")
    try:
        checkpoint = find_checkpoint(folder)
    except cli.UserError:
        found = ", ".join(sorted(os.listdir(folder))[:4]) or "nothing"
        raise WarmStartError(f"{source} holds no single checkpoint (found: {found})") from None
    try:
        reader = tf.train.load_checkpoint(train_dir.tf_path(checkpoint))
    except (tf.errors.OpError, ValueError) as error:
        raise WarmStartError(f"{source} holds an unreadable checkpoint "
                             f"{os.path.basename(checkpoint)}: {cli.first_line(error)}") from None
    if not reader.get_variable_to_shape_map():
        raise WarmStartError(f"{source} holds a checkpoint without variables")
    return checkpoint


def _remove_leftovers(cache_dir):
    """Removes what killed runs left in the cache, whatever their URL (a live run's stay): the
    atomic.py staging folders of downloads, and older versions' `<archive>.part-<pid>` files."""
    entries = {match.group(1) for match in map(_STAGING.match, os.listdir(cache_dir)) if match}
    for entry in entries:
        atomic.remove_leftovers(os.path.join(cache_dir, entry))
    for name in os.listdir(cache_dir):
        old = _OLD_PART.search(name)
        path = os.path.join(cache_dir, name)
        if old and os.path.isfile(path) and not atomic.pid_alive(int(old.group(1))):
            with contextlib.suppress(OSError):
                os.remove(path)


def download_imagenet(url=IMAGENET_URL, cache_dir="work/pretrained"):
    """The checkpoint of the archive at `url`, downloaded, checked and extracted into its own
    cache entry (`cache_entry`) on first use. The download and extraction happen in an
    atomic.py staging folder, which becomes the entry only once the checkpoint in it is whole;
    the archive itself is not kept (~100 MB)."""
    entry = cache_entry(url, cache_dir)
    if os.path.isdir(entry):
        try:
            return _whole_checkpoint(entry, entry)
        except WarmStartError as error:  # damaged since, or made by a version that checked less
            logging.warning("discarding the cached checkpoint of %s (%s); downloading it again",
                            url, error)
    os.makedirs(cache_dir, exist_ok=True)
    _remove_leftovers(cache_dir)
    with atomic.atomic_dir(entry) as staging:
        download = os.path.join(staging, "download")
        _download(url, download)
        with open(download, "rb") as archive:
            os.remove(download)  # read through the open file: no member can clash with it
            safe_extract(archive, staging, source=url)
        _whole_checkpoint(staging, url)
    logging.info("ImageNet checkpoint of %s extracted into %s", url, entry)
    return find_checkpoint(entry)


def checkpoint_for(warm_start, url=IMAGENET_URL, cache_dir="work/pretrained"):
    """The checkpoint to warm-start from for a --warm_start value."""
    if warm_start == IMAGENET:
        return download_imagenet(url, cache_dir)
    return find_checkpoint(warm_start)


# What a run warm-starts from: checkpoint (a prefix to restore), name (for the log: a model of
# ours as the user gave it, else the checkpoint), and for a model of ours (a train_dir, a
# checkpoint in one, an export) its config and vocab (else None).
Source = collections.namedtuple("Source", "checkpoint name config vocab")


def is_trained_model(path):
    """Whether `path` is a model of this project: a train_dir (or a checkpoint in one), an
    export folder or archive; they carry their config and vocabulary."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    return tagger.is_export(path) or os.path.isfile(os.path.join(folder, train_dir.CONFIG_FILE))


@contextlib.contextmanager
def open_source(warm_start, settings, url=IMAGENET_URL, cache_dir="work/pretrained"):
    """The Source of a --warm_start value, checked to fit the run's `settings`. A model of ours
    is read as evaluate.py and predict.py read it (nets/tagger.model_source): a train_dir's best
    val checkpoint, an export's variables, read as data, in a temporary folder removed when the
    block ends. Its vocabulary may differ from the run's: only the backbone is restored."""
    if warm_start == IMAGENET or not is_trained_model(warm_start):
        checkpoint = checkpoint_for(warm_start, url, cache_dir)
        yield Source(checkpoint, checkpoint, None, None)  # named by the file it restores
        return
    with contextlib.ExitStack() as stack:
        try:  # only reading the model: errors of the block the caller runs are its own
            trained = stack.enter_context(tagger.model_source(warm_start))
            _check_same_backbone(warm_start, trained.config, settings)
            checkpoint = tagger.checkpoint_of(trained)
        except (train_dir.TrainDirError, exported.ExportError) as error:
            raise WarmStartError(str(error)) from None
        yield Source(checkpoint, warm_start, trained.config, trained.vocab)


def _check_same_backbone(path, config, settings):
    for field in ("backbone", "depth_multiplier"):
        if config.get(field) != settings[field]:
            raise WarmStartError(
                f"{path} holds a {config.get('backbone')} x{config.get('depth_multiplier')} "
                f"model, this run trains {settings['backbone']} x{settings['depth_multiplier']}: "
                f"give --{field}={config.get(field)} to warm-start from it")


def describe_source(source, vocab):
    """The log line of what a warm start from a model of ours brings and what is new: its
    backbone is restored, the head for the records' `vocab` is fitted anew."""
    if source.vocab is None:
        return None
    shared = len(set(source.vocab) & set(vocab))
    return (f"warm start from {source.name}: its {source.config['backbone']} "
            f"x{source.config['depth_multiplier']} backbone, trained on a vocabulary of "
            f"{len(source.vocab)} tags; new: the head for the records' {len(vocab)} tags, "
            f"{shared} of them also in that vocabulary")


def default_exclude_scopes(backbone):
    """What a warm start leaves out by default: the layers that output one logit per tag (an
    ImageNet checkpoint's have 1001 classes, another run's another vocabulary)."""
    return ",".join(model.get_backbone(backbone).heads)


def build_restorer(checkpoint, exclude_scopes, variables=None, optional_scopes=""):
    """(restore_fn(session), report) restoring every model variable (default: slim's model
    variables, i.e. weights and batch-norm statistics, not the optimizer state nor the global
    step) outside `exclude_scopes` from `checkpoint`. Variables under `optional_scopes` (the
    auxiliary head's: a checkpoint may lack them, or have them at another image size) are
    restored where the checkpoint has them with their shape, else left initialized. Call it
    while building the graph; run restore_fn after the variables are initialized.
    report = {"restored", "excluded", "initialized" (optional ones not restored), "checkpoint",
    "names" (of the restored variables)}."""
    variables = slim.get_model_variables() if variables is None else variables
    excluded = [v for v in variables if model.in_scopes(v.op.name, exclude_scopes)]
    kept = [v for v in variables if v not in excluded]
    try:
        restore, missing, mismatched = restoring.restore_map(checkpoint, kept)
    except train_dir.TrainDirError as error:
        raise WarmStartError(str(error)) from None
    initialized = [name for name in missing if model.in_scopes(name, optional_scopes)]
    initialized += [line for line in mismatched
                    if model.in_scopes(line.split(" ")[0], optional_scopes)]
    missing = [name for name in missing if name not in initialized]
    mismatched = [line for line in mismatched if line not in initialized]
    if missing:
        raise WarmStartError(
            f"{len(missing)} model variables are not in {checkpoint} (e.g. {missing[0]}); is it a "
            "checkpoint of the same backbone? (--checkpoint_exclude_scopes skips scopes)")
    if mismatched:
        raise WarmStartError(
            f"{len(mismatched)} variables have another shape in {checkpoint}: {mismatched[0]} "
            "(another --depth_multiplier or head size? exclude it with "
            "--checkpoint_exclude_scopes)")
    if not restore:
        raise WarmStartError(f"nothing to restore from {checkpoint}: every variable is excluded")
    saver = tf.train.Saver(var_list=list(restore.values()), sharded=False)

    def restore_fn(session):
        saver.restore(session, train_dir.tf_path(checkpoint))

    report = {"restored": len(restore), "excluded": len(excluded), "checkpoint": checkpoint,
              "initialized": len(initialized), "names": set(restore)}
    return restore_fn, report
