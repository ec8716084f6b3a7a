"""Process advantage verifiers: the base policy, our rollout engine, Monte Carlo advantages, and the verifiers.

    python pav.py --task arith                 # CPU, under 10 minutes from nothing cached
    python pav.py --task planted               # the paper's toy task (section 3.3)
    python pav.py --model DIR --data train.jsonl --eval-data test.jsonl   # your causal LM on GSM8K/MATH-style files

What it does, top to bottom:
1. builds (first run) or loads (later runs) the base policy pi: a tiny Llama built from a config and warm-started by
   supervised training on the task's demonstrations, saved with `save_pretrained` under `runs/<task>/policy/`;
2. prints its accuracy on held-out problems;
3. prints the *prover table*: for mu = pi and each Best-of-K prover mu = BoK(pi) (and, on `planted`, the
   procedural gamma-provers), the two terms of Theorem 3.1 measured on sampled states, distinguishability
   E_s Var_{a~pi}[A^mu(s,a)] and alignment E_s E_{a~pi}[A^mu(s,a) A^pi(s,a)], plus the mean of Q^mu
   (`runs/<task>/provers.json`);
4. labels every prefix of `n_cov` seed rollouts per problem with `n_mc` rollouts, trains three verifiers on the soft
   labels, the ORM (outcome of a whole response), the PQM (Q^pi of every prefix) and the PAV (A^mu of every step,
   mu = Bo4(pi) by default), and reports them against held-out Monte Carlo labels (`runs/<task>/verifiers.json`).

Differences from the paper:
1. The base policy is a ~0.8M-parameter Llama trained by us, not Gemma; on `planted` it replaces the paper's MADE MLP
   and is warm-started on samples of the gamma = 3 procedural policy, not gamma = 5 (`--demo-gamma`): trained on
   gamma = 5 ones, ours finds the target often enough for outcome-only RL to take off (README).
2. The prover table takes Q^{BoK} from the base policy's own rollouts by the unbiased estimator 1 - C(n-c, K)/C(n, K)
   and estimates each term from two independent halves of the rollouts, so that Monte Carlo noise inflates neither
   the variance nor the product (the paper states the terms; it does not measure them).
3. A verifier reads a head on the hidden state of each step's last token instead of logits at an appended scoring
   token; for a causal model the two see the same prefix, and ours scores all prefixes in one pass. Its Q_hat is
   sigmoid(value) times the product of every step's sigmoid(survival), which lets "an earlier step was wrong" be
   learnt once instead of as an AND over steps (`Verifier`). Its backbone is the base policy, frozen, with one fresh
   decoder layer on top that reads the backbone's last hidden states plus each token's log-probability under it
   (how surprised the policy was by what was written): fine-tuning the whole backbone on Monte Carlo labels, or a
   fresh backbone, stayed at a depth-only prediction on `arith`, and without the log-probabilities the fresh layer
   learnt the line checks only partly (see the README). Class balance (appendix D) is an option, off by default:
   on `arith` it kept the verifier at a depth-only prediction (measured held-out MAE 0.28, against 0.15 without).
4. "First pit" seeding is simplified: a seed rollout is labelled depth by depth up to its first prefix with
   Q_hat = 0, and the rollouts saved are not re-spent on extra seeds.
5. Fig. 10's "outcome prediction error" is the squared error between a step's score (clipped to [0, 1]) and the
   response's final outcome.
"""

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # no model hub is reachable from our machines: fail fast, not after retries

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.cache_utils import Cache, DynamicLayer

import data


# --------------------------------------------------------------------------------------------------------------
# Config: one dataclass, every field a command-line flag

def arg(default, help):
    return field(default=default, metadata={"help": help})


@dataclass
class Config:
    task: str = arg("arith", "planted or arith")
    seed: int = arg(0, "random seed; a run repeats exactly with the same seed on CPU")
    out: str = arg("", "output directory; empty means runs/<task>")
    temperature: float = arg(1.0, "sampling temperature of every rollout")
    p_err: float = arg(0.35, "arith only: chance that a demonstration line's result is wrong, which the warm-started "
                             "policy copies; 0.5 leaves best-of-N well below Pass@N (README); output in runs/arith_p<p>")
    n_ops: int = arg(4, "arith only: operations (lines) per problem; 8 makes the outcome reward sparse and noisy, "
                        "where outcome-only RL stalls or learns late (README); output in runs/arith_n<n>")
    hard_facts: bool = arg(False, "arith only: the demonstrations err only on a fixed half of the one-line facts, and the "
                                  "answer lists every result (no lucky answers); with --p-err 0.9, outcome-only RL "
                                  "learns slowly (README); output in runs/arith_..._facts")
    demo_gamma: float = arg(3.0, "planted only: strength of the procedural policy whose 3,200 samples warm-start the "
                                  "base policy (the paper: 5; with 5, ours succeeds often enough for outcome-only RL "
                                  "to take off, README); output in runs/planted_g<gamma>")
    # real models and data (a GPU is advised; see the README's recipe)
    model: str = arg("", "a local causal-LM directory (or hub name) to use as the base policy as it is; empty: the "
                         "embedded tiny Llama, built and warm-started by us")
    verifier_model: str = arg("", "backbone of the verifiers (it must share the policy's tokenizer); empty: the policy; "
                                  "clean: the embedded arith policy's clean warm start, before the noisy demonstrations")
    data: str = arg("", "JSON lines of problems, GSM8K layout (question, answer '... #### 72') or MATH layout "
                        "(problem, solution with \\boxed{}); replaces --task and needs --model")
    eval_data: str = arg("", "held-out problems in the same layouts; empty: 1 in 5 problems of --data, by question")
    step_delimiter: str = arg("\\n", "with --data: the text that ends a step (\\n: a newline)")
    max_new_tokens: int = arg(320, "with --data: the longest response, in tokens")
    micro_batch_size: int = arg(0, "rows per forward and backward pass in training and scoring (gradients "
                                   "accumulate, results do not change); 0: the whole batch at once")
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
    table_mc: int = arg(64, "prover table: rollouts per prefix (two independent halves, each >= max K)")
    # verifiers (section 4.2, appendix D)
    n_problems: int = arg(8192, "training problems whose seed rollouts are labelled")
    n_cov: int = arg(1, "seed rollouts per training problem (the paper's coverage)")
    n_mc: int = arg(4, "Monte Carlo rollouts from every prefix of every seed rollout (soft label = fraction correct)")
    first_pit: bool = arg(False, "label a seed rollout only up to its first prefix with Q_hat = 0 (the 'first pit')")
    verifier_steps: int = arg(1500, "training steps of each verifier")
    verifier_batch: int = arg(64, "responses per verifier training step (all their prefixes scored in one pass)")
    verifier_layers: int = arg(1, "fresh Llama decoder layers a verifier puts on top of its backbone")
    verifier_lr: float = arg(0.0, "learning rate of the verifier's backbone; 0 freezes it")
    verifier_head_lr: float = arg(3e-3, "learning rate of the verifier's top layers and head")
    balance: bool = arg(False, "weight the prefixes so that Q_hat < 0.5 and >= 0.5 count equally (appendix D)")
    prover: str = arg("bo4", "the PAV's prover mu: boK (Best-of-K of pi, from the Q^pi verifier) or a policy directory")
    alpha: float = arg(0.5, "weight of A^mu in the effective reward Q^pi + alpha * A^mu (Eq. 5)")
    eval_verifier_problems: int = arg(128, "held-out problems for the verifier report")
    eval_mc: int = arg(64, "rollouts per held-out prefix, so that label noise does not decide the report")
    batch_rows: int = arg(4096, "rows sampled at once by the rollout engine (memory bound)")


def parse_config(cls, argv=None):
    """Turn a config dataclass into argparse flags (--n-mc for n_mc); --help shows every default."""
    import argparse
    ap = argparse.ArgumentParser(description=sys.modules[cls.__module__].__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            ap.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata["help"])
    ap.error = lambda msg: fail(msg)   # one line on stderr, not the usage block
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


def resolve_task(cfg):
    """--data replaces --task (cfg.task becomes "data"); an unknown task or a bad combination fails here."""
    if cfg.data:
        if cfg.task not in ("arith", "data"):
            fail(f"--data replaces --task; drop --task {cfg.task}")
        if not cfg.model:
            fail("--data needs --model: the embedded policy is built for the toy tasks only")
        cfg.task = "data"
    elif cfg.task not in data.TASKS:
        fail(f"unknown task {cfg.task!r}; choose from {', '.join(data.TASKS)}")
    if cfg.eval_data and not cfg.data:
        fail("--eval-data needs --data")
    if cfg.model and cfg.task == "planted":
        fail("planted is defined over its own 15 tokens; --model works with arith or --data")
    if not 0 <= cfg.p_err < 1:
        fail(f"--p-err must be in [0, 1), got {cfg.p_err}")
    if cfg.n_ops < 1:
        fail(f"--n-ops must be positive, got {cfg.n_ops}")
    default = data.Arith()
    if cfg.task != "arith" and cfg.p_err != default.p_err:
        fail(f"--p-err applies to arith only (its demonstrations' error rate), not to {cfg.task}")
    if cfg.task != "arith" and cfg.n_ops != default.n_ops:
        fail(f"--n-ops applies to arith only (its operations per problem), not to {cfg.task}")
    if cfg.task != "arith" and cfg.hard_facts:
        fail(f"--hard-facts applies to arith only (its demonstrations' errors), not to {cfg.task}")
    if not cfg.demo_gamma > 0:
        fail(f"--demo-gamma must be positive, got {cfg.demo_gamma}")
    if cfg.task != "planted" and cfg.demo_gamma != data.Planted().demo_gamma:
        fail(f"--demo-gamma applies to planted only (the strength of its demonstrations), not to {cfg.task}")
    if cfg.verifier_model == "clean" and (cfg.model or cfg.task != "arith"):
        fail("--verifier-model clean is the embedded arith policy's clean warm start; with --model or another task, "
             "give a model directory")


def check_config(cfg):
    resolve_task(cfg)
    for name in ("n_mc", "n_states", "n_actions", "table_mc", "eval_problems", "batch_rows", "sft_batch", "d_model",
                 "n_layers", "n_problems", "n_cov", "verifier_steps", "verifier_batch", "eval_verifier_problems",
                 "eval_mc", "max_new_tokens"):
        if getattr(cfg, name) <= 0:
            fail(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if not cfg.temperature > 0:
        fail(f"--temperature must be positive, got {cfg.temperature}")
    ks = int_list(cfg.ks, "ks")
    if cfg.table_mc < 2 * max(ks):
        fail(f"--table-mc {cfg.table_mc} is too small for K = {max(ks)}: each half needs at least K rollouts")
    if not (math.isfinite(cfg.alpha) and cfg.alpha >= 0):
        fail(f"--alpha must be a non-negative number, got {cfg.alpha}")
    if not (cfg.verifier_head_lr > 0 and cfg.sft_lr > 0):
        fail("learning rates must be positive")
    if not (cfg.verifier_lr >= 0 and cfg.verifier_layers >= 0):
        fail("--verifier-lr and --verifier-layers must be 0 or positive")
    K = prover_k(cfg)   # fails on a prover that names nothing
    if K is not None and cfg.eval_mc < K:
        fail(f"--eval-mc {cfg.eval_mc} is too small for the prover Bo{K}: the unbiased estimate needs at least K")
    try:
        gammas = [float(g) for g in cfg.gammas.split(",")]
    except ValueError:
        fail(f"--gammas must be a comma-separated list of numbers, got {cfg.gammas!r}")
    if any(not g > 0 for g in gammas):
        fail(f"--gammas entries must be positive, got {cfg.gammas!r}")
    if cfg.micro_batch_size < 0:
        fail(f"--micro-batch-size must be 0 (whole batches) or positive, got {cfg.micro_batch_size}")
    name = os.path.splitext(os.path.basename(cfg.data))[0] if cfg.data else cfg.task
    default = data.Arith()
    if cfg.task == "arith":                                            # its own policy: keep the default's caches
        name += f"_p{cfg.p_err:g}" if cfg.p_err != default.p_err else ""
        name += f"_n{cfg.n_ops}" if cfg.n_ops != default.n_ops else ""
        name += "_facts" if cfg.hard_facts else ""
    if cfg.task == "planted" and cfg.demo_gamma != data.Planted().demo_gamma:
        name += f"_g{cfg.demo_gamma:g}"
    cfg.out = cfg.out or os.path.join("runs", name)
    try:   # files, model directories and tokenizers: read now, so that bad ones fail before any long work
        task = make_task(cfg)
        if cfg.model:
            tokenizer = load_tokenizer(cfg.model)
            data.step_end_table(tokenizer, task.delimiter)
            if cfg.verifier_model and load_tokenizer(cfg.verifier_model).get_vocab() != tokenizer.get_vocab():
                raise ValueError(f"--verifier-model {cfg.verifier_model} has another tokenizer than --model "
                                 f"{cfg.model}; the verifier reads the policy's tokens, so they must be the same")
    except ValueError as e:
        fail(str(e))
    return ks, gammas


def seed_dir(cfg):
    """Where the caches of one pipeline seed live (policy, labels, verifiers, RL checkpoints): runs/<task>/seed<s>.
    What a script reports goes to runs/<task> itself."""
    return os.path.join(cfg.out, f"seed{cfg.seed}")


def make_task(cfg):
    if cfg.task == "arith":
        return data.Arith(n_ops=cfg.n_ops, p_err=cfg.p_err, hard_facts=cfg.hard_facts)
    if cfg.task == "planted":
        return data.Planted(demo_gamma=cfg.demo_gamma)
    if cfg.task != "data":
        return data.get_task(cfg.task)
    delimiter = cfg.step_delimiter.replace("\\n", "\n").replace("\\t", "\t")   # typed as \n on the command line
    return data.FileTask(cfg.data, cfg.eval_data or None, delimiter, cfg.max_new_tokens)


def load_lm(path, device=None):
    """A causal LM from a directory, with fp32 weights whatever dtype it was saved in (transformers would otherwise
    keep a bf16 checkpoint in bf16, and train it so); CUDA forward passes still run under bf16 autocast."""
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except Exception as e:   # a config without weights, a model that is not a causal LM, ...
        fail(f"{path} does not load as a causal LM ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    return model.to(device).eval() if device is not None else model


def model_fingerprint(path):
    """What a model directory's caches depend on: its config and tokenizer files' contents, and its weight files'
    names, sizes and modification times (a model fine-tuned in place gets new caches)."""
    if not os.path.isdir(path):
        return path   # a hub name
    h = hashlib.sha1()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.endswith(".json") or name.endswith(".jinja") or name.endswith(".model"):
            h.update(name.encode() + open(full, "rb").read())
        elif name.endswith((".safetensors", ".bin", ".pt")):
            st = os.stat(full)
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def load_tokenizer(path):
    """A model directory's tokenizer; without a padding token, EOS pads (every mask in this code says what is real)."""
    from transformers import AutoTokenizer
    if not (os.path.isdir(path) or "/" in path):
        raise ValueError(f"{path} is not a model directory")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{path} is not a model directory: it has no config.json")
    if os.path.isdir(path) and not any(n.endswith((".safetensors", ".bin")) for n in os.listdir(path)):
        raise ValueError(f"{path} has a config.json but no weights (*.safetensors or *.bin)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:   # transformers raises many kinds here (OSError, ValueError, TypeError, ...)
        raise ValueError(f"{path} has no tokenizer that AutoTokenizer can load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {path} has no EOS token, so a response could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------------------------------------------
# Files: written whole or not at all, read without running code

def write_atomic(path, write):
    """Make the file or directory `path` with `write(tmp)` at a temporary name beside it, then rename it into place: a
    run killed while writing leaves the previous version or nothing, never a half-written file for a later run."""
    tmp = f"{path}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)                               # what a killed run left behind
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write(tmp)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def save_json(obj, path):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    write_atomic(path, write)


def read_json(path):
    """A JSON file's contents, or None if it is missing or unreadable (a cache that does not match is rebuilt)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_png(fig, path):
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


def load_tensors(path, fix):
    """torch.load with weights_only=True, so that a file from elsewhere cannot run code; a corrupt or foreign file is
    one line that names it and `fix`, what to do about it."""
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:
        fail(f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}); {fix}")


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


# Every use of randomness draws from a stream of its own, seeded from (stream, run seed, step) by a hash: no two
# streams share a seed, what one stream draws does not shift another (the labels are the same whether the policy was
# just built or loaded from disk), and a resumed run draws what an uninterrupted one did.
STREAMS = ("policy", "eval", "prover table", "labels", "verifier", "held-out labels", "search", "rl", "rl problems",
           "rl prover", "rl eval", "pass@n")


def stream_seed(stream, seed, step=0):
    assert stream in STREAMS, f"unknown random stream {stream!r}"
    return int.from_bytes(hashlib.sha256(f"{stream}/{seed}/{step}".encode()).digest()[:8], "little") >> 1


def generator(stream, seed, step=0, device="cpu"):
    """A torch generator for sampling on `device` (the rollout engine's noise)."""
    return torch.Generator(device).manual_seed(stream_seed(stream, seed, step))


def rng(stream, seed, step=0):
    """A Python random generator (which problems, which states), seeded by its text: never the same seed as a torch one."""
    assert stream in STREAMS, f"unknown random stream {stream!r}"
    return random.Random(f"{stream}/{seed}/{step}")


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
    """The (N, L) attention mask of one-token decode steps as the ready-made (N, 1, 1, L) mask that the attention
    takes as it is. Given a 2D mask, transformers checks on the host whether it has padding (a device sync)."""
    impl = model.config._attn_implementation
    if impl == "sdpa":
        return attn[:, None, None, :].bool()
    if impl == "eager":
        return torch.zeros(attn.shape, dtype=model.dtype, device=attn.device).masked_fill(
            attn == 0, torch.finfo(model.dtype).min)[:, None, None, :]
    return attn   # other implementations take the 2D mask


def special_ids(tokenizer):
    """What `sample` needs to know of a tokenizer: EOS, padding, tokens a response never contains (BOS, and PAD unless
    it is EOS), and the vocabulary size: a model's embedding may have more rows than the tokenizer has tokens (Qwen2),
    and those are never sampled either."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    ends = data.end_ids(tokenizer)
    banned = [i for i in (tokenizer.bos_token_id, pad) if i is not None and i not in ends]
    return {"eos_id": ends if len(ends) > 1 else eos, "pad_id": pad, "banned": banned, "vocab": len(tokenizer)}


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


def cache_kwarg(model):
    """The name under which a model's forward takes its KV cache: `cache` from transformers 5.24 on (which warns
    about `past_key_values` and drops it in 5.40), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


@torch.no_grad()
def sample(model, prefixes, *, n=1, max_new_tokens, eos_id, pad_id, banned=(), vocab=None, temperature=1.0,
           stop_table=None, check_every=4, generator=None):
    """Sample n continuations of each prefix (a list of token-id lists, prompt included).

    Each prefix is encoded once; its KV cache is then copied n times (never re-encoded). A row stops at EOS (`eos_id`,
    one id or a list), after `max_new_tokens` (an int, or one per prefix), or, when `stop_table` (V,) is given, after
    the first token that ends a step (one-step mode). Temperature 0 is greedy. Inside the token loop nothing waits for
    the device except one check every `check_every` tokens, which also drops finished rows from the batch so that they
    cost nothing.
    Tokens in `banned` (BOS, padding) and ids from `vocab` on are never sampled.
    """
    device = next(model.parameters()).device
    ids, mask = left_pad(prefixes, pad_id, device)                        # (B, P)
    B, P = ids.shape
    limit = torch.as_tensor(max_new_tokens, device=device).expand(B).repeat_interleave(n)   # (N,)
    N, T = B * n, int(limit.max())
    cache = Cache(layers=[KVBuffer(P + T) for _ in range(model.config.get_text_config().num_hidden_layers)])
    kv = {cache_kwarg(model): cache}                                      # looked up once, not at every token
    with autocast(device):
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True, logits_to_keep=1, **kv)
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
                        position_ids=(pos + t)[:, None], use_cache=True, **kv)
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


def update(model, opt, sched, loss=None):
    """One optimizer step on `loss` (None: on gradients already accumulated by micro-batches), gradients clipped to
    norm 1; `sched` (or None) steps the learning rate. Gradients are cleared afterwards."""
    if loss is not None:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if sched is not None:
        sched.step()
    opt.zero_grad(set_to_none=True)


def micro_batches(n, size):
    """Slices of at most `size` rows covering range(n); size 0 means one slice. A loss over a batch is the sum of its
    micro-batches' losses, each weighted by its share, so accumulating their gradients changes nothing."""
    size = size or n
    return [slice(i, i + size) for i in range(0, n, size)]


def sft(model, tokenizer, pairs, *, steps, lr, batch_size, seed, desc, stop_early=None, warmup=100, micro_batch=0):
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
        n_tok, total = m[:, 1:].sum(), 0.0
        for part in micro_batches(len(x), micro_batch):
            xp, mp = x[part], m[part, 1:]
            with autocast(device):
                logits = model(input_ids=xp[:, :-1]).logits.float()       # (b, L-1, V)
            loss = F.cross_entropy(logits[mp], xp[:, 1:][mp]) * (mp.sum() / n_tok)
            loss.backward()
            total += loss.item() if step % 25 == 0 else 0.0
        update(model, opt, sched)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{total:.3f}")
        if stop_early is not None and (step + 1) % 50 == 0:
            model.eval()
            stop = stop_early(step + 1)
            model.train()
            if stop:
                break
    model.eval()
    return step + 1


def warm_start(task, tokenizer, cfg, device):
    """Build the embedded base policy and train it on demonstrations. Returns it and, on arith, a copy of the model
    after the clean stage (None on planted): `--verifier-model clean` starts the verifiers from it."""
    torch.manual_seed(stream_seed("policy", cfg.seed))                  # the initial weights
    model = LlamaForCausalLM(policy_config(tokenizer, cfg)).to(device)
    draw = rng("policy", cfg.seed)
    if task.name == "planted":
        # Paper: 3,200 samples of the gamma = 5 procedural policy (it trains a MADE MLP for 50 iterations; our
        # transformer needs more passes over the same samples to match their distribution). Ours: gamma = 3 by
        # default (--demo-gamma; why in Planted.demonstrations).
        sft(model, tokenizer, task.demonstrations(3200, draw), steps=500, lr=cfg.sft_lr, batch_size=cfg.sft_batch,
            seed=stream_seed("policy", cfg.seed, 1), desc="warm start", micro_batch=cfg.micro_batch_size)
        return model, None
    # arith: clean solutions until greedy accuracy is high (the mod-10 lookup is learned suddenly), then a short
    # pass over noisy ones, which leaves a policy that errs at every depth.
    def clean_pairs(n):
        return [(p.prompt, task.solution(p, 0.0, draw)) for p in task.problems(n, draw)]
    probe = eval_problems(task, cfg)[:256]
    def learned(step):
        acc = accuracy(model, task, tokenizer, probe, cfg, temperature=0.0)
        tqdm.write(f"  clean warm start: step {step} | greedy accuracy {acc:.3f}")
        return step >= 300 and acc >= 0.95
    sft(model, tokenizer, clean_pairs(60_000), steps=1500, lr=cfg.sft_lr, batch_size=cfg.sft_batch,
        seed=stream_seed("policy", cfg.seed, 1), desc="warm start (clean)", stop_early=learned, micro_batch=cfg.micro_batch_size)
    clean = copy.deepcopy(model)
    noisy = task.demonstrations(20_000, draw)
    sft(model, tokenizer, noisy, steps=250, lr=1e-3, batch_size=cfg.sft_batch, seed=stream_seed("policy", cfg.seed, 2),
        desc="warm start (noisy)", warmup=1, micro_batch=cfg.micro_batch_size)
    return model, clean


def policy_settings(task, cfg):
    """Everything the base policy depends on: a cached policy (and what was computed with it) is reused only if
    these match."""
    extra = task.settings()
    if cfg.model:
        return {"version": 2, "task": task.name, "seed": cfg.seed, "model": os.path.abspath(cfg.model),
                "model_files": model_fingerprint(cfg.model), **extra}
    return {"version": 2, "task": task.name, "seed": cfg.seed, "d_model": cfg.d_model, "n_layers": cfg.n_layers,
            "sft_batch": cfg.sft_batch, "sft_lr": cfg.sft_lr, **extra}


def load_or_build_policy(task, cfg, device):
    """`--model PATH`: that model and its tokenizer, as they are. Otherwise runs/<task>/policy/: loaded when it was
    built with the same settings, built (and saved) otherwise."""
    if cfg.model:
        print(f"loading the base policy from {cfg.model}")
        tokenizer = load_tokenizer(cfg.model)
        model = load_lm(cfg.model, device)
        gen = getattr(model.generation_config, "eos_token_id", None)      # e.g. Llama 3: end of text and end of turn
        gen = gen if isinstance(gen, list) else [gen]
        tokenizer.extra_end_ids = [i for i in gen if i is not None and i != tokenizer.eos_token_id and i < len(tokenizer)]
        task.tokenizer = tokenizer
        return model, tokenizer
    path, settings = os.path.join(seed_dir(cfg), "policy"), policy_settings(task, cfg)
    if read_json(os.path.join(path, "settings.json")) == settings:
        print(f"loading the base policy from {path}")
        try:
            model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
            return model, data.CharTokenizer.from_pretrained(path)
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
        save_json(settings, os.path.join(tmp, "settings.json"))
    write_atomic(path, save)
    print(f"warm start took {time.time() - t0:.0f}s")
    return model, task.tokenizer


def memory_estimate(model, task, tokenizer, cfg, device, train_batch):
    """A rough estimate, in GB, of the device memory that the chosen sizes need, printed before the long work.

    Trained weights take 16 bytes a parameter (fp32 weights and gradients, AdamW's two moments); frozen copies (the
    start policy that the KL term reads, the verifiers at use time) 4 each; the KV cache of `--batch-rows` sequences
    of the longest length 2 * layers * kv_heads * head_dim values a token; a training micro-batch its activations
    (about 20 values a hidden unit a layer) and its fp32 logits and log-probs over the vocabulary.
    """
    c = model.config.get_text_config()
    n = sum(p.numel() for p in model.parameters())
    heads = c.num_attention_heads
    kv_heads, head_dim = getattr(c, "num_key_value_heads", None) or heads, getattr(c, "head_dim", None) or c.hidden_size // heads
    value = 2 if device.type == "cuda" else 4                             # bf16 under autocast on CUDA
    prompt = max(len(prompt_ids(tokenizer, p)) for p in eval_problems(task, cfg)[:64])
    L, rows = prompt + task.max_new_tokens, cfg.micro_batch_size or train_batch
    gb = {"trained weights": 16 * n, "frozen copies (x3)": 3 * 4 * n,
          "KV cache": cfg.batch_rows * L * c.num_hidden_layers * 2 * kv_heads * head_dim * value,
          "micro-batch activations": rows * L * (20 * c.hidden_size * c.num_hidden_layers * value + 8 * len(tokenizer))}
    gb = {k: v / 2**30 for k, v in gb.items()}
    print(f"memory estimate ({n / 1e6:.0f}M parameters, sequences up to {L} tokens, {rows} rows a training pass, "
          f"--batch-rows {cfg.batch_rows}): " + ", ".join(f"{k} {v:.1f} GB" for k, v in gb.items()) +
          f"; at most {sum(gb.values()):.1f} GB (lower --micro-batch-size or --batch-rows to fit)")
    return gb


# --------------------------------------------------------------------------------------------------------------
# Outcomes: roll out, decode, check

def eval_problems(task, cfg):
    """Held-out problems: the task's test split, which no training stage draws from."""
    n = cfg.eval_problems * (8 if task.name == "planted" else 1)   # planted: one problem, success is rare
    return task.problems(n, rng("eval", cfg.seed), split="test")


def prompt_ids(tokenizer, problem):
    """The prompt's token ids. A problem from a data file is a user message: with a tokenizer that has a chat
    template (an instruction model), it is wrapped in that template, which adds its own BOS."""
    if problem.layout and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": problem.prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(problem.prompt, add_special_tokens=True)


def is_complete(response, task, tokenizer):
    """A response (token list) is complete when it ended with EOS or reached the length limit."""
    return (len(response) > 0 and response[-1] in data.end_ids(tokenizer)) or len(response) >= task.max_new_tokens


def response_text(tokenizer, response):
    """A response's text, its EOS and what follows it cut off."""
    ends = set(data.end_ids(tokenizer))
    return tokenizer.decode(response[:next((i for i, t in enumerate(response) if t in ends), len(response))])


def outcome(task, tokenizer, problem, response):
    """Rex(y, y*): 1.0 iff the response's final answer is right (EOS and what follows it ignored)."""
    return task.check(problem, response_text(tokenizer, response))


def rollout_responses(model, task, tokenizer, problems, prefixes, n, cfg, temperature=None, generator=None):
    """Complete each (problem, response-prefix) n times; returns the full responses as token lists, n per prefix.
    Runs in chunks of at most `cfg.batch_rows` rows."""
    out, per_call = [], max(1, cfg.batch_rows // n)
    temperature = cfg.temperature if temperature is None else temperature
    for i in range(0, len(prefixes), per_call):
        chunk = prefixes[i:i + per_call]
        r = sample(model, [prompt_ids(tokenizer, problems[j]) + p for j, p in chunk], n=n,
                   max_new_tokens=[task.max_new_tokens - len(p) for _, p in chunk], temperature=temperature,
                   generator=generator, **special_ids(tokenizer))
        lengths, ids = r.mask.sum(-1).tolist(), r.ids.tolist()
        out += [chunk[i // n][1] + row[:L] for i, (row, L) in enumerate(zip(ids, lengths))]
    return out


def accuracy(model, task, tokenizer, problems, cfg, temperature=None, generator=None):
    responses = rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(len(problems))], 1, cfg,
                                  temperature=temperature, generator=generator)
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

def sample_states(model, task, tokenizer, cfg, n_states, g):
    """n_states states s_h = (x, a_1..a_{h-1}): one uniformly chosen unfinished prefix of one response per problem."""
    draw = rng("prover table", cfg.seed)
    problems = task.problems(n_states, draw)
    responses = rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(n_states)], 1, cfg,
                                  generator=g)
    table = data.step_end_table(tokenizer, task.delimiter)
    states = []
    for i, y in enumerate(responses):
        cuts = step_cuts(y, table)[:-1]                   # the complete response is not a state
        states.append((i, y[:draw.choice(cuts)]))
    return problems, states


def prover_table(model, task, tokenizer, cfg, ks, gammas):
    """Distinguishability E_s Var_{a~pi}[A^mu(s,a)] and alignment E_s E_{a~pi}[A^mu(s,a) A^pi(s,a)] (Theorem 3.1).

    For each state s we sample m actions a ~ pi (one step each) and estimate Q^pi(s) and Q^pi(s, a) from two
    independent halves of n_mc rollouts each. With Q_1, Q_2 the two estimates, A_1 and A_2 are independent and
    unbiased for A (bok_unbiased keeps BoK unbiased), so the covariance of A_1 and A_2 across actions is unbiased for
    Var_a[A] and the mean of A_1^mu A_2^pi is unbiased for E_a[A^mu A^pi]: Monte Carlo noise inflates neither.
    """
    m, half = cfg.n_actions, cfg.table_mc // 2
    g = generator("prover table", cfg.seed, device=next(model.parameters()).device)
    problems, states = sample_states(model, task, tokenizer, cfg, cfg.n_states, g)
    table = data.step_end_table(tokenizer, task.delimiter)
    r = sample(model, [prompt_ids(tokenizer, problems[j]) + p for j, p in states], n=m,
               max_new_tokens=[task.max_new_tokens - len(p) for _, p in states], temperature=cfg.temperature,
               stop_table=table, generator=g, **special_ids(tokenizer))
    lengths, ids = r.mask.sum(-1).tolist(), r.ids.tolist()
    after = [(states[k // m][0], states[k // m][1] + row[:L]) for k, (row, L) in enumerate(zip(ids, lengths))]
    S = len(states)
    halves = []
    for _ in range(2):   # two independent halves: counts before (S, 1) and after (S, m) the action
        before = mc_successes(model, task, tokenizer, problems, states, half, cfg, generator=g)
        after_c = mc_successes(model, task, tokenizer, problems, after, half, cfg, generator=g)
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
# Verifiers: a causal-LM backbone with a scalar head on the last hidden state of each step (section 4.2)

def prover_k(cfg):
    """`--prover boK` -> K (mu = BoK(pi), derived from the Q^pi verifier); `--prover DIR` -> None (a policy of its own)."""
    p = cfg.prover
    if p.lower().startswith("bo") and p[2:].isdigit() and int(p[2:]) > 0:
        return int(p[2:])
    if os.path.isfile(os.path.join(p, "config.json")):
        return None
    fail(f"--prover {p!r} is neither boK (K a positive integer, e.g. bo4) nor a directory holding a saved policy")


class Verifier(torch.nn.Module):
    """Predicted Q of every prefix that ends at a step, from the hidden states h_j at the last token of each step j:

        Q_hat(s_h) = sigmoid(v(h_h)) * prod_{j <= h} sigmoid(u(h_j))

    v reads the prefix's value at its last step, as the paper's scoring position does; each u is a step's chance to
    "survive": a step that sinks the response pulls every later prefix down with it. Both are one linear head on a
    causal model, so every prefix of a response is still scored in one forward pass. The product is no restriction
    (u large gives the plain head sigmoid(v(h_h))), but it makes "some earlier step was wrong" one term to learn
    instead of an AND over steps that attention must find.

    The causal model is a backbone `lm` (the policy's copy, or `--verifier-model`) with `top_layers` fresh Llama
    decoder layers on its last hidden states (`top`), where the verifier learns to compare what the backbone
    predicted with what was written (see `train_verifier`)."""

    def __init__(self, lm, top_layers=0, top=None):
        super().__init__()
        self.lm = lm                                                      # any causal LM; its LM head is unused
        config = lm.config.get_text_config()
        if top is None and top_layers > 0:
            top = LlamaModel(LlamaConfig(vocab_size=1, hidden_size=config.hidden_size, num_hidden_layers=top_layers,
                                         intermediate_size=2 * config.hidden_size,
                                         num_attention_heads=config.num_attention_heads,
                                         max_position_embeddings=config.max_position_embeddings,
                                         bos_token_id=None, eos_token_id=None, pad_token_id=None))
        self.top = top
        # Each token's log-probability under the backbone enters the top layers as one more input direction: how
        # surprised the backbone was by what was written (on `arith` a wrong result digit has log-probability near
        # log(0.35 / 9) under the policy, a right one near log(0.65)). Measured on `arith`: held-out PQM MAE 0.062
        # and PAV advantage correlation 0.83 with it, 0.153 and 0.44 without (README).
        self.surprise = torch.nn.Linear(1, config.hidden_size, bias=False)
        torch.nn.init.normal_(self.surprise.weight, std=0.1)
        # A random (not zero) head: with a zero head the backbone gets no gradient at first, and on `arith` training
        # then stalls at a constant prediction (measured: line-correctness accuracy 47% with zeros, 88% without).
        self.head = torch.nn.Linear(config.hidden_size, 2)                # v and u
        with torch.no_grad():
            self.head.bias[1] = SURVIVE_BIAS

    def features(self, ids, mask):
        """What the backbone gives the top layers: its last hidden states and, as one more channel, the log-probability
        of each token given the tokens before it (0 for the first): (B, L, D+1) in fp32."""
        out = self.lm(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
        logp = out.logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])   # (B, L-1, 1)
        return torch.cat([out.hidden_states[-1].float(), F.pad(logp, (0, 0, 1, 0))], -1)

    def forward(self, ids, mask, pos, pos_mask, f=None):
        """Logits of Q_hat (B, H+1) at the positions `pos` (B, H+1), valid where `pos_mask` (B, H+1). `f` (B, L, D+1):
        the backbone's features if already computed (a frozen backbone's, cached by `train_verifier`)."""
        f = self.features(ids, mask) if f is None else f
        h = f[..., :-1] + self.surprise(f[..., -1:])                      # (B, L, D)
        if self.top is not None:
            h = self.top(inputs_embeds=h, attention_mask=mask, use_cache=False).last_hidden_state
        h = h.gather(1, pos[..., None].expand(-1, -1, h.shape[-1]))       # (B, H+1, D)
        v, u = self.head(h.float()).unbind(-1)                            # (B, H+1) each
        log_q = F.logsigmoid(v) + torch.cumsum(F.logsigmoid(u) * pos_mask, 1)
        log_q = log_q.clamp(max=-1e-6)                                    # q < 1, so that log(1 - q) is finite
        return log_q - torch.log(-torch.expm1(log_q))                     # logit(q) = log q - log(1 - q)

    def save(self, path):
        def save(tmp):
            self.lm.save_pretrained(tmp)
            if self.top is not None:
                self.top.save_pretrained(os.path.join(tmp, "top"))
            torch.save({"head": self.head.state_dict(), "surprise": self.surprise.state_dict()}, os.path.join(tmp, "head.pt"))
        write_atomic(path, save)

    @classmethod
    def load(cls, path, device):
        top = os.path.join(path, "top")
        v = cls(load_lm(path), top=LlamaModel.from_pretrained(top) if os.path.isdir(top) else None)
        saved = load_tensors(os.path.join(path, "head.pt"), f"delete {path} and it is trained again")
        v.head.load_state_dict(saved["head"])
        v.surprise.load_state_dict(saved["surprise"])
        return v.to(device).eval()


SURVIVE_BIAS = 4.0   # sigmoid(4) = 0.98: at the start every step survives, and the verifier is the plain head


def score_rows(tokenizer, prompts, responses, table):
    """Right-padded prompt + response rows (B, L), their mask (B, L), and the positions (B, H+1) at which the prefix
    values are read: the last prompt token (the bare problem, h = 0), then the last token of each step."""
    rows, positions = [], []
    for p, y in zip(prompts, responses):
        rows.append(p + y)
        positions.append([len(p) + c - 1 for c in step_cuts(y, table)] if y else [len(p) - 1])
    L, H = max(len(r) for r in rows), max(len(q) for q in positions)
    ids = torch.full((len(rows), L), tokenizer.pad_token_id, dtype=torch.long)          # (B, L)
    mask = torch.zeros(len(rows), L, dtype=torch.long)                                   # (B, L)
    pos = torch.zeros(len(rows), H, dtype=torch.long)                                    # (B, H+1)
    pos_mask = torch.zeros(len(rows), H, dtype=torch.bool)                               # (B, H+1)
    for i, (r, q) in enumerate(zip(rows, positions)):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
        pos[i, :len(q)], pos_mask[i, :len(q)] = torch.tensor(q), True
    return ids, mask, pos, pos_mask


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
    """The helpers that search and RL call: per-step Q_hat^pi, Q_hat^mu, A_hat^mu and the effective reward."""

    def __init__(self, pqm, tokenizer, table, k=None, q_mu=None, batch=256):
        assert (k is None) != (q_mu is None), "a prover is BoK(pi) or a verifier of its own"
        self.pqm, self.tokenizer, self.table, self.k, self.q_mu, self.batch = pqm, tokenizer, table, k, q_mu, batch

    def score(self, prompts, responses):
        """Returns q_pi (B, H+1), q_mu (B, H+1), a_mu (B, H), and the masks (B, H+1), (B, H)."""
        q_pi, m = predict_q(self.pqm, self.tokenizer, prompts, responses, self.table, self.batch)
        if self.k is not None:
            q_mu = bok_closed(q_pi, self.k) * m                  # Q^{BoK} = 1 - (1 - Q^pi)^K from the PQM
        else:
            q_mu, _ = predict_q(self.q_mu, self.tokenizer, prompts, responses, self.table, self.batch)
        return q_pi, q_mu, advantages(q_mu) * m[:, 1:], m, m[:, 1:]


def effective_reward(q_pi, a_mu, alpha):
    # Eq. 5: the effective reward of step h is Q^pi(s_h, a_h) + alpha * A^mu(s_h, a_h)
    return q_pi[:, 1:] + alpha * a_mu                                     # (B, H)


def balanced_weights(labels):
    """Per-prefix loss weights (mean 1) that give the buckets Q_hat < 0.5 and Q_hat >= 0.5 equal total weight: the
    expected loss of class-balanced sampling, while every prefix of a response is still scored in its one pass."""
    high = labels >= 0.5
    n_high, n_low = int(high.sum()), int((~high).sum())
    if n_high == 0 or n_low == 0:
        return torch.ones_like(labels)
    return torch.where(high, 0.5 / n_high, 0.5 / n_low) * len(labels)


def train_verifier(verifier, tokenizer, prompts, responses, labels, labelled, table, cfg, desc):
    """Binary cross-entropy of Q_hat against soft labels (R, H+1), never rounded, where `labelled` (R, H+1).

    A step takes `verifier_batch` responses and scores all their labelled prefixes in one pass. With `--balance`
    each prefix is weighted by `balanced_weights`, so that Q_hat < 0.5 and Q_hat >= 0.5 count equally (appendix D).
    The top layers and the head train at `--verifier-head-lr`, the backbone at `--verifier-lr`; at 0 it is frozen,
    and its features are computed once for all responses instead of at every step.
    """
    device = next(verifier.parameters()).device
    ids, mask, pos, pos_mask = score_rows(tokenizer, prompts, responses, table)   # (R, L), (R, L), (R, H+1) x 2
    H = pos.shape[1]
    labels, labelled = labels[:, :H].float(), pos_mask & labelled[:, :H]
    weight = torch.zeros(labelled.shape)                                   # (R, H+1), 0 where unlabelled
    weight[labelled] = balanced_weights(labels[labelled]) if cfg.balance else 1.0
    top = [p for m in (verifier.top, verifier.surprise, verifier.head) if m is not None for p in m.parameters()]
    groups = [{"params": top, "lr": cfg.verifier_head_lr}]
    frozen = cfg.verifier_lr == 0
    if frozen:
        verifier.lm.requires_grad_(False)
        D = verifier.lm.config.get_text_config().hidden_size
        # (R, L, D+1) on the CPU, if that is not too much memory; else recomputed (without gradients) at every step
        cached = ids.numel() * (D + 1) * 4 <= STATE_CACHE_BYTES
        features = backbone_features(verifier, ids, mask, cfg, "cpu") if cached else None
    else:
        groups.append({"params": verifier.lm.parameters(), "lr": cfg.verifier_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 50) *
                                              0.5 * (1 + math.cos(math.pi * i / cfg.verifier_steps)))
    g = generator("verifier", cfg.seed)                                  # which responses each step trains on
    verifier.train()
    bar = tqdm(range(cfg.verifier_steps), desc=desc, leave=False)
    for step in bar:
        rows = torch.randint(len(ids), (cfg.verifier_batch,), generator=g)   # (b,) responses
        W, total = weight[rows].sum().clamp_min(1e-8), 0.0
        for part in micro_batches(len(rows), cfg.micro_batch_size):
            r = rows[part]
            L = int(pos[r].max()) + 1
            f = None                                                      # a trained backbone runs in the pass
            if frozen:
                f = (features[r, :L].to(device) if cached else
                     backbone_features(verifier, ids[r, :L], mask[r, :L], cfg, device))
            with autocast(device):
                pred = verifier(*(t.to(device) for t in (ids[r, :L], mask[r, :L], pos[r], pos_mask[r])), f=f)
            w = weight[r].to(device)                                      # (b, H+1), 0 where unlabelled
            bce = F.binary_cross_entropy_with_logits(pred.float(), labels[r].to(device), reduction="none")
            loss = (w * bce).sum() / W.to(device)
            loss.backward()
            total += loss.item() if step % 25 == 0 else 0.0
        update(verifier, opt, sched)
        if step % 25 == 0:
            bar.set_postfix(bce=f"{total:.4f}")
    verifier.lm.requires_grad_(True)
    return verifier.eval()


def explained_signal(pred, counts, n):
    """How much of what its Monte Carlo labels say a verifier has learned: the share of the variance of the true Q
    that its predictions capture, R^2 = 1 - E[(pred - Q)^2] / Var(Q), over labelled prefixes. Q is unknown, but the
    labels y = c / n (c of n rollouts succeed) are Q plus binomial noise of variance Q (1 - Q) / n, for which
    y (1 - y) / (n - 1) is unbiased. So Var(Q) = Var(y) - noise and E[(pred - Q)^2] = E[(pred - y)^2] - noise.

    pred, counts: (P,) over the labelled prefixes. Returns (R^2, std of Q); R^2 near 0: the verifier predicts little
    more than the mean label. nan when n < 2 (the noise cannot be told apart) or the labels carry no signal."""
    if n < 2:
        return math.nan, math.nan
    y = counts.float() / n
    noise = (y * (1 - y)).mean() / (n - 1)                               # E[Q (1 - Q) / n]
    signal = y.var(unbiased=False) - noise                                # Var(Q)
    if signal <= 0:
        return math.nan, 0.0
    return float(1 - (((pred - y) ** 2).mean() - noise) / signal), float(signal.sqrt())


FIT_WARNING = 0.25   # on arith: 0.74 at the defaults; 0.03 with p_err 0.6 and 0.02-0.08 with 8 operations, where
                     # successes are rare (README, 'When successes are rare')


def check_fit(verifier, name, tokenizer, prompts, responses, counts, labelled, n, table, batch=256, rows=2048):
    """Print `explained_signal` of a trained verifier on (up to `rows` of) its own training responses, and a warning
    when it has learned little. That happened on arith where successes were rare, yet PAV-RL with such a PQM ranged
    from no gain over ORM-RL to a large one (README), so this only warns."""
    q, m = predict_q(verifier, tokenizer, prompts[:rows], responses[:rows], table, batch)   # (R, H+1) x 2
    keep = labelled[:rows, :q.shape[1]] & m
    r2, sd = explained_signal(q[keep], counts[:rows, :q.shape[1]][keep], n)
    if math.isnan(r2):
        print(f"  {name} fit: not measured (it needs --n-mc 2 or more, and labels that vary beyond their noise)")
        return r2
    print(f"  {name} fit: it explains {r2:.0%} of the variance of Q in its training labels, Monte Carlo noise "
          f"removed (std of Q {sd:.3f})")
    if r2 < FIT_WARNING:
        print(f"  warning: the {name} has learned little of its labels, so its advantages may be mostly noise "
              "(README: 'When successes are rare')")
    return r2


STATE_CACHE_BYTES = 2 ** 31   # a frozen backbone's features are cached when they take at most 2 GB as fp32


@torch.no_grad()
def backbone_features(verifier, ids, mask, cfg, to):
    """The (frozen) backbone's `Verifier.features` of all rows (R, L, D+1) as fp32 on device `to`, in micro-batches."""
    device = next(verifier.parameters()).device
    with autocast(device):
        return torch.cat([verifier.features(ids[part].to(device), mask[part].to(device)).to(to)
                          for part in micro_batches(len(ids), cfg.micro_batch_size or 256)])


def seed_rollouts(model, task, tokenizer, problems, n_seeds, cfg, g):
    """n_seeds responses from pi per problem: (problem index, prompt ids, response) lists."""
    index = [i for i in range(len(problems)) for _ in range(n_seeds)]
    responses = rollout_responses(model, task, tokenizer, problems, [(i, []) for i in index], 1, cfg, generator=g)
    return index, [prompt_ids(tokenizer, problems[i]) for i in index], responses


def collect_labels(prover, task, tokenizer, problems, index, responses, n_mc, cfg, g, first_pit=False, desc="labels"):
    """n_mc rollouts under `prover` from every prefix of each response: success counts (R, H+1) and a mask.

    first_pit: label depth by depth and stop a response at its first prefix with Q_hat = 0 (a 'pit'); what follows a
    pit carries no information about where the response went wrong, so its budget is not spent.
    """
    table = data.step_end_table(tokenizer, task.delimiter)
    cuts = [step_cuts(y, table) for y in responses]
    H = max(len(c) for c in cuts)
    counts, labelled = torch.zeros(len(responses), H), torch.zeros(len(responses), H, dtype=torch.bool)
    alive = [True] * len(responses)
    for h in tqdm(range(H), desc=desc, leave=False):   # depth by depth: every response's h-th prefix in one batch
        todo = [r for r in range(len(responses)) if h < len(cuts[r]) and alive[r]]
        c = mc_successes(prover, task, tokenizer, problems, [(index[r], responses[r][:cuts[r][h]]) for r in todo],
                         n_mc, cfg, generator=g)
        counts[todo, h], labelled[todo, h] = c, True
        if first_pit:
            for r, k in zip(todo, c.tolist()):
                alive[r] = k > 0
    return counts, labelled


def verifier_backbone(cfg):
    """The directory the verifiers start from (`--verifier-model`), or "" for the policy's own copy."""
    if cfg.verifier_model != "clean":
        return cfg.verifier_model
    path = os.path.join(seed_dir(cfg), "policy", "clean")
    if not os.path.isfile(os.path.join(path, "config.json")):
        fail(f"--verifier-model clean: {path} is missing; the cached policy was built before its clean warm start was "
             f"kept: delete {os.path.dirname(path)} to rebuild it")
    return path


def verifier_settings(task, cfg):
    keys = ("n_problems", "n_cov", "n_mc", "first_pit", "verifier_steps", "verifier_batch", "verifier_lr", "prover",
            "temperature", "verifier_layers", "verifier_head_lr", "balance")
    # every BoK(pi) prover is derived from the same Q^pi verifier: K does not change what is trained
    backbone = verifier_backbone(cfg)
    name = "clean" if cfg.verifier_model == "clean" else os.path.abspath(backbone)   # the run's own, wherever it is
    extra = {"verifier_model": name, "verifier_model_files": model_fingerprint(backbone)} if backbone else {}
    return {**policy_settings(task, cfg), "verifier_version": 2, **{k: getattr(cfg, k) for k in keys}, **extra,
            "prover": "bok" if prover_k(cfg) else os.path.abspath(cfg.prover)}


def load_or_train_verifiers(model, task, tokenizer, cfg, device, names=None):
    """ORM, PQM (Q^pi) and, for a policy prover, its Q^mu verifier; cached under runs/<task>/verifiers/<settings>/.
    The directory name is a hash of every setting they depend on, so changed settings never reuse stale ones.
    `names`: the verifiers the caller needs (default: all). Only missing ones are trained, from Monte Carlo labels that
    are cached beside them (`labels.pt`), so a later caller that needs another verifier does not collect them again."""
    settings = verifier_settings(task, cfg)
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    path = os.path.join(seed_dir(cfg), "verifiers", key)
    names = names or ["orm", "pqm"] + ([] if prover_k(cfg) else ["q_mu"])
    missing = [n for n in names if not os.path.exists(os.path.join(path, n, "head.pt"))]
    verifiers = {n: Verifier.load(os.path.join(path, n), device) for n in names if n not in missing}
    if not missing:
        print(f"loading verifiers from {path}")
        return verifiers, path
    print(f"training verifiers {', '.join(missing)} (cached in {path})")
    t0 = time.time()
    problems = task.problems(cfg.n_problems, rng("labels", cfg.seed))
    g = generator("labels", cfg.seed, device=device)   # the labels' own stream: the same whatever ran before them
    labels_path = os.path.join(path, "labels.pt")
    if os.path.exists(labels_path):
        print(f"  loading the labels from {labels_path}")
        saved = load_tensors(labels_path, "delete it and the labels are drawn again")
        index, responses, counts, labelled = (saved[k] for k in ("index", "responses", "counts", "labelled"))
    else:
        index, _, responses = seed_rollouts(model, task, tokenizer, problems, cfg.n_cov, cfg, g)
        counts, labelled = collect_labels(model, task, tokenizer, problems, index, responses, cfg.n_mc, cfg, g,
                                          cfg.first_pit, desc="labels under pi")
        write_atomic(labels_path, lambda tmp: torch.save({"index": index, "responses": responses, "counts": counts,
                                                          "labelled": labelled}, tmp))
    prompts = [prompt_ids(tokenizer, problems[i]) for i in index]
    print(f"  labelled {int(labelled.sum())} prefixes of {len(responses)} seed rollouts ({time.time() - t0:.0f}s)")
    table = data.step_end_table(tokenizer, task.delimiter)
    soft = counts / cfg.n_mc                                               # soft labels in [0, 1], never rounded
    # The ORM sees only the outcome of each complete response, at its last position.
    R, ends = len(responses), torch.tensor([len(step_cuts(y, table)) - 1 for y in responses])
    last = torch.zeros(R, counts.shape[1], dtype=torch.bool)
    last[torch.arange(R), ends] = True
    outcomes = torch.tensor([outcome(task, tokenizer, problems[i], y) for i, y in zip(index, responses)])
    def backbone():   # the policy's copy, or --verifier-model
        lm = load_lm(verifier_backbone(cfg)) if cfg.verifier_model else copy.deepcopy(model)
        return Verifier(lm, cfg.verifier_layers).to(device)
    for name, labels, mask in [("orm", outcomes[:, None] * last, last), ("pqm", soft, labelled)]:
        if name in missing:
            torch.manual_seed(stream_seed("verifier", cfg.seed))       # the fresh layers' initial weights
            verifiers[name] = train_verifier(backbone(), tokenizer, prompts, responses, labels, mask, table, cfg, desc=name)
    if "pqm" in missing:
        check_fit(verifiers["pqm"], "PQM", tokenizer, prompts, responses, counts, labelled, cfg.n_mc, table,
                  cfg.micro_batch_size or 256)
    if "q_mu" in missing:   # a prover with a policy of its own: its Monte Carlo labels train its own Q^mu head
        mu = load_lm(cfg.prover, device)
        counts_mu, labelled_mu = collect_labels(mu, task, tokenizer, problems, index, responses, cfg.n_mc, cfg, g,
                                                desc="labels under mu")
        torch.manual_seed(stream_seed("verifier", cfg.seed))
        verifiers["q_mu"] = train_verifier(backbone(), tokenizer, prompts, responses, counts_mu / cfg.n_mc,
                                           labelled_mu, table, cfg, desc="q_mu")
        check_fit(verifiers["q_mu"], "Q^mu verifier", tokenizer, prompts, responses, counts_mu, labelled_mu, cfg.n_mc,
                  table, cfg.micro_batch_size or 256)
    for name in missing:
        verifiers[name].save(os.path.join(path, name))
    save_json(settings, os.path.join(path, "settings.json"))
    print(f"  verifiers trained in {time.time() - t0:.0f}s")
    return verifiers, path


def make_pav(verifiers, tokenizer, task, cfg):
    table = data.step_end_table(tokenizer, task.delimiter)
    return PAV(verifiers["pqm"], tokenizer, table, k=prover_k(cfg), q_mu=verifiers.get("q_mu"),
               batch=cfg.micro_batch_size or 256)


def pearson(x, y):
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / (x.norm() * y.norm()).clamp_min(1e-12))


def verifier_report(model, verifiers, task, tokenizer, cfg, device):
    """Each verifier against Monte Carlo labels (eval_mc rollouts per prefix) on held-out problems."""
    problems = task.problems(cfg.eval_verifier_problems, rng("held-out labels", cfg.seed), split="test")
    g = generator("held-out labels", cfg.seed, device=device)
    # The held-out labels depend only on the policy and these sizes: computed once, then read from disk.
    settings = {**policy_settings(task, cfg), "problems": cfg.eval_verifier_problems, "eval_mc": cfg.eval_mc,
                "temperature": cfg.temperature, **({"eval_data": task.files["eval_data"]} if cfg.data else {})}
    path = os.path.join(seed_dir(cfg), "held_out_labels.pt")
    cached = load_tensors(path, "delete it and the held-out labels are drawn again") if os.path.exists(path) else None
    if cached is not None and cached["settings"] == settings:
        index, prompts, responses, counts, m = (cached[k] for k in ("index", "prompts", "responses", "counts", "m"))
    else:
        index, prompts, responses = seed_rollouts(model, task, tokenizer, problems, 1, cfg, g)
        counts, m = collect_labels(model, task, tokenizer, problems, index, responses, cfg.eval_mc, cfg, g,
                                   desc="held-out labels")
        write_atomic(path, lambda tmp: torch.save({"settings": settings, "index": index, "prompts": prompts,
                                                   "responses": responses, "counts": counts, "m": m}, tmp))
    q_mc = counts / cfg.eval_mc                                           # (R, H+1) Monte Carlo Q^pi
    K = prover_k(cfg)
    if K is not None:
        mu_mc = bok_unbiased(counts, cfg.eval_mc, K)                      # (R, H+1) Monte Carlo Q^{BoK}
    else:
        mu = load_lm(cfg.prover, device)
        mu_mc = collect_labels(mu, task, tokenizer, problems, index, responses, cfg.eval_mc, cfg, g,
                               desc="held-out labels under mu")[0] / cfg.eval_mc
    pav = make_pav(verifiers, tokenizer, task, cfg)
    q_pi, q_mu, a_mu, m_pred, m_adv = pav.score(prompts, responses)
    q_orm = predict_q(verifiers["orm"], tokenizer, prompts, responses, pav.table, pav.batch)[0]
    m, m_adv = m & m_pred, (m & m_pred)[:, 1:] & (m & m_pred)[:, :-1]

    def metrics(pred, label):
        p, y = pred[m].clamp(1e-6, 1 - 1e-6), label[m]
        return {"bce": float(F.binary_cross_entropy(p, y)), "mae": float((p - y).abs().mean()),
                "adv_corr": pearson(advantages(pred)[m_adv], advantages(label)[m_adv])}

    report = {"orm": metrics(q_orm, q_mc), "pqm": metrics(q_pi, q_mc), "pav": metrics(q_mu, mu_mc)}
    # Outcome prediction by step depth (Fig. 10): the score of step h against the response's final outcome.
    last = m.long().cumsum(1).argmax(1)
    outcome_z = q_mc[torch.arange(len(q_mc)), last]                      # exact: a complete response is not rolled out
    eff = effective_reward(q_pi, a_mu, cfg.alpha).clamp(0, 1)             # (R, H)
    by_depth = {"depth": [], "q_pi": [], "effective": [], "n": []}
    for h in range(1, m.shape[1]):
        rows = m[:, h]
        if rows.sum() < 8:
            continue
        by_depth["depth"].append(h)
        by_depth["n"].append(int(rows.sum()))
        by_depth["q_pi"].append(float(((q_pi[rows, h] - outcome_z[rows]) ** 2).mean()))
        by_depth["effective"].append(float(((eff[rows, h - 1] - outcome_z[rows]) ** 2).mean()))
    report["outcome_error_by_depth"] = by_depth
    report["pqm_mae"], report["pav_adv_corr"] = report["pqm"]["mae"], report["pav"]["adv_corr"]
    report["held_out"] = {"problems": len(problems), "prefixes": int(m.sum()), "rollouts_per_prefix": cfg.eval_mc}
    return report


def plot_outcome_error(by_depth, alpha, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(by_depth["depth"], by_depth["q_pi"], "o-", label=r"$\hat Q^\pi$ alone")
    ax.plot(by_depth["depth"], by_depth["effective"], "s-", label=rf"$\hat Q^\pi + {alpha:g}\,\hat A^\mu$")
    ax.set_xlabel("step depth h")
    ax.set_ylabel("squared error against the final outcome")
    ax.set_title("Predicting the outcome from step h (cf. Fig. 10)")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg = parse_config(Config, argv)
    ks, gammas = check_config(cfg)
    device, dtype = pick_device()
    print(f"device {device} | dtype {dtype} | task {cfg.task} | seed {cfg.seed} | out {cfg.out}")
    task = make_task(cfg)
    model, tokenizer = load_or_build_policy(task, cfg, device)
    if cfg.model:
        memory_estimate(model, task, tokenizer, cfg, device, cfg.verifier_batch)
    problems = eval_problems(task, cfg)
    acc = accuracy(model, task, tokenizer, problems, cfg, generator=generator("eval", cfg.seed, device=device))
    print(f"base policy accuracy on {len(problems)} held-out problems: {acc:.3f}")
    t0 = time.time()
    rows = prover_table(model, task, tokenizer, cfg, ks, gammas)
    print(f"prover table ({cfg.n_states} states x {cfg.n_actions} actions x {cfg.table_mc} rollouts, "
          f"{time.time() - t0:.0f}s); mean ± standard error over states:")
    print_table(rows)
    report = {"task": cfg.task, "base_accuracy": acc, "eval_samples": len(problems), "provers": rows,
              "config": dataclasses.asdict(cfg)}
    path = os.path.join(cfg.out, "provers.json")
    save_json(report, path)
    print(f"saved {path}")

    verifiers, vpath = load_or_train_verifiers(model, task, tokenizer, cfg, device)
    report = verifier_report(model, verifiers, task, tokenizer, cfg, device)
    print(f"verifiers on {report['held_out']['prefixes']} held-out prefixes ({cfg.eval_mc} rollouts each); "
          f"PAV prover {cfg.prover}:")
    print(f"{'verifier':>9} | {'BCE':>7} | {'MAE':>7} | {'adv corr':>8}")
    for name in ("orm", "pqm", "pav"):
        r = report[name]
        print(f"{name:>9} | {r['bce']:7.4f} | {r['mae']:7.4f} | {r['adv_corr']:8.3f}")
    d = report["outcome_error_by_depth"]
    print("outcome error by depth  " + " ".join(f"h={h}: {a:.3f}/{b:.3f}" for h, a, b in
                                                 zip(d["depth"], d["q_pi"], d["effective"])) + "  (Q^pi / effective)")
    report.update(verifiers=vpath, config=dataclasses.asdict(cfg))
    path = os.path.join(cfg.out, "verifiers.json")
    save_json(report, path)
    plot_outcome_error(d, cfg.alpha, os.path.join(cfg.out, "outcome_error.png"))
    print(f"saved {path} and {os.path.join(cfg.out, 'outcome_error.png')}")


if __name__ == "__main__":
    main()
