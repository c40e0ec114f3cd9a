"""A ViT CLIP model (Radford et al. 2021) whose parameter names equal OpenAI CLIP's and open_clip's state dicts, so
their weights load strictly; the architecture is read off the tensor shapes. Used as the frozen judge of the
StyleGAN-NADA directional loss (nada.py).

Only state dicts are read (safetensors, or torch.load with weights_only=True). OpenAI's released .pt files are
TorchScript archives, which hold code: they are refused with the command that turns them into a state dict.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import check_tensor
from ..errors import CheckpointError, InputError
from ..io.weights_file import read_state_dict_file

PathLike = Union[str, os.PathLike]

# CLIP's image normalisation (the statistics its image tower was trained with).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_WIDTH = 64  # OpenAI's build_model: heads = width // 64
ACTIVATIONS = ("quick_gelu", "gelu")
# Integers that OpenAI's TorchScript state dicts carry beside the weights (build_model drops them too).
_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")

TORCHSCRIPT_FIX = ("python -c \"import torch; torch.save(torch.jit.load('ViT-B-32.pt', map_location='cpu')"
                   ".state_dict(), 'ViT-B-32-state-dict.pt')\"")


@dataclass(frozen=True)
class ClipConfig:
    """Shapes of a ViT CLIP model, as OpenAI's build_model infers them from a state dict."""

    embed_dim: int        # joint embedding size (512 for ViT-B/32)
    image_size: int       # input side in pixels (224)
    patch_size: int       # ViT patch side in pixels (32)
    vision_width: int     # image transformer width (768); heads = width // 64
    vision_layers: int    # image transformer blocks (12)
    context_length: int   # text tokens per prompt, SOT and EOT included (77)
    vocab_size: int       # BPE vocabulary size (49408)
    text_width: int       # text transformer width (512)
    text_layers: int      # text transformer blocks (12)
    activation: str = "quick_gelu"  # OpenAI's weights use QuickGELU; open_clip's LAION models use exact GELU

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise InputError(f"CLIP activation {self.activation!r} is not one of {ACTIVATIONS}.")
        if self.image_size % self.patch_size:
            raise InputError(f"CLIP image size {self.image_size} is not a multiple of the patch size "
                             f"{self.patch_size}.")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """Multi-head self-attention with nn.MultiheadAttention's parameter names (in_proj_*, out_proj), batch first."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, w = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(b, n, 3, self.heads, w // self.heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class ResidualBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, activation: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        act = QuickGELU() if activation == "quick_gelu" else nn.GELU()
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)), ("gelu", act),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, activation: str, causal: bool):
        super().__init__()
        self.causal = causal  # the text tower sees only earlier tokens; the image tower sees all patches
        self.resblocks = nn.ModuleList(ResidualBlock(width, width // HEAD_WIDTH, activation) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, self.causal)
        return x


class VisionTransformer(nn.Module):
    """Patch embedding + class token + transformer; the class token's output projected to the joint space."""

    def __init__(self, cfg: ClipConfig):
        super().__init__()
        width = cfg.vision_width
        scale = width ** -0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.grid_size ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, cfg.vision_layers, cfg.activation, causal=False)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [B, grid^2, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class ClipModel(nn.Module):
    """ViT image tower + causal text transformer. encode_image / encode_text return L2-normalised embeddings."""

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        self.visual = VisionTransformer(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.text_width)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(config.context_length, config.text_width))
        self.transformer = Transformer(config.text_width, config.text_layers, config.activation, causal=True)
        self.ln_final = nn.LayerNorm(config.text_width)
        self.text_projection = nn.Parameter(config.text_width ** -0.5 *
                                            torch.randn(config.text_width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))  # log(1 / 0.07), unused here but part of the weights
        self.register_buffer("image_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Generator images [B, 3, H, W] in [-1, 1] -> CLIP input [B, 3, S, S] (antialiased resize, CLIP norm)."""
        check_tensor("images", images, [None, 3, None, None])
        x = (images.to(torch.float32) + 1) / 2
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.image_mean) / self.image_std

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, H, W] in [-1, 1] (any square or not size) -> unit embeddings [B, embed_dim]."""
        return F.normalize(self.visual(self.preprocess(images)), dim=-1)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids [B, context_length] (SOT ... EOT, zero padded) -> unit embeddings [B, embed_dim].

        The prompt's feature is read at its EOT token, which has the largest id in the vocabulary."""
        cfg = self.config
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] != cfg.context_length \
                or tokens.is_floating_point():
            got = list(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise InputError(f"tokens must be an integer tensor [B, {cfg.context_length}] from the CLIP tokenizer; "
                             f"got {got}.")
        if int(tokens.max()) >= cfg.vocab_size or int(tokens.min()) < 0:
            raise InputError(f"tokens hold ids outside the CLIP vocabulary of {cfg.vocab_size}; the tokenizer's "
                             "vocabulary file does not belong to these weights.")
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1)


# ------------------------------------------------------------------------------------------------- loading


def _count_blocks(state_dict: Dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def clip_config_from_state_dict(state_dict: Dict[str, torch.Tensor], activation: str = "quick_gelu",
                                source: str = "The CLIP state dict") -> ClipConfig:
    """The architecture of a ViT CLIP state dict, read off its tensor shapes (as OpenAI's build_model does)."""
    if any(k.startswith("visual.layer1.") for k in state_dict):
        raise CheckpointError(f"{source} is a ResNet CLIP (RN50, RN101, ...); only ViT CLIP models are supported. "
                              "Use ViT-B/32 or ViT-B/16 weights.")
    needed = ("visual.conv1.weight", "visual.positional_embedding", "token_embedding.weight", "positional_embedding",
              "ln_final.weight", "text_projection")
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise CheckpointError(f"{source} has no {', '.join(missing)}: it is not an OpenAI/open_clip ViT CLIP state "
                              "dict (models with a separate text tower, such as SigLIP or CoCa, are not supported).")
    conv = state_dict["visual.conv1.weight"]
    patch = int(conv.shape[-1])
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return ClipConfig(embed_dim=int(state_dict["text_projection"].shape[1]), image_size=patch * grid,
                      patch_size=patch, vision_width=int(conv.shape[0]),
                      vision_layers=_count_blocks(state_dict, "visual.transformer.resblocks."),
                      context_length=int(state_dict["positional_embedding"].shape[0]),
                      vocab_size=int(state_dict["token_embedding.weight"].shape[0]),
                      text_width=int(state_dict["ln_final.weight"].shape[0]),
                      text_layers=_count_blocks(state_dict, "transformer.resblocks."), activation=activation)


def read_clip_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of a CLIP weights file (OpenAI CLIP / open_clip state dict), without a DataParallel "module."."""
    data = read_state_dict_file(path, "CLIP weights", torchscript_fix=TORCHSCRIPT_FIX)
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in data.items()}


def load_clip(path: PathLike, device: Union[str, torch.device] = "cpu",
              activation: str = "quick_gelu") -> ClipModel:
    """A frozen float32 ViT CLIP model in eval mode from an OpenAI CLIP / open_clip state dict file.

    `activation`: "quick_gelu" for OpenAI's weights (also open_clip's `openai` and `*-quickgelu` models), "gelu" for
    open_clip's other (LAION, DataComp) ViT models; the file does not record which."""
    source = f"The CLIP weights {path}"
    state_dict = {k: v for k, v in read_clip_state_dict(path).items() if k not in _METADATA_KEYS}
    config = clip_config_from_state_dict(state_dict, activation, source)
    model = ClipModel(config)
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{label} {names[:5]}{' ...' if len(names) > 5 else ''}" for label, names in
                 (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names]
        raise CheckpointError(f"{source} do not fit a standard ViT CLIP ({'; '.join(parts)}); only OpenAI CLIP and "
                              "open_clip ViT models without extra layers (such as layer scale) are supported.")
    model.load_state_dict({k: v.to(torch.float32) for k, v in state_dict.items()}, strict=True)
    return model.eval().requires_grad_(False).to(device)
