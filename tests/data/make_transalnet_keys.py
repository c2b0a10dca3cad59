"""Records the state-dict keys and shapes of the authors' TranSalNet_Res (provenance of the test).

    python tests/data/make_transalnet_keys.py PATH_TO_LJOVO_TranSalNet_CHECKOUT > tests/data/transalnet_res_keys.json

Builds the authors' own module (``TranSalNet_Res.TranSalNet`` from github.com/LJOVO/TranSalNet,
commit a2aba83) with torch and writes ``[[key, shape], ...]``. Their file imports pandas and
scikit-image at the top without using them for the network, and builds its ResNet-50 with
``pretrained=True`` (a download): both are stubbed here, nothing else of their code is changed.
The parity test (tests/test_transalnet.py) checks that its own PyTorch reference has exactly these
keys and shapes, so the reference is the authors' network and not a re-reading of it.
"""

import importlib.machinery
import json
import sys
import types

import torchvision  # noqa: F401  (imported before the stubs: torch's import scans modules)

sys.path.insert(0, sys.argv[1])
for name in ("pandas", "skimage"):
  stub = types.ModuleType(name)
  stub.__spec__ = importlib.machinery.ModuleSpec(name, None)
  sys.modules.setdefault(name, stub)
sys.modules["skimage"].io = sys.modules["skimage"].transform = None

import utils.resnet as authors_resnet  # noqa: E402  (their vendored torchvision ResNet)

_resnet50 = authors_resnet.resnet50
authors_resnet.resnet50 = lambda pretrained=False, **kw: _resnet50(pretrained=False, **kw)

from TranSalNet_Res import TranSalNet  # noqa: E402

state = TranSalNet().state_dict()
json.dump([[k, list(v.shape)] for k, v in state.items()], sys.stdout, indent=0)
print()
