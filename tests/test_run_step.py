"""workflow.run_step: how a job script reports a failure (one line on the console, the
traceback in the rule's log, exit code 1)."""

import logging

import pytest

from defaceaudit.errors import ImageError
from defaceaudit.workflow.run_step import run_step


@pytest.fixture(autouse=True)
def _root_handlers():
    """run_step adds handlers to the root logger (the job's log file): close and remove them
    after each test, also when it fails."""
    before = list(logging.getLogger().handlers)
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
        handler.close()


def _broken():
    raise KeyError("voxel_size_mm")


def _bad_input():
    raise ImageError("/d/x.nii.gz: image is empty\n(all voxels 0)")


def test_an_unexpected_error_exits_1_with_one_line_and_the_traceback_in_the_log(tmp_path, capsys):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as stop:
        run_step(str(log), _broken)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "unexpected failure in _broken: KeyError: 'voxel_size_mm'" in err
    assert "Traceback" not in err  # the console keeps the summary
    text = log.read_text()
    assert "unexpected failure in _broken" in text and "Traceback" in text and "_broken" in text


def test_bad_input_exits_1_with_its_message_on_one_line(tmp_path, capsys):
    log = tmp_path / "job.log"
    with pytest.raises(SystemExit) as stop:
        run_step(str(log), _bad_input)
    assert stop.value.code == 1
    line = "/d/x.nii.gz: image is empty (all voxels 0)"
    assert line in capsys.readouterr().err and line in log.read_text()
    assert "Traceback" not in log.read_text()
