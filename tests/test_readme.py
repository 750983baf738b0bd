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
