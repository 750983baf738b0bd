"""The README's library examples run as written (each holds its own asserts)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_library_examples():
    blocks = _python_blocks()
    assert len(blocks) >= 2
    text = "".join(blocks)
    for needle in ("jax.grad", "jax.vmap", "jax.jvp", "full_matrices=True", "factors=", "torch"):
        assert needle in text


def test_readme_library_examples_run():
    import jax

    # user code as a reader would run it: JAX's default promotion rules, not the suite's strict
    # ones (the library itself is tested under the strict rules everywhere else)
    namespace: dict = {}
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        for i, block in enumerate(_python_blocks()):
            exec(compile(block, f"README.md python block {i}", "exec"), namespace)


def _sh_block_with(needle):
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.S):
        if needle in block:
            return block
    raise AssertionError(f"no sh block in the README contains {needle!r}")


def _run_in_copy(tmp_path, script):
    import os
    import shutil
    import subprocess
    import sys

    shutil.copytree(README.parent / "sample_data", tmp_path / "sample_data")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_readme_factors_pipeline_runs_as_written_and_matches_torch(tmp_path):
    """svdgrad svd -> the user's loss -> svdgrad vjp --factors, as the README writes it; then
    the same with torch's own factors, against torch's autograd of the same loss."""
    import numpy as np
    import torch

    block = _sh_block_with("--factors f.npz")
    # the README block, up to and including its check line
    lines = block.split("\nsvdgrad vjp sample_data/complex.npz")[0]
    done = _run_in_copy(tmp_path, lines)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"

    A = np.load(tmp_path / "sample_data" / "A.npy")
    B = np.load(tmp_path / "sample_data" / "dA.npy")
    At = torch.tensor(A, requires_grad=True)
    U, S, Vh = torch.linalg.svd(At, full_matrices=False)
    torch.sum(((U * S**3) @ Vh) * torch.tensor(B)).backward()
    np.savez(tmp_path / "f.npz", U=U.detach().numpy(), S=S.detach().numpy(), Vh=Vh.detach().numpy())
    # the same loss script and vjp line, now on torch's factors
    script = lines.split("\n", 1)[1]  # drop `svdgrad svd ... -o f.npz`: f.npz is torch's now
    done = _run_in_copy(tmp_path / "torch", "mkdir -p . && cp ../f.npz . && " + script)
    assert done.returncode == 0, done.stderr
    g = np.load(tmp_path / "torch" / "grad.npz")["gA"]
    np.testing.assert_allclose(g, At.grad.numpy(), rtol=1e-10, atol=1e-12)
