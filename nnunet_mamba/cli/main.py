"""``nnunet-mamba``: what the stock nnU-Net CLI lacks (doctor, demo, convert, ...)."""
from __future__ import annotations

import argparse
import sys

from . import (check_input, compare, convert, demo, doctor, import_checkpoint, plan, predict_class, restore, submit,
               transfer, zoo)


def build_parser() -> argparse.ArgumentParser:
    from nnunet_mamba import __version__
    parser = argparse.ArgumentParser(prog="nnunet-mamba", description=__doc__)
    parser.add_argument("--version", action="version", version=f"nnunet-mamba {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (doctor, demo, convert, plan, submit, predict_class, transfer, restore, check_input,
                   import_checkpoint, zoo, compare):
        module.add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        print(f"nnunet-mamba {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # read-only file system, disk full, permission denied, ...: one line naming the path
        where = f"{e.filename}: " if e.filename else ""
        print(f"nnunet-mamba {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
