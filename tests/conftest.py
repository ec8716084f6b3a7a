"""Shared setup for the test suite: the repo root on sys.path, no model hub, and tiny models built by hand.

    python -m pytest -q tests          # the whole suite, CPU, a few minutes (the arith warm start dominates)
    python -m pytest -q tests -m "not slow"   # what you run while you work: no test of more than about 5 s
"""

import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"   # before transformers is imported anywhere: no hub is reachable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import data

# One intra-op thread (override with PAV_TEST_THREADS): these models are tiny, and on a shared 2-core machine two
# threads per process oversubscribe the cores; we measured training steps 3-5x slower than with one thread.
torch.set_num_threads(int(os.environ.get("PAV_TEST_THREADS", "1")))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: more than about 5 s (a warm-started base policy, a script end to end, "
                                       "a fresh interpreter)")


def tiny_llama(vocab, *, hidden=48, layers=2, seed=0, init=0.2, attn="sdpa"):
    """A random-init Llama, large enough init that its next-token distributions are far from uniform."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         initializer_range=init, tie_word_embeddings=False)
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


def bigram_llama(vocab, successor, margin=60.0):
    """A Llama whose next token is a fixed function of the current token: successor[v] follows v.

    Attention and MLP outputs are zeroed, so the residual stream is the current token's embedding, a one-hot;
    the final RMSNorm scales it to sqrt(d), and lm_head puts `margin` on successor[v]. Sampling at temperature 1
    is then deterministic up to exp(-margin * sqrt(d)).
    """
    hidden = 32
    assert vocab <= hidden
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight[:, :vocab] = torch.eye(vocab)
        model.model.norm.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        for v, u in successor.items():
            model.lm_head.weight[u, v] = margin
    return model


@pytest.fixture(scope="session")
def arith():
    return data.get_task("arith")


@pytest.fixture(scope="session")
def facts():
    return data.get_task("facts")


@pytest.fixture(scope="session")
def planted():
    return data.Planted()


def one_line_failure(main, argv, capsys, out=None):
    """main(argv) exits with code 2 and one line on stderr starting "error: ", before writing `out`; returns it."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and err.startswith("error: "), err
    assert out is None or not out.exists()   # before any work
    return err
