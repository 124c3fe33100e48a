"""Write a dataset folder atomically: build it in a temporary sibling, then rename."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Sequence


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def overlap_problem(final: Path, inputs: Sequence[Path]) -> Optional[str]:
    """Why ``final`` must not be written: it equals, contains or lies inside one of ``inputs``."""
    out = Path(final).resolve()
    for given in inputs:
        if given is None:
            continue
        inp = Path(given).resolve()
        if out == inp or out in inp.parents:
            return (f"the output {final} contains the input {given}: replacing it would delete the input; write "
                    "somewhere else (another -o or dataset id)")
        if inp in out.parents:
            return f"the output {final} lies inside the input {given}; write somewhere else"
    return None


@contextlib.contextmanager
def atomic_directory(final: Path, overwrite: bool = False, inputs: Sequence[Optional[Path]] = ()):
    """Yield a temporary folder that becomes ``final`` only if the block succeeds.

    On any error (or interruption) the temporary folder is removed and ``final`` is untouched. ``inputs``: the
    paths the content is read from; an output that equals, contains or lies inside one of them is refused
    before anything is written.
    """
    final = Path(final)
    problem = overlap_problem(final, inputs)
    if problem:
        raise ValueError(problem)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True (--overwrite) to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700; the dataset gets the user's usual mode
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
