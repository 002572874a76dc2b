"""Image files, read with PIL: the dataset's images for the records, and the photos predict.py tags.

Records (`convert_image`): decode any image PIL reads, make it RGB, resize it, re-encode it as
JPEG. Resize policy: the shorter side becomes `image_size` and the aspect ratio is kept (nothing is
cropped or stretched). The training pipeline takes its own random crops (inception style) and
evaluation takes a central crop, so the records keep the whole photo and its true shape; a
square resize here would distort every non-square photo once more before those crops. Most
HARRISON photos are 640x640 (Instagram), which become image_size x image_size.

Photos (`expand`, `load`): folders expanded, each file read and checked alone. Only regular
files are read (a link to one is followed), up to MAX_FILE_BYTES: a FIFO, a device, a socket or
a link to one, and a larger file, is refused with its own error. The model's graph decodes JPEG,
PNG, GIF (first frame) and BMP bytes (data.preprocessing.eval_image). Those bytes are passed
through unchanged, so predict.py and the exported SavedModel see the same input, except in three
cases where PIL prepares the image first (as a lossless PNG):
- another format PIL reads (WebP, TIFF, ...), which TensorFlow's decoders do not;
- a photo whose EXIF orientation says it is stored rotated (phones do this): it is turned
  upright, as preprocess.py does for the training images;
- a large photo, decoded reduced so that memory stays bounded (an 81-megapixel PNG took 2.7 GB
  when TensorFlow decoded it whole).
Transparency is composited on white (`to_rgb`), in PIL here as in TensorFlow's decode.

The reduction rule: a photo larger than preprocess.py stores images for the model (shorter side
stored_side(image_size) = image_size / 0.875, 342 px for 299) is reduced to exactly that, the
way preprocess.py makes the records: JPEGs decoded reduced by PIL's draft mode (the DCT gives
1/2, 1/4 or 1/8 scale), then PIL's antialiased bicubic resize, aspect ratio kept, and the
same JPEG encoding (`as_stored`). The model then sees a photo as it would see its record
(eval_image does the same reduction in the graph for the SavedModel's raw bytes), and memory
stays bounded whatever the photo's size. A 4032x3024 photo becomes 456x342, a 9000x9000 PNG
342x342 for a 299 px model.

An image whose longer side is more than MAX_ASPECT_RATIO times its shorter is refused (records:
skipped as `aspect_ratio`; photos: its error line), from its header, before it is decoded: brought
to the stored size, a line of pixels would take gigabytes (docs/security.md). The SavedModel's
graph refuses it the same way (data/preprocessing.py).

Every file is decoded once by PIL first, so a damaged one is reported on its own, never failing a
batch.

Pure PIL (no TensorFlow), so worker processes stay light.
"""
import io
import os
import stat
import warnings

from PIL import Image, ImageOps

import cli

JPEG_QUALITY = 95
# The central part of an image evaluation keeps (slim's inception_preprocessing eval crop); here,
# pure Python, so preprocess.py's workers and data/preprocessing.py (TensorFlow) share it.
EVAL_CENTRAL_FRACTION = 0.875
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
# Magic numbers of the formats tf.io.decode_image reads.
TF_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
EXIF_ORIENTATION = 0x0112
# Instagram photos are at most 1080 px; a larger "image" is more likely a decompression bomb.
# PIL warns past MAX_PIXELS and refuses past twice that; the SavedModel's graph refuses past it
# (data/preprocessing.py).
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# The longest side an image may have, in shorter sides. Brought to the stored size, an image's
# pixels grow with its aspect ratio (a 1x20000 PNG became 86 x 1,720,000 float pixels for a 75
# px model, 4 GB): within it, they stay under stored_side(image_size)**2 * MAX_ASPECT_RATIO.
# Panoramas and long screenshots pass; a 1-pixel line is refused, not resized.
MAX_ASPECT_RATIO = 20
# Photos (predict.py): the largest file read (far above any camera's JPEG).
MAX_FILE_BYTES = 64 * 2**20
SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class ImageError(Exception):
    """An image that cannot be used; `reason` is a short code, the message a one-line detail."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def to_rgb(image):
    """The image as RGB: alpha composited on white (palette and tRNS transparency too),
    16-bit/float range scaled, CMYK/L converted. The model's decode composites the same way
    (data.preprocessing.decode_on_white): one rule for records, predict.py and the SavedModel."""
    if "transparency" in image.info and image.mode in ("P", "L", "RGB"):
        image = image.convert("RGBA")
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels have arbitrary colour underneath; show them as on a white page.
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float grayscale: scale the real range to 0..255 instead of clipping.
        image = image.convert("F")
        low, high = image.getextrema()
        scale = 255.0 / (high - low) if high > low else 0.0
        image = image.point(lambda value: (value - low) * scale).convert("L")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def aspect_problem(width, height):
    """Why an image of this size is refused (its aspect ratio), or None."""
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return (f"{width}x{height} pixels: an aspect ratio beyond {MAX_ASPECT_RATIO}:1, not a "
                "photo the model can take")
    return None


def work_pixels(width, height, image_size):
    """The pixels an image of this size takes in the model's graph: decoded, or brought to the
    stored size of a model of `image_size`, whichever is more."""
    stored = scaled_size(width, height, stored_side(image_size))
    return max(width * height, stored[0] * stored[1])


def scaled_size(width, height, image_size):
    """(width, height) with the shorter side equal to image_size and the aspect ratio kept."""
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


def as_stored(image, shorter_side):
    """`image` (opened, not yet loaded) as the records store it: decoded reduced where the
    format allows (JPEG: the DCT gives 1/2, 1/4 or 1/8 scale while both sides stay >=
    shorter_side), upright (EXIF orientation), RGB (transparency on white), shorter side
    `shorter_side` by PIL's antialiased bicubic resize, aspect ratio kept."""
    image.draft(image.mode, (shorter_side, shorter_side))
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # not in place, it copies an upright photo
    image = to_rgb(image)
    new_size = scaled_size(image.width, image.height, shorter_side)
    return image.resize(new_size, Image.BICUBIC) if new_size != image.size else image


def _encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def convert_image(path, image_size, quality=JPEG_QUALITY):
    """(jpeg bytes, height, width) of the image at `path`, ready for a record; raises ImageError."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise ImageError("missing", "file not found") from None
    except OSError as error:
        raise ImageError("unreadable", error.strerror or str(error)) from None
    if size == 0:
        raise ImageError("empty", "file is empty (0 bytes)")
    try:
        with Image.open(path) as image:
            problem = aspect_problem(*image.size)
            if problem:
                raise ImageError("aspect_ratio", problem)
            image = as_stored(image, image_size)
            return _encode(image, "JPEG", quality=quality), image.height, image.width
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError("too_large", str(error).split(". ")[0]) from None
    except Exception as error:  # PIL raises many types for bad files; each is a skip, not a crash
        detail = f"{type(error).__name__}: {error}".splitlines()[0][:200]
        reason = "truncated" if "truncated" in detail else "undecodable"
        raise ImageError(reason, detail) from None


# ---------------------------------------------------------------------------- photos

class PhotoError(cli.UserError):
    """A file that cannot be tagged; the message is the one-line reason shown to the user."""


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def expand(arguments, recursive=False):
    """[(path, error or None)] for command-line arguments, in order.

    A file stands for itself (whatever its name; load() judges its content). A folder stands for
    the image files in it (by extension, hidden files skipped), sorted by path, and with
    `recursive` those of its subfolders too; a folder without any is an error entry. Entries that
    are not regular files (a FIFO, a device, a link to one) are listed too: load() refuses each
    with its own error line.
    """
    entries = []
    for argument in arguments:
        if not os.path.isdir(argument):
            entries.append((argument, None))
            continue
        found = []
        if recursive:
            for root, folders, names in os.walk(argument):
                folders[:] = [folder for folder in folders if not folder.startswith(".")]
                found.extend(os.path.join(root, name) for name in names if is_image_name(name))
        else:
            found = [os.path.join(argument, name) for name in os.listdir(argument)
                     if is_image_name(name) and not os.path.isdir(os.path.join(argument, name))]
        if found:
            entries.extend((path, None) for path in sorted(found))
        else:
            hint = "" if recursive else " (--recursive also looks in its subfolders)"
            entries.append((argument, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this "
                                      f"folder{hint}"))
    return entries


def load(path, image_size):
    """(bytes to feed the model, (width, height) they decode to) for the image file at `path`,
    for a model of `image_size`; raises PhotoError."""
    return model_bytes(read_photo(path), image_size)


def read_photo(path, limit=MAX_FILE_BYTES):
    """The content of the regular file at `path` (a link to one is followed); raises PhotoError
    for anything else (a FIFO blocks its reader, /dev/zero never ends) and past `limit` bytes."""
    try:
        _check_regular(path, os.stat(path), limit)  # before open: opening a device may act
        # O_NONBLOCK: should the file be swapped for a FIFO after the check, open must not wait.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise PhotoError("no such file") from None
    except OSError as error:
        raise PhotoError(f"cannot read: {error.strerror or error}") from None
    with os.fdopen(descriptor, "rb") as stream:
        _check_regular(path, os.fstat(descriptor), limit)
        data = stream.read(limit + 1)  # the file may have grown since
    if len(data) > limit:
        raise PhotoError(_too_large(len(data), limit))
    if not data:
        raise PhotoError("empty file (0 bytes)")
    return data


def _check_regular(path, info, limit):
    if stat.S_ISDIR(info.st_mode):
        raise PhotoError("is a directory")
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in SPECIAL_FILES if test(info.st_mode)), "special")
        if os.path.islink(path):
            kind = f"a link to {os.path.realpath(path)}, {kind}"
        raise PhotoError(f"not a regular file ({kind})")
    if info.st_size > limit:
        raise PhotoError(_too_large(info.st_size, limit))


def _too_large(size, limit):
    return f"file too large ({size / 2**20:.0f} MB; photos are read up to {limit // 2**20} MB)"


def stored_side(image_size):
    """The shorter side an image is stored at for a model of `image_size`: evaluation's central
    crop (EVAL_CENTRAL_FRACTION) of it is then image_size, without upsampling (342 for 299)."""
    return round(image_size / EVAL_CENTRAL_FRACTION)


def model_bytes(data, image_size):
    """(bytes for the model, (width, height) they decode to) of an image file's content `data`.

    A photo larger than preprocess.py stores images for this model is reduced exactly as
    preprocess.py stores it (`as_stored`, the same JPEG encoding), so the model sees it as it
    would see its record; a smaller one is `data` itself when TensorFlow decodes it as it is,
    else an upright RGB PNG made by PIL (module docstring). PIL decodes every file once, so a damaged file is reported
    with PIL's reason (e.g. "image file is truncated") before it reaches a batch.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns past MAX_IMAGE_PIXELS and refuses past twice that; a warned one is reduced.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            problem = aspect_problem(*image.size)
            if problem:
                raise PhotoError(problem)
            if min(image.size) > stored_side(image_size):  # as preprocess.py would store it
                image = as_stored(image, stored_side(image_size))
                return _encode(image, "JPEG", quality=JPEG_QUALITY), image.size
            image.load()
            if image.getexif().get(EXIF_ORIENTATION, 1) in (0, 1) and (
                    data.startswith(TF_SIGNATURES)):
                return data, image.size
            image = to_rgb(ImageOps.exif_transpose(image))  # lossless: only turned, converted
            return _encode(image, "PNG", compress_level=1), image.size
    except PhotoError:
        raise
    except Image.DecompressionBombError as error:
        raise PhotoError(f"too large: {str(error).split('. ')[0]}") from None
    except Image.UnidentifiedImageError:
        raise PhotoError("not an image (unknown format)") from None
    except Exception as error:  # PIL raises many types for bad files; each is this file's error
        detail = f"{type(error).__name__}: {error}".splitlines()[0][:200]
        raise PhotoError(f"damaged image ({detail})") from None
