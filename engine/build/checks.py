"""What a run will read, download or write, probed by prepare() before a launch, with no side effects.

A bad file found here is refused at once with one line (exit 2 at the CLI, "Cannot start" on the
dashboard), before the run is written, not in its worker. Each probe is cheap, as prepare runs on
every dashboard rerun:

    image folder     every class folder holds images, and PROBE_IMAGES of them, spread over the
                     folder, open and verify with PIL; a bad file outside the sample fails the run
                     later, with one line naming it (data.load_image)
    --pretrained     the file is read with weights_only=True (no pickled code runs) and matched
                     against the model on the meta device (models.check_pretrained)
    downloads        a torchvision dataset not in data_root, or torchvision's weights not in torch
                     hub's cache: a download host must accept a TCP connection (reachable)
    tensorboard_dir  no file where a folder must be, and the nearest existing folder is writable;
                     nothing is created

The CSV is read whole by data.describe, which is its check.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from urllib.parse import urlsplit

from engine.build import data, models
from engine.errors import ConfigError

PROBE_IMAGES = 32  # files of an image folder opened by prepare
PROBE_TIMEOUT_S = 2.0  # for a download host's name lookup and TCP connect together
MAX_ENTRIES = 1_000_000  # files and folders under an image folder: beyond, it is not the folder meant
LOCAL_COPY = {  # the folder torchvision keeps a dataset in, under data_root: there, no download is probed
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "cifar10": "cifar-10-batches-py",
}


def before_launch(cfg) -> None:
    """Every probe that applies to cfg (validated). Raises ConfigError with one line."""
    if cfg.dataset == "imagefolder":
        image_folder(cfg.image_dir)
    if cfg.dataset in LOCAL_COPY and not os.path.isdir(os.path.join(cfg.data_root, LOCAL_COPY[cfg.dataset])):
        _torchvision_dataset_host(cfg)
    if cfg.arch == "torchvision" and cfg.pretrained == "torchvision":
        _torchvision_weights_host(cfg)
    elif cfg.arch == "torchvision" and cfg.pretrained:
        models.check_pretrained(cfg)
    if cfg.tensorboard_dir:
        tensorboard_dir(cfg.tensorboard_dir)


def image_folder(root: str) -> None:
    """torchvision's own listing of the folder (what ImageFolder will load), every class non-empty, and a
    sample of the files, evenly spaced over the sorted list (so over the classes), verified by PIL."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    _not_too_big(root)
    classes, index = find_classes(root)
    samples = make_dataset(root, index, extensions=IMG_EXTENSIONS, allow_empty=True)
    found = {c for _, c in samples}
    empty = next((name for name in classes if index[name] not in found), None)
    if empty is not None:
        raise ConfigError(f"image folder: {os.path.join(root, empty)} holds no images ({', '.join(IMG_EXTENSIONS)})")
    k = min(PROBE_IMAGES, len(samples))
    for path, _ in (samples[i * len(samples) // k] for i in range(k)):
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # UnidentifiedImageError (empty, not an image), SyntaxError (a bad PNG chunk), ...
            raise ConfigError(data.unreadable_image(path, e)) from None


def _not_too_big(root: str) -> None:
    """Refuse a folder with over MAX_ENTRIES files and folders below it (counted as it is walked, links
    followed as ImageFolder follows them): "/" or a folder with a link to its parent would keep the check,
    and then the worker's ImageFolder, walking for ever."""
    seen = 0
    for _folder, folders, files in os.walk(root, followlinks=True):
        seen += len(folders) + len(files)
        if seen > MAX_ENTRIES:
            raise ConfigError(
                f"image folder: over {MAX_ENTRIES:,} files and folders under {root}; "
                "give the folder that holds one sub-folder of images per class"
            )


def reachable(host: str, port: int) -> bool:
    """Whether host accepts a TCP connection within PROBE_TIMEOUT_S, its name lookup included (a failed
    one is False at once). The one network probe: tests replace it to simulate either answer."""
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    for family, kind, proto, _, address in _resolve(host, port, PROBE_TIMEOUT_S):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(left)
                s.connect(address)
                return True
        except OSError:
            continue
    return False


def _resolve(host: str, port: int, timeout: float) -> list:
    """getaddrinfo's addresses for a TCP connection, or [] when the lookup fails or takes over `timeout` s.
    getaddrinfo takes no timeout, and a resolver that does not answer holds it for minutes: it runs in
    a daemon thread, which such a lookup leaves behind until it ends."""
    found = queue.SimpleQueue()

    def lookup():
        try:
            found.put(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError):  # UnicodeError: a name that IDNA cannot encode
            found.put([])

    threading.Thread(target=lookup, name="liveprop-resolve", daemon=True).start()
    try:
        return found.get(timeout=timeout)
    except queue.Empty:
        return []


def _any_reachable(urls: list[str]) -> str | None:
    """None when some url's host answers, else a reason naming the first host."""
    hosts = [(u.hostname, u.port or (443 if u.scheme == "https" else 80)) for u in map(urlsplit, urls)]
    if any(reachable(host, port) for host, port in hosts):
        return None
    return f"{hosts[0][0]} cannot be reached" + (f", nor {len(hosts) - 1} mirror(s)" if len(hosts) > 1 else "")


def _torchvision_dataset_host(cfg) -> None:
    import torchvision

    cls = getattr(torchvision.datasets, data.TORCHVISION_SETS[cfg.dataset][0])
    why = _any_reachable(getattr(cls, "mirrors", None) or [cls.url])
    if why:
        raise data.download_error(cfg, why)


def _torchvision_weights_host(cfg) -> None:
    import torch
    import torchvision

    models.check_name(cfg.tv_model)  # an unknown name is refused first, with its own line
    try:
        url = torchvision.models.get_model_weights(cfg.tv_model).DEFAULT.url
    except Exception as e:  # a model without published weights
        raise models.pretrained_error(cfg.tv_model, type(e).__name__) from None
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlsplit(url).path))
    why = None if os.path.isfile(cached) else _any_reachable([url])
    if why:
        raise models.pretrained_error(cfg.tv_model, why)


def tensorboard_dir(path: str) -> None:
    """The sink makes path/<run> when the run starts: nothing on the way may be a file, and the nearest
    folder that exists must be writable (os.access: root may write anywhere but a read-only mount)."""
    here = os.path.abspath(path)
    while not os.path.lexists(here):
        here = os.path.dirname(here)
    if not os.path.isdir(here):  # a file, or a link to nothing
        raise ConfigError(f"tensorboard_dir {path}: {here} is a file, not a folder")
    if not os.access(here, os.W_OK | os.X_OK):
        raise ConfigError(f"tensorboard_dir {path}: the folder {here} is not writable")
