"""The warm-started base policies (slow: each is built once per session) and the policy cache."""

import json
import os
import shutil

import pytest
import torch

import data
import pav
from conftest import tiny_llama

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")


def build(tmp_path_factory, task_name, **overrides):
    out = tmp_path_factory.mktemp(task_name)
    cfg = pav.Config(task=task_name, out=str(out), **overrides)
    pav.check_config(cfg)
    assert cfg.out == str(out)
    task = data.get_task(task_name)
    model, tokenizer = pav.load_or_build_policy(task, cfg, CPU)
    return task, cfg, model, tokenizer


@pytest.fixture(scope="module")
def arith_policy(tmp_path_factory):
    return build(tmp_path_factory, "arith")


@pytest.fixture(scope="module")
def planted_policy(tmp_path_factory):
    return build(tmp_path_factory, "planted", eval_problems=2048)       # 16,384 held-out samples


def test_arith_accuracy_in_range(arith_policy):
    task, cfg, model, tokenizer = arith_policy
    assert not model.training
    pav.seed_everything(0)
    problems = pav.eval_problems(task, cfg)
    assert len(problems) == 512
    acc = pav.accuracy(model, task, tokenizer, problems, cfg)             # temperature 1
    assert 0.05 <= acc <= 0.30, acc


def test_planted_accuracy_low_but_not_zero(planted_policy):
    task, cfg, model, tokenizer = planted_policy
    pav.seed_everything(0)
    problems = pav.eval_problems(task, cfg)
    assert len(problems) == 16_384
    acc = pav.accuracy(model, task, tokenizer, problems, cfg)
    assert 0 < acc < 0.05, acc


def test_cached_policy_is_loaded_not_rebuilt(planted_policy, monkeypatch, capsys):
    task, cfg, model, tokenizer = planted_policy
    monkeypatch.setattr(pav, "warm_start", lambda *a, **k: pytest.fail("rebuilt a cached policy"))
    again, tok = pav.load_or_build_policy(task, cfg, CPU)
    assert capsys.readouterr().out.startswith("loading the base policy from")
    assert not again.training and tok.chars == tokenizer.chars
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in again.state_dict().items())
    with open(os.path.join(cfg.out, "policy", "settings.json")) as f:
        assert json.load(f) == pav.policy_settings(task, cfg)


def test_changed_settings_rebuild(planted_policy, tmp_path, monkeypatch, capsys):
    task, cfg, _, _ = planted_policy
    shutil.copytree(os.path.join(cfg.out, "policy"), tmp_path / "policy")
    built = []

    def fake_warm_start(task, tokenizer, cfg, device):
        built.append(cfg.seed)
        return tiny_llama(len(tokenizer), hidden=16, layers=1)

    monkeypatch.setattr(pav, "warm_start", fake_warm_start)
    for field, value in [("seed", 1), ("d_model", 64), ("n_layers", 2), ("sft_lr", 1e-3), ("sft_batch", 32)]:
        changed = pav.Config(task="planted", out=str(tmp_path), **{field: value})
        assert pav.policy_settings(task, changed) != pav.policy_settings(task, cfg), field
    changed = pav.Config(task="planted", out=str(tmp_path), seed=1)
    pav.load_or_build_policy(task, changed, CPU)
    assert built == [1] and capsys.readouterr().out.startswith("building the base policy")
    with open(tmp_path / "policy" / "settings.json") as f:
        assert json.load(f) == pav.policy_settings(task, changed)
    assert pav.policy_settings(data.Planted(target=(1, 2, 3, 4, 5)), cfg) != pav.policy_settings(task, cfg)
    assert pav.policy_settings(data.Arith(p_err=0.2), cfg) != pav.policy_settings(data.Arith(), cfg)


@pytest.mark.xfail(strict=True, reason="policy_settings omits eval_problems, but the arith warm start excludes "
                                       "only the eval problems of the run that built it")
def test_eval_problems_never_trained_on_by_a_reused_policy(monkeypatch):
    """Build with --eval-problems 512, evaluate later with 2048: the cached policy must not have seen any of them."""
    task = data.Arith()
    trained = []
    monkeypatch.setattr(pav, "sft", lambda model, tok, pairs, **kw: trained.extend(p for p, _ in pairs))
    small, big = pav.Config(task="arith", eval_problems=512), pav.Config(task="arith", eval_problems=2048)
    pav.warm_start(task, task.tokenizer, small, CPU)
    trained = set(trained)
    assert not any(p.prompt in trained for p in pav.eval_problems(task, small))
    reused = pav.policy_settings(task, small) == pav.policy_settings(task, big)
    assert not (reused and any(p.prompt in trained for p in pav.eval_problems(task, big)))
