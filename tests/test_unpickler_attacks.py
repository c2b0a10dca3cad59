"""The torch-free reader against a table of dangerous pickle globals, in every place a pickle sits.

Each payload is written as raw pickle opcodes (not through a class's ``__reduce__``), so the test
also covers encodings that ``pickle.dumps`` of a Python object would not produce: GLOBAL (protocol
0-2), STACK_GLOBAL (protocol 4) and INST. Every payload is placed in a plain pickle file, in the
``data.pkl`` of a torch zip archive, as the object of a legacy file and as a legacy header record.
The reader must refuse each with :class:`UnsafeCheckpointError` naming the global, and nothing may
run: the effectful payloads would create a marker file, and a control shows that an unrestricted
``pickle.loads`` of the very same bytes does create it.
"""

import io
import os
import pickle
import time
import zipfile

import numpy as np
import pytest
import torch

from ais_jax.io import pth


def _string(text: str) -> bytes:
  """SHORT_BINUNICODE / BINUNICODE of ``text``."""
  data = text.encode("utf-8")
  if len(data) < 256:
    return b"\x8c" + bytes([len(data)]) + data
  return b"X" + len(data).to_bytes(4, "little") + data


def _global(module: str, name: str, encoding: str) -> bytes:
  if encoding == "GLOBAL":
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"
  if encoding == "STACK_GLOBAL":
    return _string(module) + _string(name) + b"\x93"
  raise ValueError(encoding)


def _call(module, name, args: bytes, encoding="GLOBAL") -> bytes:
  """Pushes ``module.name(*args)``; ``args`` pushes the arguments after a MARK."""
  if encoding == "INST":  # INST reads the class from the opcode and calls it with the marked args
    return b"(" + args + b"i" + module.encode() + b"\n" + name.encode() + b"\n"
  return _global(module, name, encoding) + b"(" + args + b"tR"


def _program(body: bytes) -> bytes:
  return b"\x80\x04" + body + b"."


def _touch_code(marker):
  return f"open({str(marker)!r}, 'w').close()"


# name -> (global named in the refusal, pickle program given a marker path, effectful?)
ATTACKS = {
    "exec": ("builtins.exec",
             lambda m: _program(_call("builtins", "exec", _string(_touch_code(m)))), True),
    "eval": ("builtins.eval",
             lambda m: _program(_call("builtins", "eval", _string(_touch_code(m)))), True),
    "exec_stack_global": ("builtins.exec", lambda m: _program(
        _call("builtins", "exec", _string(_touch_code(m)), "STACK_GLOBAL")), True),
    "exec_inst": ("builtins.exec", lambda m: _program(
        _call("builtins", "exec", _string(_touch_code(m)), "INST")), True),
    "os_system": ("os.system",
                  lambda m: _program(_call("os", "system", _string(f"touch {m}"))), True),
    "posix_system": ("posix.system",
                     lambda m: _program(_call("posix", "system", _string(f"touch {m}"))), True),
    # getattr(__import__('os'), 'system')('touch marker'): the call is on a computed object.
    "getattr_import": ("builtins.getattr", lambda m: _program(
        _call("builtins", "getattr",
              _call("builtins", "__import__", _string("os")) + _string("system"))
        + b"(" + _string(f"touch {m}") + b"tR"), True),
    "import": ("builtins.__import__",
               lambda m: _program(_call("builtins", "__import__", _string("os"))), False),
    "subprocess_popen": ("subprocess.Popen", lambda m: _program(
        _call("subprocess", "Popen", b"(" + _string("touch") + _string(str(m)) + b"l")), True),
    "subprocess_run": ("subprocess.run", lambda m: _program(
        _call("subprocess", "run", b"(" + _string("touch") + _string(str(m)) + b"l")), True),
    # functools.partial(exec, code)() : the partial is built, then called with no arguments.
    "functools_partial": ("functools.partial", lambda m: _program(
        _call("functools", "partial", _global("builtins", "exec", "GLOBAL")
              + _string(_touch_code(m))) + b")R"), True),
    "open": ("builtins.open",
             lambda m: _program(_call("builtins", "open", _string(str(m)) + _string("w"))), True),
    "numpy_reconstruct": ("numpy._core.multiarray._reconstruct", lambda m: _program(
        _call("numpy._core.multiarray", "_reconstruct",
              _global("numpy", "ndarray", "GLOBAL") + b"(K\x00t" + _string("b"))), False),
    "numpy_legacy_reconstruct": ("numpy.core.multiarray._reconstruct", lambda m: _program(
        _call("numpy.core.multiarray", "_reconstruct",
              _global("numpy", "ndarray", "GLOBAL") + b"(K\x00t" + _string("b"))), False),
    "numpy_load": ("numpy.load", lambda m: _program(_call("numpy", "load", _string(str(m)))),
                   False),
    "pickle_loads": ("pickle.loads", lambda m: _program(
        _call("pickle", "loads", b"C\x01."  # SHORT_BINBYTES b'.'
              )), False),
    "torch_load": ("torch.load", lambda m: _program(_call("torch", "load", _string(str(m)))),
                   False),
    "torch_rebuild_from_type": ("torch._tensor._rebuild_from_type_v2", lambda m: _program(
        _call("torch._tensor", "_rebuild_from_type_v2",
              _global("builtins", "exec", "GLOBAL") + b"N" + b"(" + _string(_touch_code(m))
              + b"t" + b"}")), True),
    "shutil_rmtree": ("shutil.rmtree",
                      lambda m: _program(_call("shutil", "rmtree", _string(str(m)))), False),
}


def _base_zip(path):
  torch.save({"weight": torch.ones(2)}, path)


def _write(place: str, payload: bytes, path: str) -> None:
  """Puts ``payload`` where a pickle sits in a checkpoint of kind ``place``."""
  if place == "plain":
    with open(path, "wb") as f:
      f.write(payload)
  elif place == "zip_data_pkl":
    base = path + ".base"
    _base_zip(base)
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w") as dst:
      for info in src.infolist():
        data = payload if info.filename.endswith("/data.pkl") else src.read(info)
        dst.writestr(info, data)
    os.remove(base)
  elif place in ("legacy_object", "legacy_header"):
    out = io.BytesIO()
    pickle.dump(0x1950A86A20F9469CFC6C, out, protocol=2)
    pickle.dump(1001, out, protocol=2)
    if place == "legacy_header":
      out.write(payload)                                       # sys_info record
      pickle.dump({"a": np.float64(0.0).item()}, out, protocol=2)
    else:
      pickle.dump({"protocol_version": 1001, "little_endian": True}, out, protocol=2)
      out.write(payload)                                       # the pickled object
    pickle.dump([], out, protocol=2)
    with open(path, "wb") as f:
      f.write(out.getvalue())
  else:
    raise ValueError(place)


PLACES = ("plain", "zip_data_pkl", "legacy_object", "legacy_header")


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_dangerous_global_is_refused_and_nothing_runs(tmp_path, attack, place):
  refused_global, program, _ = ATTACKS[attack]
  marker = tmp_path / "pwned"
  victim = tmp_path / "victim_dir"
  victim.mkdir()
  path = str(tmp_path / f"{attack}.pth")
  _write(place, program(victim if attack == "shutil_rmtree" else marker), path)
  module, name = refused_global.rsplit(".", 1)
  with pytest.raises(pth.UnsafeCheckpointError,
                     match=f"{attack}.pth: refusing to load global '{module}.{name}'"):
    pth.load_state_dict(path)
  assert not marker.exists(), f"{attack} in {place} ran"
  assert victim.is_dir(), f"{attack} in {place} removed a folder"


@pytest.mark.parametrize("attack", sorted(a for a, (_, _, live) in ATTACKS.items() if live))
def test_payloads_are_live_under_an_unrestricted_unpickler(tmp_path, attack):
  """Control: the same bytes DO run under pickle.loads, so the refusal above is what saves us."""
  marker = tmp_path / "pwned"
  program = ATTACKS[attack][1](marker)
  try:
    pickle.loads(program)
  except Exception:  # pylint: disable=broad-except  # the side effect comes before any error
    pass
  for _ in range(100):  # subprocess.Popen returns before its child has run
    if marker.exists():
      break
    time.sleep(0.05)
  assert marker.exists(), f"{attack}: the payload itself is inert, the test proves nothing"


def test_allowed_globals_are_exactly_what_a_state_dict_needs():
  """An allow-list made broader is a security change: this pins its contents."""
  allowed = set(pth._ALLOWED_GLOBALS)  # pylint: disable=protected-access
  modules = {module for module, _ in allowed}
  assert modules == {"collections", "torch", "torch._utils", "torch.storage"}
  assert {name for module, name in allowed if module == "torch._utils"} == {
      "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
      "_rebuild_parameter_with_state"}
  assert {name for module, name in allowed if module == "collections"} == {"OrderedDict"}
  torch_names = {name for module, name in allowed if module in ("torch", "torch.storage")}
  assert all(n == "Size" or n.endswith("Storage") or n in pth._TORCH_DTYPES  # pylint: disable=protected-access
             for n in torch_names), sorted(torch_names)
  # No allowed value is a real callable from outside this module (each is a stand-in).
  for key, value in pth._ALLOWED_GLOBALS.items():  # pylint: disable=protected-access
    if key == ("collections", "OrderedDict"):
      continue
    owner = getattr(value, "__module__", type(value).__module__)
    assert owner == pth.__name__, (key, owner)
