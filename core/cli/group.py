"""The `next3d` group's handling of what the commands raise."""

from __future__ import annotations

import sys

import click

from ..errors import Next3DError


class Next3DGroup(click.Group):
    """Turns Next3DError into a one-line message and exit code 2 instead of a traceback, and Ctrl-C into a short
    note (what was written, how to resume) and exit code 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Next3DError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            click.echo(f"\n{exc}" if str(exc) else "\nInterrupted.", err=True)
            sys.exit(130)
