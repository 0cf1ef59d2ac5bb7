"""Glue for workflow_scripts/: route logging to the rule's log, report errors in one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from defaceaudit.allocator import keep_freed_memory
from defaceaudit.errors import DefaceAuditError


def run_step(log_file: str | None, func: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``func(**kwargs)`` with logging into ``log_file``.

    A :class:`DefaceAuditError` (bad input) ends the process with exit code 1 and its one-line
    message on stderr and in the log; anything else ends it with exit code 1 too, its one-line
    summary on stderr and in the log and its traceback in the log only (stderr, without a log).
    The job's allocator keeps freed memory for reuse
    (:func:`defaceaudit.allocator.keep_freed_memory`).
    """
    keep_freed_memory()
    console = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [console]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="w"))
        # the traceback goes to the log; the console keeps the one-line summary
        console.addFilter(lambda record: not record.exc_info)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    try:
        return func(**kwargs)
    except DefaceAuditError as err:
        logging.getLogger("defaceaudit").error("%s", " ".join(str(err).split()))
        sys.exit(1)
    except Exception as err:
        logger = logging.getLogger("defaceaudit")
        one_line = " ".join(f"{type(err).__name__}: {err}".split())
        logger.error("unexpected failure in %s: %s", func.__name__, one_line)
        logger.info("traceback follows", exc_info=True)
        sys.exit(1)
