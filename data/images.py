"""Decode any image PIL reads, make it RGB, resize it, re-encode it as JPEG.

Resize policy: the shorter side becomes `image_size` and the aspect ratio is kept (nothing is
cropped or stretched). The training pipeline takes its own random crops (inception style) and
evaluation takes a central crop, so the records keep the whole photo and its true shape; a
square resize here would distort every non-square photo once more before those crops. Most
HARRISON photos are 640x640 (Instagram), which become image_size x image_size.

Pure PIL (no TensorFlow), so worker processes stay light.
"""
import io
import os

from PIL import Image, ImageOps

JPEG_QUALITY = 95
# Instagram photos are at most 1080 px; a larger "image" is more likely a decompression bomb.
Image.MAX_IMAGE_PIXELS = 64_000_000


class ImageError(Exception):
    """An image that cannot be used; `reason` is a short code, the message a one-line detail."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def to_rgb(image):
    """The image as RGB: palette/alpha composited on white, 16-bit/float range scaled, CMYK/L converted."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
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


_to_rgb = to_rgb  # the name data/photos.py first used


def scaled_size(width, height, image_size):
    """(width, height) with the shorter side equal to image_size and the aspect ratio kept."""
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


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
            # JPEG only: decode directly at 1/2, 1/4 or 1/8 scale while both sides stay >=
            # image_size (the DCT does the downscaling for free); the resize below finishes it.
            image.draft(image.mode, (image_size, image_size))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            image = to_rgb(image)
            new_size = scaled_size(image.width, image.height, image_size)
            if new_size != image.size:
                image = image.resize(new_size, Image.BICUBIC)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=quality)
            return buffer.getvalue(), image.height, image.width
    except Image.DecompressionBombError as error:
        raise ImageError("too_large", str(error).split(". ")[0]) from None
    except Exception as error:  # PIL raises many types for bad files; each is a skip, not a crash
        detail = f"{type(error).__name__}: {error}".splitlines()[0][:200]
        reason = "truncated" if "truncated" in detail else "undecodable"
        raise ImageError(reason, detail) from None


def convert_for_record(job):
    """Worker entry point: job = (path, image_size, quality) -> ("ok", jpeg, h, w) or
    ("skip", reason, detail). Returns instead of raising so one bad file never stops a pool."""
    path, image_size, quality = job
    try:
        return ("ok",) + convert_image(path, image_size, quality)
    except ImageError as error:
        return ("skip", error.reason, error.detail)
