"""The README runs: every Python and shell block, as written, in order, in one working folder
(as a reader following it would), with `drconv` on the PATH.

A block that cannot run here says so in a marker comment just above it:
`<!-- doctest: skip (why) -->` skips it with that reason; `<!-- doctest: make-dry-run (why) -->`
checks its make targets exist (`make -n`) instead of running them. The folder holds what the
README says is the user's own: `mynet.py` (a model built with DRConv-PyTorch's layer) with
`trained.pt`, and `near_ties.py`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_region_agreement import NEAR_TIES

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = Path(__file__).parent / "drconv_pytorch_double.py"
FENCE = re.compile(r"(?:<!-- doctest: (?P<mark>[\w-]+) \((?P<why>[^)]*)\) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```",
                   re.MULTILINE | re.DOTALL)  # fmt: skip


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str
    mark: str | None
    why: str | None


def blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    found = []
    for m in FENCE.finditer(text):
        if m.group("lang") in ("python", "sh"):
            line = text.count("\n", 0, m.start("lang")) + 1
            found.append(Block(line, m.group("lang"), m.group("body"), m.group("mark"), m.group("why")))
    return found


BLOCKS = blocks()
# The user's project that the README's convert example imports.
MYNET = textwrap.dedent(
    """
    import torch
    from drconv_pytorch_double import DRConv2d

    def build_my_model():
        torch.manual_seed(0)
        return torch.nn.Sequential(DRConv2d(3, 8, 3, region_num=4, padding=1), torch.nn.ReLU())
    """
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    shutil.copy(DOUBLE, folder / "drconv_pytorch_double.py")
    (folder / "mynet.py").write_text(MYNET)
    (folder / "near_ties.py").write_text(NEAR_TIES)
    # its weights, saved by the project itself (a module `mynet` of another test may be imported here)
    code = "import torch, mynet\ntorch.save(mynet.build_my_model().state_dict(), 'trained.pt')"
    subprocess.run([sys.executable, "-c", code], cwd=folder, check=True, timeout=120)
    return folder


def _run(block: Block, folder: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if block.mark == "make-dry-run":
        targets = re.findall(r"^make (\w+)", block.body, re.MULTILINE)
        assert targets, block.body
        args, cwd = ["make", "-n", *targets], ROOT
    elif block.lang == "python":
        args, cwd = [sys.executable, "-c", block.body], folder
    else:
        args, cwd = ["bash", "-euo", "pipefail", "-c", block.body], folder
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (
        f"README.md line {block.line}:\n{block.body}\n{result.stdout[-2000:]}\n" + (result.stderr[-3000:])
    )


_done: set[int] = set()


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"{b.lang}-line{b.line}" for b in BLOCKS])
def test_readme_block_runs(index, workdir):
    block = BLOCKS[index]
    if block.mark == "skip":
        pytest.skip(f"README.md line {block.line}: {block.why}")
    for earlier in range(index):  # what it builds on, where it was not run (a -k selection)
        if earlier not in _done and BLOCKS[earlier].mark != "skip":
            _run(BLOCKS[earlier], workdir)
            _done.add(earlier)
    _run(block, workdir)
    _done.add(index)


def test_the_readme_has_blocks_to_run():
    assert len(BLOCKS) >= 12 and {b.lang for b in BLOCKS} == {"python", "sh"}
    assert all(b.mark in (None, "skip", "make-dry-run") for b in BLOCKS)
    assert [b.line for b in BLOCKS if b.mark == "skip"], "the TensorRT blocks are marked"
