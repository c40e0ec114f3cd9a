"""The `next3d` group's handling of what the commands raise."""

from __future__ import annotations

import sys

import click

from ..errors import Next3DError


class Next3DGroup(click.Group):
    """Turns Next3DError and a command's usage errors into a one-line message and exit code 2 instead of a
    traceback or click's four-line usage block, and Ctrl-C into a short note (what was written, how to resume) and
    exit code 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Next3DError as exc:
            click.echo(f"error: {_one_line(str(exc))}", err=True)
            sys.exit(2)
        except click.UsageError as exc:  # bad options, and files refused with click.BadParameter
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            click.echo(f"error: {_one_line(exc.format_message())} (see '{where} --help')", err=True)
            sys.exit(exc.exit_code)
        except (MemoryError, RuntimeError) as exc:
            # Loaders name the file that did not fit; this is what is left: an allocation failing mid-work.
            if not (isinstance(exc, MemoryError) or "can't allocate memory" in str(exc)
                    or type(exc).__name__ == "OutOfMemoryError"):
                raise
            click.echo("error: out of memory; close other programs, or use a smaller --batch, --resolution or "
                       "model.", err=True)
            sys.exit(2)
        except KeyboardInterrupt as exc:
            click.echo(f"\n{exc}" if str(exc) else "\nInterrupted.", err=True)
            sys.exit(130)


def _one_line(text: str) -> str:
    return " ".join(text.split())
