"""Builds drconv's native code: the plugin libraries through CMake, and drconv._C with torch.

setup.py drives CMake (rather than scikit-build-core) because drconv._C is a PyTorch
extension built by torch.utils.cpp_extension, which is a setuptools command: one backend
builds both, and the torch extension keeps torch's own compiler flags and ABI settings.

- plugins/ (CMake): libdrconv_onnxruntime.so always; libdrconv_tensorrt.so where nvcc and
  TensorRT's headers are found. They go into the package's drconv/lib/ with build_info.json,
  which names any library left out and why (`drconv info` shows it).
- drconv._C (the PyTorch op's CPU kernel): only where torch is importable at build time,
  that is `pip install --no-build-isolation .` into an environment that has torch. An
  isolated build (plain `pip install .`, `pip wheel .`) has no torch and makes the
  torch-free runtime package.

Environment variables (all optional): ONNXRUNTIME_INCLUDE_DIR, TensorRT_INCLUDE_DIR or
TENSORRT_ROOT (headers; fetched into DRCONV_DEPS_DIR, by default ~/.cache/drconv/deps, when
unset), DRCONV_WITH_CUDA and DRCONV_BUILD_TENSORRT (ON, OFF or AUTO), CMAKE (the cmake
program), DRCONV_WERROR=1 (warnings are errors in drconv._C and the plugin libraries, as in CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent

try:
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError:
    BuildExtension = CppExtension = None

# Warnings are errors in our builds (the Makefile, so CI, sets DRCONV_WERROR=1), not in a
# user's: a newer compiler's new warning must not stop an install.
WERROR = ["-Werror"] if os.environ.get("DRCONV_WERROR") == "1" else []
_BASE = BuildExtension.with_options(use_ninja=False) if BuildExtension else build_ext


def _deps_dir() -> str:
    if os.environ.get("DRCONV_DEPS_DIR"):
        return os.environ["DRCONV_DEPS_DIR"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(cache / "drconv" / "deps")


def _cmake() -> str:
    cmake = os.environ.get("CMAKE") or shutil.which("cmake")
    if not cmake:
        sys.exit("error: drconv's native libraries need cmake >= 3.18: install it (apt install cmake) or set CMAKE")
    return cmake


_QUOTED_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _cuda_kernel_sources() -> list[Path]:
    """plugins/common's CUDA kernel and every header of plugins/common that it and drconv/csrc's
    sources include, directly or not: what drconv.cuda_kernel compiles on a user's machine."""
    common = ROOT / "plugins" / "common"
    todo = [*common.glob("region_conv_cuda*"), *(ROOT / "drconv" / "csrc").glob("*")]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        todo += [common / name for name in _QUOTED_INCLUDE.findall(path.read_text()) if (common / name).is_file()]
    return sorted(p for p in seen if p.parent == common)


class BuildNative(_BASE):
    """build_ext that first builds plugins/ with CMake into the package's lib/ folder."""

    def run(self) -> None:
        self._build_plugins()
        if not self.inplace:  # an editable install compiles them from the checkout's plugins/common
            target = Path(self.build_lib) / "drconv" / "csrc" / "common"
            target.mkdir(parents=True, exist_ok=True)
            for source in _cuda_kernel_sources():
                shutil.copy2(source, target / source.name)
        super().run()

    def _build_plugins(self) -> None:
        if self.inplace:  # editable install: the checkout's build folder, libraries into drconv/lib
            build_dir, lib_dir = ROOT / "build" / "plugins", ROOT / "drconv" / "lib"
        else:
            build_dir = Path(self.build_temp).resolve() / "plugins"
            lib_dir = Path(self.build_lib).resolve() / "drconv" / "lib"
        if not self.inplace:  # a build folder reused from an earlier build must not carry its libraries
            shutil.rmtree(lib_dir, ignore_errors=True)
        lib_dir.mkdir(parents=True, exist_ok=True)
        configure = [
            _cmake(), "-S", str(ROOT / "plugins"), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DDRCONV_LIBRARY_DIR={lib_dir}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DDRCONV_BUILD_TESTS={'ON' if self.inplace else 'OFF'}",
            f"-DDRCONV_WERROR={'ON' if WERROR else 'OFF'}",
        ]  # fmt: skip
        if not self.inplace:
            configure.append(f"-DDRCONV_DEPS_DIR={_deps_dir()}")
        for name in ("DRCONV_WITH_CUDA", "DRCONV_BUILD_TENSORRT"):
            if os.environ.get(name):
                configure.append(f"-D{name}={os.environ[name]}")
        print(f"drconv: building the plugin libraries with CMake in {build_dir}", flush=True)
        subprocess.run(configure, check=True)
        subprocess.run([_cmake(), "--build", str(build_dir), "-j", str(os.cpu_count() or 2)], check=True)
        info = (lib_dir / "build_info.json").read_text()
        print(f"drconv: {lib_dir}/build_info.json\n{info}", flush=True)


class NativeDistribution(Distribution):
    """A platform wheel even when drconv._C is not built: drconv/lib holds native libraries."""

    def has_ext_modules(self) -> bool:
        return True


ext_modules = []
if CppExtension is not None:
    ext_modules.append(
        CppExtension(
            "drconv._C",
            ["drconv/csrc/region_conv_torch.cpp"],
            include_dirs=["plugins/common"],
            extra_compile_args=["-O3", "-ffp-contract=fast", "-fopenmp", "-Wall", "-Wextra", *WERROR],
            extra_link_args=["-fopenmp"],
        )
    )
else:
    print("drconv: torch is not importable here, so drconv._C (the PyTorch op) is not built", flush=True)

setup(ext_modules=ext_modules, distclass=NativeDistribution, cmdclass={"build_ext": BuildNative})
