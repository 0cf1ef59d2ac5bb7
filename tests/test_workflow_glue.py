"""What the Snakefile does to Snakemake's process (defaceaudit.workflow.run_step)."""

import importlib

from defaceaudit.workflow.snakemake_hooks import URI_PARSING_MODULES, memoize_uri_parsing


def test_uri_parsing_is_memoised_once_and_answers_as_before():
    from snakemake.common import parse_uri

    memoize_uri_parsing()
    assert memoize_uri_parsing() == []  # a second call changes nothing
    path = "/work/workflow_scripts/deface_native.py"
    for name in URI_PARSING_MODULES:
        memoised = importlib.import_module(name).parse_uri
        assert memoised.cache_info().maxsize > 0
        first = memoised(path)
        assert memoised(path) is first  # parsed once
        assert tuple(first) == tuple(parse_uri(path))  # what Snakemake's own returns
        assert (first.scheme, first.uri_path) == ("file", path)
