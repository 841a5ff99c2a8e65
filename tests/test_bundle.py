"""medad_monai.bundle: a failed bundle run ends with a short summary, the full traceback in the log file."""

from __future__ import annotations

import logging
import sys

import pytest
from monai.bundle import ConfigParser

from medad_monai.bundle import error_summary, report_errors


def _config_error(tmp_path) -> Exception:
    config = {
        "datalist": str(tmp_path / "nowhere.json"),
        "train": {"items": "$medad_monai.data.load_anomaly_datalist(@datalist, 'training')"},
        "run": "$len(@train#items)",
    }
    parser = ConfigParser(config, globals={"medad_monai": "medad_monai"})
    try:
        parser.get_parsed_content("run")
    except Exception as err:
        return err
    raise AssertionError("the config resolved")


def test_summary_names_the_cause_and_the_config_entry(tmp_path):
    summary = error_summary(_config_error(tmp_path), tmp_path / "train.log")
    lines = summary.splitlines()
    assert lines[0] == f"ERROR: FileNotFoundError: datalist_path '{tmp_path / 'nowhere.json'}' is not a file."
    assert lines[1] == "  config entry: 'train#items' (resolving 'run')"
    assert "train.log" in lines[2] and "--debug true" in lines[2] and len(lines) == 3


@pytest.fixture
def restore_hooks():
    hook, root = sys.excepthook, logging.getLogger()
    handlers, formatters = list(root.handlers), [h.formatter for h in root.handlers]
    yield
    sys.excepthook = hook
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler, formatter in zip(handlers, formatters):
        handler.setFormatter(formatter)


def test_uncaught_error_prints_the_summary_and_logs_the_traceback(tmp_path, capsys, restore_hooks):
    err = _config_error(tmp_path)
    console = logging.StreamHandler(sys.stdout)
    logging.getLogger().addHandler(console)
    try:
        report_errors(tmp_path / "logs" / "run.log")
        try:
            raise ValueError("inside an engine")
        except ValueError:
            logging.getLogger("StatsHandler").exception("Exception: inside an engine")  # as MONAI's StatsHandler
        sys.excepthook(type(err), err, err.__traceback__)
    finally:
        logging.getLogger().removeHandler(console)
    captured = capsys.readouterr()
    assert "Exception: inside an engine [ValueError: traceback in the log file]" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert captured.err.strip().startswith("ERROR: FileNotFoundError") and len(captured.err.strip().splitlines()) == 3
    log = (tmp_path / "logs" / "run.log").read_text()
    assert "Traceback" in log and "raise ValueError(\"inside an engine\")" in log and "Failed to evaluate" in log
