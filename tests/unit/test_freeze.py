import pytest
from transformers import BertConfig, BertForSequenceClassification

from transferkit.errors import ConfigError
from transferkit.modeling.freeze import apply_freeze, count_params


@pytest.fixture
def model():
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=40, num_labels=3)
    return BertForSequenceClassification(cfg)


def _numel(module):
    return sum(p.numel() for p in module.parameters())


def test_counts(model):
    total = _numel(model)
    emb = _numel(model.bert.embeddings)
    layer = _numel(model.bert.encoder.layer[0])
    head = _numel(model.classifier)
    assert apply_freeze(model, "none") == (total, total)
    assert apply_freeze(model, "embeddings") == (total - emb, total)
    assert apply_freeze(model, "bottom", 2) == (total - emb - 2 * layer, total)
    assert apply_freeze(model, "all_but_head") == (head, total)
    assert head == 16 * 3 + 3
    # switching policy un-freezes what the previous one froze
    assert apply_freeze(model, "none") == (total, total)
    assert count_params(model) == (total, total)


def test_bottom_more_layers_than_model(model):
    with pytest.raises(ConfigError, match="freeze -> layers: 5 exceeds the model's 3 layers"):
        apply_freeze(model, "bottom", 5)
