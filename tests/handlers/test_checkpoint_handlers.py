"""latest_checkpoint, ResumeTraining, ResumePointSaver, BestModelSaver, LoadCheckpoint and Provenance on tiny
real Ignite engines; a writer killed in the middle of a save."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from medad_monai.handlers import (
    BestModelSaver,
    CorruptCheckpointError,
    EvaluatorBestMetric,
    LoadCheckpoint,
    Provenance,
    ProvenanceMismatchError,
    ResumePointSaver,
    ResumeTraining,
    latest_checkpoint,
    read_checkpoint,
)


def _trainer(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Engine:
    def step(engine: Engine, batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = model(batch).square().mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    return Engine(step)


def _setup(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer, Engine]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, optimizer, _trainer(model, optimizer)


DATA = [torch.ones(2, 3), torch.full((2, 3), 0.5)]


def test_latest_checkpoint_picks_the_largest_epoch(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for name in ("last_checkpoint_epoch=2.pt", "last_checkpoint_epoch=10.pt", "last_checkpoint_epoch=9.pt",
                 "other_checkpoint_epoch=99.pt", "last_checkpoint_epoch=x.pt", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "last_checkpoint_epoch=10.pt"
    assert latest_checkpoint(tmp_path, prefix="other").name == "other_checkpoint_epoch=99.pt"


def test_resume_training_continues_where_it_stopped(tmp_path):
    model, optimizer, trainer = _setup()
    save_dict = {"trainer": trainer, "model": model, "optimizer": optimizer}
    ResumeTraining(tmp_path, save_dict).attach(trainer)
    CheckpointSaver(str(tmp_path), save_dict, file_prefix="last", save_interval=1, epoch_level=True, n_saved=1).attach(trainer)
    trainer.run(DATA, max_epochs=2)
    assert latest_checkpoint(tmp_path).name == "last_checkpoint_epoch=2.pt"
    uninterrupted, opt_u, trainer_u = _setup()
    trainer_u.run(DATA, max_epochs=3)

    resumed, optimizer_r, trainer_r = _setup(seed=1)  # other initial weights: the checkpoint must replace them
    epochs_run = []
    trainer_r.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    ResumeTraining(tmp_path, {"trainer": trainer_r, "model": resumed, "optimizer": optimizer_r}).attach(trainer_r)
    trainer_r.run(DATA, max_epochs=3)
    assert epochs_run == [3]
    for a, b in zip(resumed.parameters(), uninterrupted.parameters()):
        torch.testing.assert_close(a, b)


def test_resume_training_disabled_or_empty_starts_afresh(tmp_path, caplog):
    model, optimizer, trainer = _setup()
    (tmp_path / "last_checkpoint_epoch=5.pt").write_bytes(b"not a checkpoint")
    epochs_run = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    ResumeTraining(tmp_path, {"trainer": trainer, "model": model}, enabled=False).attach(trainer)
    trainer.run(DATA, max_epochs=2)
    assert epochs_run == [1, 2]
    model, optimizer, trainer = _setup()
    with caplog.at_level(logging.INFO):
        ResumeTraining(tmp_path / "empty", {"trainer": trainer, "model": model}).attach(trainer)
        trainer.run(DATA, max_epochs=1)
    assert "training from scratch" in caplog.text


def test_best_model_saver_writes_only_on_improvement(tmp_path):
    model = torch.nn.Linear(3, 1)
    evaluator = Engine(lambda engine, batch: None)
    metrics = iter([0.5, 0.4, 0.7])

    @evaluator.on(Events.EPOCH_COMPLETED)
    def track(engine: Engine) -> None:  # what MONAI's evaluators do before the handlers run
        value = next(metrics)
        if engine.state.best_metric is None or value > engine.state.best_metric:
            engine.state.best_metric, engine.state.best_metric_epoch = value, engine.state.epoch

    evaluator.state.best_metric, evaluator.state.best_metric_epoch = None, -1
    path = tmp_path / "models" / "model.pt"
    BestModelSaver(path, {"model": model}).attach(evaluator)
    saved_at = []
    for epoch in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        evaluator.run([0], max_epochs=epoch)
        saved_at.append(torch.load(path, weights_only=True)["model"]["weight"][0, 0].item())
    assert saved_at == [1.0, 1.0, 3.0]  # epoch 2 did not improve: epoch 1's weights stay
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary file left
    best = EvaluatorBestMetric(evaluator).state_dict()
    assert best == {"best_metric": 0.7, "best_metric_epoch": 3}


def test_load_checkpoint_names_the_file(tmp_path):
    engine = Engine(lambda e, b: None)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        LoadCheckpoint(str(tmp_path / "nowhere.pt"), {"model": torch.nn.Linear(3, 1)})(engine)
    torch.save({"model": torch.nn.Linear(4, 1).state_dict()}, tmp_path / "other.pt")
    with pytest.raises(RuntimeError, match="other.pt does not fit this configuration"):
        LoadCheckpoint(str(tmp_path / "other.pt"), {"model": torch.nn.Linear(3, 1)})(engine)


def _saved_epochs(folder) -> list[int]:
    return sorted(int(p.name.split("=")[1][:-3]) for p in folder.glob("last_checkpoint_epoch=*.pt"))


def test_resume_point_saver_keeps_the_newest_two_also_of_earlier_runs(tmp_path):
    for epoch in (1, 7):  # left by an earlier run, which MONAI's CheckpointSaver never pruned
        torch.save({"model": {}}, tmp_path / f"last_checkpoint_epoch={epoch}.pt")
    (tmp_path / ".last_checkpoint_epoch=8.pt.999.tmp").write_bytes(b"partial")  # a killed writer's leftover
    model, optimizer, trainer = _setup()
    trainer.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 7))  # as a resumed run would
    ResumePointSaver(tmp_path, {"trainer": trainer, "model": model}, keep=2).attach(trainer)
    trainer.run(DATA, max_epochs=10)
    assert _saved_epochs(tmp_path) == [9, 10]
    assert not list(tmp_path.glob(".*.tmp"))
    assert set(torch.load(tmp_path / "last_checkpoint_epoch=10.pt", weights_only=True)) == {"trainer", "model"}


_KILLED_WRITER = """
import io, sys, time
from pathlib import Path
import torch
from medad_monai.handlers.utils import atomic_write

buffer = io.BytesIO()
torch.save({"model": {"weight": torch.full((256, 256), 2.0)}}, buffer)
data = buffer.getvalue()

def write_half_then_stall(f):  # save_checkpoint's writer, stopped halfway: the parent kills this process
    f.write(data[: len(data) // 2])
    f.flush()
    Path(sys.argv[2]).write_text("writing")
    time.sleep(600)

atomic_write(sys.argv[1], write_half_then_stall)
"""


def test_kill_during_save_leaves_the_previous_resume_point(tmp_path):
    # ResumePointSaver writes with save_checkpoint (atomic_write); a process killed (SIGKILL) in the middle of a
    # write must leave the previous resume point whole and no truncated file under the new name.
    model, optimizer, trainer = _setup()
    save_dict = {"trainer": trainer, "model": model, "optimizer": optimizer}
    ResumePointSaver(tmp_path, save_dict).attach(trainer)
    trainer.run(DATA, max_epochs=1)
    script, marker = tmp_path / "writer.py", tmp_path / "marker"
    script.write_text(_KILLED_WRITER)
    target = tmp_path / "last_checkpoint_epoch=2.pt"
    child = subprocess.Popen([sys.executable, str(script), str(target), str(marker)], cwd=Path(__file__).parents[2])
    try:
        while not marker.exists():
            assert child.poll() is None, "the writer exited before it started writing"
            time.sleep(0.05)
        partial = list(tmp_path.glob(".last_checkpoint_epoch=2.pt.*.tmp"))
        assert partial and partial[0].stat().st_size > 0  # really killed in the middle of writing
    finally:
        child.kill()
        child.wait()
    assert not target.exists() and _saved_epochs(tmp_path) == [1]
    resumed, optimizer_r, trainer_r = _setup(seed=1)
    epochs_run = []
    trainer_r.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    ResumeTraining(tmp_path, {"trainer": trainer_r, "model": resumed, "optimizer": optimizer_r}).attach(trainer_r)
    ResumePointSaver(tmp_path, {"trainer": trainer_r, "model": resumed, "optimizer": optimizer_r}).attach(trainer_r)
    trainer_r.run(DATA, max_epochs=2)
    assert epochs_run == [2] and _saved_epochs(tmp_path) == [1, 2]
    assert not list(tmp_path.glob(".*.tmp"))  # the killed writer's leftover is cleaned up


def test_corrupt_newest_resume_point_is_reported_and_the_previous_used(tmp_path, caplog):
    model, optimizer, trainer = _setup()
    save_dict = {"trainer": trainer, "model": model, "optimizer": optimizer}
    ResumePointSaver(tmp_path, save_dict).attach(trainer)
    trainer.run(DATA, max_epochs=2)
    newest = tmp_path / "last_checkpoint_epoch=2.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn write (saver before this fix)
    resumed, optimizer_r, trainer_r = _setup(seed=1)
    epochs_run = []
    trainer_r.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    ResumeTraining(tmp_path, {"trainer": trainer_r, "model": resumed, "optimizer": optimizer_r}).attach(trainer_r)
    with caplog.at_level(logging.INFO):
        trainer_r.run(DATA, max_epochs=3)
    assert epochs_run == [2, 3]
    assert "last_checkpoint_epoch=2.pt is truncated or corrupt" in caplog.text
    assert "resumed from" in caplog.text and "last_checkpoint_epoch=1.pt" in caplog.text


def test_truncated_model_is_reported_as_corrupt_not_as_another_network(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": torch.nn.Linear(3, 1).state_dict()}, path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CorruptCheckpointError, match="model.pt is truncated or corrupt"):
        LoadCheckpoint(str(path), {"model": torch.nn.Linear(3, 1)})(Engine(lambda e, b: None))
    path.write_bytes(b"")
    with pytest.raises(CorruptCheckpointError, match="0 bytes"):
        read_checkpoint(path)


def test_provenance_is_saved_and_a_mismatch_refused(tmp_path, caplog):
    datalist = tmp_path / "datalist.json"
    datalist.write_text('{"training": []}')
    encoder = torch.nn.Linear(3, 1)
    encoder.weights_source = "random"
    trained = Provenance("mri", {"crop_foreground": False}, (64, 64), encoder, datalist)
    torch.save({"provenance": trained.state_dict(), "model": torch.nn.Linear(3, 1).state_dict()}, tmp_path / "m.pt")
    record = torch.load(tmp_path / "m.pt", weights_only=True)["provenance"]
    assert record["modality"] == "mri" and record["image_size"] == [64, 64] and record["encoder_weights"] == "random"
    assert len(record["datalist_sha256"]) == 64

    def load(provenance: Provenance) -> None:
        LoadCheckpoint(str(tmp_path / "m.pt"), {"provenance": provenance, "model": torch.nn.Linear(3, 1)})(
            Engine(lambda e, b: None)
        )

    load(Provenance("mri", {"crop_foreground": False}, [64, 64]))  # the same configuration (lists or tuples)
    with pytest.raises(ProvenanceMismatchError, match="m.pt was trained with modality 'mri' \\(this run: 'ct'\\)"):
        load(Provenance("ct", {}, (64, 64)))
    with caplog.at_level(logging.WARNING):
        load(Provenance("ct", {}, (64, 64), allow_mismatch=True))
    assert "running anyway" in caplog.text
    datalist.write_text('{"training": [{"image": "other.nii.gz", "label": 0}]}')  # resuming on another datalist
    with pytest.raises(ProvenanceMismatchError, match="datalist_sha256"):
        load(Provenance("mri", {"crop_foreground": False}, (64, 64), datalist=datalist))
    torch.save({"model": torch.nn.Linear(3, 1).state_dict()}, tmp_path / "m.pt")  # written before provenance
    with pytest.raises(RuntimeError, match="does not fit"):
        load(Provenance("ct", {}, (64, 64)))
    LoadCheckpoint(str(tmp_path / "m.pt"), {"provenance": Provenance("ct"), "model": torch.nn.Linear(3, 1)},
                   optional_keys=["provenance"])(Engine(lambda e, b: None))
