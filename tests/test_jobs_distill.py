"""The distill, experts and evaluate jobs driven directly (no argv), on the synthetic data:
what a run stores, exact resumption, refusals that leave the database as it was, and requests
refused where they are built."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from ddsem.errors import UserError
from ddsem.jobs import Recorder
from ddsem.jobs import distill as distill_job
from ddsem.jobs import evaluate as evaluate_job
from ddsem.jobs import experts as experts_job
from ddsem.jobs.distill import DistillRequest
from ddsem.jobs.evaluate import EvaluateRequest
from ddsem.jobs.experts import ExpertsRequest


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dm(synthetic, **kw) -> DistillRequest:
    """A tiny DM run: width 8, one image per class, 4 real images per class and iteration."""
    base = {"ipc": 1, "width": 8, "iterations": 4, "batch_real": 4, "checkpoint_every": 2}
    return DistillRequest("dm", data=synthetic, **{**base, **kw})


def rows(tmp_path) -> dict[str, list]:
    con = sqlite3.connect(tmp_path / "jobs.db")
    try:
        names = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        return {n: con.execute(f"select * from {n}").fetchall() for n in names}
    finally:
        con.close()


def tensors(ws, name: str) -> tuple[np.ndarray, np.ndarray]:
    from ddsem.db.sets import find_set, set_tensors

    return set_tensors(ws.db, find_set(ws.db, name).id)


class StopAt(Recorder):
    """Progress that raises KeyboardInterrupt once ``at`` steps are advanced (a Ctrl-C)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    @contextmanager
    def phase(self, description: str, total: int):
        with super().phase(description, total) as advance:
            done = 0

            def interrupting(n: int = 1) -> None:
                nonlocal done
                advance(n)
                done += n
                if done >= self.at:
                    raise KeyboardInterrupt

            yield interrupting


# -- distill --------------------------------------------------------------------------------------


def test_dm_run_stores_a_set_with_its_provenance(workspace, synthetic):
    result = distill_job.run(workspace, dm(synthetic, seed=3))
    assert result.finished and result.iteration == 4 and result.resumed_from is None
    s = result.summary
    assert (s.name, s.method, s.ipc, s.num_images) == ("dm-ipc1", "dm", 1, 10)
    assert result.as_json() == s.as_json() and result.as_json()["name"] == "dm-ipc1"
    prov = s.provenance
    assert prov["method"] == "dm" and prov["iterations"] == 4 and prov["seed"] == 3
    assert prov["config"]["params"]["batch_real"] == 4 and prov["config"]["model"]["width"] == 8
    assert prov["data_source"] == synthetic.source and prov["device"] == "cpu"
    assert len(prov["init_real_indices"]) == 10 and np.isfinite(prov["final_loss"])
    images, labels = tensors(workspace, "dm-ipc1")
    assert images.shape == (10, 3, 32, 32) and list(labels) == list(range(10))
    assert workspace.progress.phases == [("distill dm ipc 1", 4, 4)]


def test_stop_after_then_resume_equals_an_uninterrupted_run(workspace, synthetic):
    straight = distill_job.run(workspace, dm(synthetic, iterations=5, name="straight"))
    stopped = distill_job.run(workspace, dm(synthetic, iterations=5, name="resumed", stop_after=2))
    assert not stopped.finished and stopped.iteration == 2 and stopped.summary is None
    assert stopped.as_json() == {
        "set": "resumed", "method": "dm", "finished": False, "iteration": 2, "iterations": 5,
    }  # fmt: skip
    resumed = distill_job.run(workspace, dm(synthetic, iterations=5, name="resumed", resume=True))
    assert resumed.finished and resumed.resumed_from == 2 and resumed.iteration == 5
    assert "resuming dm run for 'resumed' at iteration 2 of 5" in workspace.progress.notes
    a, b = tensors(workspace, "straight"), tensors(workspace, "resumed")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert straight.summary.provenance["final_loss"] == resumed.summary.provenance["final_loss"]


def test_an_interrupted_run_resumes_from_its_last_checkpoint(workspace, synthetic):
    distill_job.run(workspace, dm(synthetic, iterations=5, name="straight"))
    workspace.progress = StopAt(3)  # checkpoints at 2 and 4: a Ctrl-C after step 3 keeps 2
    with pytest.raises(KeyboardInterrupt):
        distill_job.run(workspace, dm(synthetic, iterations=5, name="crashed"))
    workspace.progress = Recorder()
    plan = distill_job.plan(workspace, dm(synthetic, iterations=5, name="crashed", resume=True))
    assert plan.start == 2
    distill_job.run(workspace, dm(synthetic, iterations=5, name="crashed", resume=True))
    assert workspace.progress.phases == [("distill dm ipc 1", 3, 3)]
    assert np.array_equal(tensors(workspace, "straight")[0], tensors(workspace, "crashed")[0])


def test_an_existing_set_is_refused_without_overwrite(workspace, synthetic, tmp_path):
    first = distill_job.run(workspace, dm(synthetic))
    before = rows(tmp_path)
    with pytest.raises(UserError, match="a distilled set named 'dm-ipc1' exists"):
        distill_job.run(workspace, dm(synthetic, seed=1))
    assert rows(tmp_path) == before
    again = distill_job.run(workspace, dm(synthetic, seed=1, overwrite=True))
    assert again.summary.provenance["seed"] == 1
    assert again.summary.provenance["distill_run_id"] != first.summary.provenance["distill_run_id"]
    assert len(rows(tmp_path)["distilledset"]) == 1


def test_a_diverged_distillation_stores_no_set(workspace, synthetic, tmp_path):
    """Images that are not finite (found when a shrunken TM run blew up) are refused before
    they become a set that every later job would fail on; --overwrite starts again."""
    with pytest.raises(UserError, match="diverged: its images are not finite"):
        distill_job.run(workspace, dm(synthetic, lr_img=1e30))
    assert rows(tmp_path)["distilledset"] == []
    again = distill_job.run(workspace, dm(synthetic, overwrite=True))
    assert np.isfinite(tensors(workspace, "dm-ipc1")[0]).all() and again.summary is not None


def test_resume_with_a_different_config_is_refused_naming_the_difference(
    workspace, synthetic, tmp_path
):
    distill_job.run(workspace, dm(synthetic, stop_after=1))
    before = rows(tmp_path)
    with pytest.raises(UserError, match=r"different configuration.*params\.iterations 4 -> 5"):
        distill_job.run(workspace, dm(synthetic, iterations=5, resume=True))
    with pytest.raises(UserError, match="stopped at iteration 1: pass --resume"):
        distill_job.run(workspace, dm(synthetic))
    with pytest.raises(UserError, match="nothing to resume"):
        distill_job.plan(workspace, dm(synthetic, name="other", resume=True))
    assert rows(tmp_path) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": None}, "name a method: --method dm|gm|tm|bptt"),
        ({"method": "kip"}, "unknown distillation method 'kip'"),
        ({"ipc": 0}, "--ipc must be a positive number, got 0"),
        ({"width": -1}, "--width must be a positive number, got -1"),
        ({"lr_img": 0.0}, "--lr-img must be positive, got 0.0"),
        ({"init": "zeros"}, "unknown initialisation 'zeros': use one of real, noise, xavier"),
        ({"params": (("syn_steps", "3"),)}, "dm has no parameter 'syn_steps'; its parameters"),
        ({"params": (("batch_real", "many"),)}, "--param batch_real needs a int, got 'many'"),
        ({"params": {"lr_img": -1.0}}, "--param lr_img must not be negative"),
        ({"params": {"iterations": 0}}, "--param iterations must be at least 1, got 0"),
        ({"method": "tm", "batch_real": 4}, "--batch-real does not apply to method tm"),
    ],
)
def test_bad_requests_are_refused_where_they_are_built(synthetic, kwargs, message):
    args = {"method": "dm", "data": synthetic, **kwargs}
    with pytest.raises(UserError, match=message.replace("|", r"\|").replace("(", r"\(")):
        DistillRequest(**args)


def test_param_text_is_split_then_typed_by_the_config_field():
    assert distill_job.parse_params(["syn-steps=10", "lr_lr = 1e-6"]) == (
        ("syn_steps", "10"),
        ("lr_lr", "1e-6"),
    )
    with pytest.raises(UserError, match="--param takes KEY=VALUE, got 'syn_steps'"):
        distill_job.parse_params(["syn_steps"])
    params = (
        ("syn_steps", "10"),
        ("lr_lr", "1e-6"),
        ("batch_syn", "none"),
        ("dsa_strategy", "flip"),
    )
    r = DistillRequest("TM", params=params)
    assert r.method == "tm" and r.set_name == "tm-ipc10"
    assert dict(r.params) == {
        "syn_steps": 10,
        "lr_lr": 1e-6,
        "batch_syn": None,
        "dsa_strategy": "flip",
    }
    assert DistillRequest("dm", params={"batch_real": 4}).params == (("batch_real", 4),)


def test_plan_refuses_what_the_data_or_the_database_cannot_give(workspace, synthetic, tmp_path):
    before = rows(tmp_path)
    with pytest.raises(UserError, match="--ipc 21 is more than class 'airplane' has \\(20 real"):
        distill_job.plan(workspace, dm(synthetic, ipc=21))
    with pytest.raises(UserError, match="unknown augmentation"):
        distill_job.plan(workspace, dm(synthetic, params={"dsa_strategy": "color_blur"}))
    with pytest.raises(UserError, match="make them first with `ddsem distill experts --width 8"):
        distill_job.plan(workspace, DistillRequest("tm", ipc=1, width=8, data=synthetic))
    assert rows(tmp_path) == before


# -- experts --------------------------------------------------------------------------------------


def test_experts_job_adds_only_missing_experts_and_tm_draws_from_them(workspace, synthetic):
    small = {"width": 8, "epochs": 2, "batch_size": 64, "test_limit": 50, "data": synthetic}
    one = experts_job.run(workspace, ExpertsRequest(num_experts=1, **small))
    assert one.trained == (0,) and one.stored == 1 and 0.0 <= one.mean_accuracy <= 1.0
    two = experts_job.run(workspace, ExpertsRequest(num_experts=2, **small))
    assert two.trained == (1,) and two.stored == 2 and two.pool == one.pool
    assert workspace.progress.phases[-1] == ("experts (1 x 2 epochs)", 2, 2)
    plan = experts_job.plan(workspace, ExpertsRequest(num_experts=2, **small))
    assert plan.have == (0, 1) and plan.todo == ()
    again = experts_job.run(workspace, ExpertsRequest(num_experts=2, **small))
    assert again.trained == () and again.stored == 2 and len(workspace.progress.phases) == 2
    assert again.as_json()["experts"] == 2 and again.as_json()["trained"] == []

    short = {"syn_steps": 2, "max_start_epoch": 5}
    with pytest.raises(UserError, match="the experts were trained for 2 epochs; this run needs"):
        distill_job.plan(
            workspace, DistillRequest("tm", ipc=1, width=8, data=synthetic, params=short)
        )
    tm = DistillRequest(
        "tm", ipc=1, width=8, iterations=3, data=synthetic,
        params={"syn_steps": 2, "max_start_epoch": 1, "expert_epochs": 1},
    )  # fmt: skip
    result = distill_job.run(workspace, tm)
    assert result.finished and result.synthetic_lr is not None and result.synthetic_lr != 0.01
    assert result.summary.provenance["experts"] == {"pool": one.pool, "count": 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_experts": 0}, "--num-experts must be a positive number, got 0"),
        ({"epochs": 0}, "--epochs must be a positive number, got 0"),
        ({"lr": 0.0}, "--lr must be positive, got 0.0"),
        ({"test_limit": 0}, "--test-limit must be a positive number, got 0"),
    ],
)
def test_bad_experts_requests_are_refused(kwargs, message):
    with pytest.raises(UserError, match=message):
        ExpertsRequest(**kwargs)


# -- evaluate -------------------------------------------------------------------------------------


def test_evaluate_stores_each_unit_and_a_rerun_trains_nothing(workspace, synthetic, tmp_path):
    distill_job.run(workspace, dm(synthetic))
    small = {"set_name": "dm-ipc1", "runs": 1, "width": 8, "test_limit": 50, "data": synthetic}
    paper = evaluate_job.run(workspace, EvaluateRequest(protocols=("paper",), **small))
    assert paper.trained == 1 and paper.test_images == 50
    both = EvaluateRequest(protocols=("paper", "DC"), **small)
    plan = evaluate_job.plan(workspace, both)
    assert [(u.arch, u.protocol) for u in plan.missing] == [("convnet", "dc")]
    first = evaluate_job.run(workspace, both)
    assert first.trained == 1
    out = first.as_json()
    assert set(out) == {"set", "method", "runs", "test_images", "results"}
    assert (out["set"], out["method"], out["runs"], out["test_images"]) == ("dm-ipc1", "dm", 1, 50)
    assert [(r["arch"], r["protocol"]) for r in out["results"]] == [
        ("convnet", "paper"),
        ("convnet", "dc"),
    ]
    for r in out["results"]:
        assert len(r["accuracies"]) == 1 and 0.0 <= r["mean"] <= 1.0
        assert r["std"] == pytest.approx(float(np.std(r["accuracies"])))
    assert out["results"][0] == {
        "arch": "convnet",
        "protocol": "paper",
        **paper.results[("convnet", "paper")],
    }
    before = rows(tmp_path)
    again = evaluate_job.run(workspace, both)
    assert again.trained == 0 and again.as_json() == out
    assert workspace.progress.phases[-1] == ("evaluate dm-ipc1", 0, 0)
    assert rows(tmp_path) == before


def test_evaluate_refusals(workspace, synthetic, tmp_path):
    with pytest.raises(UserError, match="--arch is empty"):
        EvaluateRequest(archs=(" ",))
    with pytest.raises(UserError, match="unknown evaluation protocol 'x': use paper, dc"):
        EvaluateRequest(protocols=("paper", "x"))
    with pytest.raises(UserError, match="--runs must be a positive number, got 0"):
        EvaluateRequest(runs=0)
    with pytest.raises(UserError, match="no distilled set yet"):
        evaluate_job.plan(workspace, EvaluateRequest(data=synthetic))
    distill_job.run(workspace, dm(synthetic))
    before = rows(tmp_path)
    with pytest.raises(UserError, match="unknown architecture 'lenet5'"):
        evaluate_job.run(workspace, EvaluateRequest(archs=("convnet", "lenet5"), data=synthetic))
    with pytest.raises(UserError, match="no distilled set named 'nope'"):
        evaluate_job.run(workspace, EvaluateRequest(set_name="nope", data=synthetic))
    assert rows(tmp_path) == before
