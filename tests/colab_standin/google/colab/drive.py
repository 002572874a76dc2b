"""google.colab.drive stand-in: the test's folder COLAB_STANDIN_DRIVE is the user's Drive."""
import os

from google.colab import standin_folder


def mount(mountpoint, force_remount=False, timeout_ms=120000, readonly=False):
    drive = standin_folder("COLAB_STANDIN_DRIVE")
    if os.path.islink(mountpoint) and os.path.realpath(mountpoint) == os.path.realpath(drive):
        if not force_remount:
            # Colab's message when the cell runs again in the same session.
            print(f"Drive already mounted at {mountpoint}; to attempt to forcibly remount, call "
                  f"drive.mount(\"{mountpoint}\", force_remount=True).")
            return
        os.remove(mountpoint)
    if os.path.exists(mountpoint) and (not os.path.isdir(mountpoint) or os.listdir(mountpoint)):
        raise ValueError("Mountpoint must not already contain files")  # as Colab refuses
    if os.path.isdir(mountpoint):
        os.rmdir(mountpoint)
    os.makedirs(os.path.dirname(os.path.abspath(mountpoint)), exist_ok=True)
    os.symlink(drive, mountpoint)
    print(f"Mounted at {mountpoint}")


def flush_and_unmount(timeout_ms=86400000):
    """Nothing to flush: the stand-in writes straight to its folder."""
