"""The built-in models and the loader for models users bring (`module:factory` + checkpoint)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from drconv._geometry import shape_text
from drconv.conversion import convert
from drconv.errors import DrconvError
from drconv.model_names import DEFAULT_MODEL, describe, names  # noqa: F401 (drconv.models.names is public)
from drconv.nn import DRConv2d
from drconv.shufflenetv2 import ShuffleNetV2

MIN_INPUT_SIZE = 32


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _drconv_bn_relu(channels: int, regions: int) -> nn.Sequential:
    return nn.Sequential(
        DRConv2d(channels, channels, 3, region_num=regions), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
    )


class DRConvTiny(nn.Module):
    """A ~1M-parameter ImageNet-style classifier: plain strided convs, each stage refined by a DRConv.

    Input [N, 3, H, W] with H, W >= 32 (total stride 16); output logits [N, num_classes].
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.min_size = MIN_INPUT_SIZE  # an attribute: TorchScript reads no int globals
        self.features = nn.Sequential(
            _conv_bn_relu(3, 24, 2),
            _conv_bn_relu(24, 48, 2),
            _drconv_bn_relu(48, 8),
            _conv_bn_relu(48, 96, 2),
            _drconv_bn_relu(96, 4),
            _conv_bn_relu(96, 192, 2),
            _drconv_bn_relu(192, 2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(192, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"drconv-tiny expects input [N, 3, H, W], got shape {shape_text(x)}")
        if x.shape[2] < self.min_size or x.shape[3] < self.min_size:
            raise ValueError(f"drconv-tiny needs H and W >= {self.min_size}, got {x.shape[2]}x{x.shape[3]}")
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _shufflenet(width: float, regions: int | None) -> Callable[[], nn.Module]:
    return lambda: ShuffleNetV2(width, regions)


# A builder for each name of model_names.DESCRIPTIONS (tests/test_zoo.py checks they match).
_BUILDERS: dict[str, Callable[[], nn.Module]] = {
    "drconv-tiny": DRConvTiny,
    "drconv-shufflenetv2-0.5x": _shufflenet(0.5, 8),
    "drconv-shufflenetv2-1.0x": _shufflenet(1.0, 8),
    "shufflenetv2-0.5x": _shufflenet(0.5, None),
    "shufflenetv2-1.0x": _shufflenet(1.0, None),
}


def other_size(model: nn.Module, size: int) -> int:
    """An input size above `size` that `model` accepts, to check a dynamic export at another size.

    Models that need sizes in steps (ShuffleNetV2: multiples of 32) say so in `input_multiple`.
    """
    step = int(getattr(model, "input_multiple", 1))
    return size + step * -(-13 // step)


def create(name: str = DEFAULT_MODEL) -> nn.Module:
    """A fresh (randomly initialised, seeded) instance of a built-in model."""
    if name not in _BUILDERS:
        raise DrconvError(
            f"unknown model {name!r}; built-in models: {', '.join(names())}, or use package.module:factory"
        )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return _BUILDERS[name]()


_SPEC_FORM = "a built-in name ({names}), package.module:factory or path/to/file.py:factory"


def _split_spec(spec: str) -> tuple[str, str]:
    module_ref, _, attr = spec.rpartition(":")
    if not module_ref or not attr:
        raise DrconvError(f"model {spec!r} must be {_SPEC_FORM.format(names=', '.join(names()))}")
    return module_ref, attr


def _is_path(module_ref: str) -> bool:
    return module_ref.endswith(".py") or "/" in module_ref or os.sep in module_ref


def _module_folder(module_ref: str) -> Path | None:
    """The folder that `module_ref` (a file path or a module name) is imported from, where known."""
    if _is_path(module_ref):
        return Path(module_ref).resolve().parent
    top = module_ref.split(".")[0]
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if found is None or not found.origin or found.origin in ("built-in", "frozen"):
        return None
    origin = Path(found.origin).resolve()
    return origin.parents[1] if found.submodule_search_locations else origin.parent


def _own_drconv(folder: Path | None) -> Path | None:
    """The model's own `drconv` module beside it (DRConv-PyTorch's layer lives in a file called
    drconv.py), where there is one: the file or package that `import drconv` means to that model."""
    if folder is None:
        return None
    ours = Path(__file__).resolve().parent
    for candidate in (folder / "drconv.py", folder / "drconv" / "__init__.py"):
        if candidate.is_file() and candidate.resolve().parent != ours:
            return candidate
    return None


def _put_on_path(folder: str) -> None:
    """`folder` first on the import path, unless it is there already."""
    if not any(isinstance(entry, str) and os.path.abspath(entry) == folder for entry in sys.path):
        sys.path.insert(0, folder)
        importlib.invalidate_caches()


def _exec_file(name: str, path: Path, what: str, package: bool = False):
    """The module `name` run from the file `path` and registered in sys.modules (not left there if it fails)."""
    found = importlib.util.spec_from_file_location(
        name, path, submodule_search_locations=[str(path.parent)] if package else None
    )
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    try:
        found.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise DrconvError(f"cannot import {what}: {type(exc).__name__}: {exc}") from exc
    return module


@contextlib.contextmanager
def _as_drconv(path: Path | None) -> Iterator[None]:
    """Within the block, `import drconv` gives the module at `path` (this package is set aside and
    restored after): a model built in the block keeps its own layers."""
    if path is None:
        yield
        return

    def set_aside() -> dict:
        return {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "drconv"}

    ours = set_aside()
    try:
        _exec_file("drconv", path, f"the model's own module {path}", package=path.name == "__init__.py")
        yield
    finally:
        set_aside()  # the model's drconv and anything imported under it
        sys.modules.update(ours)


def _import(module_ref: str, spec: str):
    """The user's module: by name (the working directory first, as `python -m` has it) or from a .py file."""
    if not _is_path(module_ref):
        try:
            return importlib.import_module(module_ref)
        except Exception as exc:  # any import failure is the user's module, report it in one line
            raise DrconvError(f"cannot import module {module_ref!r} for model {spec!r}: {exc}") from exc
    path = Path(module_ref)
    if path.suffix != ".py" or not path.is_file():
        raise DrconvError(
            f"model {spec!r}: {path} is not a .py file; give path/to/file.py:factory or package.module:factory"
        )
    _put_on_path(str(path.resolve().parent))  # its own imports (sibling modules) resolve as for a script
    return _exec_file(path.stem, path, f"{path} for model {spec!r}")


def _from_factory(spec: str) -> tuple[nn.Module, Path | None]:
    """The factory's model, and the model's own drconv module where it has one (see `_own_drconv`)."""
    module_ref, attr = _split_spec(spec)
    _put_on_path(os.getcwd())  # like `python -m`: the folder the user runs drconv from holds their model
    own = _own_drconv(_module_folder(module_ref))
    with _as_drconv(own):  # the factory too: it may import drconv when called
        module = _import(module_ref, spec)
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise DrconvError(f"module {module_ref!r} has no callable {attr!r} (from model {spec!r})")
        try:
            model = factory()
        except Exception as exc:
            raise DrconvError(f"model factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise DrconvError(f"model factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model, own


# Where training scripts keep the weights inside a larger checkpoint dict (with epoch, optimizer, ...).
_CHECKPOINT_WRAPPERS = ("state_dict", "model_state_dict", "model")
_DATA_PARALLEL_PREFIX = "module."
_LISTED_KEYS = 3


def _unwrap(state: object) -> object:
    """The state_dict inside {"state_dict": ...}-like wrappers (nested ones too), or `state` itself."""
    for _ in range(len(_CHECKPOINT_WRAPPERS)):
        if not isinstance(state, dict):
            break
        # A state_dict maps names to tensors, so a dict under a wrapper key is a wrapper, not a weight.
        inner = next((state[key] for key in _CHECKPOINT_WRAPPERS if isinstance(state.get(key), dict)), None)
        if inner is None:
            break
        state = inner
    return state


def _has_prefix(keys: list) -> bool:
    return bool(keys) and all(isinstance(key, str) and key.startswith(_DATA_PARALLEL_PREFIX) for key in keys)


def _strip_prefix(state: dict) -> dict:
    """`state` without the 'module.' DataParallel puts before every key, its version metadata kept."""
    cut = len(_DATA_PARALLEL_PREFIX)
    stripped = OrderedDict((key[cut:], value) for key, value in state.items())
    # _metadata (per-module versions, keyed by module path) lets layers upgrade old checkpoints.
    metadata = getattr(state, "_metadata", None)
    if isinstance(metadata, dict):
        stripped._metadata = OrderedDict(  # type: ignore[attr-defined]
            (key[cut:], value)
            for key, value in metadata.items()
            if key == _DATA_PARALLEL_PREFIX[:-1] or key.startswith(_DATA_PARALLEL_PREFIX)
        )
    return stripped


def _listed(keys: list[str], what: str) -> str:
    shown = ", ".join(keys[:_LISTED_KEYS]) + (", ..." if len(keys) > _LISTED_KEYS else "")
    return f"{len(keys)} {what}{'' if len(keys) == 1 else 's'} ({shown})"


def _misfit(model: nn.Module, state: dict) -> str:
    """One line on how `state` does not fit `model`: counts and a few names of each kind of mismatch."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [str(key) for key in state if key not in own]
    shapes = [
        f"{key} {list(value.shape)} vs model {list(own[key].shape)}"
        for key, value in state.items()
        if key in own and isinstance(value, torch.Tensor) and value.shape != own[key].shape
    ]
    parts = []
    if missing:
        parts.append(_listed(missing, "missing key"))
    if unexpected:
        parts.append(_listed(unexpected, "unexpected key"))
    if shapes:
        parts.append(_listed(shapes, "shape mismatch"))
    cut = len(_DATA_PARALLEL_PREFIX)
    if any(key.startswith(_DATA_PARALLEL_PREFIX) and key[cut:] in own for key in unexpected):
        parts.append("keys carry a 'module.' prefix (DataParallel)")
    elif any(_DATA_PARALLEL_PREFIX + key in own for key in unexpected):
        parts.append("the model's keys carry a 'module.' prefix (DataParallel) the checkpoint's lack")
    return "; ".join(parts)


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a state_dict into model, strictly.

    Accepts a bare state_dict or one under 'state_dict', 'model_state_dict' or 'model',
    and strips the 'module.' prefix DataParallel adds to every key where the model's own
    keys lack it.

    Raises:
        DrconvError: one line naming the file: missing, unreadable, or not fitting the model
            (how many keys are missing, unexpected or of another shape, with a few names).
    """
    path = Path(path)
    if not path.is_file():
        raise DrconvError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DrconvError(f"checkpoint {path}: {_unreadable(path, exc)}") from None
    state = _unwrap(state)
    if not isinstance(state, dict):
        raise DrconvError(f"checkpoint {path}: holds a {type(state).__name__}, expected a state_dict")
    if _has_prefix(list(state)) and not _has_prefix(list(model.state_dict())):
        state = _strip_prefix(state)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = _misfit(model, state)
        if not detail:  # something the key and shape comparison cannot see: PyTorch's own first line
            detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise DrconvError(f"checkpoint {path}: does not fit the model: {detail}") from exc


_EXPECTED = "expected a state_dict saved with torch.save(model.state_dict(), path)"


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch.load refused `path`, in a line: what the file is, and what was expected.

    torch's own message is long, advises weights_only=False (running the file's code) and
    carries terminal colour codes, so it is not relayed."""
    if path.stat().st_size == 0:
        return f"the file is empty; {_EXPECTED}"
    with path.open("rb") as f:
        head = f.read(512)
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"a text file, not a PyTorch checkpoint; {_EXPECTED}"
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if "Weights only load failed" in str(exc) and found:
        return (
            f"holds a pickled {found.group(1)} (a whole model?), not only tensors; {_EXPECTED}, "
            "or load it yourself and pass the model's state_dict"
        )
    return f"not a PyTorch checkpoint ({type(exc).__name__}); {_EXPECTED}"


def _converted_line(names: list[str], own: Path | None = None) -> str:
    shown = [name or "(the model itself)" for name in names[:4]]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    layers = "layer" if len(names) == 1 else "layers"
    source = f" (from the model's own {_shown_path(own)}, not this package)" if own else ""
    return (
        f"converted {len(names)} DRConv-PyTorch DRConv2d {layers}{source} to drconv.DRConv2d: {', '.join(shown)}{more}"
    )


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_model(
    spec: str | None = None,
    checkpoint: str | Path | None = None,
    on_convert: Callable[[str], None] | None = None,
) -> nn.Module:
    """A model in eval mode from a built-in name or `package.module:factory`, with optional weights.

    A factory's model gets its checkpoint first (it fits the user's own layers), then its
    DRConv-PyTorch DRConv2d layers are replaced by drconv.DRConv2d (`drconv.convert`);
    where any were, `on_convert` receives one line saying which.
    """
    spec = spec or DEFAULT_MODEL
    if ":" not in spec:
        model = create(spec)
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
        return model.eval()
    model, own = _from_factory(spec)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    model, replaced = convert(model)
    if own is not None and not replaced and on_convert is not None:
        on_convert(f"built {spec} with the model's own {_shown_path(own)} (not this package); no DRConv2d in it")
    if replaced and on_convert is not None:
        on_convert(_converted_line(replaced, own))
    return model.eval()
