"""Build one sanitizer variant of the harness (in this process: no sanitizer runtime preloaded into the compiler),
then run a child command under it with the runtime preloaded; the child's stdout/stderr go to files.

    python -m tests.cuda_emu.sanitized_run VARIANT OUT_PREFIX CHILD_ARGS...

CHILD_ARGS follow the module path in tests.cuda_emu.child's usage. Exit status: the child's (2 when the build
failed, with the reason in OUT_PREFIX.stderr).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tools.cuda_emu as emu


def main(argv: list[str]) -> int:
    variant, prefix, *args = argv
    out, err = Path(prefix + ".stdout"), Path(prefix + ".stderr")
    try:
        so = emu.build(variant)
        env = emu.sanitizer_env(variant)
    except Exception as e:  # reported to the parent test through the stderr file
        err.write_text(f"build of the {variant} harness failed: {e}\n")
        return 2
    with out.open("w") as fo, err.open("w") as fe:
        return subprocess.run([sys.executable, "-m", "tests.cuda_emu.child", str(so), *args], env=env, stdout=fo,
                              stderr=fe, cwd=emu.ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
