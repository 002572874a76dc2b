"""The photos a user hands to predict.py: folders expanded, each file read and checked alone.

The model's graph decodes JPEG, PNG, GIF (first frame) and BMP bytes (data.input.eval_image).
Those bytes are passed through unchanged, so predict.py and the exported SavedModel see the same
input, except in two cases where PIL prepares the image first (as a lossless PNG):
- another format PIL reads (WebP, TIFF, ...), which TensorFlow's decoders do not;
- a photo whose EXIF orientation says it is stored rotated (phones do this): it is turned
  upright, as preprocess.py does for the training images.
Every file is decoded once by PIL first, so a damaged one is reported on its own, never failing a
batch. Pure Python + PIL: no TensorFlow here.
"""
import io
import os

from PIL import Image, ImageOps

from data import images

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
# Magic numbers of the formats tf.io.decode_image reads.
TF_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
EXIF_ORIENTATION = 0x0112


class PhotoError(Exception):
    """A file that cannot be tagged; the message is the one-line reason shown to the user."""


def is_image_name(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def expand(arguments, recursive=False):
    """[(path, error or None)] for command-line arguments, in order.

    A file stands for itself (whatever its name; load() judges its content). A folder stands for
    the image files in it (by extension, hidden files skipped), sorted by path, and with
    `recursive` those of its subfolders too; a folder without any is an error entry.
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
                     if is_image_name(name) and os.path.isfile(os.path.join(argument, name))]
        if found:
            entries.extend((path, None) for path in sorted(found))
        else:
            hint = "" if recursive else " (--recursive also looks in its subfolders)"
            entries.append((argument, f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in this "
                                      f"folder{hint}"))
    return entries


def load(path):
    """The bytes to feed the model for the image file at `path`; raises PhotoError."""
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise PhotoError("no such file") from None
    except IsADirectoryError:
        raise PhotoError("is a directory") from None
    except OSError as error:
        raise PhotoError(f"cannot read: {error.strerror or error}") from None
    if not data:
        raise PhotoError("empty file (0 bytes)")
    return model_bytes(data)


def model_bytes(data):
    """`data` itself when TensorFlow decodes it as it is, else an upright RGB PNG made by PIL.

    PIL decodes every file once first, so a damaged file is reported with PIL's reason (e.g.
    "image file is truncated") before it reaches a batch.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if data.startswith(TF_SIGNATURES) and image.getexif().get(EXIF_ORIENTATION, 1) in (0, 1):
                return data
            image = ImageOps.exif_transpose(image)
            buffer = io.BytesIO()
            images._to_rgb(image).save(buffer, format="PNG")
            return buffer.getvalue()
    except Image.DecompressionBombError as error:
        raise PhotoError(f"too large: {str(error).split('. ')[0]}") from None
    except Image.UnidentifiedImageError:
        raise PhotoError("not an image (unknown format)") from None
    except Exception as error:  # PIL raises many types for bad files; each is this file's error
        detail = f"{type(error).__name__}: {error}".splitlines()[0][:200]
        raise PhotoError(f"damaged image ({detail})") from None
