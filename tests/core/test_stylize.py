"""Stylization (issue #4): the CLIP loader and tokenizer on tiny hand-made files, the trainable-parameter rule, and
the StyleGAN-NADA mechanics on a tiny generator with a tiny random CLIP."""

import gzip
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from core.default_model import TINY_CONFIG, random_generator
from core.errors import CheckpointError, InputError
from core.geometry.ellipsoid_head import ellipsoid_head
from core.stylize.clip_model import Attention, ClipConfig, ClipModel, load_clip
from core.stylize.nada import directional_loss, select_trainable, stylize
from core.stylize.tokenizer import VOCAB_FILE_NAME, load_tokenizer

# Hand-written merges; the vocabulary is 256 byte symbols, 256 with "</w>", these 7 merges, SOT, EOT.
MERGES = ["h e", "l o</w>", "he l", "hel lo</w>", "p i", "pi x", "a r</w>"]
N_MERGES = len(MERGES)
VOCAB_SIZE = 512 + N_MERGES + 2
SOT, EOT = 512 + N_MERGES, 513 + N_MERGES
CONTEXT = 16
TINY_CLIP = ClipConfig(embed_dim=32, image_size=32, patch_size=16, vision_width=64, vision_layers=2,
                       context_length=CONTEXT, vocab_size=VOCAB_SIZE, text_width=64, text_layers=2)


def byte_id(ch: str) -> int:
    """Vocabulary id of a printable ASCII character (the byte symbols start at '!')."""
    return ord(ch) - ord("!")


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """A tiny random CLIP saved as .safetensors and .pt, and the merges file (gzip) beside it."""
    folder = tmp_path_factory.mktemp("clip")
    (folder / VOCAB_FILE_NAME).write_bytes(gzip.compress(("#version: 0.2\n" + "\n".join(MERGES) + "\n").encode()))
    torch.manual_seed(0)
    model = ClipModel(TINY_CLIP).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "clip.safetensors"))
    torch.save(state, folder / "clip.pt")
    return folder, model


@pytest.fixture(scope="module")
def tiny_generator():
    return random_generator(TINY_CONFIG, seed=3)


# ---------------------------------------------------------------------------------------------- tokenizer


def test_tokenizer_known_words_special_tokens_padding_and_truncation(clip_files):
    folder, _ = clip_files
    tok = load_tokenizer(folder / VOCAB_FILE_NAME, VOCAB_SIZE, CONTEXT)
    assert tok.vocab_size == VOCAB_SIZE and (tok.sot_id, tok.eot_id) == (SOT, EOT)
    # hello: h+e, l+o</w>, he+l, hel+lo</w> -> one token, merge 3.
    assert tok.encode("hello") == [512 + 3]
    # pixar: p+i, pi+x, a+r</w>; no merge joins pix and ar</w>.
    assert tok.encode("pixar") == [512 + 5, 512 + 6]
    # No merge applies: single byte symbols, the last one word-final.
    assert tok.encode("xyz") == [byte_id("x"), byte_id("y"), 256 + byte_id("z")]
    # Lower-cased, whitespace collapsed, punctuation split off, digits one by one.
    assert tok.encode("  HELLO,\n  Pixar! 42") == [515, 256 + byte_id(","), 517, 518, 256 + byte_id("!"),
                                                   256 + byte_id("4"), 256 + byte_id("2")]
    assert tok.decode(tok.encode("hello pixar")) == "hello pixar"

    tokens = tok(["hello", "pixar"])
    assert tokens.dtype == torch.long and tokens.shape == (2, CONTEXT)
    assert tokens[0, :3].tolist() == [SOT, 515, EOT] and not tokens[0, 3:].any()
    assert tokens[1, :4].tolist() == [SOT, 517, 518, EOT] and not tokens[1, 4:].any()
    long = tok(" ".join(["hello"] * 30))[0].tolist()
    assert long == [SOT] + [515] * (CONTEXT - 2) + [EOT]


def test_missing_or_short_vocabulary_is_an_input_error(tmp_path, clip_files):
    folder, _ = clip_files
    weights = tmp_path / "ViT-B-32.safetensors"
    missing = tmp_path / VOCAB_FILE_NAME
    with pytest.raises(InputError) as exc:
        load_tokenizer(missing, VOCAB_SIZE, CONTEXT, weights_path=weights)
    assert str(missing) in str(exc.value) and str(weights) in str(exc.value) and "open_clip" in str(exc.value)
    with pytest.raises(InputError, match="merges"):  # the weights need more merges than the file has
        load_tokenizer(folder / VOCAB_FILE_NAME, VOCAB_SIZE + 5, CONTEXT)


# ------------------------------------------------------------------------------------------------- model


def test_attention_matches_torch_multihead_attention():
    """Our batch-first attention with nn.MultiheadAttention's parameter names computes what that module does."""
    torch.manual_seed(1)
    ours = Attention(128, heads=2)
    reference = torch.nn.MultiheadAttention(128, 2, batch_first=True)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, 7, 128)
    mask = torch.triu(torch.full((7, 7), float("-inf")), 1)
    with torch.no_grad():
        for causal, attn_mask in ((False, None), (True, mask)):
            want = reference(x, x, x, need_weights=False, attn_mask=attn_mask)[0]
            torch.testing.assert_close(ours(x, causal), want, atol=1e-5, rtol=1e-5)


def test_loader_infers_architecture_and_encodes(clip_files):
    folder, model = clip_files
    tok = load_tokenizer(folder / VOCAB_FILE_NAME, VOCAB_SIZE, CONTEXT)
    images = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tokens = tok(["hello", "pixar xyz"])
    with torch.no_grad():
        want_img, want_txt = model.encode_image(images), model.encode_text(tokens)
    for name in ("clip.safetensors", "clip.pt"):
        clip = load_clip(folder / name)
        assert clip.config == TINY_CLIP
        assert not any(p.requires_grad for p in clip.parameters())
        with torch.no_grad():
            img, txt = clip.encode_image(images), clip.encode_text(tokens)
        assert img.shape == (2, 32) and txt.shape == (2, 32)
        torch.testing.assert_close(img.norm(dim=-1), torch.ones(2))
        torch.testing.assert_close(txt.norm(dim=-1), torch.ones(2))
        assert torch.equal(img, want_img) and torch.equal(txt, want_txt)
    assert not torch.allclose(txt[0], txt[1])
    # Causal text tower read at EOT: tokens after EOT do not matter, tokens before it do.
    with torch.no_grad():
        after = tokens.clone()
        after[0, 5:] = 7
        before = tokens.clone()
        before[0, 1] = 517
        assert torch.equal(clip.encode_text(after)[0], txt[0])
        assert not torch.allclose(clip.encode_text(before)[0], txt[0])


def test_loader_unwraps_checkpoints_and_drops_openai_metadata(tmp_path, clip_files):
    _, model = clip_files
    state = {f"module.{k}": v.half() for k, v in model.state_dict().items()}
    state["module.input_resolution"] = torch.tensor(32)  # the integers OpenAI's state dicts carry
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "epoch_3.pt")
    clip = load_clip(tmp_path / "epoch_3.pt")
    assert clip.config == TINY_CLIP and clip.visual.proj.dtype == torch.float32
    torch.testing.assert_close(clip.visual.proj, model.visual.proj.half().float())


def test_loader_refuses_resnet_and_torchscript_without_running_them(tmp_path, clip_files, monkeypatch):
    resnet = {"visual.conv1.weight": torch.zeros(32, 3, 3, 3), "visual.layer1.0.conv1.weight": torch.zeros(8, 8, 1, 1),
              "token_embedding.weight": torch.zeros(10, 8)}
    torch.save(resnet, tmp_path / "RN50.pt")
    with pytest.raises(CheckpointError, match="only ViT CLIP models are supported"):
        load_clip(tmp_path / "RN50.pt")

    with warnings.catch_warnings():  # torch.jit is deprecated, but OpenAI's CLIP files are such archives
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 4)), str(tmp_path / "ViT-B-32.pt"))

    def tripwire(*args, **kwargs):
        raise AssertionError("the loader must never call torch.jit.load")

    monkeypatch.setattr(torch.jit, "load", tripwire)
    with pytest.raises(CheckpointError) as exc:
        load_clip(tmp_path / "ViT-B-32.pt")
    assert "TorchScript" in str(exc.value) and "state_dict()" in str(exc.value)

    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_clip(tmp_path / "junk.bin")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_clip(tmp_path / "absent.safetensors")


# ------------------------------------------------------------------------------------------------- NADA


def test_select_trainable_follows_the_rule(tiny_generator):
    names = [n for n, _ in tiny_generator.named_parameters()]
    trainable, frozen = select_trainable(tiny_generator)
    assert sorted(trainable + frozen) == sorted(names) and not set(trainable) & set(frozen)

    networks = ("texture_backbone", "backbone", "mouth_backbone")
    leaves = ("weight", "bias", "affine.weight", "affine.bias")
    # TINY_CONFIG: texture and planes 64 px, so every network's last toRGB is in block b64.
    early_torgb = {f"{net}.synthesis.b{res}.torgb.{leaf}" for net in networks for res in (4, 8, 16, 32)
                   for leaf in leaves}
    last_torgb = {f"{net}.synthesis.b64.torgb.{leaf}" for net in networks for leaf in leaves}
    assert early_torgb | last_torgb <= set(names)
    synthesis = {n for n in names if n.startswith(("texture_backbone.synthesis.", "backbone.synthesis.",
                                                   "mouth_backbone.synthesis."))}
    assert set(trainable) == synthesis - early_torgb
    assert last_torgb <= set(trainable) and early_torgb <= set(frozen)
    assert "mouth_backbone.synthesis.encoder.0.fromrgb.weight" in trainable
    assert "mouth_backbone.synthesis.fusion.0.weight" in trainable
    for name in frozen:
        assert name in early_torgb or name.split(".")[0] in ("decoder", "superresolution", "neural_blending") \
            or ".mapping." in name, name


def test_directional_loss_values_and_gradient_at_zero():
    t = torch.nn.functional.normalize(torch.tensor([1.0, 2.0, -0.5]), dim=0)
    frozen = torch.randn(1, 3)
    for step, want in ((t, 0.0), (-t, 2.0), (torch.tensor([2.0, -1.0, 0.0]), 1.0)):  # the last is orthogonal to t
        torch.testing.assert_close(directional_loss(frozen + 0.1 * step, frozen, t), torch.tensor([want]),
                                   atol=1e-3, rtol=0)
    tuned = frozen.clone().requires_grad_(True)
    loss = directional_loss(tuned, frozen, t)
    loss.sum().backward()
    assert torch.isfinite(tuned.grad).all() and float(loss.detach()) == pytest.approx(1.0)
    # Descending the gradient at d = 0 moves the embedding along the text direction.
    torch.testing.assert_close(torch.nn.functional.normalize(-tuned.grad[0], dim=0), t)


def test_stylize_changes_only_trainable_parameters(tiny_generator, clip_files):
    folder, _ = clip_files
    clip = load_clip(folder / "clip.safetensors")
    tok = load_tokenizer(folder / VOCAB_FILE_NAME, VOCAB_SIZE, CONTEXT)
    before = {k: v.clone() for k, v in tiny_generator.state_dict().items()}
    mesh = ellipsoid_head().mesh_input()
    calls = []
    result = stylize(tiny_generator, clip, tok, "hello", "pixar", steps=2, batch=2, lr=0.01, seed=1,
                     mesh_input=mesh, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)] and result.steps == 2 and not result.stopped
    assert len(result.history) == 2 and all(np.isfinite(result.history))
    assert result.history[0] == pytest.approx(1.0)  # both copies render the same images at the first step
    # The input generator is untouched.
    for k, v in tiny_generator.state_dict().items():
        assert torch.equal(v, before[k]), k

    # Which trainable parameters get gradient from an image (e.g. the mouth network's b4 block is built but never
    # run): one backward pass on an independent copy.
    probe = random_generator(TINY_CONFIG, seed=3)
    trainable, frozen = select_trainable(probe)
    params = dict(probe.named_parameters())
    for name in trainable:
        params[name].requires_grad_(True)
    from core.rendering.camera import ffhq_camera
    ws = probe.mapping(torch.randn(1, 512), ffhq_camera()[None], truncation_psi=0.7, truncation_cutoff=10)
    probe.synthesis(ws, ffhq_camera(0.2)[None], mesh, generator=torch.Generator().manual_seed(0)).image.square() \
        .mean().backward()
    with_grad = {n for n in trainable if params[n].grad is not None and bool(params[n].grad.any())}
    assert len(with_grad) > 0.8 * len(trainable)

    tuned = dict(result.generator.named_parameters())
    assert result.trainable == trainable
    assert not any(p.requires_grad for p in tuned.values())
    for name in with_grad:
        assert not torch.equal(tuned[name], before[name]), f"{name} got gradient but did not change"
    for name in set(trainable) - with_grad:
        assert torch.equal(tuned[name], before[name]), f"{name} gets no gradient but changed"
    for name in frozen:
        assert torch.equal(tuned[name], before[name]), f"frozen {name} changed"
    for name, buf in result.generator.named_buffers():
        if name in before:
            assert torch.equal(buf, before[name]), name

    stopped = stylize(tiny_generator, clip, tok, "hello", "pixar", steps=5, batch=1, seed=1, mesh_input=mesh,
                      should_stop=lambda: len(calls) >= 3, progress=lambda d, t: calls.append((d, t)))
    assert stopped.stopped and stopped.steps == 1
    with pytest.raises(InputError, match="same CLIP embedding"):
        stylize(tiny_generator, clip, tok, "hello", " HELLO ", steps=1, mesh_input=mesh)


# --------------------------------------------------------------------------------------------------- CLI


def test_stylize_command_writes_model_and_preview(tmp_path, tiny_generator, clip_files):
    from core.io.generator_io import load_generator, save_generator
    from core.io.images import read_image
    from core.cli.stylize import stylize_command

    folder, _ = clip_files
    model = tmp_path / "tiny.safetensors"
    save_generator(model, tiny_generator)
    out = tmp_path / "styled" / "pixar.safetensors"
    args = ["--source", "hello", "--target", "pixar", "--model", str(model), "--out", str(out), "--steps", "1",
            "--batch", "1", "--quiet"]
    runner = CliRunner()
    missing = runner.invoke(stylize_command, args)
    assert missing.exit_code == 2 and "CLIP weights" in missing.output and "never downloads" in missing.output
    assert not out.parent.exists() or not any(out.parent.iterdir())

    # The vocabulary is found next to the weights when --clip-vocab is left out.
    result = runner.invoke(stylize_command, args + ["--clip", str(folder / "clip.safetensors")])
    assert result.exit_code == 0, result.output
    styled = load_generator(out)
    trainable, frozen = select_trainable(styled)
    original = dict(tiny_generator.named_parameters())
    new = dict(styled.named_parameters())
    assert any(not torch.equal(new[n], original[n]) for n in trainable)
    assert all(torch.equal(new[n], original[n]) for n in frozen)
    preview = read_image(out.with_name("pixar_preview.png"))
    assert preview.shape == (2 * 64, 3 * 64, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["pixar.safetensors", "pixar_preview.png"]
