"""Running the stock nnU-Net commands from our commands: where their console scripts are, and one run with its
output appended to a log file and echoed as it comes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable


def stock_command(name: str) -> str:
    """The console script ``name`` installed next to this interpreter, else ``name`` (found on PATH)."""
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def dataset_name(dataset: str) -> str:
    """nnU-Net's dataset folder name for an ID or a name (``4`` -> ``Dataset004_Hippocampus``)."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    return maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else dataset)


def run_logged(cmd: list[str], env: dict, log: Path, echo: Callable[[str], bool], prefix: str = "    ") -> int:
    """Run ``cmd``; append the command line and its output (stdout and stderr) to ``log``, print the output lines
    ``echo`` accepts after ``prefix``; return the exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            fh.write(line)
            if echo(line):
                print(prefix + line.rstrip(), flush=True)
        return proc.wait()
