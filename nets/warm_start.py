"""Warm start from a slim checkpoint: a checkpoint file, a folder holding one, or `imagenet`.

`imagenet` downloads the TF-Slim ImageNet InceptionV3 archive once into a cache folder (with a
progress bar, under a temporary name, then renamed), extracts it safely (no absolute paths, no
`..`, no links, no devices: nothing lands outside the cache folder) and uses the checkpoint
inside. Both checkpoint formats are accepted: the V1 single file of the official 2016 archive
(`inception_v3.ckpt`) and V2 prefixes (`model.ckpt-123` + `.index` + `.data-*`).

Every model variable outside the excluded scopes must be in the checkpoint with the same shape;
anything else is a WarmStartError naming the variables, never a half-restored model.
"""
import glob
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request

from absl import logging
from tqdm import tqdm

from nets import compat

slim = compat.import_slim()
import tensorflow.compat.v1 as tf  # noqa: E402

IMAGENET = "imagenet"
IMAGENET_URL = "http://download.tensorflow.org/models/inception_v3_2016_08_28.tar.gz"
# The official checkpoint's heads have 1001 ImageNet classes; ours have one logit per tag.
DEFAULT_EXCLUDE_SCOPES = "InceptionV3/Logits,InceptionV3/AuxLogits"


class WarmStartError(ValueError):
    """A checkpoint that cannot be found, fetched or restored (a one-line message)."""


def _split_scopes(scopes):
    return [s.strip() for s in (scopes or "").split(",") if s.strip()]


def find_checkpoint(path):
    """The checkpoint to read for `path`: a V1 checkpoint file, a V2 prefix (or one of its
    files), or a folder holding exactly one checkpoint (or a `checkpoint` index file)."""
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
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
                             "give one of them to --checkpoint_path")
    if os.path.isfile(path + ".index"):
        return path
    if path.endswith(".index") and os.path.isfile(path):
        return path[:-len(".index")]
    if ".data-" in os.path.basename(path) and os.path.isfile(path):
        return path[:path.rindex(".data-")]
    if os.path.isfile(path):
        return path  # a V1 single-file checkpoint, such as the official inception_v3.ckpt
    raise WarmStartError(f"no checkpoint at {path} (give a checkpoint file or prefix, a folder "
                         f"holding one, or {IMAGENET!r})")


def _download(url, path):
    """Downloads `url` to `path` with a progress bar; `path` appears only when complete."""
    partial = f"{path}.part-{os.getpid()}"
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {os.path.basename(path)}", dynamic_ncols=True) as bar:
                received = 0
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise WarmStartError(f"download of {url} stopped after {received} of {total} bytes")
        os.replace(partial, path)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise WarmStartError(f"cannot download {url}: {reason} (set --imagenet_url to a mirror, "
                             "or give a downloaded checkpoint to --checkpoint_path)") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _check_member(member):
    """Raise WarmStartError for a tar member that could write outside the extraction folder."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts:
        raise WarmStartError(f"unsafe path in archive: {name!r}")
    if member.issym() or member.islnk():
        raise WarmStartError(f"archive holds a link ({name!r} -> {member.linkname!r}); refusing it")
    if not (member.isfile() or member.isdir()):
        raise WarmStartError(f"archive holds a special file {name!r}; refusing it")


def safe_extract(archive, folder):
    """Extracts a tar(.gz) archive into `folder`, refusing any member that could escape it."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            if hasattr(tarfile, "data_filter"):  # Python 3.12 / 3.11.4+: a second line of defence
                tar.extractall(folder, members=members, filter="data")
            else:
                tar.extractall(folder, members=members)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise WarmStartError(f"cannot extract {archive}: {error}") from None


def download_imagenet(url=IMAGENET_URL, cache_dir="work/pretrained"):
    """The checkpoint of the ImageNet archive at `url`, downloaded and extracted into cache_dir
    on first use. A finished extraction is a folder named after the archive; partial downloads
    and extractions live under temporary names, so a killed run leaves nothing half-made."""
    name = os.path.basename(url.split("?")[0]) or "checkpoint.tar.gz"
    stem = name[:-len(".tar.gz")] if name.endswith(".tar.gz") else os.path.splitext(name)[0]
    target = os.path.join(cache_dir, stem)
    if os.path.isdir(target):
        return find_checkpoint(target)
    os.makedirs(cache_dir, exist_ok=True)
    archive = os.path.join(cache_dir, name)
    if not os.path.isfile(archive):
        _download(url, archive)
    staging = tempfile.mkdtemp(prefix=f".{stem}.extract-", dir=cache_dir)
    try:
        safe_extract(archive, staging)
        find_checkpoint(staging)  # an archive without a checkpoint is an error now, not later
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isdir(target):  # another process may have finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    os.remove(archive)  # the extracted folder is the cache; the archive is ~100 MB
    logging.info("ImageNet checkpoint extracted into %s", target)
    return find_checkpoint(target)


def resolve(checkpoint_path, url=IMAGENET_URL, cache_dir="work/pretrained"):
    """The checkpoint to warm-start from for a --checkpoint_path value."""
    if checkpoint_path == IMAGENET:
        return download_imagenet(url, cache_dir)
    return find_checkpoint(checkpoint_path)


def build_restorer(checkpoint, exclude_scopes=DEFAULT_EXCLUDE_SCOPES, variables=None):
    """(restore_fn(session), report) restoring every model variable (default: slim's model
    variables, i.e. weights and batch-norm statistics, not the optimizer state nor the global
    step) outside `exclude_scopes` from `checkpoint`. Call it while building the graph;
    run restore_fn after the variables are initialized. report = {"restored", "excluded",
    "checkpoint"}."""
    variables = slim.get_model_variables() if variables is None else variables
    excluded_scopes = _split_scopes(exclude_scopes)
    try:
        shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        raise WarmStartError(f"cannot read checkpoint {checkpoint}: "
                             f"{str(error).strip().splitlines()[0]}") from None
    restore, excluded, missing, mismatched = {}, [], [], []
    for variable in variables:
        name = variable.op.name
        if any(name == s or name.startswith(s.rstrip("/") + "/") for s in excluded_scopes):
            excluded.append(name)
        elif name not in shapes:
            missing.append(name)
        elif list(shapes[name]) != variable.shape.as_list():
            mismatched.append(f"{name} {variable.shape.as_list()} vs {list(shapes[name])}")
        else:
            restore[name] = variable
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
    saver = tf.train.Saver(var_list=restore, sharded=False)

    def restore_fn(session):
        saver.restore(session, checkpoint)

    report = {"restored": len(restore), "excluded": len(excluded), "checkpoint": checkpoint}
    return restore_fn, report
