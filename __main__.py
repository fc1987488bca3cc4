"""Command line of the pack: ``python -m diffportrait3d <command> ...`` (``--help`` lists the commands)."""

from __future__ import annotations

import argparse
import logging
import sys


def _add_convert(commands) -> None:
    parser = commands.add_parser(
        "convert",
        help="convert the official model_state-540000-001.th into per-component safetensors files",
        description="Split the official DiffPortrait3D checkpoint into safetensors files for ComfyUI "
        "(UNet, appearance net, pose ControlNet, cross-view modules, VAE and text encoder when present).",
    )
    parser.add_argument("src", help="official checkpoint (.th/.pt/.ckpt, loaded with weights_only=True) or .safetensors")
    parser.add_argument("--out", required=True, help="output folder, e.g. ComfyUI/models/diffportrait3d")
    parser.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16", help="dtype of stored weights")
    parser.add_argument("--config", help="architecture JSON (default: the official yaml's)")
    parser.add_argument(
        "--only", nargs="+", metavar="COMPONENT", help="write only these components (default: every one present)"
    )
    parser.set_defaults(run=_run_convert)


def _run_convert(options) -> int:
    from .kernels.checkpoint_convert import ConversionError, convert_checkpoint

    try:
        report = convert_checkpoint(
            options.src,
            options.out,
            dtype=options.dtype,
            config_path=options.config,
            components=tuple(options.only) if options.only else None,
        )
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


COMMANDS = [_add_convert]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m diffportrait3d", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return options.run(options)


if __name__ == "__main__":
    sys.exit(main())
