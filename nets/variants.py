"""Test-time variants: how a trained checkpoint is scored, chosen on the val split, never on test.

A variant is three choices:
- `weights`: "raw" (the checkpoint's weights) or "averaged" (their moving average, kept in the
  checkpoint beside them by train.py's --moving_average_decay, under slim's names
  `<variable>/ExponentialMovingAverage`: nets/restoring.py);
- `image_size`: the training size, or LARGER_SIZE_FACTOR times it: a model trained on random
  crops sees objects larger than a central crop of the same size shows them (FixRes, Touvron et
  al. 2019), so it often scores better on a larger input. The larger input is the same central
  crop, enlarged (`scoring_config`'s crop_size): the records hold no more pixels, and a photo
  given to predict.py must reach the model as its record does;
- `mirror`: whether each photo's scores are averaged with its mirror image's.

At the end of training, train.py scores the best checkpoint on val in every variant it has
(evaluation/validation.py) and records them all and the winner in best.json (nets/train_dir.py).
evaluate.py, predict.py, export.py and the web page use the winner for that checkpoint (the
default variant for any other), and say which; `--weights`, `--test_image_size` and `--mirror`
override it (`define_flags`, `from_flags`).
"""
import collections

from absl import flags

import cli

# nets.model and nets.train_dir (TensorFlow) are imported inside the functions that use them:
# app.py defines these flags, and refuses a bad command line, before TensorFlow starts.

WEIGHTS = ("raw", "averaged")
# FixRes's estimate for our crops: the training crop's area is uniform in [0.25, 1] of the
# photo's (data/preprocessing.MIN_CROP_AREA), so its side spans on average
# (2/3)(1 - 0.25**1.5) / 0.75 = 0.78 of the photo's, the eval central crop 0.875: objects look
# 0.875 / 0.78 = 1.13x larger in training. 8/7 = 1.14 (342 px for 299). An estimate, not
# measured on HARRISON: val decides, per model.
LARGER_SIZE_FACTOR = 8 / 7

Variant = collections.namedtuple("Variant", "weights image_size mirror")


def default(config):
    """The variant of a model as trained: raw weights, the training size, one view."""
    return Variant("raw", int(config["image_size"]), False)


def larger_size(image_size):
    from nets import model  # pylint: disable=import-outside-toplevel
    return min(model.IMAGE_SIZE_RANGE[1], int(round(image_size * LARGER_SIZE_FACTOR)))


def candidates(config, averaged):
    """Every variant of `config`'s model, the default first; with `averaged` weights too when
    the checkpoint holds them."""
    size = int(config["image_size"])
    return [Variant(weights, image_size, mirror)
            for weights in (WEIGHTS if averaged else WEIGHTS[:1])
            for image_size in sorted({size, larger_size(size)})
            for mirror in (False, True)]


def describe(variant):
    """In words: "averaged weights, 342 px, with its mirror image"."""
    return (f"{variant.weights} weights, {variant.image_size} px, "
            + ("averaged with its mirror image" if variant.mirror else "one view"))


def to_record(variant):
    return {"weights": variant.weights, "image_size": variant.image_size,
            "mirror": variant.mirror}


def from_record(record, config):
    """The Variant of a best.json record; ValueError naming what is wrong (a variant builds a
    graph: each field must be one train.py could have written)."""
    if not isinstance(record, dict):
        raise ValueError("a variant is not a JSON object")
    from nets import model  # pylint: disable=import-outside-toplevel
    weights, size, mirror = (record.get(key) for key in ("weights", "image_size", "mirror"))
    low, high = model.IMAGE_SIZE_RANGE
    if weights not in WEIGHTS:
        raise ValueError(f"variant weights {weights!r} is not one of {', '.join(WEIGHTS)}")
    if not model.is_whole_number(size) or not (
            max(low, model.get_backbone(config["backbone"]).min_image_size) <= size <= high):
        raise ValueError(f"variant image_size {size!r} is not a size the model builds at")
    if not isinstance(mirror, bool):
        raise ValueError(f"variant mirror {mirror!r} is not true or false")
    return Variant(weights, size, mirror)


def chosen(directory, checkpoint, config):
    """(the variant best.json chose for `checkpoint`, or the default one; the line that says
    which and why)."""
    from nets import train_dir  # pylint: disable=import-outside-toplevel
    recorded = train_dir.best(directory)
    if not recorded or train_dir.checkpoint_step(checkpoint) != recorded["step"]:
        return default(config), "the default variant"
    if "variant" not in recorded:  # trained before variants, or without --choose_variant
        return default(config), "the default variant (none was chosen on val)"
    try:
        variant = from_record(recorded["variant"], config)
    except ValueError as error:
        raise train_dir.TrainDirError(f"{directory}/{train_dir.BEST_FILE} is damaged: {error}; "
                                      "restore it, or delete it") from None
    return variant, "the variant chosen on the val split"


def scoring_config(config, variant):
    """The config a scoring graph is built from for `variant`: its image size and mirroring,
    and the crop of the training size (data/preprocessing.eval_image's crop_size; an export's
    config, a scoring config itself, keeps the one it has)."""
    return dict(config, image_size=variant.image_size, mirror=variant.mirror,
                crop_size=crop_size(config))


def crop_size(config):
    """The size of the model whose crop of a photo `config`'s graph takes: its training size."""
    return int(config.get("crop_size", config["image_size"]))


def define_flags():
    """--weights, --test_image_size and --mirror, in the calling script (evaluate.py,
    predict.py, export.py, app.py): each overrides the variant best.json chose."""
    flags.DEFINE_enum("weights", "auto", ["auto", *WEIGHTS],
                      "Which weights score: raw, or their moving average (train.py "
                      "--moving_average_decay); auto: the variant chosen on val (best.json).")
    flags.DEFINE_integer("test_image_size", None, "Input size in pixels the model scores at "
                         "(default: the variant chosen on val, else the training size).",
                         lower_bound=1)
    flags.DEFINE_enum("mirror", "auto", ["auto", "on", "off"],
                      "Average each photo's scores with its mirror image's; auto: as the "
                      "variant chosen on val.")


def from_flags(chosen, values=None):
    """`chosen` with what --weights, --test_image_size and --mirror override."""
    from nets import model  # pylint: disable=import-outside-toplevel
    values = values or flags.FLAGS
    low, high = model.IMAGE_SIZE_RANGE
    if values.test_image_size is not None and not low <= values.test_image_size <= high:
        raise cli.UserError(f"--test_image_size={values.test_image_size}: the model scores at "
                            f"{low} to {high} px")
    return Variant(chosen.weights if values.weights == "auto" else values.weights,
                   values.test_image_size or chosen.image_size,
                   chosen.mirror if values.mirror == "auto" else values.mirror == "on")


def overridden(values=None):
    """Whether any of the variant flags is given."""
    values = values or flags.FLAGS
    return (values.weights != "auto" or values.test_image_size is not None
            or values.mirror != "auto")
