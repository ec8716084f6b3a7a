"""Real models and real data, offline: a tiny Llama with a byte-level BPE tokenizer trained here, saved with
`save_pretrained`, driving pav.py, search.py and rl.py on GSM8K- and MATH-style files (tests/data/), and each bad
input failing with one line before any work (the answer check has its own cases: test_answers.py)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import data
import pav
from conftest import ROOT, one_line_failure

DATA = os.path.join(ROOT, "tests", "data")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def bpe_tokenizer(lines, vocab=320, chat_template=None):
    """A byte-level BPE trained on `lines`, wrapped as a transformers fast tokenizer with EOS and no PAD (as Llama 3)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    out = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    if chat_template:
        out.chat_template = chat_template
    return out


def corpus():
    task = data.FileTask(os.path.join(DATA, "gsm8k_train.jsonl"), os.path.join(DATA, "gsm8k_test.jsonl"))
    lines = []
    for name in ("gsm8k_train", "gsm8k_test", "math_train", "math_test"):
        for q, a, *_ in data.load_problems(os.path.join(DATA, name + ".jsonl")):
            lines += [task.prompt(q) + a] * 20
    return lines


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A 1-layer Llama with a 320-token BPE tokenizer, saved as a user's model directory would be."""
    path = tmp_path_factory.mktemp("tiny-bpe-llama")
    tokenizer = bpe_tokenizer(corpus())
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def verifier_dir(tmp_path_factory, model_dir):
    """Another model with the same tokenizer, 48 wide instead of 32 and saved in bf16: a --verifier-model."""
    path = tmp_path_factory.mktemp("wider-bf16-llama")
    tokenizer = data.load_tokenizer(model_dir)
    tokenizer.save_pretrained(path)
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    return str(path)


# --------------------------------------------------------------------------------------------------------------
# Data files and the step rule under a real tokenizer

def test_load_both_layouts():
    gsm = data.load_problems(os.path.join(DATA, "gsm8k_train.jsonl"))
    math_ = data.load_problems(os.path.join(DATA, "math_train.jsonl"))
    assert [a for _, _, a, _ in gsm] == ["7", "60", "14,400", "-5", "3/4", "32"]
    assert [a for _, _, a, _ in math_] == [r"\frac{3}{4}", "4", r"5\sqrt{2}", "(2, 2)", r"60^\circ", "-21"]
    task = data.FileTask(os.path.join(DATA, "math_train.jsonl"), os.path.join(DATA, "math_test.jsonl"))
    import random
    held = task.problems(100, random.Random(0), split="test")
    assert len(held) == 4 and {p.answer for p in held} == {r"\frac{1}{2}", "4", "9", "x + 1"}   # never repeated
    train = task.problems(9, random.Random(0))
    assert len(train) == 9 and len({p.prompt for p in train[:6]}) == 6   # the whole file before any repeat
    assert task.check(held[0], r"So \boxed{" + held[0].answer + "}") == 1.0
    assert "\\boxed{}" in held[0].prompt and held[0].layout == "math"


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("", "has no problems"),
    ('{"question": "1+1?", "answer": "#### 2"}\nnot json\n', ":2: not a JSON object"),
    ('{"question": "1+1?", "answer": "#### 2"}\n{"question": "2+2?"}\n', ":2: a line needs the fields"),
    ('[1, 2]\n', ":1: a line needs the fields"),
    ('{"question": "1+1?", "answer": "it is 2"}\n', ":1: no final answer"),
    ('{"problem": "1+1?", "solution": "it is 2"}\n', ":1: no final answer"),
    (b'{"question": "1+1?", "answer": "#### 2"}\n\xff\xfe\n', "bad.jsonl is not UTF-8 text \\(invalid start byte at byte 41\\)"),
])
def test_bad_data_files(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        data.load_problems(str(path))


def test_step_table_reads_decoded_text(model_dir):
    tok = data.load_tokenizer(model_dir)
    assert tok.pad_token_id == tok.eos_token_id                          # no PAD in the tokenizer: EOS pads
    table = data.step_end_table(tok, "\n")
    newline = [i for i in range(len(tok)) if "\n" in tok.decode([i])]
    assert newline and table.nonzero().squeeze(1).tolist() == sorted(set(newline) | {tok.eos_token_id})
    assert all(tok.convert_ids_to_tokens(i) != "\n" for i in newline)    # byte-level BPE spells it "Ċ"
    ids = tok.encode("Step one.\nStep two.\n")
    cuts = pav.step_cuts(ids, table)
    assert [tok.decode(ids[a:b]) for a, b in zip(cuts, cuts[1:])] == ["Step one.\n", "Step two.\n"]
    with pytest.raises(ValueError, match="no token of the tokenizer contains the step delimiter"):
        data.step_end_table(tok, "\u00a7")


def test_end_of_turn_ids_from_the_generation_config(model_dir, tmp_path):
    """A model whose generation config names a second end token (as Llama 3 Instruct's end of turn): rows stop at it,
    steps end at it, and the outcome ignores what follows it."""
    import shutil
    path = tmp_path / "two-ends"
    shutil.copytree(model_dir, path)
    tok = data.load_tokenizer(str(path))
    turn = tok.encode("####")[0]                                          # any token can be declared an end
    gen = json.loads((path / "generation_config.json").read_text()) if (path / "generation_config.json").exists() else {}
    gen["eos_token_id"] = [tok.eos_token_id, turn]
    (path / "generation_config.json").write_text(json.dumps(gen))
    cfg = pav.Config(model=str(path), data=os.path.join(DATA, "gsm8k_train.jsonl"), eval_data=os.path.join(DATA, "gsm8k_test.jsonl"))
    pav.check_config(cfg)
    task = pav.make_task(cfg)
    model, tok = pav.load_or_build_policy(task, cfg, torch.device("cpu"))
    assert data.end_ids(tok) == [tok.eos_token_id, turn]
    assert data.step_end_table(tok, "\n")[turn]
    ids = data.special_ids(tok)
    only_turn = [i for i in range(len(tok)) if i != turn]                 # every token but the end of turn banned
    r = pav.sample(model, [tok.encode("Q")] * 4, max_new_tokens=8, temperature=1.0, eos_id=ids["eos_id"],
                   pad_id=ids["pad_id"], banned=only_turn)
    assert r.mask.sum(-1).tolist() == [1, 1, 1, 1] and r.ids[:, 0].tolist() == [turn] * 4   # it ended each row
    problem = data.Problem("", "7")
    assert data.outcome(task, tok, problem, tok.encode("#### 7")) == 0.0   # cut at the end token: nothing is left
    assert data.outcome(task, tok, problem, tok.encode("The answer is 7") + [turn] + tok.encode(" 8")) == 1.0


def test_chat_template_wraps_the_prompt_once(model_dir, tmp_path):
    tok = data.load_tokenizer(model_dir)
    problem = data.Problem("What is 2+2?", "4", "gsm8k")
    assert data.prompt_ids(tok, problem) == tok.encode("What is 2+2?", add_special_tokens=True)   # no template
    tok.chat_template = ("{{ eos_token }}{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}Assistant:{% endif %}")
    ids = data.prompt_ids(tok, problem)
    assert tok.decode(ids) == "<|endoftext|>User: What is 2+2?\nAssistant:"
    assert ids.count(tok.eos_token_id) == 1                              # the template's own, not doubled
    assert data.prompt_ids(tok, data.Problem("Q:1+2\n", "3")) == tok.encode("Q:1+2\n")   # toy problems: never


# --------------------------------------------------------------------------------------------------------------
# The three scripts on the tiny BPE model, end to end

COMMON = ["--max-new-tokens", "16", "--eval-problems", "8", "--n-problems", "6", "--n-mc", "2", "--verifier-steps",
          "2", "--micro-batch-size", "2"]


def run(script, args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["gsm8k", "math"])
def test_pav_search_rl_on_a_bpe_model(model_dir, verifier_dir, tmp_path, layout):
    files = ["--data", os.path.join(DATA, f"{layout}_train.jsonl"), "--eval-data", os.path.join(DATA, f"{layout}_test.jsonl")]
    out = ["--out", str(tmp_path / "out"), "--model", model_dir, *files]
    if layout == "math":   # verifiers on a backbone of their own
        out += ["--verifier-model", verifier_dir]

    first = run("pav.py", out + COMMON, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"loading the base policy from {model_dir}" in first.stdout
    report = json.loads((tmp_path / "out" / "verifiers.json").read_text())
    assert report["held_out"]["problems"] == 4 and 0 <= report["pqm"]["mae"] <= 1
    assert report["eval_samples"] == 4   # the whole test file
    [cache] = (tmp_path / "out" / "seed0" / "verifiers").iterdir()
    saved = json.loads((cache / "pqm" / "config.json").read_text())
    assert saved["hidden_size"] == (48 if layout == "math" else 32)     # the backbone --verifier-model named

    search = run("search.py", out + COMMON + ["--ns", "1,2", "--search-problems", "4"], tmp_path)
    assert search.returncode == 0, search.stderr[-3000:]
    assert "loading verifiers from" in search.stdout                     # trained by pav.py above, reused
    rows = json.loads((tmp_path / "out" / "search.json").read_text())["rows"]
    assert {r["method"] for r in rows} >= {"orm_best_of_n", "pass_at_n"} and all(r["tokens"] > 0 for r in rows)

    rl = run("rl.py", out + COMMON + ["--iterations", "2", "--batch-size", "4"], tmp_path)
    assert rl.returncode == 0, rl.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "rl.json").read_text())
    assert set(result["final_accuracy"]) == {"orm", "pav"}
    assert [p["responses"] for p in result["seeds"]["0"]["pav"]["curve"]] == [0, 8]


def test_micro_batches_do_not_change_the_step(model_dir):
    """One PAV-RL step of the policy (per-step advantages from an untrained verifier, KL to the start policy) with the
    whole batch at once, and with micro-batches of one row: the same update."""
    import copy
    import random
    import rl
    tok = data.load_tokenizer(model_dir)
    task = data.FileTask(os.path.join(DATA, "gsm8k_train.jsonl"), os.path.join(DATA, "gsm8k_test.jsonl"), max_new_tokens=8)
    problems = task.problems(2, random.Random(0))
    base = pav.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    torch.manual_seed(1)
    verifier = pav.Verifier(copy.deepcopy(base)).eval()
    table = data.step_end_table(tok, "\n")
    start = torch.cat([p.detach().flatten() for p in base.parameters()])
    after = []
    for micro in (0, 1):
        cfg = rl.RLConfig(data="x", model=model_dir, batch_size=8, micro_batch_size=micro)
        scorer = pav.PAV(verifier, tok, table, 4, batch=micro or 256)
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        stats, _ = rl.policy_step(model, base, opt, scorer, problems, task, tok, cfg, alpha=1.0, seed=0, it=1)
        assert stats["adv_std"] > 0
        after.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert not torch.equal(after[0], start)
    torch.testing.assert_close(after[0] - start, after[1] - start, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("top_layers", [0, 1])
def test_verifier_micro_batches_do_not_change_training(model_dir, top_layers):
    """Verifier training with whole batches and with micro-batches of one response: the same weights, with and without
    fresh layers on the frozen backbone."""
    tok = data.load_tokenizer(model_dir)
    table = data.step_end_table(tok, "\n")
    prompts = [tok.encode("Q: 1+1?\n"), tok.encode("Q: 2+2?\n"), tok.encode("Q: 3+3?\n")]
    responses = [tok.encode("one\ntwo\n"), tok.encode("three\n"), tok.encode("a\nb\nc\n")]
    labels = torch.tensor([[0.5, 0.25, 1.0, 0.0], [0.75, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]])
    labelled = torch.tensor([[True, True, True, False], [True, True, False, False], [True, True, True, True]])
    after = []
    for micro in (0, 1):
        cfg = pav.Config(verifier_steps=3, micro_batch_size=micro)
        torch.manual_seed(0)
        v = pav.Verifier(pav.load_lm(model_dir), top_layers=top_layers)
        start = torch.cat([p.detach().flatten() for p in v.parameters()])
        pav.train_verifier(v, tok, prompts, responses, labels, labelled, table, cfg, desc="test")
        after.append(torch.cat([p.detach().flatten() for p in v.parameters()]))
        assert (after[-1] - start).abs().max() > 1e-4                   # it trained
    torch.testing.assert_close(after[0], after[1], rtol=1e-4, atol=1e-6)


def test_bf16_checkpoint_loads_in_fp32(verifier_dir):
    assert {p.dtype for p in pav.load_lm(verifier_dir).parameters()} == {torch.float32}


# --------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, before any work

def fails(capsys, argv, main=pav.main):
    return one_line_failure(main, argv, capsys)


def test_bad_real_inputs(capsys, model_dir, tmp_path, monkeypatch):
    import rl
    import search
    monkeypatch.chdir(tmp_path)                            # the default output directory is runs/ under here
    gsm = os.path.join(DATA, "gsm8k_train.jsonl")
    no_tok = tmp_path / "no-tokenizer"
    LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(no_tok)
    empty, one = tmp_path / "empty.jsonl", tmp_path / "one.jsonl"
    empty.write_text("")
    one.write_text('{"question": "1+1?", "answer": "#### 2"}\n')   # one problem: the train or the held-out split is empty
    other = tmp_path / "other-tokenizer"
    bpe_tokenizer(["completely different words"] * 50, vocab=280).save_pretrained(other)
    LlamaForCausalLM(LlamaConfig(vocab_size=280, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(other)
    capsys.readouterr()   # what saving printed
    for main in (pav.main, search.main, rl.main):
        assert "is not a model directory" in fails(capsys, ["--model", str(tmp_path), "--data", gsm], main)
    assert "has no tokenizer" in fails(capsys, ["--model", str(no_tok), "--data", gsm])
    assert "does not exist" in fails(capsys, ["--model", model_dir, "--data", str(tmp_path / "missing.jsonl")])
    assert "has no problems" in fails(capsys, ["--model", model_dir, "--data", str(empty)])
    assert "leave the train or the held-out split empty" in fails(capsys, ["--model", model_dir, "--data", str(one)])
    assert "needs --model" in fails(capsys, ["--data", gsm])
    assert "--eval-data needs --data" in fails(capsys, ["--eval-data", gsm])
    assert "drop --task planted" in fails(capsys, ["--task", "planted", "--data", gsm, "--model", model_dir])
    assert "planted is defined over its own" in fails(capsys, ["--task", "planted", "--model", model_dir])
    assert "another tokenizer" in fails(capsys, ["--model", model_dir, "--data", gsm, "--eval-data", gsm,
                                                 "--verifier-model", str(other)])
    assert "--micro-batch-size" in fails(capsys, ["--micro-batch-size", "-1"])
    bad_json, no_fields = tmp_path / "bad.jsonl", tmp_path / "fields.jsonl"
    bad_json.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"question": oops}\n')
    no_fields.write_text('{"question": "1+1?", "answer": "#### 2"}\n{"problem": "2+2?"}\n')
    assert "bad.jsonl:2: not a JSON object" in fails(capsys, ["--model", model_dir, "--data", str(bad_json)])
    assert "fields.jsonl:2: a line needs the fields" in fails(capsys, ["--model", model_dir, "--data", str(no_fields)])
    no_eos = tmp_path / "no-eos"
    tok = bpe_tokenizer(["a b c"] * 20, vocab=270)
    tok.eos_token = None
    tok.save_pretrained(no_eos)
    LlamaForCausalLM(LlamaConfig(vocab_size=270, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(no_eos)
    capsys.readouterr()
    assert "has no EOS token" in fails(capsys, ["--model", str(no_eos), "--data", gsm, "--eval-data", gsm])
    weightless = tmp_path / "weightless"
    data.load_tokenizer(model_dir).save_pretrained(weightless)
    LlamaConfig(vocab_size=16).save_pretrained(weightless)
    assert "no weights" in fails(capsys, ["--model", str(weightless), "--data", gsm, "--eval-data", gsm])
    assert not (tmp_path / "runs").exists()                # every failure came before any work
