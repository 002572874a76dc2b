"""A local stand-in for Colab's `google.colab` (drive, files), for tests/test_notebook.py only.

The test puts tests/colab_standin on the notebook kernel's PYTHONPATH; nothing else imports it.
`google/` has no __init__.py on purpose: it stays a namespace package, so google.protobuf and
the other real google.* packages still import. Each function does on this machine what Colab's
does for a user, with folders the test names in environment variables:

- drive.mount(mountpoint): COLAB_STANDIN_DRIVE stands for the user's Google Drive (holding
  MyDrive/); mountpoint becomes a link to it, as Colab mounts Drive there.
- files.upload(): the user picks the files of COLAB_STANDIN_UPLOADS; they are written into the
  working folder and returned as {name: bytes}, as Colab does.
- files.download(path): the browser's download, as a copy into COLAB_STANDIN_DOWNLOADS.
"""
import os


def standin_folder(variable):
    folder = os.environ.get(variable)
    if not folder:
        raise RuntimeError(f"the google.colab stand-in needs {variable} (tests/test_notebook.py "
                           "sets it)")
    return folder
