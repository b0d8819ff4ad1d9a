"""One-line errors for users' mistakes: no traceback, the file and the reason, exit 1 (data) or 2 (usage)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from defectkit.data.formats import FormatError, UnknownFormatError
from defectkit.data.io import ImageReadError
from defectkit.files import OutputFolderError

P = ParamSpec("P")
R = TypeVar("R")

stderr = Console(stderr=True, highlight=False)

EXIT_BAD_DATA = 1
EXIT_BAD_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class UsageError(ValueError):
    """Arguments that make no sense together (exit status 2)."""


def fail(message: str, code: int = EXIT_BAD_DATA) -> typer.Exit:
    stderr.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def message_of(error: BaseException) -> str:
    """An error's message; a KeyError's without the quotes ``str`` would put around it."""
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a user can cause into one line on stderr and the documented exit status."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if os.environ.get("DEFECTKIT_DEBUG"):
            return command(*args, **kwargs)  # full tracebacks for developers
        try:
            return command(*args, **kwargs)
        except (UsageError, UnknownFormatError, OutputFolderError) as error:
            raise fail(str(error), EXIT_BAD_USAGE) from None
        except (FormatError, ImageReadError) as error:
            raise fail(str(error)) from None
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            raise fail(f"{where}{error.strerror or error}") from None
        except (ValueError, KeyError) as error:
            # Bad content deep inside a file; DEFECTKIT_DEBUG=1 shows where it was raised.
            raise fail(f"{message_of(error)} (set DEFECTKIT_DEBUG=1 for a traceback)") from None

    return wrapper
