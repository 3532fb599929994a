"""Fetch NVIDIA's TensorRT 10.14 C++ headers, for compiling the plugin where TensorRT itself
is not installed: they ship in the PyPI package kernel-lens==2.0.1 (kernel_lens/include/tensorrt/).
The wheel is checked against its sha256 before anything is unpacked. Prints the include dir.

usage: python fetch_tensorrt_headers.py DEST
"""

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "kernel-lens==2.0.1"
SHA256 = "07cc714e8b5e7f34b672f7c7fad93febe7c747be5837ba276b1527370134ffe0"
PREFIX = "kernel_lens/include/tensorrt/"


def main(dest: Path) -> int:
    include = dest / "tensorrt"
    if (include / "NvInferRuntime.h").is_file():
        print(include)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"fetching {WHEEL} (TensorRT headers only) with pip", file=sys.stderr)
        got = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", WHEEL, "-d", tmp],
            stdout=sys.stderr,
        )
        wheels = list(Path(tmp).glob("kernel_lens-*.whl"))
        if got.returncode != 0 or len(wheels) != 1:
            print(f"error: could not download {WHEEL}; set TensorRT_INCLUDE_DIR or TENSORRT_ROOT", file=sys.stderr)
            return 1
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != SHA256:
            print(f"error: {wheels[0].name} has sha256 {digest}, expected {SHA256}", file=sys.stderr)
            return 1
        partial = dest / "tensorrt.partial"
        partial.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in wheel.namelist():
                if name.startswith(PREFIX) and not name.endswith("/"):
                    (partial / name[len(PREFIX) :]).write_bytes(wheel.read(name))
        partial.replace(include)
    print(include)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
