"""The command lines' error convention: one `error: ...` line on stderr, exit status 2 or 1.

argparse prints its whole usage banner before a bad flag's message; for commands with thirty
flags that buries the one line that matters. `ArgumentParser` here prints the message alone,
with where to find the usage.
"""

from __future__ import annotations

import argparse
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose errors are one line: `error: <message> (see --help)`."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (`{self.prog} --help` lists the options)\n")


def worker_message(error: BaseException) -> str:
    """The message of an error, unwrapped when a DataLoader worker process raised it.

    torch re-raises a worker's exception in the main process with a message of several lines
    (`Caught DataError in DataLoader worker process 0.`, `Original Traceback ...`, and last
    `dataloader.DataError: <message>`); the user needs that last message only.
    """
    text = str(error)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        _, sep, message = last.partition(": ")
        return message if sep else last
    return text
