"""Process advantage verifiers (PAVs): Monte Carlo Q-values, Best-of-K provers, advantages, and the verifiers that
learn them, in the order of sections 3 and 4.2 of the paper; the machinery that feeds them comes last.

    python pav.py                      # the base policy, then ORM / PQM / PAV and their report
    python pav.py --explain            # one held-out response, step by step: Q^pi, Q^mu, A^mu, effective reward
    python pav.py --task planted       # the paper's toy task (section 3.3)
    python pav.py --model DIR --data train.jsonl --eval-data test.jsonl   # your causal LM (a GPU), GSM8K/MATH files

`python pav.py` builds (or loads) the base policy pi; labels every prefix of one rollout per training problem with
`n_mc` rollouts, trains the ORM and the PQM (Q^pi, from which Q^mu of mu = BoK(pi) follows) and reports them against
held-out Monte Carlo labels (`verifiers.json`). Which prover to pick, by Theorem 3.1's two terms measured on our
task: `python benchmarks/prover_table.py`.

Differences from the paper:
1. The base policy is a ~0.8M-parameter Llama trained by us on a synthetic task, not Gemma on MATH (data.py).
2. A verifier reads a head on the hidden state of each step's last token instead of logits at an appended scoring
   token: for a causal model both see the same prefix, and ours scores all prefixes of a response in one pass. Its
   backbone is frozen, with named additions on top (`Verifier`); the paper fine-tunes the whole model.
3. The labels are one seed rollout per problem with `n_mc` rollouts from each of its prefixes: the coverage side of
   Fig. 6b's trade-off, without class balancing or "first pit" seeding (docs/experiments.md).
"""

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # no model hub is reachable from our machines: fail fast, not after retries

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.cache_utils import Cache, DynamicLayer
from transformers.utils import logging as hf_logging

import data

hf_logging.disable_progress_bar()   # transformers' "Loading weights" bars: a reader should see our output only

# --------------------------------------------------------------------------------------------------------------
# Section 3: Q-values by Monte Carlo, Best-of-K provers, progress (the advantage) and the effective reward

def mc_successes(model, task, tokenizer, problems, prefixes, n, cfg, generator=None):
    """Eq. 1 by Monte Carlo: for each (problem index, response prefix), how many of n rollouts under `model` succeed;
    Q_hat^pi = successes / n. A complete prefix is not rolled out: its n 'rollouts' all have its own outcome.
    Returns (len(prefixes),) float."""
    counts = torch.zeros(len(prefixes))
    todo = [i for i, (j, p) in enumerate(prefixes) if not data.is_complete(p, task, tokenizer)]
    for i, (j, p) in enumerate(prefixes):
        if data.is_complete(p, task, tokenizer):
            counts[i] = n * data.outcome(task, tokenizer, problems[j], p)
    responses = rollout_responses(model, task, tokenizer, problems, [prefixes[i] for i in todo], n, cfg,
                                  generator=generator)
    wins = [data.outcome(task, tokenizer, problems[prefixes[todo[k // n]][0]], y) for k, y in enumerate(responses)]
    if todo:
        counts[todo] = torch.tensor(wins).view(-1, n).sum(-1)
    return counts


def bok_closed(q, k):
    # Section 3.2: Q^{BoK(pi)}(s, a) = 1 - (1 - Q^pi(s, a))^K, K independent attempts from the same prefix
    return 1 - (1 - q) ** k


def bok_unbiased(counts, n, k):
    """Q^{BoK(pi)} from c successes in n >= K rollouts without bias: 1 - C(n - c, K) / C(n, K) (the pass@k estimator).
    Plugging c / n into `bok_closed` is biased whenever K > 1."""
    assert n >= k, f"the unbiased BoK estimate needs n >= K, got n={n}, K={k}"
    c = torch.as_tensor(counts, dtype=torch.float64)
    i = torch.arange(k, dtype=torch.float64)
    # C(n - c, K) / C(n, K) = prod_{i < K} (n - c - i) / (n - i), which is 0 once n - c < K
    ratio = ((n - c[..., None] - i).clamp(min=0) / (n - i)).prod(-1)
    return (1 - ratio).to(torch.float32)


def advantages(q):
    """q (..., H + 1): the prover's value of the bare problem (index 0) and of the prefix after each step. Returns
    (..., H), the progress each step makes."""
    # Eq. 2: A^mu(s_h, a_h) = Q^mu(s_h, a_h) - Q^mu(s_{h-1}, a_{h-1})
    return q[..., 1:] - q[..., :-1]


def effective_reward(q_pi, a_mu, alpha):
    """q_pi (B, H + 1) values under the base policy, a_mu (B, H) advantages under the prover; returns (B, H)."""
    # Eq. 5: the effective reward of step h is Q^pi(s_h, a_h) + alpha * A^mu(s_h, a_h)
    return q_pi[:, 1:] + alpha * a_mu


def step_cuts(response, table):
    """Prefix lengths [0, e_1, ..., e_H]: the state before step 1 and after each step (data.step_ends' rule)."""
    ids = torch.tensor([response])
    ends = data.step_ends(ids, torch.ones_like(ids, dtype=torch.bool), table)[0]   # (T,)
    return [0] + (ends.nonzero().squeeze(1) + 1).tolist()


# --------------------------------------------------------------------------------------------------------------
# Section 4.2: the verifier, a causal LM with a scalar head read at the end of every step

class Verifier(torch.nn.Module):
    """Q_hat of every prefix of a response that ends at a step, all in one forward pass (section 4.2).

    The paper's verifier: a language model whose score at the end of a prefix predicts Q^pi. Here a linear head v on the
    hidden state h_h at the last token of step h, Q_hat(s_h) = sigmoid(v(h_h)), on a frozen backbone `lm`. Four
    additions, each a switch, each for a measured reason (docs/experiments.md, benchmarks/verifier_ablation.py):
    - `top_layers` fresh decoder layers above the frozen backbone, to compare what was written with what came before;
    - `surprise`: each token's log-probability under the backbone as one more input direction (a wrong result digit is
      one the backbone found unlikely);
    - `survival`: Q_hat(s_h) = sigmoid(v(h_h)) * prod_{j <= h} sigmoid(u(h_j)), so that "some earlier step was wrong"
      is one term to learn instead of an AND over steps; u large gives back the plain head;
    - `tokens`: each token's own input embedding, through a fresh linear map, as one more input: a backbone's last
      hidden state is shaped to predict the next token and keeps the one just written poorly, and a verifier on the
      policy's own weights must compare what was written with what the layers below expected.
    """

    def __init__(self, lm, top_layers=1, surprise=True, survival=True, tokens=True):
        super().__init__()
        self.lm, self.top_layers, self.survival = lm, top_layers, survival    # any causal LM; its LM head is unused
        c = lm.config.get_text_config()
        self.top = LlamaModel(LlamaConfig(vocab_size=1, hidden_size=c.hidden_size, num_hidden_layers=top_layers,
                                          intermediate_size=2 * c.hidden_size, num_attention_heads=c.num_attention_heads,
                                          max_position_embeddings=c.max_position_embeddings, bos_token_id=None,
                                          eos_token_id=None, pad_token_id=None)) if top_layers > 0 else None
        self.surprise = torch.nn.Linear(1, c.hidden_size, bias=False) if surprise else None
        if surprise:
            torch.nn.init.normal_(self.surprise.weight, std=0.1)
        self.tokens = torch.nn.Linear(c.hidden_size, c.hidden_size, bias=False) if tokens else None
        self.head = torch.nn.Linear(c.hidden_size, 2 if survival else 1)    # v (and u); random: the layers below learn
        if survival:
            with torch.no_grad():
                self.head.bias[1] = 4.0   # sigmoid(4) = 0.98: every step survives at first, the plain head

    def features(self, ids, mask):
        """The frozen backbone's last hidden states (B, L, D), fp32, and with `surprise` each token's log-probability
        given the ones before it (0 for the first) as channel D + 1."""
        out = self.lm(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
        h = out.hidden_states[-1].float()
        if self.surprise is None:
            return h
        logp = out.logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])          # (B, L-1, 1)
        return torch.cat([h, F.pad(logp, (0, 0, 1, 0))], -1)                                     # (B, L, D+1)

    def forward(self, ids, mask, pos, pos_mask, f=None):
        """The logit of Q_hat (B, H+1) at the positions `pos` (B, H+1), valid where `pos_mask`; `f`: the backbone's
        features, if already computed."""
        f = self.features(ids, mask) if f is None else f
        h = f if self.surprise is None else f[..., :-1] + self.surprise(f[..., -1:])              # (B, L, D)
        if self.tokens is not None:
            h = h + self.tokens(self.lm.get_input_embeddings()(ids).float())                      # (B, L, D)
        if self.top is not None:
            h = self.top(inputs_embeds=h, attention_mask=mask, use_cache=False).last_hidden_state
        h = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))                               # (B, H+1, D)
        out = self.head(h.float())                                                                # (B, H+1, 1 or 2)
        if not self.survival:
            return out[..., 0]
        v, u = out.unbind(-1)
        log_q = F.logsigmoid(v) + torch.cumsum(F.logsigmoid(u) * pos_mask, 1)
        log_q = log_q.clamp(max=-1e-6)                                    # q < 1, so that log(1 - q) is finite
        return log_q - torch.log(-torch.expm1(log_q))                     # logit(q) = log q - log(1 - q)

    def save(self, path):
        """The backbone as a model directory; the layers above it, and the switches, in head.pt."""
        def save(tmp):
            self.lm.save_pretrained(tmp)
            above = {k: v for k, v in self.state_dict().items() if not k.startswith("lm.")}
            torch.save({"above": above, "switches": [self.top_layers, self.surprise is not None, self.survival,
                                                     self.tokens is not None]},
                       os.path.join(tmp, "head.pt"))
        data.write_atomic(path, save)

    @classmethod
    def load(cls, path, device):
        saved = load_tensors(os.path.join(path, "head.pt"), f"delete {path} and it is trained again")
        v = cls(load_lm(path), *saved["switches"])
        v.load_state_dict({**{"lm." + k: w for k, w in v.lm.state_dict().items()}, **saved["above"]})
        return v.to(device).eval()


def score_rows(tokenizer, prompts, responses, table):
    """Right-padded prompt + response rows (B, L), their mask (B, L), and the positions (B, H+1) at which the prefix
    values are read: the last prompt token (the bare problem, h = 0), then the last token of each step."""
    ids, mask = pad_rows([p + y for p, y in zip(prompts, responses)], tokenizer.pad_token_id)       # (B, L)
    pos, pos_mask = pad_rows([[len(p) + c - 1 for c in step_cuts(y, table)] if y else [len(p) - 1]
                              for p, y in zip(prompts, responses)], 0)                               # (B, H+1)
    return ids, mask, pos, pos_mask.bool()


@torch.no_grad()
def predict_q(verifier, tokenizer, prompts, responses, table, batch=256):
    """Predicted Q of every prefix of each response: (B, H+1) with a mask (B, H+1). One forward pass per response."""
    device = next(verifier.parameters()).device
    ids, mask, pos, pos_mask = score_rows(tokenizer, prompts, responses, table)
    out = torch.zeros(pos.shape)
    for i in range(0, len(ids), batch):
        part = [t[i:i + batch].to(device) for t in (ids, mask, pos, pos_mask)]
        with autocast(device):
            logits = verifier(*part)                                      # (b, H+1)
        out[i:i + batch] = torch.sigmoid(logits.float()).cpu()
    return out * pos_mask, pos_mask


class PAV:
    """What search and RL call: per-step Q_hat^pi from the PQM, Q_hat^mu of mu = BoK(pi) and A_hat^mu."""

    def __init__(self, pqm, tokenizer, table, k, batch=256):
        self.pqm, self.tokenizer, self.table, self.k, self.batch = pqm, tokenizer, table, k, batch

    def score(self, prompts, responses, **_):
        """q_pi (B, H+1), q_mu (B, H+1), a_mu (B, H), and their masks (B, H+1), (B, H). What other provers need to
        score (rl.py passes it as keywords) is not needed here."""
        q_pi, m = predict_q(self.pqm, self.tokenizer, prompts, responses, self.table, self.batch)
        q_mu = bok_closed(q_pi, self.k) * m                       # every BoK prover from the one Q^pi verifier
        return q_pi, q_mu, advantages(q_mu) * m[:, 1:], m, m[:, 1:]


# --------------------------------------------------------------------------------------------------------------
# Training the verifiers on Monte Carlo labels (section 4.2)

def collect_labels(prover, task, tokenizer, problems, responses, n_mc, cfg, g, desc="labels"):
    """n_mc rollouts under `prover` from every prefix of each response to its problem, depth by depth (every response's
    h-th prefix in one batch): success counts (R, H+1) and where a prefix exists (R, H+1). Q_hat = counts / n_mc, a soft
    label."""
    table = data.step_end_table(tokenizer, task.delimiter)
    cuts = [step_cuts(y, table) for y in responses]
    H = max(len(c) for c in cuts)
    counts, labelled = torch.zeros(len(responses), H), torch.zeros(len(responses), H, dtype=torch.bool)
    for h in tqdm(range(H), desc=desc, leave=False):
        todo = [r for r in range(len(responses)) if h < len(cuts[r])]
        counts[todo, h] = mc_successes(prover, task, tokenizer, problems,
                                       [(r, responses[r][:cuts[r][h]]) for r in todo], n_mc, cfg, g)
        labelled[todo, h] = True
    return counts, labelled


def labelled_rollouts(model, task, tokenizer, problems, n_mc, cfg, stream, path, settings):
    """One rollout of `model` per problem with its `collect_labels`, drawn from the random stream `stream`: responses,
    counts (R, H+1) and labelled (R, H+1). Cached in `path` with the `settings` they were drawn with; drawn again when
    those differ."""
    saved = load_tensors(path, "delete it and it is drawn again") if os.path.exists(path) else None
    if saved is not None and saved["settings"] == settings:
        return saved["responses"], saved["counts"], saved["labelled"]
    g = generator(stream, cfg.seed, device=next(model.parameters()).device)
    responses = rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(len(problems))], 1, cfg,
                                  generator=g)
    counts, labelled = collect_labels(model, task, tokenizer, problems, responses, n_mc, cfg, g, desc=stream)
    data.write_atomic(path, lambda tmp: torch.save({"settings": settings, "responses": responses, "counts": counts,
                                                    "labelled": labelled}, tmp))
    return responses, counts, labelled


def train_verifier(verifier, tokenizer, prompts, responses, labels, labelled, table, cfg, desc):
    """`verifier_loss` against the soft labels (R, H+1) where `labelled`, VERIFIER_BATCH responses a step. Only the layers
    above the frozen backbone train: its features are computed once (if within FEATURE_CACHE_BYTES; else every step)."""
    device = next(verifier.parameters()).device
    ids, mask, pos, pos_mask = score_rows(tokenizer, prompts, responses, table)   # (R, L), (R, L), (R, H+1) x 2
    H = pos.shape[1]
    labels, labelled = labels[:, :H].float(), pos_mask & labelled[:, :H]
    verifier.lm.requires_grad_(False)
    D = verifier.lm.config.get_text_config().hidden_size
    cached = ids.numel() * (D + 1) * 4 <= FEATURE_CACHE_BYTES
    features = backbone_features(verifier, ids, mask, cfg, "cpu") if cached else None            # (R, L, D+1)
    trained = [p for p in verifier.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=VERIFIER_LR, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 50) *
                                              0.5 * (1 + math.cos(math.pi * i / cfg.verifier_steps)))
    g = generator("verifier", cfg.seed)                                  # which responses each step trains on
    verifier.train()
    bar = tqdm(range(cfg.verifier_steps), desc=desc, leave=False)
    for step in bar:
        rows = torch.randint(len(ids), (VERIFIER_BATCH,), generator=g)   # (b,) responses
        n, total = labelled[rows].sum().clamp_min(1), 0.0
        for part in micro_batches(len(rows), cfg.micro_batch_size):
            r = rows[part]
            L = int(pos[r].max()) + 1
            f = features[r, :L].to(device) if cached else backbone_features(verifier, ids[r, :L], mask[r, :L], cfg, device)
            with autocast(device):
                pred = verifier(*(t.to(device) for t in (ids[r, :L], mask[r, :L], pos[r], pos_mask[r])), f=f)
            loss = verifier_loss(pred.float(), labels[r].to(device), labelled[r].to(device)) * (
                labelled[r].sum() / n).to(device)                         # micro-batches: weighted by their share
            loss.backward()
            total += loss.item() if step % 25 == 0 else 0.0
        update(verifier, opt, sched)
        if step % 25 == 0:
            bar.set_postfix(bce=f"{total:.4f}")
    verifier.lm.requires_grad_(True)
    return verifier.eval()


def verifier_loss(logits, labels, labelled):
    """Mean over labelled prefixes of -[y log Q_hat + (1 - y) log(1 - Q_hat)], Q_hat = sigmoid(logits). All (B, H+1)."""
    bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")                    # (B, H+1)
    return (bce * labelled).sum() / labelled.sum().clamp(min=1)


VERIFIER_BATCH = 64           # responses per training step (all their prefixes in one pass)
VERIFIER_LR = 3e-3            # of the layers above the frozen backbone; cosine decay after 50 warm-up steps
FEATURE_CACHE_BYTES = 2 ** 31   # a frozen backbone's features are kept when they take at most 2 GB as fp32


@torch.no_grad()
def backbone_features(verifier, ids, mask, cfg, to):
    """The frozen backbone's `Verifier.features` of all rows (R, L, D+1) as fp32 on device `to`, in micro-batches."""
    device = next(verifier.parameters()).device
    with autocast(device):
        return torch.cat([verifier.features(ids[part].to(device), mask[part].to(device)).to(to)
                          for part in micro_batches(len(ids), cfg.micro_batch_size or 256)])


def load_or_train_verifiers(model, task, tokenizer, cfg, device, names=("orm", "pqm")):
    """The ORM (the outcome of each seed rollout, at its last step) and the PQM (Q^pi of every prefix, soft labels),
    cached with their labels in runs/<task>/seed<s>/verifiers/<hash of their settings>/; only missing ones train."""
    settings, path = verifier_settings(task, cfg), verifier_dir(task, cfg)
    missing = [n for n in names if not os.path.exists(os.path.join(path, n))]
    verifiers = {n: Verifier.load(os.path.join(path, n), device) for n in names if n not in missing}
    if not missing:
        print(f"loading verifiers from {path}")
        print_backbone(data.read_json(os.path.join(path, "backbone.json")))
        return verifiers
    print(f"training verifiers {', '.join(missing)} (cached in {path})")
    t0 = time.time()
    problems = task.problems(cfg.n_problems, rng("labels", cfg.seed))
    responses, counts, labelled = labelled_rollouts(
        model, task, tokenizer, problems, cfg.n_mc, cfg, "labels", labels_path(cfg),
        {**policy_settings(task, cfg), "n_problems": cfg.n_problems, "n_mc": cfg.n_mc})
    prompts = [data.prompt_ids(tokenizer, p) for p in problems]
    share = any_success_share(counts, labelled)
    print(f"  labelled {int(labelled.sum())} prefixes of {len(responses)} seed rollouts ({time.time() - t0:.0f}s); "
          f"with any success: {share['all']:.3f} (bare problem {share['first']:.3f}, after the last step "
          f"{share['last']:.3f})")
    table = data.step_end_table(tokenizer, task.delimiter)
    last = torch.zeros(counts.shape, dtype=torch.bool)                    # the ORM sees each response's last position
    last[torch.arange(len(responses)), labelled.sum(1) - 1] = True
    outcomes = torch.tensor([data.outcome(task, tokenizer, p, y) for p, y in zip(problems, responses)])
    targets = {"orm": (outcomes[:, None] * last, last), "pqm": (counts / cfg.n_mc, labelled)}   # soft, never rounded
    known = data.read_json(os.path.join(path, "backbone.json"))
    if known is None:
        backbone = load_lm(verifier_backbone(cfg), device) if verifier_backbone(cfg) else model
        known = backbone_accuracy(backbone, model, task, tokenizer, cfg)
        data.save_json(known, os.path.join(path, "backbone.json"))
    print_backbone(known)
    for name in missing:
        torch.manual_seed(stream_seed("verifier", cfg.seed))              # the fresh layers' initial weights
        backbone = load_lm(verifier_backbone(cfg)) if verifier_backbone(cfg) else copy.deepcopy(model)
        verifiers[name] = train_verifier(Verifier(backbone).to(device), tokenizer, prompts, responses, *targets[name],
                                         table, cfg, desc=name)
        verifiers[name].save(os.path.join(path, name))
    data.save_json(settings, os.path.join(path, "settings.json"))
    print(f"  verifiers trained in {time.time() - t0:.0f}s")
    return verifiers


def labels_path(cfg):
    """The training labels of one pipeline seed, shared by every verifier backbone: runs/<task>/seed<s>/labels/."""
    return os.path.join(seed_dir(cfg), "labels", f"{cfg.n_problems}x{cfg.n_mc}.pt")


def labelling_rollouts(labelled, n_mc):
    """What labels (R, H+1) cost: R seed rollouts, and n_mc rollouts from every labelled prefix but each response's
    last, which is complete and is not rolled out (`mc_successes`)."""
    return int(labelled.sum()) * n_mc + len(labelled) * (1 - n_mc)


def any_success_share(counts, labelled):
    """Whether the labels can teach anything: the share of labelled prefixes (R, H+1) with at least one successful
    rollout, over all prefixes, at the bare problem (h = 0) and after each response's last step. A prefix none of
    whose rollouts succeeded says only 'Q^pi is small', whatever its step was."""
    hit = (counts > 0) & labelled                                         # (R, H+1)
    last = labelled.sum(1) - 1                                            # (R,) index of the last labelled prefix
    rows = torch.arange(len(counts))
    return {"all": float(hit.sum() / labelled.sum().clamp(min=1)), "first": float(hit[:, 0].float().mean()),
            "last": float(hit[rows, last].float().mean())}


def backbone_accuracy(backbone, policy, task, tokenizer, cfg):
    """What the verifiers' backbone knows of the task before any label: its held-out accuracy beside the base
    policy's, on the same problems and noise. A backbone that solves the task better than the policy knows answers
    the labels never taught (the `clean` teacher)."""
    problems, device = eval_problems(task, cfg), next(policy.parameters()).device
    acc = lambda m: accuracy(m, task, tokenizer, problems, cfg, generator=generator("eval", cfg.seed, device=device))
    return {"verifier_model": cfg.verifier_model, "backbone_accuracy": acc(backbone), "policy_accuracy": acc(policy)}


def print_backbone(known):
    if known:   # None: verifiers cached by an earlier version
        print(f"  verifier backbone {known['verifier_model']}: held-out accuracy {known['backbone_accuracy']:.3f} "
              f"(the base policy's: {known['policy_accuracy']:.3f})")


def verifier_dir(task, cfg):
    """runs/<task>/seed<s>/verifiers/<hash of verifier_settings>/: the trained verifiers and what their backbone knew."""
    settings = json.dumps(verifier_settings(task, cfg), sort_keys=True).encode()
    return os.path.join(seed_dir(cfg), "verifiers", hashlib.sha1(settings).hexdigest()[:10])


def verifier_settings(task, cfg):
    """Everything a verifier depends on: the policy's settings, its backbone's, the labels' and the training's."""
    return {**policy_settings(task, cfg), "verifier_version": 5, "n_problems": cfg.n_problems, "n_mc": cfg.n_mc,
            "verifier_steps": cfg.verifier_steps, "verifier_model": cfg.verifier_model,
            "verifier_model_files": model_fingerprint(verifier_backbone(cfg))}


def verifier_backbone(cfg):
    """The directory the verifiers start from (`--verifier-model`), or "" for the policy's own copy; `clean`: the
    embedded policy's clean warm start, which knows the facts the policy was taught wrong (data.Arith)."""
    if cfg.verifier_model == "policy":
        return ""
    return os.path.join(seed_dir(cfg), "policy", "clean") if cfg.verifier_model == "clean" else cfg.verifier_model


def verifier_report(model, verifiers, task, tokenizer, cfg, device):
    """The ORM, PQM and PAV against Monte Carlo labels (REPORT_MC rollouts per prefix) on held-out problems: binary
    cross-entropy and mean absolute error of each prefix's value, and the correlation of each step's advantage."""
    problems = task.problems(REPORT_PROBLEMS, rng("held-out labels", cfg.seed), split="test")
    settings = {**policy_settings(task, cfg), "problems": REPORT_PROBLEMS, "mc": REPORT_MC, "format": 2,
                **({"eval_data": task.files["eval_data"]} if cfg.data else {})}
    responses, counts, m = labelled_rollouts(model, task, tokenizer, problems, REPORT_MC, cfg, "held-out labels",
                                             os.path.join(seed_dir(cfg), "held_out_labels.pt"), settings)
    prompts = [data.prompt_ids(tokenizer, p) for p in problems]
    q_mc = counts / REPORT_MC                                             # (R, H+1) Monte Carlo Q^pi
    K = prover_k(cfg)
    mu_mc = bok_unbiased(counts, REPORT_MC, K)                            # (R, H+1) Monte Carlo Q^{BoK}
    pav = make_pav(verifiers, tokenizer, task, cfg)
    q_pi, q_mu, _, m_pred, _ = pav.score(prompts, responses)
    q_orm = predict_q(verifiers["orm"], tokenizer, prompts, responses, pav.table, pav.batch)[0]
    m = m & m_pred
    m_adv = m[:, 1:] & m[:, :-1]

    def metrics(pred, label):
        p, y = pred[m].clamp(1e-6, 1 - 1e-6), label[m]
        x, z = advantages(pred)[m_adv], advantages(label)[m_adv]
        x, z = x - x.mean(), z - z.mean()
        return {"bce": float(F.binary_cross_entropy(p, y)), "mae": float((p - y).abs().mean()),
                "adv_corr": float((x * z).sum() / (x.norm() * z.norm()).clamp_min(1e-12))}

    report = {"orm": metrics(q_orm, q_mc), "pqm": metrics(q_pi, q_mc), "pav": metrics(q_mu, mu_mc)}
    report["held_out"] = {"problems": len(problems), "prefixes": int(m.sum()), "rollouts_per_prefix": REPORT_MC}
    return report


REPORT_PROBLEMS, REPORT_MC = 128, 64   # held-out problems of the verifier report, rollouts per prefix


def make_pav(verifiers, tokenizer, task, cfg):
    return PAV(verifiers["pqm"], tokenizer, data.step_end_table(tokenizer, task.delimiter), prover_k(cfg),
               batch=cfg.micro_batch_size or 256)


def prover_k(cfg):
    """`--prover boK` -> K: the PAV's prover mu = BoK(pi), derived from the Q^pi verifier."""
    p = cfg.prover.lower()
    if p.startswith("bo") and p[2:].isdigit() and int(p[2:]) > 0:
        return int(p[2:])
    fail(f"--prover {cfg.prover!r} must be boK with K a positive integer, e.g. bo4")


def explain(model, verifiers, task, tokenizer, cfg, device):
    """One held-out response, step by step (cf. Fig. 2a): Q^pi, Q^mu and A^mu from the verifier and from EXPLAIN_MC
    rollouts, and the effective reward; a wrong response, so that a step that loses ground shows beside progress."""
    g = generator("eval", cfg.seed, step=1, device=device)
    problems = eval_problems(task, cfg)[:16]
    responses = rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(len(problems))], 1, cfg,
                                  generator=g)
    i = next((i for i, (p, y) in enumerate(zip(problems, responses)) if not data.outcome(task, tokenizer, p, y)), 0)
    problem, y = problems[i], responses[i]
    table = data.step_end_table(tokenizer, task.delimiter)
    cuts = step_cuts(y, table)
    q_pi, q_mu, a_mu, _, _ = make_pav(verifiers, tokenizer, task, cfg).score([data.prompt_ids(tokenizer, problem)], [y])
    eff = effective_reward(q_pi, a_mu, cfg.alpha)[0]
    counts = mc_successes(model, task, tokenizer, [problem], [(0, y[:c]) for c in cuts], EXPLAIN_MC, cfg, g)
    mc_pi, mc_mu = counts / EXPLAIN_MC, bok_unbiased(counts, EXPLAIN_MC, prover_k(cfg))
    steps = ["(problem)"] + [tokenizer.decode(y[a:b]).replace("\n", "\\n") for a, b in zip(cuts, cuts[1:])]
    print(f"problem {problem.prompt.strip()!r} (answer {problem.answer}); "
          f"outcome {data.outcome(task, tokenizer, problem, y):.0f}")
    print(f"{'h':>2} | {'step':<12} | {'Q^pi':>5} {'MC':>5} | {'Q^mu':>5} {'MC':>5} | {'A^mu':>6} {'MC':>6} | "
          f"effective (alpha {cfg.alpha:g})")
    rows = []
    for h, text in enumerate(steps):                                      # h = 0: the bare problem
        r = {"step": text, "q_pi": float(q_pi[0, h]), "mc_q_pi": float(mc_pi[h]), "q_mu": float(q_mu[0, h]),
             "mc_q_mu": float(mc_mu[h])}
        line = f"{h:>2} | {text:<12} | {r['q_pi']:5.3f} {r['mc_q_pi']:5.3f} | {r['q_mu']:5.3f} {r['mc_q_mu']:5.3f} |"
        if h:
            r.update(a_mu=float(a_mu[0, h - 1]), mc_a_mu=float(mc_mu[h] - mc_mu[h - 1]), effective=float(eff[h - 1]))
            line += f" {r['a_mu']:+6.3f} {r['mc_a_mu']:+6.3f} | {r['effective']:+.3f}"
        print(line)
        rows.append(r)
    plot_explained(rows, cfg, os.path.join(cfg.out, "explain.png"))
    return rows


EXPLAIN_MC = 256   # rollouts per prefix for the Monte Carlo columns of --explain


def plot_explained(rows, cfg, path):
    """Q^pi and Q^mu of each prefix, and the progress A^mu each step makes (our picture of the paper's Fig. 2a)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h, steps, moves = list(range(len(rows))), [r["step"] for r in rows], rows[1:]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(h, [r["q_pi"] for r in rows], "o-", label=r"$\hat Q^\pi$ (PQM)")
    a.plot(h, [r["q_mu"] for r in rows], "s-", label=rf"$\hat Q^\mu$, $\mu$ = {cfg.prover}($\pi$)")
    a.plot(h, [r["mc_q_mu"] for r in rows], "s:", color="C1", alpha=0.6, label=r"$Q^\mu$ by Monte Carlo")
    a.set_xticks(h, steps, rotation=30, fontsize=8)
    a.set(ylabel="value of the prefix", ylim=(-0.02, 1.02), title="the value of each prefix")
    a.legend(fontsize=8)
    b.bar(h[1:], [r["a_mu"] for r in moves], color=["C2" if r["a_mu"] >= 0 else "C3" for r in moves],
          label=r"$\hat A^\mu$ (progress)")
    b.plot(h[1:], [r["effective"] for r in moves], "ko-", ms=4, label=rf"effective reward, $\alpha$ = {cfg.alpha:g}")
    b.axhline(0, color="0.5", lw=0.8)
    b.set_xticks(h[1:], steps[1:], rotation=30, fontsize=8)
    b.set_title("what each step earns (cf. Fig. 2a)")
    b.legend(fontsize=8)
    fig.tight_layout()
    data.save_png(fig, path)
    plt.close(fig)


# ==============================================================================================================
# The machinery: rollouts, the base policy, configuration, files and the command line
# Rollout engine: batched sampling with a KV cache, whole responses or one step at a time

@dataclass
class Rollout:
    ids: torch.Tensor       # (N, T) sampled tokens, pad after a row's end
    logprobs: torch.Tensor  # (N, T) log-prob of each sampled token under the sampling distribution, 0 on padding
    mask: torch.Tensor      # (N, T) True on sampled tokens (the EOS or delimiter that ended a row included)
    source: torch.Tensor    # (N,) index of the prefix each row continues; rows of one prefix are adjacent


def pad_rows(seqs, pad_id, left=False):
    """Lists of ints -> a padded tensor (B, L) and its mask (B, L), 1 on the real entries; padded on the right, or on
    the left for sampling (every row's next token then sits in the same column)."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), L, dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(L - len(s), L) if left else slice(0, len(s))
        ids[i, cols], mask[i, cols] = torch.tensor(s, dtype=torch.long), 1
    return ids, mask


def decode_mask(model, attn):
    """The (N, L) attention mask of one-token decode steps as the ready-made (N, 1, 1, L) mask that the attention
    takes as it is. Given a 2D mask, transformers checks on the host whether it has padding (a device sync)."""
    impl = model.config._attn_implementation
    if impl == "sdpa":
        return attn[:, None, None, :].bool()
    if impl == "eager":
        return torch.zeros(attn.shape, dtype=model.dtype, device=attn.device).masked_fill(
            attn == 0, torch.finfo(model.dtype).min)[:, None, None, :]
    return attn   # other implementations take the 2D mask


class KVBuffer(DynamicLayer):
    """One layer's keys and values in a buffer (B, heads, capacity, D) allocated once: appending a token writes in
    place instead of copying the whole cache as DynamicCache's torch.cat does (2x faster labelling here)."""

    def __init__(self, capacity):
        super().__init__()
        self.capacity, self.n = capacity, 0

    def update(self, k, v, *args, **kwargs):
        if not self.is_initialized:
            B, H, _, D = k.shape
            self.dtype, self.device = k.dtype, k.device
            self.k_buf, self.v_buf = k.new_empty(B, H, self.capacity, D), v.new_empty(B, H, self.capacity, D)
            self.is_initialized = True
        self.k_buf[:, :, self.n:self.n + k.shape[-2]] = k
        self.v_buf[:, :, self.n:self.n + k.shape[-2]] = v
        self.n += k.shape[-2]
        return self._view()

    def _view(self):
        self.keys, self.values = self.k_buf[:, :, :self.n], self.v_buf[:, :, :self.n]
        return self.keys, self.values

    def get_seq_length(self):
        return self.n

    def batch_repeat_interleave(self, repeats):   # branch: n copies of each row
        self.k_buf, self.v_buf = self.k_buf.repeat_interleave(repeats, 0), self.v_buf.repeat_interleave(repeats, 0)
        self._view()

    def batch_select_indices(self, idx):          # keep only these rows
        self.k_buf, self.v_buf = self.k_buf.index_select(0, idx), self.v_buf.index_select(0, idx)
        self._view()


@torch.no_grad()
def sample(model, prefixes, *, n=1, max_new_tokens, eos_id, pad_id, banned=(), vocab=None, temperature=1.0,
           stop_table=None, check_every=4, generator=None):
    """Sample n continuations of each prefix (a list of token-id lists, prompt included).

    Each prefix is encoded once; its KV cache is then copied n times (never re-encoded). A row stops at EOS (`eos_id`,
    one id or a list), after `max_new_tokens` (an int, or one per prefix), or, with `stop_table` (V,), after the first
    token that ends a step (one-step mode). Temperature 0 is greedy. Tokens in `banned` and ids from `vocab` on are
    never sampled. Inside the token loop nothing waits for the device except one check every `check_every` tokens,
    which also drops finished rows from the batch.
    """
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in pad_rows(prefixes, pad_id, left=True))   # (B, P)
    B, P = ids.shape
    limit = torch.as_tensor(max_new_tokens, device=device).expand(B).repeat_interleave(n)   # (N,)
    N, T = B * n, int(limit.max())
    cache = Cache(layers=[KVBuffer(P + T) for _ in range(model.config.get_text_config().num_hidden_layers)])
    with autocast(device):
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True, logits_to_keep=1, cache=cache)
    logits = out.logits[:, -1].float()                                    # (B, V); `cache` was filled in place
    # Branch: the n continuations of a prefix share its encoding; only cache rows are copied.
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)  # (N, V), (N, P)
    attn = torch.ones(N, P + T, dtype=mask.dtype, device=device)          # (N, P + T), new tokens always attended
    attn[:, :P] = mask
    attn = decode_mask(model, attn)                                       # (N, 1, 1, P + T), sliced at each step
    pos = mask.sum(-1)                                                    # (N,) position of the first new token
    stop = stop_table.to(device) if stop_table is not None else None
    eos = torch.as_tensor(eos_id, device=device).view(-1)                 # (E,) the ids that end a response
    never = torch.zeros(logits.shape[-1], device=device)                  # (V,) -inf on banned tokens
    never[list(banned)] = -math.inf
    if vocab is not None:
        never[vocab:] = -math.inf
    if stop is not None and len(stop) < len(never):                       # embedding rows past the tokenizer
        stop = torch.cat([stop, stop.new_zeros(len(never) - len(stop))])
    tokens = torch.full((N, T), pad_id, dtype=torch.long, device=device)  # (N, T)
    logps = torch.zeros(N, T, device=device)                              # (N, T)
    valid = torch.zeros(N, T, dtype=torch.bool, device=device)            # (N, T)
    rows = torch.arange(N, device=device)                                 # (n_live,) output row of each live row
    done = limit == 0                                                     # (n_live,)
    t = 0
    for t in range(T):
        logp = torch.log_softmax(logits / max(temperature, 1e-6) + never, dim=-1)  # (n_live, V)
        if temperature == 0:
            tok = logp.argmax(-1)                                         # (n_live,)
        else:  # Gumbel-max: an exact sample from softmax(logits / temperature), with no host sync
            u = torch.rand(logp.shape, device=device, generator=generator).clamp_min(1e-20)
            tok = (logp - torch.log(-torch.log(u))).argmax(-1)            # (n_live,)
        tok = torch.where(done, pad_id, tok)
        tokens[rows, t], valid[rows, t] = tok, ~done
        logps[rows, t] = torch.where(done, 0.0, logp.gather(1, tok[:, None]).squeeze(1))
        done = done | torch.isin(tok, eos) | (t + 1 >= limit)
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
            out = model(input_ids=tok[:, None], attention_mask=attn[..., :P + t + 1],
                        position_ids=(pos + t)[:, None], use_cache=True, cache=cache)
        logits = out.logits[:, -1].float()                                # (n_live, V)
    source = torch.arange(B, device=device).repeat_interleave(n)          # (N,)
    return Rollout(tokens[:, :t + 1], logps[:, :t + 1], valid[:, :t + 1], source)


# --------------------------------------------------------------------------------------------------------------
# Whole responses: roll out, score the outcome

def eval_problems(task, cfg):
    """Held-out problems: the task's test split, which no training stage draws from."""
    n = cfg.eval_problems * (8 if task.name == "planted" else 1)   # planted: one problem, success is rare
    return task.problems(n, rng("eval", cfg.seed), split="test")


def rollout_responses(model, task, tokenizer, problems, prefixes, n, cfg, temperature=None, generator=None):
    """Complete each (problem, response-prefix) n times; returns the full responses as token lists, n per prefix.
    Runs in chunks of at most `cfg.batch_rows` rows."""
    out, per_call = [], max(1, cfg.batch_rows // n)
    temperature = TEMPERATURE if temperature is None else temperature
    for i in range(0, len(prefixes), per_call):
        chunk = prefixes[i:i + per_call]
        r = sample(model, [data.prompt_ids(tokenizer, problems[j]) + p for j, p in chunk], n=n,
                   max_new_tokens=[task.max_new_tokens - len(p) for _, p in chunk], temperature=temperature,
                   generator=generator, **data.special_ids(tokenizer))
        lengths, ids = r.mask.sum(-1).tolist(), r.ids.tolist()
        out += [chunk[i // n][1] + row[:L] for i, (row, L) in enumerate(zip(ids, lengths))]
    return out


def accuracy(model, task, tokenizer, problems, cfg, temperature=None, generator=None):
    responses = rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(len(problems))], 1, cfg,
                                  temperature=temperature, generator=generator)
    return sum(data.outcome(task, tokenizer, p, y) for p, y in zip(problems, responses)) / len(problems)


# --------------------------------------------------------------------------------------------------------------
# The base policy: a tiny Llama built from a config and warm-started on the task's demonstrations

def policy_config(tokenizer, cfg):
    # Arithmetic: initializer_range 0.06, not Llama's 0.02, from which the mod-10 lookup stayed at chance for 550 to
    # over 1,500 steps (benchmarks/warm_start.py). planted keeps 0.02: from 0.06 its policy finds the target too often
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.d_model, intermediate_size=2 * cfg.d_model,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=128, tie_word_embeddings=True,
                       initializer_range=0.02 if cfg.task == "planted" else 0.06,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


def update(model, opt, sched, loss=None):
    """One optimizer step on `loss` (None: on gradients accumulated by micro-batches), gradients clipped to norm 1."""
    if loss is not None:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)


def micro_batches(n, size):
    """Slices of at most `size` rows covering range(n), one if size is 0 (each loss is weighted by its share)."""
    size = size or n
    return [slice(i, i + size) for i in range(0, n, size)]


def sft(model, tokenizer, pairs, *, steps, lr, batch_size, seed, desc, stop_early=None, warmup=100):
    """Supervised warm start on (prompt, response) texts: cross-entropy on the response tokens and EOS, AdamW, linear
    warm-up then cosine decay. `stop_early(step)` is called every 50 steps and ends training when it returns True."""
    device = next(model.parameters()).device
    prompts = [tokenizer.encode(prompt, add_special_tokens=True) for prompt, _ in pairs]
    ids, mask = pad_rows([p + tokenizer.encode(r) + [tokenizer.eos_token_id] for p, (_, r) in zip(prompts, pairs)],
                         tokenizer.pad_token_id)                                          # (N, L)
    loss_mask = mask.bool() & (torch.arange(ids.shape[1]) >= torch.tensor([len(p) for p in prompts])[:, None])
    ids, loss_mask = ids.to(device), loss_mask.to(device)                 # (N, L): the response tokens and EOS
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup) *
                                              (0.55 + 0.45 * math.cos(math.pi * min(i / steps, 1.0))))
    g = torch.Generator().manual_seed(seed)
    model.train()
    bar = tqdm(range(steps), desc=desc, leave=False)
    for step in bar:
        idx = torch.randint(len(ids), (batch_size,), generator=g).to(device)
        x, m = ids[idx], loss_mask[idx, 1:]                               # (b, L), (b, L-1): m[t] marks x[t + 1]
        with autocast(device):
            logits = model(input_ids=x[:, :-1]).logits.float()            # (b, L-1, V)
        loss = F.cross_entropy(logits[m], x[:, 1:][m])
        update(model, opt, sched, loss)
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
    """Build the embedded base policy and train it on the task's demonstrations. Returns it and, on the arithmetic
    tasks, a copy of the model after its clean stage (`--verifier-model clean` starts the verifiers from it)."""
    torch.manual_seed(stream_seed("policy", cfg.seed))                  # the initial weights
    model = LlamaForCausalLM(policy_config(tokenizer, cfg)).to(device)
    draw = rng("policy", cfg.seed)
    if task.name == "planted":
        # The paper trains its MADE MLP for 50 iterations on 3,200 samples; our transformer needs more passes over them.
        sft(model, tokenizer, task.demonstrations(3200, draw), steps=500, lr=SFT_LR, batch_size=SFT_BATCH,
            seed=stream_seed("policy", cfg.seed, 1), desc="warm start")
        return model, None
    # Arithmetic: right solutions until greedy accuracy is high (the mod-10 lookup clicks suddenly, after 350 to 450
    # steps from policy_config's init), then a short pass over the demonstrations: a policy that errs as they do.
    probe = task.problems(256, rng("policy", cfg.seed, 1))   # training problems: no test problem decides anything

    def learned(step):
        acc = accuracy(model, task, tokenizer, probe, cfg, temperature=0.0)
        tqdm.write(f"  clean warm start: step {step} | greedy accuracy {acc:.3f}")
        return step >= 300 and acc >= 0.95
    sft(model, tokenizer, task.demonstrations(60_000, draw, clean=True), steps=1500, lr=SFT_LR, batch_size=SFT_BATCH,
        seed=stream_seed("policy", cfg.seed, 1), desc="warm start (clean)", stop_early=learned)
    clean = copy.deepcopy(model)
    sft(model, tokenizer, task.demonstrations(20_000, draw), steps=250, lr=1e-3, batch_size=SFT_BATCH,
        seed=stream_seed("policy", cfg.seed, 2), desc="warm start (demonstrations)", warmup=1)
    return model, clean


SFT_BATCH, SFT_LR = 64, 3e-3   # the warm start's batch and peak learning rate (linear warm-up, then cosine decay)


def policy_settings(task, cfg):
    """Everything the base policy depends on: a cached policy (and what was computed with it) is reused only if these
    match."""
    model = ({"model": os.path.abspath(cfg.model), "model_files": model_fingerprint(cfg.model)} if cfg.model else
             {"d_model": cfg.d_model, "n_layers": cfg.n_layers})
    return {"version": 5, "task": task.name, "seed": cfg.seed, **model, **task.settings()}


def load_or_build_policy(task, cfg, device):
    """`--model DIR`: that model and its tokenizer, as they are. Otherwise runs/<task>/seed<s>/policy/: loaded when it
    was built with the same settings, built (and saved) otherwise."""
    if cfg.model:
        print(f"loading the base policy from {cfg.model}")
        tokenizer = data.load_tokenizer(cfg.model)
        model = load_lm(cfg.model, device)
        gen = getattr(model.generation_config, "eos_token_id", None)      # e.g. Llama 3: end of text and end of turn
        gen = gen if isinstance(gen, list) else [gen]
        tokenizer.extra_end_ids = [i for i in gen if i is not None and i != tokenizer.eos_token_id and i < len(tokenizer)]
        task.tokenizer = tokenizer
        return model, tokenizer
    path, settings = os.path.join(seed_dir(cfg), "policy"), policy_settings(task, cfg)
    if data.read_json(os.path.join(path, "settings.json")) == settings:
        print(f"loading the base policy from {path}")
        try:
            return AutoModelForCausalLM.from_pretrained(path).to(device).eval(), data.CharTokenizer.from_pretrained(path)
        except Exception as e:
            fail(f"the cached policy {path} cannot be read ({type(e).__name__}); delete it and it is built again")
    print(f"building the base policy (cached in {path} for later runs)")
    t0 = time.time()
    model, clean = warm_start(task, task.tokenizer, cfg, device)

    def save(tmp):   # the policy, its tokenizer, the clean stage's model, and last the settings that vouch for them
        for m, where in ((model, tmp), (clean, os.path.join(tmp, "clean"))):
            if m is not None:
                m.save_pretrained(where)
                task.tokenizer.save_pretrained(where)
        data.save_json(settings, os.path.join(tmp, "settings.json"))
    data.write_atomic(path, save)
    print(f"warm start took {time.time() - t0:.0f}s")
    return model, task.tokenizer


# --------------------------------------------------------------------------------------------------------------
# Configuration: one dataclass of settings per script, every field a flag; a field's metadata says what it accepts

def arg(default, help, accepts=None):
    """A config field: default, --help text (None: no flag), and what it `accepts` ("positive", "non-negative")."""
    return field(default=default, metadata={"help": help, "accepts": accepts})


@dataclass
class Config:
    """The pipeline's settings, shared by pav.py, search.py and rl.py: a flag means the same in all three."""
    task: str = arg("facts", "facts: arithmetic taught some one-line facts wrong (outcome-only RL is slow); arith: "
                             "noise on every line (where it is not); planted: the paper's toy (section 3.3)")
    seed: int = arg(0, "pipeline seed: the base policy, labels and verifiers (cached in runs/<task>/seed<s>)")
    out: str = arg("", "output directory; empty: runs/<task> (runs/<name of the --data file> with --data)")
    model: str = arg("", "a local causal-LM directory as the base policy; empty: the embedded tiny Llama")
    data: str = arg("", "JSON lines of problems in GSM8K's layout (question, answer '... #### 72') or MATH's (problem, "
                        "solution with \\boxed{}); replaces --task and needs --model")
    eval_data: str = arg("", "held-out problems in the same layouts; empty: 1 in 5 problems of --data, by question")
    max_new_tokens: int = arg(320, "with --data: the longest response, in tokens", "positive")
    verifier_model: str = arg("policy", "backbone of the verifiers: policy (its own weights), clean (the embedded "
                                        "policy before its wrong demonstrations: a teacher that knows the task, an "
                                        "upper bound), or a model directory with the policy's tokenizer")
    prover: str = arg("bo4", "the PAV's prover mu = BoK(pi), Best-of-K of the base policy (section 3.2)")
    alpha: float = arg(0.5, "weight of A^mu in the effective reward Q^pi + alpha * A^mu (Eq. 5)", "non-negative")
    n_problems: int = arg(4096, "training problems whose seed rollout is labelled for the verifiers", "positive")
    n_mc: int = arg(4, "rollouts from every prefix of a seed rollout (its label: the share that succeed)", "positive")
    verifier_steps: int = arg(1500, "training steps of each verifier (64 responses each)", "positive")
    d_model: int = arg(128, "width of the embedded Llama policy", "positive")
    n_layers: int = arg(5, "layers of the embedded Llama policy", "positive")
    eval_problems: int = arg(512, "held-out problems for accuracy (planted: 8 times as many samples)", "positive")
    batch_rows: int = arg(4096, "rows the rollout engine samples at once (the memory bound)", "positive")
    micro_batch_size: int = arg(0, "rows per forward and backward pass (gradients accumulate); 0: the whole batch",
                                "non-negative")


@dataclass
class PavConfig(Config):
    explain: bool = arg(False, "only explain one held-out response step by step, and plot it (explain.png)")


TEMPERATURE = 1.0   # of every rollout: the policy's own distribution


def parse_config(cls, argv=None):
    """A config dataclass as argparse flags (--n-mc for n_mc), with its class's `task_defaults` for the --task given."""
    import argparse
    ap = argparse.ArgumentParser(description=sys.modules[cls.__module__].__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    ap.error = lambda msg: fail(msg)   # one line on stderr, not the usage block
    flags = [f for f in dataclasses.fields(cls) if f.metadata["help"] is not None]
    for f in flags:
        kind = {"action": argparse.BooleanOptionalAction} if f.type in (bool, "bool") else {"type": type(f.default)}
        ap.add_argument("--" + f.name.replace("_", "-"), default=f.default, help=f.metadata["help"], **kind)
    task = ap.parse_known_args(argv)[0].task
    ap.set_defaults(**getattr(cls, "task_defaults", {}).get(task, {}))
    args = vars(ap.parse_args(argv))
    for f in flags:
        v, accepts = args[f.name], f.metadata["accepts"]
        if (isinstance(v, float) and not math.isfinite(v)) or (accepts == "positive" and not v > 0) or \
                (accepts == "non-negative" and not v >= 0):
            what = f"{accepts + ' ' if accepts else ''}{'integer' if isinstance(v, int) else 'finite number'}"
            fail(f"--{f.name.replace('_', '-')} must be a {what}, got {v}")
    return cls(**args)


def fail(msg):
    """Bad input: one line on stderr and exit code 2, before any long work."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def number_list(text, name, kind=int, positive=True):
    """A flag's comma-separated numbers ("1,2,4"), each positive unless `positive` is False; else one line, exit 2."""
    try:
        values = [kind(v) for v in text.split(",")]
    except ValueError:
        fail(f"--{name} must be a comma-separated list of {'integers' if kind is int else 'numbers'}, got {text!r}")
    if any(not math.isfinite(v) or (positive and v <= 0) for v in values):
        fail(f"--{name} entries must be {'positive' if positive else 'finite'}, got {text!r}")
    return values


def check_config(cfg):
    """Everything that can be checked before the long work: the task and its combinations, the prover, and every file,
    model directory and tokenizer named. Sets cfg.task ("data" with --data) and cfg.out."""
    if cfg.data:
        if cfg.task not in (Config.task, "data"):
            fail(f"--data replaces --task; drop --task {cfg.task}")
        if not cfg.model:
            fail("--data needs --model: the embedded policy is built for the synthetic tasks only")
        cfg.task = "data"
    elif cfg.task not in data.TASKS:
        fail(f"unknown task {cfg.task!r}; choose from {', '.join(data.TASKS)}")
    if cfg.eval_data and not cfg.data:
        fail("--eval-data needs --data")
    if cfg.model and cfg.task == "planted":
        fail("planted is defined over its own 15 tokens; --model works with the arithmetic tasks or --data")
    if cfg.verifier_model == "clean" and (cfg.model or cfg.task == "planted"):
        cfg.verifier_model = "policy"   # a clean warm start exists only for the embedded arithmetic policies
    prover_k(cfg)
    cfg.out = cfg.out or os.path.join("runs", os.path.splitext(os.path.basename(cfg.data))[0] if cfg.data else cfg.task)
    try:   # files, model directories and tokenizers: read now, so that bad ones fail before any long work
        task = make_task(cfg)
        if cfg.model:
            tokenizer = data.load_tokenizer(cfg.model)
            data.step_end_table(tokenizer, task.delimiter)
        if cfg.verifier_model not in ("clean", "policy"):
            other = data.load_tokenizer(cfg.verifier_model)
            mine = data.load_tokenizer(cfg.model) if cfg.model else task.tokenizer
            if not hasattr(mine, "get_vocab") or other.get_vocab() != mine.get_vocab():
                raise ValueError(f"--verifier-model {cfg.verifier_model} has another tokenizer than the policy; the "
                                 "verifier reads the policy's tokens, so they must be the same")
    except ValueError as e:
        fail(str(e))


def make_task(cfg):
    if cfg.task == "data":
        return data.FileTask(cfg.data, cfg.eval_data or None, max_new_tokens=cfg.max_new_tokens)
    return data.get_task(cfg.task)


def seed_dir(cfg):
    """Where the caches of one pipeline seed live (policy, labels, verifiers, RL checkpoints): runs/<task>/seed<s>."""
    return os.path.join(cfg.out, f"seed{cfg.seed}")


def load_lm(path, device=None):
    """A causal LM from a directory, with fp32 weights whatever its saved dtype (CUDA runs under bf16 autocast)."""
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except Exception as e:   # a config without weights, a model that is not a causal LM, ...
        fail(f"{path} does not load as a causal LM ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    return model.to(device).eval() if device is not None else model


def model_fingerprint(path):
    """What a model directory's caches depend on: its files' names, sizes and modification times."""
    if not os.path.isdir(path):
        return path
    stats = [(n, os.stat(os.path.join(path, n))) for n in sorted(os.listdir(path))]
    return hashlib.sha1(repr([(n, st.st_size, st.st_mtime_ns) for n, st in stats]).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------------------
# Device, random streams, files

def pick_device():
    """cuda or cpu. Weights stay fp32; on CUDA the forward passes run under bf16 autocast."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def autocast(device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


# Every use of randomness draws from a stream of its own, seeded by a hash of (stream, run seed, step): what one stream
# draws does not shift another, and a resumed run draws what an uninterrupted one did.
STREAMS = ("policy", "eval", "prover table", "labels", "verifier", "held-out labels", "search", "rl", "rl problems",
           "rl prover", "rl eval", "pass@n")


def stream_seed(stream, seed, step=0):
    assert stream in STREAMS, f"unknown random stream {stream!r}"
    return int.from_bytes(hashlib.sha256(f"{stream}/{seed}/{step}".encode()).digest()[:8], "little") >> 1


def generator(stream, seed, step=0, device="cpu"):
    """A torch generator for sampling on `device` (the rollout engine's noise)."""
    return torch.Generator(device).manual_seed(stream_seed(stream, seed, step))


def rng(stream, seed, step=0):
    """A Python random generator (which problems, which states), seeded by its text, not by a torch seed."""
    assert stream in STREAMS, f"unknown random stream {stream!r}"
    return random.Random(f"{stream}/{seed}/{step}")


def load_tensors(path, fix):
    """torch.load with weights_only=True, so that a file from elsewhere cannot run code; a corrupt or foreign file is
    one line that names it and `fix`, what to do about it."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:
        fail(f"{path} cannot be read ({type(e).__name__}); {fix}")


# --------------------------------------------------------------------------------------------------------------

def setup(cls, argv):
    """Parse and check the flags of `cls`, pick the device, and load or build the base policy."""
    cfg = parse_config(cls, argv)
    check_config(cfg)
    device, dtype = pick_device()
    print(f"device {device} | dtype {dtype} | task {cfg.task} | seed {cfg.seed} | out {cfg.out}")
    task = make_task(cfg)
    model, tokenizer = load_or_build_policy(task, cfg, device)
    return cfg, device, task, model, tokenizer


def main(argv=None):
    cfg, device, task, model, tokenizer = setup(PavConfig, argv)
    if cfg.explain:
        explain(model, load_or_train_verifiers(model, task, tokenizer, cfg, device, names=("pqm",)), task, tokenizer,
                cfg, device)
        print(f"saved {os.path.join(cfg.out, 'explain.png')}")
        return
    problems = eval_problems(task, cfg)
    acc = accuracy(model, task, tokenizer, problems, cfg, generator=generator("eval", cfg.seed, device=device))
    print(f"base policy accuracy on {len(problems)} held-out problems: {acc:.3f}")
    verifiers = load_or_train_verifiers(model, task, tokenizer, cfg, device)
    report = verifier_report(model, verifiers, task, tokenizer, cfg, device)
    labels = load_tensors(labels_path(cfg), "delete it and it is drawn again")
    report["labels"] = any_success_share(labels["counts"], labels["labelled"])
    print(f"training labels: {report['labels']['all']:.3f} of labelled prefixes have a successful rollout (the bare "
          f"problem {report['labels']['first']:.3f}, after the last step {report['labels']['last']:.3f})")
    print(f"verifiers on {report['held_out']['prefixes']} held-out prefixes ({REPORT_MC} rollouts each); "
          f"PAV prover {cfg.prover}:")
    print(f"{'verifier':>9} | {'BCE':>7} | {'MAE':>7} | {'adv corr':>8}")
    for name in ("orm", "pqm", "pav"):
        r = report[name]
        print(f"{name:>9} | {r['bce']:7.4f} | {r['mae']:7.4f} | {r['adv_corr']:8.3f}")
    data.save_json({"base_accuracy": acc, "eval_samples": len(problems), **report, "config": dataclasses.asdict(cfg)},
              os.path.join(cfg.out, "verifiers.json"))
    print(f"saved {os.path.join(cfg.out, 'verifiers.json')}")


if __name__ == "__main__":
    main()
