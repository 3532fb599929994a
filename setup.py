"""Builds drconv._C, the fused CPU kernel, with torch's extension tooling.

Build without isolation (`pip install --no-build-isolation -e .`): the extension must
be compiled against the torch that is installed, and an isolated build would pull a
different (multi-GB CUDA) torch.
"""

import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

# Warnings are errors in our builds (the Makefile, so CI, sets DRCONV_WERROR=1), not in a
# user's: a newer compiler's new warning must not stop an install.
WERROR = ["-Werror"] if os.environ.get("DRCONV_WERROR") == "1" else []

setup(
    ext_modules=[
        CppExtension(
            "drconv._C",
            ["drconv/csrc/region_conv_torch.cpp"],
            include_dirs=["plugins/common"],
            extra_compile_args=["-O3", "-ffp-contract=fast", "-fopenmp", "-Wall", "-Wextra", *WERROR],
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=False)},
)
