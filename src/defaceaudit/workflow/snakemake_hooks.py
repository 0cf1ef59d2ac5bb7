"""What the Snakefile changes in its own Snakemake process, so that a large DAG is built and run
faster: garbage collection, workflow source path parsing, cached function signatures and the
scheduler (:mod:`defaceaudit.workflow.scheduler_patch`).

The Snakefile makes one call, :func:`install_hooks`, at its top; after its includes it passes its
globals to :func:`cache_signatures` and its ``onstart`` calls :func:`resume_full_collections`.
``DEFACEAUDIT_SNAKEMAKE_HOOKS=0`` in the environment turns all of it off (Snakemake runs exactly
as it ships); ``DEFACEAUDIT_SCHEDULER_PATCH=0`` turns off the scheduler patch alone.
Nothing here changes what is built, only how fast.
"""

from __future__ import annotations

import atexit
import gc
import inspect
import os
import types
from collections.abc import Mapping

from defaceaudit.workflow.scheduler_patch import bound_scheduler_work

#: environment variable: ``0`` (or ``false``, ``no``, ``off``) leaves Snakemake as it ships
OPT_OUT = "DEFACEAUDIT_SNAKEMAKE_HOOKS"


def hooks_opted_out() -> bool:
    """Whether :data:`OPT_OUT` turns the hooks off."""
    return os.environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off")


def install_hooks() -> list[str]:
    """Install every hook that can be installed before the rules are read; returns their names
    (none when :data:`OPT_OUT` says so). Calling it again changes nothing."""
    if hooks_opted_out():
        return []
    defer_full_collections()
    installed = ["defer_full_collections"]
    if memoize_uri_parsing() or _uri_parsing_memoized():
        installed.append("memoize_uri_parsing")
    if bound_scheduler_work():
        installed.append("bound_scheduler_work")
    return installed


def _uri_parsing_memoized() -> bool:
    import sys

    return any(
        hasattr(getattr(sys.modules.get(name), "parse_uri", None), "cache_info")
        for name in URI_PARSING_MODULES
    )


#: Python's collection thresholds when this module was imported (the interpreter's defaults)
DEFAULT_GC_THRESHOLDS = gc.get_threshold()
#: a generation-2 threshold never reached: no full collection while the DAG is built
NO_FULL_COLLECTION = 10**9


def defer_full_collections() -> None:
    """Make a Snakemake process that builds a large DAG spend less time collecting garbage.

    Building the DAG creates millions of long-lived objects in reference cycles (jobs, rules,
    files). CPython's full (generation-2) collections rescan all of them each time the number
    of long-lived objects has grown by a quarter, and at exit the interpreter frees them one by
    one: at the paper's scale (tests/configs/paper_scale.yaml, 664 subjects, 14,664 jobs) the
    two took a quarter of a dry-run (41.0 s of CPU before, 30.5 s after). Here full
    collections are postponed (young collections go on: little garbage lives long enough to
    need a full one, and peak memory is unchanged) until :func:`resume_full_collections` (the
    Snakefile's ``onstart``, after the DAG is built; Snakemake runs no ``onstart`` for a
    dry-run or with ``--no-hooks``), and the objects alive at exit are frozen
    (:func:`gc.freeze`), so the final collection skips them and the operating system reclaims
    their memory at once.
    """
    gc.set_threshold(DEFAULT_GC_THRESHOLDS[0], DEFAULT_GC_THRESHOLDS[1], NO_FULL_COLLECTION)
    atexit.unregister(gc.freeze)  # once, however often the Snakefile is read in this process
    atexit.register(gc.freeze)


def resume_full_collections() -> None:
    """The default thresholds again, with the DAG's objects frozen: later full collections of
    the run skip them (they live until the process ends). Nothing with the hooks off."""
    if hooks_opted_out():
        return
    gc.freeze()
    gc.set_threshold(*DEFAULT_GC_THRESHOLDS)


def cache_signatures(namespace: Mapping[str, object]) -> list[str]:
    """Look up once the parameters of each function defined in the workflow files (Snakefile,
    rules/*.smk) and of each method of a :class:`~defaceaudit.workflow.jobs.RunJobs` that
    ``namespace`` (the Snakefile's globals) holds; returns their names.

    Snakemake calls :func:`inspect.signature` on an input, params or resources function each
    time it calls it (to pass only the arguments the function takes): twice per call, 2-5 % of
    a paper-scale dry-run. It skips that for a function whose parameters were stored
    with ``snakemake.common.overwrite_function_params`` (as its own ``subpath``,
    ``prepend_param`` and ``as_py_module`` helpers do). A Snakemake without that function
    leaves everything as it was.
    """
    if hooks_opted_out():
        return []
    try:
        from snakemake.common import overwrite_function_params
    except ImportError:  # pragma: no cover - a Snakemake version without the hook
        return []
    from defaceaudit.workflow.jobs import RunJobs

    names = []
    for name, obj in namespace.items():
        if isinstance(obj, types.FunctionType) and _in_workflow_file(obj):
            overwrite_function_params(obj, inspect.signature(obj).parameters)
            names.append(name)
        elif isinstance(obj, RunJobs):
            # a bound method reads attributes from its function: store the bound signature
            for method_name, method in inspect.getmembers(obj, inspect.ismethod):
                if not method_name.startswith("_"):
                    overwrite_function_params(method.__func__, inspect.signature(method).parameters)
                    names.append(f"{name}.{method_name}")
    return names


def _in_workflow_file(func: types.FunctionType) -> bool:
    filename = os.path.basename(func.__code__.co_filename)
    return filename == "Snakefile" or filename.endswith(".smk")


#: Snakemake modules that parse workflow source paths with ``snakemake.common.parse_uri``
URI_PARSING_MODULES = ("snakemake.sourcecache", "snakemake.deployment.conda")
#: distinct paths remembered (a workflow has a few dozen scripts and environment files)
URI_CACHE_SIZE = 1024


def memoize_uri_parsing() -> list[str]:
    """Parse each workflow source path once per process, not once per job; returns the
    modules changed.

    For every job that runs a script or names a conda environment, Snakemake's source cache parses
    the file's path as a URI (``snakemake.common.parse_uri``, through smart_open, which builds a new
    namedtuple class at every call): at the paper's scale about 34,000 parses of a dozen distinct
    paths, about 6 % of a dry-run's CPU (alternating runs at 664 subjects, user CPU seconds: 20.5,
    20.8, 20.1 before; 20.0, 18.8, 18.4 after). ``parse_uri`` depends on its string argument only
    and returns an immutable namedtuple, so the name is rebound, in the modules of
    :data:`URI_PARSING_MODULES` that import it, to a memoised copy (:func:`functools.lru_cache`). A
    module without that name is left as it was; calling this again changes nothing.
    """
    import functools
    import importlib

    changed = []
    for name in URI_PARSING_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:  # pragma: no cover - a Snakemake without that module
            continue
        parse = getattr(module, "parse_uri", None)
        if parse is None or hasattr(parse, "cache_info"):
            continue
        module.parse_uri = functools.lru_cache(maxsize=URI_CACHE_SIZE)(parse)
        changed.append(name)
    return changed
