"""Process advantage verifiers: the base policy, our rollout engine, and Monte Carlo Q-values and advantages.

    python pav.py --task arith                 # CPU, a few minutes: warm-start the base policy, print the prover table
    python pav.py --task planted               # the paper's toy task (section 3.3)
    python pav.py --task arith --model PATH    # a GPU and any local causal LM (see the README)

What it does, top to bottom:
1. builds (first run) or loads (later runs) the base policy pi: a tiny Llama built from a config and warm-started by
   supervised training on the task's demonstrations, saved with `save_pretrained` under `runs/<task>/policy/`;
2. prints its accuracy on held-out problems;
3. prints the *prover table*: for mu = pi and each Best-of-K prover mu = BoK(pi) (and, on `planted`, the
   procedural gamma-provers), the two terms of Theorem 3.1 measured on sampled states, distinguishability
   E_s Var_{a~pi}[A^mu(s,a)] and alignment E_s E_{a~pi}[A^mu(s,a) A^pi(s,a)], plus the mean of Q^mu;
   it is saved to `runs/<task>/provers.json`.

Differences from the paper:
1. The base policy is a ~0.8M-parameter Llama trained by us, not Gemma; on `planted` it replaces the paper's MADE MLP.
2. Q^{BoK} of a state comes from the base policy's own Monte Carlo rollouts by the unbiased estimator
   1 - C(n-c, K)/C(n, K) (paper: the closed form 1 - (1 - Q^pi)^K applied to a verifier's prediction).
3. The prover table estimates each term from two independent halves of the rollouts, so that Monte Carlo noise
   does not inflate the variance or the product (the paper states the terms, it does not measure them).
"""

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # no model hub is reachable from our machines: fail fast, not after retries

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import data


# --------------------------------------------------------------------------------------------------------------
# Config: one dataclass, every field a command-line flag

def arg(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    task: str = arg("arith", "planted or arith")
    seed: int = arg(0, "random seed; a run repeats exactly with the same seed on CPU")
    out: str = arg("", "output directory (default runs/<task>)")
    temperature: float = arg(1.0, "sampling temperature of every rollout")
    # base policy
    d_model: int = arg(128, "hidden size of the embedded Llama policy")
    n_layers: int = arg(5, "layers of the embedded Llama policy")
    sft_batch: int = arg(64, "warm-start batch size")
    sft_lr: float = arg(3e-3, "warm-start peak learning rate")
    eval_problems: int = arg(512, "held-out problems for accuracy (planted: held-out samples x 8)")
    # prover table
    ks: str = arg("1,2,4,8,16,32", "K of the Best-of-K provers BoK(pi)")
    gammas: str = arg("2,5,10,15,30", "planted only: strengths of the procedural gamma-provers")
    n_states: int = arg(96, "states s sampled for the prover table")
    n_actions: int = arg(4, "actions a ~ pi sampled from each state")
    n_mc: int = arg(64, "Monte Carlo rollouts per prefix (split into two independent halves; each half >= max K)")
    batch_rows: int = arg(4096, "rows sampled at once by the rollout engine (memory bound)")


def parse_config(cls, argv=None):
    """Turn a config dataclass into argparse flags (--n-mc for n_mc); --help shows every default."""
    import argparse
    ap = argparse.ArgumentParser(description=sys.modules[cls.__module__].__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default,
                        help=f.metadata["help"])
    return cls(**vars(ap.parse_args(argv)))


def fail(msg):
    """Bad input: one line on stderr, non-zero exit, before any work."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def int_list(text, name):
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        fail(f"--{name} must be a comma-separated list of integers, got {text!r}")
    if any(v <= 0 for v in values):
        fail(f"--{name} entries must be positive, got {text!r}")
    return values


def check_config(cfg):
    if cfg.task not in data.TASKS:
        fail(f"unknown task {cfg.task!r}; choose from {', '.join(data.TASKS)}")
    for name in ("n_mc", "n_states", "n_actions", "eval_problems", "batch_rows", "sft_batch", "d_model", "n_layers"):
        if getattr(cfg, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if not cfg.temperature > 0:
        fail(f"--temperature must be positive, got {cfg.temperature}")
    ks = int_list(cfg.ks, "ks")
    if cfg.n_mc < 2 * max(ks):
        fail(f"--n-mc {cfg.n_mc} is too small for K = {max(ks)}: each of its two halves needs at least K rollouts")
    try:
        gammas = [float(g) for g in cfg.gammas.split(",")]
    except ValueError:
        fail(f"--gammas must be a comma-separated list of numbers, got {cfg.gammas!r}")
    if any(not g > 0 for g in gammas):
        fail(f"--gammas entries must be positive, got {cfg.gammas!r}")
    cfg.out = cfg.out or os.path.join("runs", cfg.task)
    return ks, gammas


# --------------------------------------------------------------------------------------------------------------
# Device: picked in one place

def pick_device():
    """cuda, then mps, then cpu. Weights stay fp32; on CUDA the forward passes run under bf16 autocast."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    if torch.backends.mps.is_available():
        return torch.device("mps"), torch.float32
    return torch.device("cpu"), torch.float32


def autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------------------------
# Rollout engine: batched sampling with a KV cache, whole responses or one step at a time

@dataclass
class Rollout:
    ids: torch.Tensor       # (N, T) sampled tokens, pad after a row's end
    logprobs: torch.Tensor  # (N, T) log-prob of each sampled token under the sampling distribution, 0 on padding
    mask: torch.Tensor      # (N, T) True on sampled tokens (the EOS or delimiter that ended a row included)
    source: torch.Tensor    # (N,) index of the prefix each row continues; rows of one prefix are adjacent


def left_pad(seqs, pad_id, device):
    """Token lists -> left-padded ids (B, P) and attention mask (B, P)."""
    P = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), P), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), P, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, P - len(s):], mask[i, P - len(s):] = torch.tensor(s, dtype=torch.long), 1
    return ids.to(device), mask.to(device)


def decode_mask(model, attn):
    """The (N, L) attention mask of a one-token decode step as the ready-made (N, 1, 1, L) mask that the attention
    takes as it is. Given a 2D mask, transformers checks on the host whether it has padding (a device sync)."""
    impl = model.config._attn_implementation
    if impl == "sdpa":
        return attn[:, None, None, :].bool()
    if impl == "eager":
        return torch.zeros(attn.shape, dtype=model.dtype, device=attn.device).masked_fill(
            attn == 0, torch.finfo(model.dtype).min)[:, None, None, :]
    return attn   # other implementations take the 2D mask


@torch.no_grad()
def sample(model, prefixes, *, n=1, max_new_tokens, eos_id, pad_id, temperature=1.0, stop_table=None,
           check_every=4, generator=None):
    """Sample n continuations of each prefix (a list of token-id lists, prompt included).

    Each prefix is encoded once; its KV cache is then copied n times (never re-encoded). A row stops at EOS, after
    `max_new_tokens` (an int, or one per prefix), or, when `stop_table` (V,) is given, after the first token that
    ends a step (one-step mode). Temperature 0 is greedy. Inside the token loop nothing waits for the device except
    one check every `check_every` tokens, which also drops finished rows from the batch so that they cost nothing.
    """
    device = next(model.parameters()).device
    ids, mask = left_pad(prefixes, pad_id, device)                        # (B, P)
    B, P = ids.shape
    limit = torch.as_tensor(max_new_tokens, device=device).expand(B).repeat_interleave(n)   # (N,)
    N, T = B * n, int(limit.max())
    with autocast(device):
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True, logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1].float()      # logits (B, V)
    # Branch: the n continuations of a prefix share its encoding; only cache rows are copied.
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)  # (N, V), (N, P)
    attn = torch.ones(N, P + T, dtype=mask.dtype, device=device)          # (N, P + T), new tokens always attended
    attn[:, :P] = mask
    pos = mask.sum(-1)                                                    # (N,) position of the first new token
    stop = stop_table.to(device) if stop_table is not None else None
    tokens = torch.full((N, T), pad_id, dtype=torch.long, device=device)  # (N, T)
    logps = torch.zeros(N, T, device=device)                              # (N, T)
    valid = torch.zeros(N, T, dtype=torch.bool, device=device)            # (N, T)
    rows = torch.arange(N, device=device)                                 # (n_live,) output row of each live row
    done = torch.zeros(N, dtype=torch.bool, device=device)                # (n_live,)
    t = 0
    for t in range(T):
        logp = torch.log_softmax(logits / max(temperature, 1e-6), dim=-1)  # (n_live, V)
        if temperature == 0:
            tok = logp.argmax(-1)                                         # (n_live,)
        else:  # Gumbel-max: an exact sample from softmax(logits / temperature), with no host sync
            u = torch.rand(logp.shape, device=device, generator=generator).clamp_min(1e-20)
            tok = (logp - torch.log(-torch.log(u))).argmax(-1)            # (n_live,)
        tok = torch.where(done, pad_id, tok)
        tokens[rows, t], valid[rows, t] = tok, ~done
        logps[rows, t] = logp.gather(1, tok[:, None]).squeeze(1) * ~done
        done = done | (tok == eos_id) | (t + 1 >= limit)
        if stop is not None:
            done = done | stop[tok]
        if t + 1 == T:
            break
        if (t + 1) % check_every == 0:
            live = (~done).nonzero().squeeze(1)                           # the loop's only host sync
            if len(live) == 0:
                break
            if len(live) < len(done):                                     # drop finished rows
                cache.batch_select_indices(live)
                rows, done, attn, pos, limit, tok = rows[live], done[live], attn[live], pos[live], limit[live], tok[live]
        with autocast(device):
            out = model(input_ids=tok[:, None], attention_mask=decode_mask(model, attn[:, :P + t + 1]),
                        position_ids=(pos + t)[:, None], past_key_values=cache, use_cache=True)
        logits = out.logits[:, -1].float()                                # (n_live, V)
    source = torch.arange(B, device=device).repeat_interleave(n)          # (N,)
    return Rollout(tokens[:, :t + 1], logps[:, :t + 1], valid[:, :t + 1], source)


# --------------------------------------------------------------------------------------------------------------
# The base policy: a tiny Llama built from a config, warm-started on the task's demonstrations

def policy_config(tokenizer, cfg):
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.d_model, intermediate_size=2 * cfg.d_model,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=128, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def encode_pairs(tokenizer, pairs, device):
    """(prompt, response) texts -> right-padded ids (N, L) and a loss mask (N, L) on response tokens and EOS."""
    seqs, starts = [], []
    for prompt, response in pairs:
        p = tokenizer.encode(prompt, add_special_tokens=True)
        seqs.append(p + tokenizer.encode(response) + [tokenizer.eos_token_id])
        starts.append(len(p))
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), tokenizer.pad_token_id, dtype=torch.long)   # (N, L)
    loss_mask = torch.zeros(len(seqs), L, dtype=torch.bool)                      # (N, L)
    for i, (s, a) in enumerate(zip(seqs, starts)):
        ids[i, :len(s)] = torch.tensor(s)
        loss_mask[i, a:len(s)] = True
    return ids.to(device), loss_mask.to(device)


def sft(model, tokenizer, pairs, *, steps, lr, batch_size, seed, desc, stop_early=None, warmup=100):
    """Supervised warm start: cross-entropy on response tokens, AdamW, linear warm-up then cosine decay.
    `stop_early(step)` is called every 50 steps and ends training when it returns True."""
    device = next(model.parameters()).device
    ids, loss_mask = encode_pairs(tokenizer, pairs, device)               # (N, L)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup) *
                                              (0.55 + 0.45 * math.cos(math.pi * min(i / steps, 1.0))))
    g = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc=desc, leave=False)
    for step in bar:
        idx = torch.randint(len(ids), (batch_size,), generator=g).to(device)
        x, m = ids[idx], loss_mask[idx]                                   # (b, L)
        with autocast(device):
            logits = model(input_ids=x[:, :-1]).logits.float()            # (b, L-1, V)
        loss = F.cross_entropy(logits[m[:, 1:]], x[:, 1:][m[:, 1:]])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if stop_early is not None and (step + 1) % 50 == 0:
            model.eval()
            stop = stop_early(step + 1)
            model.train()
            if stop:
                break
    model.eval()
    return step + 1


def warm_start(task, tokenizer, cfg, device):
    """Build the embedded base policy and train it on demonstrations (recipe in ../shared/MACHINE.md)."""
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(policy_config(tokenizer, cfg)).to(device)
    rng = random.Random(cfg.seed)
    held_out = {p.prompt for p in eval_problems(task, cfg)}
    if task.name == "planted":
        # Paper: 3,200 samples of the gamma = 5 procedural policy (it trains a MADE MLP for 50 iterations; our
        # transformer needs more passes over the same samples to match their distribution).
        sft(model, tokenizer, task.demonstrations(3200, rng), steps=500, lr=cfg.sft_lr, batch_size=cfg.sft_batch,
            seed=cfg.seed, desc="warm start")
        return model
    # arith: clean solutions until greedy accuracy is high (the mod-10 lookup is learned suddenly), then a short
    # pass over noisy ones, which leaves a policy that errs at every depth.
    def clean_pairs(n):
        return [(p.prompt, task.solution(p, 0.0, rng)) for p in task.problems(n, rng) if p.prompt not in held_out]
    probe = eval_problems(task, cfg)[:256]
    def learned(step):
        acc = accuracy(model, task, tokenizer, probe, cfg, temperature=0.0)
        tqdm.write(f"  clean warm start: step {step} | greedy accuracy {acc:.3f}")
        return step >= 300 and acc >= 0.95
    sft(model, tokenizer, clean_pairs(60_000), steps=1500, lr=cfg.sft_lr, batch_size=cfg.sft_batch, seed=cfg.seed,
        desc="warm start (clean)", stop_early=learned)
    noisy = [pair for pair in task.demonstrations(20_000, rng) if pair[0] not in held_out]
    sft(model, tokenizer, noisy, steps=250, lr=1e-3, batch_size=cfg.sft_batch, seed=cfg.seed + 1,
        desc="warm start (noisy)", warmup=1)
    return model


def policy_settings(task, cfg):
    """Everything the base policy depends on: a cached policy is reused only if these match."""
    extra = {"n_ops": task.n_ops, "p_err": task.p_err} if task.name == "arith" else {"target": task.target}
    return {"task": task.name, "seed": cfg.seed, "d_model": cfg.d_model, "n_layers": cfg.n_layers,
            "sft_batch": cfg.sft_batch, "sft_lr": cfg.sft_lr, **extra}


def load_or_build_policy(task, cfg, device):
    """runs/<task>/policy/: loaded when it was built with the same settings, built (and saved) otherwise."""
    path, settings = os.path.join(cfg.out, "policy"), policy_settings(task, cfg)
    meta = os.path.join(path, "settings.json")
    if os.path.exists(meta) and json.load(open(meta)) == settings:
        print(f"loading the base policy from {path}")
        model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        return model, data.CharTokenizer.from_pretrained(path)
    print(f"building the base policy (cached in {path} for later runs)")
    t0 = time.time()
    model = warm_start(task, task.tokenizer, cfg, device)
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    task.tokenizer.save_pretrained(path)
    json.dump(settings, open(meta, "w"), indent=1)
    print(f"warm start took {time.time() - t0:.0f}s")
    return model, task.tokenizer


# --------------------------------------------------------------------------------------------------------------
# Outcomes: roll out, decode, check

def eval_problems(task, cfg):
    """Held-out problems, disjoint from training (a separate seed; training demos skip them)."""
    n = cfg.eval_problems * (8 if task.name == "planted" else 1)   # planted: one problem, success is rare
    return task.problems(n, random.Random(10_000 + cfg.seed))


def prompt_ids(tokenizer, problem):
    return tokenizer.encode(problem.prompt, add_special_tokens=True)


def is_complete(response, task, tokenizer):
    """A response (token list) is complete when it ended with EOS or reached the length limit."""
    return (len(response) > 0 and response[-1] == tokenizer.eos_token_id) or len(response) >= task.max_new_tokens


def outcome(task, tokenizer, problem, response):
    """Rex(y, y*): 1.0 iff the response's final answer is right (EOS and what follows it ignored)."""
    if tokenizer.eos_token_id in response:
        response = response[:response.index(tokenizer.eos_token_id)]
    return task.check(problem, tokenizer.decode(response))


def rollout_responses(model, task, tokenizer, problems, prefixes, n, cfg, temperature=None, generator=None):
    """Complete each (problem, response-prefix) n times; returns the full responses as token lists, n per prefix.
    Runs in chunks of at most `cfg.batch_rows` rows."""
    out, per_call = [], max(1, cfg.batch_rows // n)
    temperature = cfg.temperature if temperature is None else temperature
    for i in range(0, len(prefixes), per_call):
        chunk = prefixes[i:i + per_call]
        r = sample(model, [prompt_ids(tokenizer, problems[j]) + p for j, p in chunk], n=n,
                   max_new_tokens=[task.max_new_tokens - len(p) for _, p in chunk], eos_id=tokenizer.eos_token_id,
                   pad_id=tokenizer.pad_token_id, temperature=temperature, generator=generator)
        lengths, ids = r.mask.sum(-1).tolist(), r.ids.tolist()
        out += [chunk[i // n][1] + row[:L] for i, (row, L) in enumerate(zip(ids, lengths))]
    return out


def accuracy(model, task, tokenizer, problems, cfg, temperature=None):
    responses = rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(len(problems))], 1, cfg,
                                  temperature=temperature)
    return float(np.mean([outcome(task, tokenizer, p, y) for p, y in zip(problems, responses)]))


# --------------------------------------------------------------------------------------------------------------
# Monte Carlo Q-values, Best-of-K provers and advantages

def step_cuts(response, table):
    """Prefix lengths [0, e_1, ..., e_H]: the state before step 1 and after each step (data.step_ends' rule)."""
    ids = torch.tensor([response])
    ends = data.step_ends(ids, torch.ones_like(ids, dtype=torch.bool), table)[0]   # (T,)
    return [0] + (ends.nonzero().squeeze(1) + 1).tolist()


def mc_successes(model, task, tokenizer, problems, prefixes, n, cfg, generator=None):
    """For each (problem index, response prefix), the number of successes among n rollouts under `model`.
    A complete prefix is not rolled out: its n 'rollouts' all have its own outcome. Returns (len(prefixes),) float."""
    counts = torch.zeros(len(prefixes))
    todo = [i for i, (j, p) in enumerate(prefixes) if not is_complete(p, task, tokenizer)]
    for i, (j, p) in enumerate(prefixes):
        if is_complete(p, task, tokenizer):
            counts[i] = n * outcome(task, tokenizer, problems[j], p)
    responses = rollout_responses(model, task, tokenizer, problems, [prefixes[i] for i in todo], n, cfg,
                                  generator=generator)
    wins = [outcome(task, tokenizer, problems[prefixes[todo[k // n]][0]], y) for k, y in enumerate(responses)]
    counts[todo] = torch.tensor(wins).view(-1, n).sum(-1) if todo else counts[todo]
    return counts


def q_hat(counts, n):
    """Monte Carlo Q_hat = c / n and its standard error sqrt(Q_hat (1 - Q_hat) / n)."""
    q = counts / n
    return q, (q * (1 - q) / n).sqrt()


def bok_closed(q, k):
    # Q^{BoK(pi)}(s, a) = 1 - (1 - Q^pi(s, a))^K   (section 3.2)
    return 1 - (1 - q) ** k


def bok_unbiased(counts, n, k):
    """Unbiased estimate of Q^{BoK} from c successes in n >= K rollouts: 1 - C(n - c, K) / C(n, K)."""
    assert n >= k, f"the unbiased BoK estimate needs n >= K, got n={n}, K={k}"
    c = torch.as_tensor(counts, dtype=torch.float64)
    # C(n-c, K)/C(n, K) = prod_{i=0}^{K-1} (n - c - i) / (n - i), which is 0 once n - c < K
    i = torch.arange(k, dtype=torch.float64)
    ratio = ((n - c[..., None] - i).clamp(min=0) / (n - i)).prod(-1)
    return (1 - ratio).to(torch.float32)


def advantages(q):
    """Eq. 2: A^mu(s_h, a_h) = Q^mu(s_h, a_h) - Q^mu(s_{h-1}, a_{h-1}), i.e. the step's change in the prefix value.
    q: (..., H + 1) values of the prefixes before step 1 and after each step; returns (..., H)."""
    return q[..., 1:] - q[..., :-1]


# --------------------------------------------------------------------------------------------------------------
# The prover table: Theorem 3.1's two terms for each candidate prover, measured on sampled states

def sample_states(model, task, tokenizer, cfg, n_states):
    """n_states states s_h = (x, a_1..a_{h-1}): one uniformly chosen unfinished prefix of one response per problem."""
    rng = random.Random(20_000 + cfg.seed)
    problems = task.problems(n_states, rng)
    responses = rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(n_states)], 1, cfg)
    table = data.step_end_table(tokenizer, task.delimiter)
    states = []
    for i, y in enumerate(responses):
        cuts = step_cuts(y, table)[:-1]                   # the complete response is not a state
        states.append((i, y[:rng.choice(cuts)]))
    return problems, states


def prover_table(model, task, tokenizer, cfg, ks, gammas):
    """Distinguishability E_s Var_{a~pi}[A^mu(s,a)] and alignment E_s E_{a~pi}[A^mu(s,a) A^pi(s,a)] (Theorem 3.1).

    For each state s we sample m actions a ~ pi (one step each) and estimate Q^pi(s) and Q^pi(s, a) from two
    independent halves of n_mc rollouts each. With Q_1, Q_2 the two estimates, A_1 and A_2 are independent and
    unbiased for A (bok_unbiased keeps BoK unbiased), so the covariance of A_1 and A_2 across actions is unbiased for
    Var_a[A] and the mean of A_1^mu A_2^pi is unbiased for E_a[A^mu A^pi]: Monte Carlo noise inflates neither.
    """
    m, half = cfg.n_actions, cfg.n_mc // 2
    problems, states = sample_states(model, task, tokenizer, cfg, cfg.n_states)
    table = data.step_end_table(tokenizer, task.delimiter)
    r = sample(model, [prompt_ids(tokenizer, problems[j]) + p for j, p in states], n=m,
               max_new_tokens=[task.max_new_tokens - len(p) for _, p in states], eos_id=tokenizer.eos_token_id,
               pad_id=tokenizer.pad_token_id, temperature=cfg.temperature, stop_table=table)
    lengths, ids = r.mask.sum(-1).tolist(), r.ids.tolist()
    after = [(states[k // m][0], states[k // m][1] + row[:L]) for k, (row, L) in enumerate(zip(ids, lengths))]
    S = len(states)
    halves = []
    for _ in range(2):   # two independent halves: counts before (S, 1) and after (S, m) the action
        before = mc_successes(model, task, tokenizer, problems, states, half, cfg)
        after_c = mc_successes(model, task, tokenizer, problems, after, half, cfg)
        halves.append((before.view(S, 1), after_c.view(S, m)))

    def terms(a1, a2, a_pi):   # a1, a2: two independent estimates (S, m) of A^mu; a_pi: of A^pi
        var = ((a1 - a1.mean(1, keepdim=True)) * (a2 - a2.mean(1, keepdim=True))).sum(1) / (m - 1)   # (S,)
        align = (a1 * a_pi).mean(1)                                                                  # (S,)
        se = lambda v: float(v.std() / math.sqrt(S))
        return {"distinguishability": float(var.mean()), "distinguishability_se": se(var),
                "alignment": float(align.mean()), "alignment_se": se(align)}

    def bok_adv(K, h):   # Eq. 2 under BoK(pi), from half h: Q^mu(s, a) - Q^mu(s)
        before, after_c = halves[h]
        q_after = bok_unbiased(after_c, half, K)
        return q_after - bok_unbiased(before, half, K), q_after            # (S, m), (S, m)

    a_pi = [bok_adv(1, 0)[0], bok_adv(1, 1)[0]]
    rows = []
    for K in ks:
        (a1, q1), (a2, q2) = bok_adv(K, 0), bok_adv(K, 1)
        name = "pi" if K == 1 else f"Bo{K}(pi)"
        rows.append({"prover": name, "K": K, **terms(a1, a2, a_pi[1]), "mean_q": float((q1 + q2).mean() / 2)})
    if task.name == "planted":   # the procedural gamma-provers: Q^mu exact by dynamic programming
        for gamma in gammas:
            V = task.exact_values(gamma)
            q_s = torch.tensor([task.exact_q(p, gamma, V) for _, p in states]).view(S, 1)
            q_sa = torch.tensor([task.exact_q(p, gamma, V) for _, p in after]).view(S, m)
            a = (q_sa - q_s).float()
            rows.append({"prover": f"gamma={gamma:g}", "gamma": gamma, **terms(a, a, (a_pi[0] + a_pi[1]) / 2),
                         "mean_q": float(q_sa.mean())})
    return rows


def print_table(rows):
    print(f"{'prover':>12} | {'distinguishability':>22} | {'alignment':>22} | {'mean Q^mu':>9}")
    for r in rows:
        print(f"{r['prover']:>12} | {r['distinguishability']:>12.5f} ± {r['distinguishability_se']:.5f} | "
              f"{r['alignment']:>12.5f} ± {r['alignment_se']:.5f} | {r['mean_q']:>9.3f}")


# --------------------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg = parse_config(Config, argv)
    ks, gammas = check_config(cfg)
    device, dtype = pick_device()
    print(f"device {device} | dtype {dtype} | task {cfg.task} | seed {cfg.seed} | out {cfg.out}")
    task = data.get_task(cfg.task)
    model, tokenizer = load_or_build_policy(task, cfg, device)
    seed_everything(cfg.seed)   # the same numbers whether the policy was just built or loaded
    problems = eval_problems(task, cfg)
    acc = accuracy(model, task, tokenizer, problems, cfg)
    print(f"base policy accuracy on {len(problems)} held-out problems: {acc:.3f}")
    t0 = time.time()
    rows = prover_table(model, task, tokenizer, cfg, ks, gammas)
    print(f"prover table ({cfg.n_states} states x {cfg.n_actions} actions x {cfg.n_mc} rollouts, "
          f"{time.time() - t0:.0f}s); mean ± standard error over states:")
    print_table(rows)
    report = {"task": cfg.task, "base_accuracy": acc, "eval_samples": len(problems), "provers": rows,
              "config": dataclasses.asdict(cfg)}
    path = os.path.join(cfg.out, "provers.json")
    json.dump(report, open(path, "w"), indent=1)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
