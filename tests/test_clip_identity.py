"""CLIP identity encoder from a local path: a tiny CLIP text tower built offline."""

import numpy as np
import pytest
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from fcit_flower.config import ConfigError, RunConfig
from fcit_flower.models.identity import ClipTextEncoder, get_encoder
from fcit_flower.runtime import identity_encoder

HIDDEN = 32


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    """A CLIP BPE tokenizer (byte alphabet + two merges) and a 1-layer text tower."""
    directory = tmp_path_factory.mktemp("clip")
    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate([*chars, *(c + "</w>" for c in chars)])}
    merges = [("t", "h"), ("th", "e</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    for token in ("<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.save_pretrained(directory)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    CLIPTextModel(config).save_pretrained(directory)
    return str(directory)


def test_pooled_features_have_the_hidden_size_and_are_deterministic(clip_path):
    texts = ["<image>\nWhat is the colour?", "Count the shapes.", "the the"]
    first = ClipTextEncoder(clip_path).encode(texts)
    second = ClipTextEncoder(clip_path).encode(list(reversed(texts)))[::-1]
    assert first.shape == (3, HIDDEN) and first.dtype == np.float32
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first[0], first[1])
    # The image placeholder is stripped before encoding.
    plain = ClipTextEncoder(clip_path).encode(["What is the colour?"])
    np.testing.assert_allclose(first[0], plain[0], rtol=1e-5, atol=1e-6)


def test_instructions_are_truncated_to_77_tokens(clip_path):
    encoder = ClipTextEncoder(clip_path)
    prefix = "x" * 75  # 75 byte tokens + start + end = CLIP's 77-token context
    long_a, long_b = prefix + "abc", prefix + "qrs"
    features = encoder.encode([long_a, long_b, prefix[:60] + "abc"])
    np.testing.assert_allclose(features[0], features[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(features[0], features[2])
    assert encoder.identity_token([long_a, long_b]).shape == (HIDDEN,)  # mean of both


def test_run_config_selects_clip_from_its_path(clip_path):
    config = RunConfig(identity_encoder="clip", identity_encoder_path=clip_path)
    encoder = identity_encoder(config)
    assert isinstance(encoder, ClipTextEncoder) and encoder.dimension == HIDDEN
    assert get_encoder("clip", clip_path) is encoder  # cached per process
    with pytest.raises(ConfigError, match="identity-encoder-path is empty"):
        RunConfig(identity_encoder="clip").validate()
