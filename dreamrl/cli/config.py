"""``dreamrl config``: print the resolved config (with each field's meaning on
``--docs``), or the whole reference as markdown (``--markdown``, docs/config.md)."""

from __future__ import annotations

import argparse
from typing import Any

from dreamrl import config as cfglib
from dreamrl.cli.common import config_args, resolve


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "config", help="print the resolved config and each field's meaning"
    )
    p.add_argument("--docs", action="store_true", help="include each field's description")
    p.add_argument("--markdown", action="store_true", help="print the reference as a markdown table")
    config_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        from dreamrl.config_reference import config_reference

        print(config_reference(), end="")
        return 0
    config = resolve(args)
    docs = cfglib.field_docs()
    for path, value in cfglib.flatten(config).items():
        line = f"{path} = {value!r}"
        print(f"{line:<48} # {docs[path]}" if args.docs else line)
    return 0
