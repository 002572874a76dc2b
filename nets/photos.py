"""Photos to hashtags with a tagger (nets/tagger.py): the code path predict.py and the web page
(app.py, web/page.py) share, so both give the same tags and scores for the same photo.

- `batches`: photo files read and prepared for the model (data/image_files.py: regular files up
  to 64 MB, large photos reduced as preprocess.py stores them), grouped so that a batch's
  pixels in the graph stay within BATCH_PIXELS: memory stays bounded however many photos come;
- `tag_batch`: one batch run through the tagger, each file's tags and scores or its one-line
  error, in order;
- `keep`: the tags a user asked for (the top k, those whose score reaches a threshold);
- `describe`: the model a tagger runs, for people: its name, its val scores, the variant it uses.
"""
import os

from data import image_files
from nets import train_dir, variants

# Pixels per batch in the graph: TensorFlow decodes a batch's images into float32 copies, and
# resizes each to the stored size, before it crops them. Photos reach it at most at the stored
# size (larger ones are reduced by data/image_files.py) and at most 20:1, so 32 photos of 1 MP
# run in one batch, 8 of 4 MP.
BATCH_PIXELS = 32 * 2**20


def batches(entries, image_size, batch_size, max_pixels=BATCH_PIXELS):
    """Lists of (path, encoded image bytes or error reason), in input order, each with at most
    `batch_size` images and `max_pixels` pixels in the graph (decoded, or resized to the stored
    size: image_files.work_pixels; a larger image runs alone). Each file is read when its batch
    is made; an error line waits only for the images before it.
    `entries`: [(path, error or None)], as image_files.expand gives them."""
    batch, images, pixels = [], 0, 0
    for path, error in entries:
        encoded = None
        if error is None:
            try:
                encoded, (width, height) = image_files.load(path, image_size)
            except image_files.PhotoError as photo_error:
                error = str(photo_error)
        if encoded is None:
            batch.append((path, error))
        else:
            work = image_files.work_pixels(width, height, image_size)
            if images and (images == batch_size or pixels + work > max_pixels):
                yield batch
                batch, images, pixels = [], 0, 0
            batch.append((path, encoded))
            images, pixels = images + 1, pixels + work
        if not images:
            yield batch
            batch = []
    if batch:
        yield batch


def tag_batch(tagger, batch):
    """[(path, (tags, scores) or error reason)] for a batch of `batches`, in its order: its
    images tagged in one run (tagger.tag_each: an image that does not decode costs only its own
    result)."""
    results = iter(tagger.tag_each([item for _, item in batch if isinstance(item, bytes)]))
    return [(path, next(results) if isinstance(item, bytes) else item) for path, item in batch]


def keep(tags, scores, top_k=0, threshold=None):
    """(tags, scores) of the best `top_k` (0: all) whose score is at least `threshold` (None:
    any); `tags` and `scores` best first, as a tagger returns them."""
    count = len(tags) if not top_k else min(top_k, len(tags))
    kept = [i for i in range(count) if threshold is None or scores[i] >= threshold]
    return [tags[i] for i in kept], [float(scores[i]) for i in kept]


def describe(model_path, tagger):
    """What a person needs to know about the model `tagger` runs (opened from `model_path`).

    dict: name (the path of the train_dir or export, and its checkpoint), network (backbone,
    depth, image size, tags), val ({metric: value} from best.json when it describes this
    checkpoint, else None), val_step, val_text (the val scores in words), variant (the
    test-time variant the tagger scores with, in words: nets/variants.py), and text: all of it
    on one line.
    """
    config = tagger.config
    checkpoint = getattr(tagger, "checkpoint", None)  # None for an export of export.py
    name = os.path.normpath(tagger.train_dir if checkpoint else model_path)
    recorded = train_dir.best(tagger.train_dir) if checkpoint else None
    chosen = recorded
    if recorded and train_dir.checkpoint_step(checkpoint) != recorded["step"]:
        chosen = None  # best.json speaks of another checkpoint than the one in use
    if checkpoint:
        name += f" ({os.path.basename(checkpoint)})"
    network = (f"{config['backbone']}, depth {config['depth_multiplier']:g}, "
               f"{config['image_size']} px, {len(tagger.vocab)} tags")
    val = {chosen["metric"]: chosen["value"]} if chosen else None
    variant = variants.describe(tagger.variant)
    if val:
        val_text = ", ".join(f"{metric} {100 * value:.2f}" for metric, value in val.items())
        val_text += f" (step {chosen['step']})"
    elif recorded:
        val_text = f"none for this checkpoint (the best on val is step {recorded['step']})"
    elif checkpoint:
        val_text = "none recorded (trained without a val split)"
    else:
        val_text = "not kept in an exported model"
    return {"name": name, "network": network, "val": val,
            "val_step": chosen["step"] if chosen else None, "val_text": val_text,
            "variant": variant, "text": f"{name}: {network}; val: {val_text}; variant: {variant}"}
