"""The warm-started base policies (slow: each is built once per session), the policy cache, and the fixed
train/test split of arith problems."""

import json
import os
import random
import shutil
import zlib

import pytest
import torch

import data
import pav
from conftest import tiny_llama

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


@pytest.mark.slow
def test_arith_accuracy_in_range(arith_policy):
    task, cfg, model, tokenizer = arith_policy
    assert not model.training
    problems = pav.eval_problems(task, cfg)
    assert len(problems) == 512
    acc = pav.accuracy(model, task, tokenizer, problems, cfg, generator=pav.generator("eval", 0))   # temperature 1
    assert 0.05 <= acc <= 0.30, acc


@pytest.mark.slow
def test_planted_policy_learned_its_demonstrations_first_token_and_rarely_succeeds(planted_policy):
    """The first token follows the gamma = 3 demonstrations (3 of 17 on the target's first token, 1 of 17 elsewhere;
    uniform is 0.11 away in total variation); the target itself is found about once in 100,000 samples (README)."""
    task, cfg, model, tokenizer = planted_policy
    ids = torch.tensor([data.prompt_ids(tokenizer, task.problems(1, random.Random(0))[0])])
    with torch.no_grad():
        p = model(input_ids=ids).logits[0, -1, :task.n_tokens].softmax(-1).double()         # (15,)
    assert (p - task.prover_probs(task.demo_gamma)[0]).abs().sum() / 2 < 0.06
    problems = pav.eval_problems(task, cfg)
    assert len(problems) == 16_384
    acc = pav.accuracy(model, task, tokenizer, problems, cfg, generator=pav.generator("eval", 0))
    assert acc < 0.005, acc


@pytest.mark.slow
def test_cached_policy_is_loaded_not_rebuilt(planted_policy, monkeypatch, capsys):
    task, cfg, model, tokenizer = planted_policy
    monkeypatch.setattr(pav, "warm_start", lambda *a, **k: pytest.fail("rebuilt a cached policy"))
    again, tok = pav.load_or_build_policy(task, cfg, CPU)
    assert capsys.readouterr().out.startswith("loading the base policy from")
    assert not again.training and tok.chars == tokenizer.chars
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in again.state_dict().items())
    with open(os.path.join(pav.seed_dir(cfg), "policy", "settings.json")) as f:
        assert json.load(f) == pav.policy_settings(task, cfg)


@pytest.mark.slow
def test_changed_settings_rebuild(planted_policy, tmp_path, monkeypatch, capsys):
    task, cfg, _, _ = planted_policy
    shutil.copytree(os.path.join(pav.seed_dir(cfg), "policy"), tmp_path / "seed1" / "policy")   # another seed's
    built = []

    def fake_warm_start(task, tokenizer, cfg, device):
        built.append(cfg.seed)
        return tiny_llama(len(tokenizer), hidden=16, layers=1), None

    monkeypatch.setattr(pav, "warm_start", fake_warm_start)
    for field, value in [("seed", 1), ("d_model", 64), ("n_layers", 2)]:
        changed = pav.Config(task="planted", out=str(tmp_path), **{field: value})
        assert pav.policy_settings(task, changed) != pav.policy_settings(task, cfg), field
    changed = pav.Config(task="planted", out=str(tmp_path), seed=1)
    pav.load_or_build_policy(task, changed, CPU)
    assert built == [1] and capsys.readouterr().out.startswith("building the base policy")
    with open(tmp_path / "seed1" / "policy" / "settings.json") as f:
        assert json.load(f) == pav.policy_settings(task, changed)
    assert pav.policy_settings(data.Planted(target=(1, 2, 3, 4, 5)), cfg) != pav.policy_settings(task, cfg)
    arith = data.get_task("arith")
    assert pav.policy_settings(data.Arith("arith", 4, 0.2, False), cfg) != pav.policy_settings(arith, cfg)


def is_test_problem(problem):
    """The held-out rule, restated: the CRC32 of the problem text (between "Q:" and the newline) is 0 mod 5."""
    assert problem.prompt.startswith("Q:") and problem.prompt.endswith("\n")
    return zlib.crc32(problem.prompt[2:-1].encode()) % 5 == 0


def test_train_and_test_splits_never_overlap_and_only_train_is_trained_on(monkeypatch, tmp_path):
    """The fixed split by problem text: training draws (demonstrations, the warm start's clean solutions, seed
    rollouts, prover-table states) come from "train", evaluation from "test", whatever the sizes and seeds."""
    task = data.get_task("facts")
    train = [p for seed in range(3) for p in task.problems(3000, random.Random(seed))]
    test = [p for seed in range(3) for p in task.problems(1000, random.Random(seed), split="test")]
    assert not any(map(is_test_problem, train)) and all(map(is_test_problem, test))
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert len({p.prompt for p in test}) > 2500                                # a real split, not a handful
    for p in train[:200] + test[:200]:                                         # the answer is still the right one
        assert task.check(p, task.solution(p.prompt[2:-1], 0.0, None)) == 1.0
    # demonstrations, with their errors and clean
    for clean in (False, True):
        demos = task.demonstrations(500, random.Random(7), clean=clean)
        assert not any(is_test_problem(data.Problem(prompt, "")) for prompt, _ in demos)
    # evaluation: the held-out accuracy problems, at any --eval-problems
    for n in (64, 512, 2048):
        problems = pav.eval_problems(task, pav.Config(eval_problems=n))
        assert len(problems) == n and all(map(is_test_problem, problems))
    # the warm start, with training stubbed out (nothing is learned): every pair it would train on is train split
    trained, states, probed = [], [], []
    def fake_sft(model, tok, pairs, stop_early=None, **kw):
        trained.extend(p for p, _ in pairs)
        if stop_early is not None:                                            # the clean stage's stopping rule
            stop_early(300)
        with torch.no_grad():                                                 # "training": a mark on the weights
            next(model.parameters()).add_(1.0)
        states.append(next(model.parameters()).detach().clone())
    monkeypatch.setattr(pav, "sft", fake_sft)
    monkeypatch.setattr(pav, "accuracy", lambda m, t, tok, problems, *a, **k: probed.extend(problems) or 1.0)
    model, clean = pav.warm_start(task, task.tokenizer, pav.Config(d_model=16, n_layers=1), CPU)
    assert len(probed) == 256 and not any(map(is_test_problem, probed))      # no test problem decides when it stops
    assert len(trained) >= 10_000                                             # 60,000 clean + 20,000 with errors
    # the clean stage is kept, for --verifier-model clean, before the demonstrations with errors
    assert torch.equal(next(clean.parameters()), states[0]) and torch.equal(next(model.parameters()), states[1])
    assert not any(is_test_problem(data.Problem(prompt, "")) for prompt in trained)
