"""google.colab.files stand-in: the "user" picks COLAB_STANDIN_UPLOADS' files, and downloads land
in COLAB_STANDIN_DOWNLOADS."""
import os
import shutil

from google.colab import standin_folder


def _unique_filename(filename):
    """Colab's rule: a name already taken gets " (1)", " (2)"... before its extension."""
    if not os.path.lexists(filename):
        return filename
    counter = 1
    while True:
        path, extension = os.path.splitext(filename)
        candidate = f"{path} ({counter}){extension}"
        if not os.path.lexists(candidate):
            return candidate
        counter += 1


def upload():
    """As Colab does: each picked file is saved into the working folder and returned as
    {file name: its bytes}."""
    source = standin_folder("COLAB_STANDIN_UPLOADS")
    uploaded = {}
    for name in sorted(os.listdir(source)):
        with open(os.path.join(source, name), "rb") as stream:
            uploaded[name] = stream.read()
        local = _unique_filename(name)
        print(f"Saving {name} to {local}")
        with open(local, "wb") as stream:
            stream.write(uploaded[name])
    return uploaded


def download(filename):
    """The browser's download of `filename`, as a copy into COLAB_STANDIN_DOWNLOADS."""
    if not os.path.exists(filename):
        raise FileNotFoundError(f"Cannot find file: {filename}")  # Colab's message
    shutil.copy(filename, standin_folder("COLAB_STANDIN_DOWNLOADS"))
