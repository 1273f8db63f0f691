"""torch.hub entry point `dino_vitb16`: the DINO ViT-B/16 backbone, written for the subject_consistency stand-in.

This file is ours (not facebookresearch/dino's). `dino.py` copies it verbatim to
`<vbench cache>/dino_model/facebookresearch_dino_main/hubconf.py`, where vbench 0.1.5 calls
`torch.hub.load(<that dir>, 'dino_vitb16', source='local', path=..., read_frame=...)`. It therefore imports nothing
but torch: the hub loader puts only this folder on `sys.path`.

Architecture (DINO's ViT-B/16, `num_classes=0`): 16x16 patch embedding (conv 3 -> 768), a class token, learned
position embeddings for a 14x14 grid (bicubically resized to other grids, DINO's +0.1 rule), 12 pre-norm blocks
(LayerNorm eps 1e-6, 12-head attention with qkv bias, GELU MLP 768 -> 3072 -> 768), a final LayerNorm; the output is
the class token [B, 768]. State-dict keys: `cls_token`, `pos_embed`, `patch_embed.proj.*`,
`blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*`, `norm.*` (the published checkpoint's layout).

Like the published hub entry, `dino_vitb16(pretrained=True)` reads the checkpoint with
`torch.hub.load_state_dict_from_url`, i.e. from `<TORCH_HOME>/hub/checkpoints/dino_vitbase16_pretrain.pth`, and
ignores other keyword arguments (vbench passes `path` and `read_frame`).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

dependencies = ["torch"]

CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth"


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # [B, 3, H, W] -> [B, (H/p)(W/p), dim]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]  # each [B, heads, N, dim/heads]
        weights = ((query @ key.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # [B, heads, N, N]
        mixed = (weights @ value).transpose(1, 2).reshape(batch, length, dim)  # [B, N, dim]
        return self.proj(mixed)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(tokens)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class VisionTransformer(nn.Module):
    """DINO's ViT backbone without a classifier: forward returns the normed class token [B, dim]."""

    def __init__(self, *, patch_size: int = 16, dim: int = 768, depth: int = 12, heads: int = 12,
                 mlp_ratio: float = 4.0, image_size: int = 224) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, dim)
        grid = image_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_layer)

    @staticmethod
    def _init_layer(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """[1, 1 + gh * gw, dim] for an image of height x width pixels: the class position plus the patch grid resized
        to (gh, gw) = (height // p, width // p). Kept as trained only for a square image of the trained grid (DINO's
        test compares pixels, so a 224x230 image is resized too)."""
        trained = self.pos_embed.shape[1] - 1
        size = self.patch_embed.patch_size
        grid_h, grid_w = height // size, width // size
        if grid_h * grid_w == trained and height == width:
            return self.pos_embed
        side = int(math.sqrt(trained))
        dim = self.pos_embed.shape[-1]
        patch = self.pos_embed[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)  # [1, dim, side, side]
        # DINO's rule: scale by (grid + 0.1) / side so floating point never rounds the output grid down
        patch = F.interpolate(patch, scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side), mode="bicubic")
        assert patch.shape[-2:] == (grid_h, grid_w), (patch.shape, grid_h, grid_w)
        patch = patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)  # [1, gh * gw, dim]
        return torch.cat((self.pos_embed[:, :1], patch), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = images.shape
        tokens = self.patch_embed(images)  # [B, gh * gw, dim]
        tokens = torch.cat((self.cls_token.expand(batch, -1, -1), tokens), dim=1)  # [B, 1 + gh * gw, dim]
        tokens = tokens + self.position_embedding(height, width)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]  # [B, dim]


def dino_vitb16(pretrained: bool = True, **kwargs) -> VisionTransformer:
    """DINO ViT-B/16; with `pretrained`, the weights from `<TORCH_HOME>/hub/checkpoints/` (downloaded if absent)."""
    model = VisionTransformer(patch_size=16, dim=768, depth=12, heads=12)
    if pretrained:
        state_dict = torch.hub.load_state_dict_from_url(CHECKPOINT_URL, map_location="cpu")
        model.load_state_dict(state_dict, strict=True)
    return model
