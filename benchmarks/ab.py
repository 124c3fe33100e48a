"""A/B between commits for ``scan.py`` and ``train.py``: the base's wheel, its install, and the child processes that
time one row with either the base or the current install first on their path.

``--base REF``: REF is a wheel (``*.whl``) or a git commit. A commit's wheel is built here from a detached worktree
into ``.whl_base/<commit>/`` (needs git; ``--prepare-only`` stops there and prints the wheel's path, so that the wheel
alone can travel to a machine without git or network). A wheel is installed into a temporary folder with pip
(``--no-deps --no-index``); a child process then sees the base through ``PYTHONPATH`` (that folder first) and the
current install without it, and reports which ``nnunet_mamba`` it imported: a row from the wrong one stops the run.
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
WHEELS = REPO / ".whl_base"  # one folder per commit, git-ignored through its own .gitignore
CHILD_TIMEOUT_S = 900  # one row in one child: start-up, the first compile of the kernels, the timing


@dataclass(frozen=True)
class Base:
    wheel: str
    commit: str
    target: str  # the folder the wheel is installed into: first on a base child's PYTHONPATH


def add_arguments(ap) -> None:
    ap.add_argument("--base", default=None, metavar="REF",
                    help="A/B: time every row with this base too, a wheel (*.whl) or a git commit (built here into "
                         ".whl_base/<commit>/; needs git)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="with --base COMMIT: only build the base's wheel and print its path")


def has_git() -> bool:
    return (REPO / ".git").exists() and shutil.which("git") is not None


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def current_commit(given: Optional[str] = None) -> str:
    """``given``, else git's short HEAD (``-dirty`` with uncommitted changes) where a git checkout exists, else the
    commit the installed wheel was built from (``.bench_commit`` from ``gpu_scan.sh setup``, ``.whl_own/COMMIT``)."""
    if given:
        return given
    if has_git():
        try:
            dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO).returncode != 0
            return git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")
        except (OSError, subprocess.CalledProcessError):
            pass
    for stamp in (REPO / ".bench_commit", REPO / ".whl_own" / "COMMIT"):
        if stamp.is_file():
            return stamp.read_text().strip()
    return "unknown"


def build_wheel(ref: str) -> Path:
    """The wheel of commit ``ref`` in ``.whl_base/<commit>/`` (built once per commit from a detached worktree)."""
    if not has_git():
        raise SystemExit(f"--base {ref}: building a commit's wheel needs git and a checkout; build it where they exist "
                         "(--base COMMIT --prepare-only) and pass the wheel here")
    commit = git("rev-parse", "--short", f"{ref}^{{commit}}")
    out = WHEELS / commit
    found = sorted(out.glob("nnunet_mamba-*.whl"))
    if found:
        return found[-1]
    out.mkdir(parents=True, exist_ok=True)
    (WHEELS / ".gitignore").write_text("*\n")
    work = Path(tempfile.mkdtemp(prefix="nnunet_mamba_base_")) / "src"
    git("worktree", "add", "--detach", str(work), commit)
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(work),
                        "-w", str(out)], check=True)
    finally:
        git("worktree", "remove", "--force", str(work))
        shutil.rmtree(work.parent, ignore_errors=True)
    (out / "COMMIT").write_text(commit + "\n")
    return sorted(out.glob("nnunet_mamba-*.whl"))[-1]


def wheel_commit(wheel: Path) -> str:
    """The commit a base wheel was built from: ``COMMIT`` next to it, else the wheel's name."""
    stamp = wheel.parent / "COMMIT"
    return stamp.read_text().strip() if stamp.is_file() else wheel.name


def install(wheel: Path) -> str:
    """``wheel`` installed into a temporary folder (removed at exit), without dependencies or an index."""
    target = tempfile.mkdtemp(prefix="nnunet_mamba_base_site_")
    atexit.register(shutil.rmtree, target, True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile",
                    "--target", target, str(wheel)], check=True)
    return target


def prepare(a) -> Optional[Base]:
    """The base of ``--base`` ready to time (None without it); with ``--prepare-only`` print the wheel and exit."""
    if a.base is None:
        if a.prepare_only:
            raise SystemExit("--prepare-only needs --base COMMIT")
        return None
    wheel = Path(a.base) if a.base.endswith(".whl") else build_wheel(a.base)
    if not wheel.is_file():
        raise SystemExit(f"--base {a.base}: no such wheel")
    if a.prepare_only:
        print(wheel.resolve())
        raise SystemExit(0)
    return Base(str(wheel.resolve()), wheel_commit(wheel), install(wheel))


def current_root() -> str:
    """The path entry the current ``nnunet_mamba`` comes from (this process imports the current install)."""
    import nnunet_mamba
    return os.path.dirname(os.path.dirname(os.path.realpath(nnunet_mamba.__file__)))


def child_env(target: Optional[str], extra: Optional[dict] = None) -> dict:
    """The environment of a child: ``target`` first on its path for the base, the unchanged one for the current;
    ``extra`` variables on top."""
    env = dict(os.environ, **(extra or {}))
    if target is not None:
        env["PYTHONPATH"] = os.pathsep.join([target] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def check_origin(row: dict, target: Optional[str]) -> None:
    """Stop unless the child imported ``nnunet_mamba`` from ``target`` (the base) or from the current install."""
    expected = os.path.realpath(target) if target is not None else current_root()
    reported = row.get("nnunet_mamba_file")
    if not reported or not os.path.realpath(reported).startswith(expected + os.sep):
        side = "base" if target is not None else "current"
        raise SystemExit(f"the {side} child imported nnunet_mamba from {reported}, not from {expected}")


def run_row(cmd: list, target: Optional[str] = None, timeout: int = CHILD_TIMEOUT_S, echo: bool = False,
            env: Optional[dict] = None) -> dict:
    """One child's ``ROW {json}`` line (its last), the origin of its ``nnunet_mamba`` checked; ``{"error": ...}`` where
    it printed none or ran out of time. ``target``: the base's install, None: the current one; ``env``: variables set
    for the child."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(target, env))
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout} s"}
    if echo:
        print(proc.stdout, flush=True)
    found = [ln[4:] for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
    if not found:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    row = json.loads(found[-1])
    check_origin(row, target)
    return row


def sides(base: Base):
    """(name, target) of the two installs, base first: the order of every A/B pair."""
    return (("base", base.target), ("current", None))


def ratio_note(ratios: list) -> str:
    """The geometric mean of current / base over the rows that have both."""
    if not ratios:
        return "no row timed on both sides"
    product = 1.0
    for r in ratios:
        product *= r
    return f"geometric mean of current / base over {len(ratios)} rows: {product ** (1 / len(ratios)):.3f}"
