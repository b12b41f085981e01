"""``alp`` subcommands: one module each, with ``register(subparsers)``."""

import argparse


def tcp_port(text: str) -> int:
    """An argparse type: a TCP port, 1-65535 (argparse says which flag got what)."""
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port, 1-65535, got {value}")
    return value
