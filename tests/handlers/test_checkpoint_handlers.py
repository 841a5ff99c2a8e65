"""latest_checkpoint, ResumeTraining, BestModelSaver and LoadCheckpoint on tiny real Ignite engines."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

from medad_monai.handlers import BestModelSaver, EvaluatorBestMetric, LoadCheckpoint, ResumeTraining, latest_checkpoint


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
