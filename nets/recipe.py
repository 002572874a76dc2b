"""The recipe: train.py's settings in ONE table (name, default, range, help, per-preset values) from which
train.py's flags and their range checks come (`cli.define_flags`), `--preset` fills what the user
did not give (`resolve`), and docs/train.md's flag table is checked (tests/test_docs.py).

`TABLE` is train.py's every flag. The ones marked `stored` are the run's settings, written to
train_config.json; the others say where the run writes, fetches and runs, not how it trains (a
run resumes on another number of devices, from another URL).

Presets: "gpu" is the recipe itself (the defaults); "cpu" trains the built-in sample on 2 CPU
cores in a few minutes. A flag given on the command line overrides the preset.
"""
import collections

import cli
from data import preprocessing
from nets import distribution, model, optimization, warm_start

# kind: int, float, str, bool, "enum" (choices) or "list"; low/high: the range (None: open),
# ends: "[]" both included, "(]" low excluded, ...; presets: {preset: value}; check: (predicate
# on the value, message) for what a range cannot say.
Setting = collections.namedtuple(
    "Setting", "name default help kind choices low high ends presets stored check")


def _setting(name, default, help, kind=None, choices=None, low=None, high=None, ends="[]",
             presets=None, stored=True, check=None):
    kind = kind or ("enum" if choices else type(default) if default is not None else str)
    return Setting(name, default, help, kind, tuple(choices or ()), low, high, ends,
                   dict(presets or {}), stored, check)


PRESET_NAMES = ("gpu", "cpu")

TABLE = (
    # the run: what and where
    _setting("preset", "gpu", "Settings bundle: gpu = the full recipe; cpu = small images and "
             "network for the built-in sample on a CPU. Explicit flags override it.",
             choices=sorted(PRESET_NAMES)),
    _setting("records_dir", "work/records", "preprocess.py output: shards, vocab.txt, "
             "manifest.json."),
    _setting("train_dir", "work/train", "Checkpoints, summaries, vocab.txt and "
             "train_config.json. Re-running with the same train_dir resumes.", stored=False),
    # data
    _setting("image_size", None, "Model input size in pixels; default: the backbone's (299 for "
             "inception_v3).", kind=int, low=75, high=1024, presets={"cpu": 139}),
    _setting("shuffle_buffer", 2048, "Examples in the shuffle buffer.", low=1, high=100_000,
             presets={"cpu": 1024}),
    _setting("seed", 0, "Seed for initialization, shuffling and augmentation."),
    _setting("min_crop_area", preprocessing.MIN_CROP_AREA, "Smallest fraction of the photo a "
             "training crop keeps (slim's ImageNet recipe: 0.05).", low=0, high=1, ends="(]"),
    _setting("hue_jitter", preprocessing.HUE_JITTER, "Largest random hue shift of training "
             "images (0: none, since colours are hashtags; slim's: 0.05).", low=0, high=0.5),
    # model
    _setting("backbone", "inception_v3", "slim backbone.", choices=sorted(model.BACKBONES)),
    _setting("depth_multiplier", 1.0, "Channel multiplier of the backbone (1.0 = the ImageNet "
             "checkpoint's).", low=0, high=4, ends="(]", presets={"cpu": 0.25}),
    _setting("loss", "sigmoid", "sigmoid: cross-entropy per tag on the multi-hot targets; "
             "softmax: cross-entropy against the targets normalised to sum to 1 (Mahajan et al. "
             "2018).", choices=model.LOSSES),
    _setting("aux_loss_weight", model.AUX_LOSS_WEIGHT, "Weight of InceptionV3's auxiliary-head "
             "loss (0 = no auxiliary head).", low=0, high=10),
    _setting("weight_decay", 4e-5, "L2 weight decay of the slim arg_scope.", low=0, high=1),
    _setting("batch_norm_decay", 0.999, "Decay of the batch-norm moving averages.", low=0,
             high=1, ends="()", presets={"cpu": 0.9}),
    _setting("dropout_keep_prob", 0.8, "Dropout keep probability before the logits.", low=0,
             high=1, ends="(]"),
    # warm start
    _setting("warm_start", None, "Initial weights (only when --train_dir has no checkpoint of "
             "its own): 'imagenet' (download the TF-Slim ImageNet InceptionV3), a slim "
             "checkpoint file or prefix, a folder holding one, or a trained model of ours (a "
             "train_dir: its best val checkpoint; an export.py folder or .tar.gz archive), "
             "whose vocabulary may differ: its backbone is restored, the head fitted to the "
             "records' tags. Unset: train from scratch.", kind=str),
    _setting("checkpoint_exclude_scopes", None, "Comma-separated variable scopes NOT restored "
             "by the warm start (empty: restore everything). Default: the backbone's tag heads' "
             "last layers (InceptionV3/Logits/Conv2d_1c_1x1,InceptionV3/AuxLogits/Conv2d_2b_1x1): "
             "the auxiliary head's lower layers restore from ImageNet.", kind=str),
    _setting("trainable_scopes", None, "Comma-separated scopes to train (e.g. "
             "InceptionV3/Logits,InceptionV3/AuxLogits for the head only); default all.",
             kind=str),
    _setting("imagenet_url", warm_start.IMAGENET_URL, "Where --warm_start=imagenet downloads "
             "from (a mirror, or a local server in tests).", stored=False),
    _setting("pretrained_dir", "work/pretrained", "Cache folder of downloaded checkpoints.",
             stored=False),
    # linear probe (stage 1, with a warm start)
    _setting("probe_epochs", 30, "Epochs of the linear probe: the tag head trained on the "
             "frozen warm-start backbone's cached features before fine-tuning everything (0: no "
             "probe).", low=0, high=10_000),
    _setting("probe_learning_rate", 0.001, "Adam learning rate of the linear probe.", low=0,
             high=1, ends="(]"),
    # optimization
    _setting("optimizer", "rmsprop", "Optimizer (slim's default: rmsprop, decay 0.9, momentum "
             "0.9, epsilon 1.0).", choices=optimization.OPTIMIZERS),
    _setting("learning_rate", 0.002, "Peak learning rate.", low=0, ends="(]",
             presets={"cpu": 0.01}),
    _setting("warmup_steps", 500, "Linear learning-rate warm-up steps.", low=0,
             presets={"cpu": 20}),
    _setting("learning_rate_decay", "cosine", "cosine: after the warm-up, down to 1% of the "
             "peak at the last step; exponential: x0.94 every --num_epochs_per_decay (slim's); "
             "fixed.", choices=optimization.DECAYS),
    _setting("num_epochs_per_decay", 2.0, "Epochs between exponential decays.", low=0,
             ends="(]"),
    _setting("moving_average_decay", None, "Decay of the moving average of the weights kept "
             "in the checkpoints beside them (slim's --moving_average_decay; 0: none). Default: "
             "one whose window, 1 / (1 - decay) steps, is 5% of the run (within 0.9-0.9999). "
             "Scored as a test-time variant (--choose_variant).", kind=float, low=0, high=1,
             ends="[)"),
    _setting("choose_variant", True, "At the end of training, score the best checkpoint on the "
             "val split with raw and averaged weights, at the training size and a larger one, "
             "with and without each photo's mirror image, and record the winner in best.json: "
             "what evaluate.py, predict.py, export.py and the web page then use.", stored=False),
    _setting("momentum", 0.9, "Momentum of rmsprop/momentum.", low=0, high=1, ends="[)"),
    _setting("rmsprop_epsilon", 1.0, "RMSProp epsilon (slim's 1.0).", low=0, ends="(]"),
    _setting("clip_gradient_norm", 100.0, "Clip the gradients to this global norm: a safety "
             "net against a rare huge step, far above ordinary ones (TensorBoard: "
             "gradient_norm; 0: no clipping).", low=0),
    _setting("batch_size", 64, "Images per step.", low=1, high=4096, presets={"cpu": 32}),
    _setting("num_epochs", 8.0, "Training length in epochs over the train split (ignored when "
             "--max_steps is set).", low=0, high=10_000, ends="(]"),
    _setting("max_steps", None, "Training length in steps (overrides --num_epochs).", kind=int,
             low=1, presets={"cpu": 300}),
    _setting("new_stage", False, "Start a new learning-rate stage at the resumed step (a warm-up "
             "from the current rate, then its own decay) instead of refusing flags that would "
             "reshape the run's schedule. Extending a finished run does this by itself.",
             stored=False),
    # speed
    _setting("mixed_precision", "auto", "float16 compute with float32 variables and dynamic "
             "loss scaling; auto = on when a GPU is visible. 'on' without a GPU emulates "
             "float16 on the CPU (slow; for testing).", choices=("auto", "on", "off")),
    _setting("xla", False, "Compile the graph with XLA (auto-clustering)."),
    _setting("distribute", "auto", "Several devices with tf.distribute (docs/scaling.md): "
             "mirrored = one replica per GPU of this machine (--devices); multi_worker = every "
             "machine TF_CONFIG lists; none = one device; auto = mirrored when more than one GPU "
             "is visible. --batch_size is the global batch, split across the replicas.",
             choices=distribution.MODES, stored=False),
    _setting("devices", None, "--distribute=mirrored's devices, e.g. /gpu:0,/gpu:1 (default: "
             "every visible GPU); /cpu:0,/cpu:1 splits the CPU (testing without GPUs).",
             kind="list", stored=False, check=(distribution.valid_devices, "--devices takes "
                                               "devices like /gpu:0,/gpu:1 or /cpu:0,/cpu:1")),
    # checkpoints and logs
    _setting("save_every_steps", 1000, "Checkpoint every N steps.", low=1,
             presets={"cpu": 100}),
    _setting("save_every_minutes", 10.0, "... and at least every N minutes.", low=0, ends="(]"),
    _setting("keep_checkpoints", 5, "Checkpoints kept in --train_dir (counted across resumes).",
             low=1),
    _setting("summary_every_steps", 100, "TensorBoard summaries every N steps.", low=1,
             presets={"cpu": 20}),
)
BY_NAME = {setting.name: setting for setting in TABLE}
# The recipe's values (the defaults) and what each preset changes.
RECIPE = {s.name: s.default for s in TABLE if s.stored}
PRESETS = {preset: {s.name: s.presets[preset] for s in TABLE if preset in s.presets}
           for preset in PRESET_NAMES}


def help_text(setting):
    """The flag's help: the table's, then what each preset changes."""
    return setting.help + "".join(f" (--preset={preset}: {value})"
                                  for preset, value in setting.presets.items())


def resolve(values, given, preset):
    """The run's settings: `values` (setting name -> value) where the ones not in `given` (the
    names the user typed) take the preset's value. An explicit --num_epochs beats the preset's
    step count; the image size defaults to the backbone's."""
    settings = dict(values)
    for name, value in PRESETS[preset].items():
        if name not in given:
            settings[name] = value
    if "num_epochs" in given and "max_steps" not in given:
        settings["max_steps"] = None
    backbone = model.get_backbone(settings["backbone"])
    if settings.get("image_size") is None:
        settings["image_size"] = backbone.default_image_size
    if settings["image_size"] < backbone.min_image_size:
        raise cli.UserError(f"--image_size={settings['image_size']} is below the smallest "
                            f"{settings['backbone']} builds on ({backbone.min_image_size})")
    if settings.get("checkpoint_exclude_scopes") is None:
        settings["checkpoint_exclude_scopes"] = warm_start.default_exclude_scopes(
            settings["backbone"])
    return settings


def settings(preset="gpu", **overrides):
    """The settings of `preset` with `overrides`, as train.py resolves them without flags (for
    tests and benchmarks)."""
    return resolve(dict(RECIPE, preset=preset, **overrides), set(overrides), preset)
