r"""Tasks with verifiable answers, tokenizers, the one rule that says where a step ends, outcomes, and safe files.

Tasks small enough to learn on a laptop CPU in minutes (`get_task`), and real problems from files:

- `planted`: the paper's toy (section 3.3): a response of up to 10 tokens is correct iff a hidden target of length 5
  occurs in it contiguously; each token is one step. With the procedural gamma-prover and its exact Q-values.
- `arith` and `facts`: a chain of single-digit additions and subtractions modulo 10, one operation per line, learned
  from demonstrations that make errors (`Arith`):

      Q:5+6-0+8           (prompt)
      5+6=1               (step 1: copy the operands, write the result)
      1-0=1
      1+8=9
      A:9                 (last step: the final answer, then EOS; `facts` lists every result, A:119)

- JSON lines files in GSM8K's or MATH's layout (`FileTask`), with an answer check that RL cannot game
  (`extract_answer`, `answers_match`): on the 108 graded cases of tests/test_answers.py it gives every verdict,
  math-verify with its own extraction 95, a hand-written check that fell back to the last number 84.

Differences from the paper:
1. `planted`: the paper samples with a MADE-like MLP; we use a causal transformer (any Hugging Face causal LM), so
   the response is preceded by a BOS token that acts as the (empty) problem. The prover's normalisation is not
   stated; we take P(next target token) = gamma / (gamma + 14), weight 1 on each of the 14 other tokens (EOS
   included). After a full match the response is already correct, so the prover's behaviour there is immaterial.
2. `arith` and `facts` are ours (the paper uses MATH), with its newline-delimited steps and final-answer check.
"""

import functools
import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import zlib
from dataclasses import dataclass
from fractions import Fraction

import torch


# --------------------------------------------------------------------------------------------------------------
# Tokenizer and the step rule

class CharTokenizer:
    """One token per character; the special tokens come after the characters, so a task's symbols keep their ids.
    It offers the slice of the Hugging Face tokenizer interface the code uses, so a real tokenizer can stand in."""

    name = "char_tokenizer.json"

    def __init__(self, chars):
        assert len(set(chars)) == len(chars), "duplicate characters"
        self.chars = chars
        self.eos_token_id, self.bos_token_id, self.pad_token_id = len(chars), len(chars) + 1, len(chars) + 2
        self.specials = {self.eos_token_id: "<eos>", self.bos_token_id: "<bos>", self.pad_token_id: "<pad>"}
        self.index = {c: i for i, c in enumerate(chars)}

    def __len__(self):
        return len(self.chars) + len(self.specials)

    def encode(self, text, add_special_tokens=False):
        try:
            ids = [self.index[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the tokenizer's alphabet {self.chars!r}") from None
        return [self.bos_token_id] + ids if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens=True):
        kept = [i for i in ids if i < len(self.chars) or not skip_special_tokens]
        return "".join(self.chars[i] if i < len(self.chars) else self.specials[i] for i in kept)

    def save_pretrained(self, path):
        with open(f"{path}/{self.name}", "w") as f:
            json.dump({"chars": self.chars}, f)

    @classmethod
    def from_pretrained(cls, path):
        with open(f"{path}/{cls.name}") as f:
            return cls(json.load(f)["chars"])


_TABLES = {}   # (id(tokenizer), delimiter) -> (tokenizer, its delimiter tokens (V,))


def step_end_table(tokenizer, delimiter):
    """THE step rule, used by every stage: a step ends after any token whose decoded text contains `delimiter` (so a
    byte-level BPE's "Ċ" counts as "\n"; None: every token) or that ends the response (`end_ids`). A bool table (V,),
    so the rollout engine stops steps with one gather. The length limit also ends a step (`step_ends`)."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token, so a response could never end")
    key = (id(tokenizer), delimiter)
    if key not in _TABLES:   # decoding a 150k vocabulary takes a while: once per tokenizer object
        texts = [tokenizer.decode([i]) for i in range(len(tokenizer))]
        found = torch.tensor([delimiter is None or delimiter in t for t in texts])
        if not found.any():
            raise ValueError(f"no token of the tokenizer contains the step delimiter {delimiter!r}, so no step could "
                             "ever end")
        _TABLES[key] = (tokenizer, found)                                  # the tokenizer kept alive: ids stay unique
    table = _TABLES[key][1].clone()                                        # (V,)
    table[end_ids(tokenizer)] = True
    return table


def end_ids(tokenizer):
    """The tokens that end a response: EOS, and any other end-of-turn tokens a model's generation config names
    (pav.load_or_build_policy records them as `extra_end_ids`)."""
    return [tokenizer.eos_token_id] + list(getattr(tokenizer, "extra_end_ids", ()))


def special_ids(tokenizer):
    """What `sample` needs to know of a tokenizer: the ids that end a response, padding, the ids never sampled (BOS,
    and PAD unless it ends a response), and the vocabulary size (Qwen2's embedding has rows past the tokenizer's)."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    pad = eos if pad is None else pad
    ends = end_ids(tokenizer)
    banned = [i for i in (tokenizer.bos_token_id, pad) if i is not None and i not in ends]
    return {"eos_id": ends if len(ends) > 1 else eos, "pad_id": pad, "banned": banned, "vocab": len(tokenizer)}


def step_ends(ids, mask, table):
    """Where steps end in a batch of responses: (B, T) bool. At a step-end token (`step_end_table`) and at the last
    valid token of every row: a response is over there (EOS or the length limit), or a prefix's last step stops."""
    ends = table.to(ids.device)[ids] & mask                                # (B, T)
    last = mask.long().cumsum(-1).argmax(-1)                               # (B,) index of the last valid token
    has = mask.any(-1)                                                     # (B,)
    ends[has, last[has]] = True
    return ends


def load_tokenizer(path):
    """A model directory's tokenizer (`step_end_table` checks that it has EOS); without a padding token, EOS pads."""
    from transformers import AutoTokenizer
    if not os.path.isdir(path) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ValueError(f"{path} is not a model directory: no such folder (and no model hub is reachable: "
                         "HF_HUB_OFFLINE=1)")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(f"{path} is not a model directory: it has no config.json")
    if os.path.isdir(path) and not any(n.endswith((".safetensors", ".bin")) for n in os.listdir(path)):
        raise ValueError(f"{path} has a config.json but no weights (*.safetensors or *.bin)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:   # transformers raises many kinds here (OSError, ValueError, TypeError, ...)
        raise ValueError(f"{path} has no tokenizer that AutoTokenizer can load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# --------------------------------------------------------------------------------------------------------------
# Tasks

@dataclass
class Problem:
    prompt: str          # the problem text x (empty for `planted`: the BOS token alone starts the response)
    answer: str          # what the outcome check compares against (the hidden target for `planted`)
    layout: str = ""     # a data file's problem: gsm8k or math, which tells `extract_answer` where the answer is


class Planted:
    """The paper's planted sub-sequence toy task (section 3.3)."""

    name = "planted"
    delimiter = None            # each token is a step
    max_new_tokens = 10         # response length H = 10
    n_tokens = 15               # tokens 0..14; 14 is EOS

    def __init__(self, target=(3, 6, 0, 3, 5), demo_gamma=3.0):
        self.target, self.demo_gamma = list(target), demo_gamma
        self.tokenizer = CharTokenizer("0123456789abcd")                  # token k is the k-th character; EOS = 14
        assert self.tokenizer.eos_token_id == 14
        self.answer = self.tokenizer.decode(self.target)
        # KMP automaton over match length k = 0..5 (5 = target found, absorbing): the longest suffix that starts it
        L = len(self.target)
        self.delta = torch.full((L + 1, self.n_tokens), L, dtype=torch.long)   # (6, 15)
        for k in range(L):
            for a in range(self.n_tokens):
                seq = self.target[:k] + [a]
                self.delta[k, a] = max(j for j in range(k + 2) if seq[k + 1 - j:] == self.target[:j])

    def settings(self):   # what a policy trained on this task depends on
        return {"target": self.target, "demo_gamma": self.demo_gamma}

    def problems(self, n, rng, split="train"):
        return [Problem("", self.answer) for _ in range(n)]   # one problem: the split is over samples

    def check(self, problem, response):
        return float(problem.answer in response)

    def match_state(self, tokens):
        """Longest k such that the last k tokens match the first k of the target (5 once it was found)."""
        k = 0
        for a in tokens:
            k = int(self.delta[k, a])
        return k

    def prover_probs(self, gamma):
        """(6, 15): the gamma-prover's next-token distribution in each match state k; gamma on target[k], 1 on the rest."""
        p = torch.ones(len(self.target) + 1, self.n_tokens, dtype=torch.float64)
        for k in range(len(self.target)):
            p[k, self.target[k]] = gamma
        return p / p.sum(-1, keepdim=True)

    def exact_values(self, gamma):
        """V[t, k]: chance that the gamma-prover finishes correctly with t tokens left in match state k. Shape (11, 6)."""
        P, L, H = self.prover_probs(gamma), len(self.target), self.max_new_tokens
        V = torch.zeros(H + 1, L + 1, dtype=torch.float64)
        V[:, L] = 1.0
        eos = self.tokenizer.eos_token_id
        for t in range(1, H + 1):
            nxt = V[t - 1][self.delta[:L]]                                 # (5, 15) value after each next token
            nxt[:, eos] = 0.0                                              # EOS ends the response unmatched
            V[t, :L] = (P[:L] * nxt).sum(-1)
        return V

    def exact_q(self, tokens, gamma, V=None):
        """Exact Q of a response prefix (a list of tokens) under the gamma-prover."""
        V = self.exact_values(gamma) if V is None else V
        eos = self.tokenizer.eos_token_id
        k = self.match_state(tokens[:tokens.index(eos)] if eos in tokens else tokens)   # nothing after EOS counts
        if k == len(self.target) or eos in tokens:                                        # found, or ended unmatched
            return float(k == len(self.target))
        return float(V[self.max_new_tokens - len(tokens), k])

    def prover_complete(self, prefixes, gamma, n, generator=None):
        """Complete each prefix (list of token lists) n times with the gamma-prover; returns success (len*n,) float.
        Vectorised over all rows: the procedural prover's counterpart of `pav.sample`."""
        P, L, eos = self.prover_probs(gamma).float(), len(self.target), self.tokenizer.eos_token_id
        k = torch.tensor([self.match_state(p) for p in prefixes]).repeat_interleave(n)            # (N,)
        left = torch.tensor([self.max_new_tokens - len(p) for p in prefixes]).repeat_interleave(n)
        alive = torch.tensor([eos not in p for p in prefixes]).repeat_interleave(n) & (k < L)     # (N,)
        for _ in range(self.max_new_tokens):
            a = torch.multinomial(P[k], 1, generator=generator).squeeze(1)                       # (N,)
            step = alive & (left > 0)
            k = torch.where(step, self.delta[k, a], k)
            left = left - step.long()
            alive = step & (a != eos) & (k < L)
        return (k == L).float()

    def demonstrations(self, n, rng, gamma=None):
        """n responses from the gamma-procedural policy (None: `demo_gamma`, 3), as (prompt, response) text pairs.
        The paper warm-starts on gamma = 5, on which our policy finds the target once in 1,000 samples, enough for
        outcome-only RL to take off at once; on gamma = 3, once in 100,000, as sparse as the paper's toy needs."""
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        gamma = self.demo_gamma if gamma is None else gamma
        P, eos = self.prover_probs(gamma).float(), self.tokenizer.eos_token_id
        k = torch.zeros(n, dtype=torch.long)
        toks = torch.zeros(n, self.max_new_tokens, dtype=torch.long)
        for t in range(self.max_new_tokens):
            toks[:, t] = torch.multinomial(P[k], 1, generator=g).squeeze(1)
            k = self.delta[k, toks[:, t]]
        return [("", self.tokenizer.decode(row[:row.index(eos)] if eos in row else row)) for row in toks.tolist()]


class Arith:
    """Chains of single-digit + and - modulo 10, one operation per line, then the answer line `A:`. The base policy
    learns right solutions, then copies demonstrations whose errors carry forward (a line starts from the last result):
    - `arith`: every line's result is wrong with probability p_err, one kind of noise on arithmetic the policy knows,
      which outcome-only RL turns down quickly;
    - `facts` (hard_facts): six lines, and only lines whose fact (`a+b`, `a-b`) is in a fixed half of the 200 err, about
      100 facts to unlearn one by one; the answer lists every line's result (`A:371946`), so a wrong chain cannot end
      right by luck. Six lines, not four: with four, outcome-only RL learned as fast (docs/experiments.md)."""

    delimiter = "\n"

    def __init__(self, name, n_ops, p_err, hard_facts):
        self.name, self.n_ops, self.p_err, self.hard_facts = name, n_ops, p_err, hard_facts
        self.tokenizer = CharTokenizer("0123456789+-=:QA\n")
        self.max_new_tokens = 6 * n_ops + 2 + (n_ops if hard_facts else 1) + 1   # lines "a+b=c\n", "A:", answer, EOS

    def settings(self):   # what a policy trained on this task depends on
        return {"n_ops": self.n_ops, "p_err": self.p_err, "hard_facts": self.hard_facts}

    def problems(self, n, rng, split="train"):
        """n random problems of one split. A problem is held out ("test") iff the CRC32 of its text is 0 mod 5: a fixed
        split by problem, so no training stage ever sees a test problem, whatever the run's sizes."""
        out = []
        while len(out) < n:
            digits = [rng.randrange(10) for _ in range(self.n_ops + 1)]
            ops = [rng.choice("+-") for _ in range(self.n_ops)]
            text = str(digits[0]) + "".join(o + str(d) for o, d in zip(ops, digits[1:]))
            if (zlib.crc32(text.encode()) % 5 == 0) == (split == "test"):
                out.append(Problem(f"Q:{text}\n", self.solution(text, 0.0, None).split(":")[-1]))
        return out

    @staticmethod
    def is_hard(a, op, b):
        """One of the 100 facts that the `facts` demonstrations get wrong (a fixed, arbitrary half)."""
        return zlib.crc32(f"{a}{op}{b}".encode()) % 2 == 0

    def solution(self, text, p_err, rng):
        """The worked solution of the problem `text` ("5+6-0"), each line's result wrong with probability p_err (on
        `facts`, each line whose fact is hard), the error carried forward."""
        acc, lines = int(text[0]), []
        for o, d in zip(text[1::2], map(int, text[2::2])):
            res = (acc + d if o == "+" else acc - d) % 10
            if p_err and (not self.hard_facts or self.is_hard(acc, o, d)) and rng.random() < p_err:
                res = rng.choice([r for r in range(10) if r != res])
            lines.append(f"{acc}{o}{d}={res}")
            acc = res
        answer = "".join(line[-1] for line in lines) if self.hard_facts else str(acc)   # facts: every line's result
        return "\n".join(lines + [f"A:{answer}"])

    def demonstrations(self, n, rng, clean=False):
        """n (prompt, solution) pairs of training problems; with the task's errors unless `clean`."""
        return [(p.prompt, self.solution(p.prompt[2:-1], 0.0 if clean else self.p_err, rng))
                for p in self.problems(n, rng)]

    def check(self, problem, response):
        return float(response.split("\n")[-1] == f"A:{problem.answer}")

    def sound(self, problem, response):
        """1.0 iff every line of the response is right: right by arithmetic, not by luck (on `arith` a wrong chain ends
        on the right digit one time in ten). A diagnostic that rl.py logs; no reward reads it."""
        return float(response == self.solution(problem.prompt[2:-1], 0.0, None))

    def on_track(self, problem, prefix):
        """Whether every line of a partial response is right, so that it can still succeed (after a wrong line the
        error carries forward); a diagnostic, like `sound`."""
        return self.solution(problem.prompt[2:-1], 0.0, None).startswith(prefix)


# --------------------------------------------------------------------------------------------------------------
# Real data: GSM8K- and MATH-style JSON lines, and final-answer checking the way those benchmarks do it

def boxed_answers(text):
    r"""The contents of every \boxed{...} (or \fbox{...}) in `text`, nested braces included (`\boxed 5` gives "5");
    None if one of them never closes."""
    out = []
    for m in BOX.finditer(text):
        rest = text[m.end():]
        if rest.startswith(" "):                                            # \boxed 5
            word = rest.strip().split("$")[0].split()
            out.append(word[0] if word else "")
            continue
        depth = 0
        for k, c in enumerate(rest):
            depth += (c == "{") - (c == "}")
            if depth == 0:
                break
        if not rest.startswith("{") or depth:
            return None
        out.append(rest[1:k])
    return out


BOX = re.compile(r"\\(?:boxed|fbox)")
MAX_ANSWERS = 4   # a response that states more different final answers (as texts) states none


def last_boxed(text):
    boxes = boxed_answers(text)
    return boxes[-1] if boxes else None


def extract_answer(text, layout=None):
    r"""The one final answer a response states, or None. Its final answers are every \boxed{...} and every number after
    "####" or "the answer is" (one that holds no box), in either layout. It states one only if they are all equal as
    numbers or expressions (`answers_match`): `\boxed{7}\boxed{7.0}` states 7, `\boxed{7}` with `#### 8` none. It states
    none, either, with a \boxed{ that never closes, several numbers after one marker ("7 or 8"), more than MAX_ANSWERS
    different texts, or, in MATH's layout, no box at all; a bare last number is never an answer."""
    text = text.replace("\u2212", "-")                                       # a Unicode minus
    boxes = boxed_answers(text)
    if boxes is None or (layout == "math" and not boxes):
        return None
    parts = re.split(r"####|answer is", text, flags=re.IGNORECASE)[1:]
    marked = [p.lstrip(" :").split("\n")[0].strip().rstrip(".").strip("$ ") for p in parts]
    marked = [m if "\\" in m else single_number(m) for m in marked if m and not BOX.search(m)]
    answers = boxes + marked
    if not answers or None in answers or len({a.replace(" ", "") for a in answers}) > MAX_ANSWERS:
        return None
    answer = answers[-1] if not boxes else boxes[-1]
    return answer if all(a.replace(" ", "") == answer.replace(" ", "") or answers_match(a, answer)
                         for a in answers) else None


def single_number(text):
    """The number in a marker's text ("72 apples" -> "72"); the text itself if it has none; None if it has several."""
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+", text)
    return text if not numbers else numbers[0] if len(numbers) == 1 else None


def answers_match(pred, gold):
    r"""Whether a final answer (None: the response stated none) equals the reference one. An answer that could cost
    math-verify seconds (`too_costly`) matches only if it is written as the reference, spaces aside. Plain numbers
    compare exactly (5 = 5.00 = 10/2, 1,234 = 1234, 50% = 50); anything else is parsed and compared by math-verify."""
    if pred is None or gold is None:
        return False
    if too_costly(pred) or too_costly(gold):
        return pred.replace(" ", "") == gold.replace(" ", "")
    a, b = plain_number(pred), plain_number(gold)
    if a is not None and b is not None:
        return a == b
    return latex_equal(pred, gold)


MAX_ANSWER_CHARS = 200   # MATH's longest final answers are about 100 characters
MAX_NESTING = 6          # brackets: math-verify's parse takes about 0.05 s longer per level of parentheses


def too_costly(answer):
    r"""Why math-verify (sympy underneath) could spend seconds on `answer`, or None: more than MAX_ANSWER_CHARS
    characters (thousands of digits), brackets nested deeper than MAX_NESTING (nested fractions), a power tower (an
    exponent that holds or meets another `^`: `9^{9^{9}}`), an exponent with a number of 3 digits or more (`(y+1)^{999}`
    takes 5 s), or of 2 on a bracket (`(x+y+z)^{40}`: 1.5 s), or a factorial or binomial of anything but a letter or a
    number of at most 4 digits (`(10^{10})!`, `10!!`, `\binom{99999}{49999}`). A few microseconds to check."""
    if len(answer) > MAX_ANSWER_CHARS:
        return "too long"
    depth = 0
    for c in answer:
        depth += (c in "([{") - (c in ")]}")
        if depth > MAX_NESTING:
            return "nested too deep"
    for m in re.finditer(r"\^\s*(\{|\\[a-zA-Z]+|\d+|.)", answer):
        exponent, end = m.group(1), m.end()
        if exponent == "{":                                                  # the braced group, to its closing brace
            depth = 1
            while end < len(answer) and depth:
                depth += (answer[end] == "{") - (answer[end] == "}")
                end += 1
            exponent = answer[m.end():end - 1]
        if "^" in exponent or answer[end:].lstrip().startswith("^"):
            return "a power tower"
        on_bracket = answer[:m.start()].rstrip()[-1:] in (")", "]", "}")
        if max(map(len, re.findall(r"\d+", exponent)), default=0) > (1 if on_bracket else 2):
            return "a large exponent"
    small = r"(?<![\w\\!])(?:\d{1,4}|[a-zA-Z])"
    if len(re.findall(r"(?<!\\)!", answer)) > len(re.findall(small + r"!(?!!)", answer)):   # \! is a LaTeX space
        return "a large factorial"
    binomials = re.findall(r"\\[dt]?binom|\\choose", answer)
    if len(binomials) > len(re.findall(rf"\\[dt]?binom\s*\{{{small}\}}\s*\{{{small}\}}", answer)):
        return "a large binomial"
    return None


def plain_number(text):
    """An exact Fraction for a plain number ("-1,234.50", "$5", "3/4", "50%"), else None."""
    s = re.sub(r"\\?[$%]|\s", "", text)
    s = re.sub(r"(\d),(?=\d{3}(?!\d))", r"\1", s)                         # thousands separators
    if not re.fullmatch(r"-?(\d+\.?\d*|\.\d+)(/\d+)?", s):
        return None
    num, _, den = s.partition("/")
    return Fraction(num) / Fraction(den or 1) if den != "0" else None


@functools.lru_cache(maxsize=1 << 16)
def latex_equal(pred, gold):
    """math-verify's equivalence of two LaTeX answers (sympy underneath), decimals compared to 10 places, so that
    0.3333333 is not 1/3. Its own time limits (whole seconds, by SIGALRM: main thread only) are set to their least,
    behind `too_costly`. Cached: rollouts of one problem repeat their answers."""
    from math_verify import parse, verify
    g, p = parse(f"${gold}$", parsing_timeout=1), parse(f"${pred}$", parsing_timeout=1)
    return bool(g and p and verify(g, p, float_rounding=10, timeout_seconds=1))


LAYOUTS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution")}


def load_problems(path):
    r"""A JSON lines file of problems in GSM8K's layout ({"question", "answer": "... #### 72"}) or MATH's
    ({"problem", "solution": "... \boxed{72} ..."}): a list of (question, reference solution, final answer, layout)."""
    if not os.path.isfile(path):
        raise ValueError(f"data file {path} does not exist")
    out = []
    try:
        text = pathlib.Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"data file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not a JSON object ({e.msg}); the file must be JSON lines") from None
        layout = next((k for k, (q, a) in LAYOUTS.items() if isinstance(row, dict) and q in row and a in row), None)
        if layout is None:
            raise ValueError(f"{path}:{n}: a line needs the fields question and answer (GSM8K) or problem and "
                             f"solution (MATH), got {sorted(row) if isinstance(row, dict) else type(row).__name__}")
        q, a = (row[k] for k in LAYOUTS[layout])
        if not isinstance(a, str):
            final = None
        elif layout == "math":
            final = last_boxed(a)
        else:
            final = a.rsplit("####", 1)[1].strip() if "####" in a else None
        if not isinstance(q, str) or not final:
            raise ValueError(f"{path}:{n}: no final answer in the {LAYOUTS[layout][1]} (GSM8K ends it with "
                             "'#### <answer>', MATH puts it in \\boxed{...})")
        out.append((q, a, final, layout))
    if not out:
        raise ValueError(f"data file {path} has no problems")
    return out


class FileTask:
    """Problems from JSON lines files; the outcome check compares final answers. Held-out problems come from
    `eval_path`, or, without one, are those of `path` whose question's CRC32 is 0 mod 5 (`arith`'s fixed split)."""

    name = "data"

    def __init__(self, path, eval_path=None, delimiter="\n", max_new_tokens=320):
        self.delimiter, self.max_new_tokens, self.tokenizer = delimiter, max_new_tokens, None
        pool = load_problems(path)
        if eval_path:
            self.train, self.test = pool, load_problems(eval_path)
        else:
            held = [zlib.crc32(q.encode()) % 5 == 0 for q, *_ in pool]
            self.train = [p for p, h in zip(pool, held) if not h]
            self.test = [p for p, h in zip(pool, held) if h]
            if not self.train or not self.test:
                raise ValueError(f"{path}: its {len(pool)} problems leave the train or the held-out split empty; "
                                 "pass the held-out problems with --eval-data")
        self.files = {"data": digest(path), "eval_data": digest(eval_path) if eval_path else None}

    def settings(self):   # what a policy's training data depends on (the held-out file is not part of it)
        return {"data": self.files["data"], "delimiter": self.delimiter, "max_new_tokens": self.max_new_tokens}

    def prompt(self, question):
        where = "on its own line" if self.delimiter == "\n" else f"followed by {self.delimiter!r}"
        return (f"Solve the problem step by step. Write each step {where}, and put the final answer in "
                f"\\boxed{{}}.\n\nProblem: {question}\n\nSolution:\n")

    def problems(self, n, rng, split="train"):
        """n training problems (drawn without replacement while the file lasts, then again), or up to n held-out ones."""
        pool = self.train if split == "train" else self.test
        picks = rng.sample(pool, min(n, len(pool)))
        while split == "train" and len(picks) < n:
            picks += rng.sample(pool, min(n - len(picks), len(pool)))
        return [Problem(self.prompt(q), a, layout) for q, _, a, layout in picks]

    def check(self, problem, response):
        return float(answers_match(extract_answer(response, problem.layout), problem.answer))


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------------------------
# Files: every result, cache and checkpoint is written whole or not at all

def write_atomic(path, write):
    """Make the file or directory `path` with `write(tmp)` at a temporary name beside it, then rename it into place: a
    run killed while writing leaves the previous version or nothing, never a half-written file."""
    tmp = f"{path}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)                               # what a killed run left behind
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write(tmp)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def save_json(obj, path):
    write_atomic(path, lambda tmp: pathlib.Path(tmp).write_text(json.dumps(obj, indent=1)))


def read_json(path):
    """A JSON file's contents, or None if it is missing or unreadable (a cache that does not match is rebuilt)."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return None


def save_png(fig, path):
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))


# --------------------------------------------------------------------------------------------------------------
# Prompts and outcomes

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
    return (len(response) > 0 and response[-1] in end_ids(tokenizer)) or len(response) >= task.max_new_tokens


def response_text(tokenizer, response):
    """A response's text, its EOS and what follows it cut off."""
    ends = set(end_ids(tokenizer))
    return tokenizer.decode(response[:next((i for i, t in enumerate(response) if t in ends), len(response))])


def outcome(task, tokenizer, problem, response):
    """Rex(y, y*): 1.0 iff the response's final answer is right (EOS and what follows it ignored)."""
    return task.check(problem, response_text(tokenizer, response))


TASKS = {   # each task's settings, in one place (rl.py has each task's RL settings)
    "facts": lambda: Arith("facts", n_ops=6, p_err=0.9, hard_facts=True),
    "arith": lambda: Arith("arith", n_ops=4, p_err=0.35, hard_facts=False),
    "planted": lambda: Planted(),
}


def get_task(name):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]()

