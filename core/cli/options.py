"""The options the `next3d` commands share, as decorators, and the typed values the bundles among them hand over.

A bundle adds several options to a command and passes the command one argument built from their values (an
`Avatar`, a `MeshFiles`), so each option is declared once and a command's signature says what it receives. Nothing
here loads the engine (core/cli/loaders.py does, inside its functions), so `next3d --help` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

import click
from click.core import ParameterSource

__all__ = ["Avatar", "MeshFiles", "FlameFiles", "bundle", "given", "model_option", "device_option", "threads_option",
           "THREADS_NOTE", "PRECISION_NAMES", "precision_option", "avatar_options", "avatar_seeds_options",
           "mesh_options", "flame_options"]


def bundle(into: str, build: Callable[..., Any], *options: Callable) -> Callable:
    """A decorator adding `options` to a command, which receives instead of their values one argument `into`:
    build(**values), where the names of `build`'s parameters are those of the options' values."""
    names = tuple(inspect.signature(build).parameters)

    def decorate(f):
        @functools.wraps(f)
        def command(*args, **kwargs):
            kwargs[into] = build(**{name: kwargs.pop(name) for name in names})
            return f(*args, **kwargs)

        for option in reversed(options):  # click lists options in the order their decorators are written
            command = option(command)
        return command

    return decorate


def given(name: str) -> bool:
    """Whether the option was typed on the command line (not a default)."""
    return click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE


# ------------------------------------------------------------------------------------------------ single options

model_option = click.option("--model", type=click.Path(dir_okay=False),
                            help="Official .pkl or .safetensors (default: bundled).")

device_option = click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")


# The names of core/networks/precision.py's PRECISIONS, written here so that --help loads no torch (test_cli checks
# that the two lists agree).
PRECISION_NAMES = ("fp32", "fp32-fast", "bf16")

precision_option = click.option(
    "--precision", type=click.Choice(PRECISION_NAMES), default="fp32", show_default=True,
    help="How the networks compute: fp32 reproduces the official code; fp32-fast reorders it (float32 rounding "
         "apart, the same); bf16 runs the convolutions in bfloat16, about 2x faster on CPUs with AVX-512 BF16 or "
         "AMX and invisibly close (docs/architecture.md#cost-of-our-code).")


# What the thread count changes in a render: the frames' bytes.
THREADS_NOTE = ("Sequence frames are byte-identical across runs and processes only with the same thread count (and "
                "machine type).")


def threads_option(note: str = "") -> Callable:
    """--threads; `note` says what the thread count changes in this command's output."""
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help=" ".join(filter(None, ["CPU threads for torch (default: torch's choice).", note])))


# ------------------------------------------------------------------------------------------------ the avatar

@dataclass(frozen=True)
class Avatar:
    """Which avatar a command renders: ws mapped from the z of a seed, truncated, or the ws of an avatar that
    `next3d invert` made (then the seeds and the truncation are unused)."""

    seeds: Tuple[int, ...]        # one, or several that a video interpolates between
    psi: float                    # truncation psi
    trunc_cutoff: int             # number of ws truncated
    latent: Optional[str] = None  # .npy [1, 28, 512] of the ws

    @property
    def seed(self) -> int:
        return self.seeds[0]

    def session(self, seed: Optional[int] = None):
        """The core.session.Avatar of `seed` (default the first seed)."""
        from ..session import Avatar as SessionAvatar

        return SessionAvatar(self.seed if seed is None else seed, self.psi, self.trunc_cutoff, self.latent)


def _check_latent_seed(latent: Optional[str], seed_default: bool, flag: str) -> None:
    """--latent fixes the avatar; a seed other than the default would ask for another one."""
    if latent and not seed_default:
        raise click.BadParameter(f"--latent gives the avatar's ws, and {flag} would draw different ones; give "
                                 f"either --latent or {flag}, not both.", param_hint=f"--latent / {flag}")


def _avatar(seed: int, psi: float, trunc_cutoff: int, latent: Optional[str]) -> Avatar:
    _check_latent_seed(latent, seed == 0, "--seed")
    return Avatar((seed,), psi, trunc_cutoff, latent)


def _avatars(seeds: List[int], psi: float, trunc_cutoff: int, latent: Optional[str]) -> Avatar:
    _check_latent_seed(latent, seeds == [0], "--seeds")
    return Avatar(tuple(seeds), psi, trunc_cutoff, latent)


def _parse_seeds(ctx, param, value: str) -> List[int]:
    seeds: List[int] = []
    for part in str(value).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(1)) > int(m.group(2))):
            raise click.BadParameter(f"--seeds expects a comma-separated list of seeds or ranges A-B with A <= B "
                                     f"(e.g. 0,3,10-12), got {value!r}.", ctx=ctx, param=param)
        first = int(m.group(1))
        seeds.extend(range(first, int(m.group(2) or first) + 1))
    if any(s >= 2 ** 32 for s in seeds):
        raise click.BadParameter("seeds must be below 2**32.", ctx=ctx, param=param)
    return seeds


# How the seed's ws are truncated, or the ws to use instead.
_WS_OPTIONS = (click.option("--trunc", "psi", default=0.7, show_default=True, help="Truncation psi."),
               click.option("--trunc-cutoff", default=14, show_default=True, help="Number of ws truncated."),
               click.option("--latent", type=click.Path(dir_okay=False),
                            help="The avatar's ws (.npy [1, 28, 512]) that `next3d invert` wrote (DIR/latent.npy), "
                                 "instead of drawing them from the seed (--trunc is then unused). Use it with that "
                                 "avatar's --model DIR/avatar.safetensors."))


def avatar_options(seed_help: str = "Avatar seed.") -> Callable:
    """--seed, --trunc, --trunc-cutoff and --latent -> the command's `avatar` (an Avatar of one seed)."""
    return bundle("avatar", _avatar, click.option("--seed", default=0, show_default=True, help=seed_help),
                  *_WS_OPTIONS)


# --seeds, --trunc, --trunc-cutoff and --latent -> the command's `avatar` (an Avatar of one or more seeds).
avatar_seeds_options = bundle(
    "avatar", _avatars,
    click.option("--seeds", default="0", show_default=True, callback=_parse_seeds,
                 help="Avatar seeds, e.g. 0,3,10-12. Several seeds: the video interpolates between them (cubic, "
                      "looping), as gen_videos does."),
    *_WS_OPTIONS)


# ------------------------------------------------------------------------------------------------ the mesh

@dataclass(frozen=True)
class MeshFiles:
    """--mesh and --landmarks: the FLAME mesh to render, or none for the head the model was built on."""

    mesh: Optional[str]
    landmarks: Optional[str]  # 68 x 3 landmarks of an .obj mesh

    @property
    def given(self) -> bool:
        return bool(self.mesh or self.landmarks)


def mesh_options(what: str = "FLAME mesh") -> Callable:
    """--mesh and --landmarks -> the command's `mesh` (MeshFiles); `what` names the mesh in the help."""
    return bundle("mesh", MeshFiles,
                  click.option("--mesh", type=click.Path(dir_okay=False),
                               help=f"{what}: .obj (+ --landmarks), a (5091, 3) .npy/.txt array, or a FLAME "
                                    "animation (.json/.npz of parameters; its first frame, through --flame-model). "
                                    "Default: the neutral head of --flame-model, else the head the model was built "
                                    "on."),
                  click.option("--landmarks", type=click.Path(dir_okay=False),
                               help="68 x 3 landmark text file for an .obj mesh."))


# ------------------------------------------------------------------------------------------------ FLAME files

@dataclass(frozen=True)
class FlameFiles:
    """--flame-model and --flame-landmarks: the FLAME model that turns parameters into meshes (None: the built-in
    head) and its landmark embedding when it is not beside the model under its official name."""

    model: Optional[str]
    landmarks: Tuple[str, ...] = ()


def _flame_files(flame_model: Optional[str], flame_landmarks: Tuple[str, ...]) -> FlameFiles:
    if flame_landmarks and not flame_model:
        from ..errors import InputError

        raise InputError("--flame-landmarks goes with an official FLAME model; give --flame-model too, or drop it "
                         "(the built-in head has its own landmarks).")
    return FlameFiles(flame_model, tuple(flame_landmarks))


def flame_options(what: str = "turns FLAME parameters into meshes") -> Callable:
    """--flame-model and --flame-landmarks -> the command's `flame` (FlameFiles); `what` says what it does here."""
    return bundle("flame", _flame_files,
                  click.option("--flame-model", type=click.Path(dir_okay=False),
                               help=f"The FLAME model that {what}: FLAME 2020 generic_model.pkl or a FLAME 2023 "
                                    "pickle (read without chumpy, converted once into a cache), or a converted "
                                    ".npz (default: the built-in head). Its landmark embedding is found beside it: "
                                    "landmark_embedding.npy (DECA) or flame_static_embedding.pkl + "
                                    "flame_dynamic_embedding.npy (FLAME)."),
                  click.option("--flame-landmarks", multiple=True, type=click.Path(dir_okay=False),
                               help="The landmark embedding of --flame-model when it is not beside it: DECA's "
                                    "landmark_embedding.npy, or FLAME's flame_static_embedding.pkl and "
                                    "flame_dynamic_embedding.npy (give the option twice)."))
