"""The online path for timm models (timm -> Hugging Face hub) runs for real, served from a local hub cache."""

import huggingface_hub.constants
import timm
import torch
from safetensors.torch import save_file

from transferlab.backbones import create_backbone


def _fake_hub_cache(root, repo_id: str, files: dict[str, bytes | dict]) -> None:
    """Lay out ``root`` the way huggingface_hub caches a downloaded model repository."""
    commit = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, dict):
            save_file(content, str(snapshot / name))
        else:
            (snapshot / name).write_bytes(content)


def test_timm_pretrained_loading_goes_through_the_hub(tmp_path, monkeypatch):
    reference = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.constant_(reference.conv1.weight, 0.125)
    hub_id = timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    _fake_hub_cache(tmp_path, hub_id, {"model.safetensors": {k: v.contiguous() for k, v in reference.state_dict().items()}})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))

    backbone = create_backbone("resnet18", pretrained=True)

    assert backbone.spec["weights_source"].startswith("timm:")
    weights = {name: p for name, p in backbone.named_parameters()}
    conv1 = next(p for name, p in weights.items() if name.endswith("conv1.weight") and p.shape[1] == 3)
    assert torch.all(conv1 == 0.125)


def test_torchvision_pretrained_loading_goes_through_torch_hub(tmp_path, monkeypatch):
    import torchvision

    weights_enum = torchvision.models.get_model_weights("mobilenet_v2").DEFAULT
    reference = torchvision.models.mobilenet_v2(weights=None)
    torch.nn.init.constant_(reference.features[0][0].weight, 0.25)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / weights_enum.url.rsplit("/", 1)[-1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    backbone = create_backbone("torchvision:mobilenet_v2", pretrained=True)

    first_conv = next(p for p in backbone.parameters() if p.dim() == 4)
    assert torch.all(first_conv == 0.25)
