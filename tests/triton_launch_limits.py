"""The launch limits of a GPU, enforced on Triton's interpreter (which enforces none): grid axis 0 <= 2^31 - 1,
axes 1 and 2 <= 65535, no empty axis. tests/conftest.py applies it to every test of the session."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

MAX_GRID = (2**31 - 1, 65535, 65535)


class GridLimitError(AssertionError):
    """A Triton launch whose grid a GPU would refuse."""


def check_grid(grid: tuple[int, ...], kernel: str = "a Triton kernel") -> None:
    g = tuple(int(v) for v in grid) + (1,) * (3 - len(grid))
    for axis, (v, limit) in enumerate(zip(g, MAX_GRID)):
        if not 1 <= v <= limit:
            raise GridLimitError(f"launch of {kernel} with grid {g}: axis {axis} = {v} is outside [1, {limit}] "
                                 "(a GPU refuses it; the interpreter would run it)")


@contextlib.contextmanager
def enforce_on_interpreter() -> Iterator[None]:
    """Check the grid of every interpreted launch before it runs (a no-op without triton)."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        yield
        return
    builder = interpreter.interpreter_builder
    original = builder.set_grid_dim  # every interpreted launch sets its grid here first (triton 3.x)

    def checked(*grid):
        check_grid(grid)
        return original(*grid)

    builder.set_grid_dim = checked
    try:
        yield
    finally:
        builder.set_grid_dim = original
