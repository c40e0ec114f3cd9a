import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The official reference numbers live beside the checkout (CI always has them; a plain clone does not).
REFERENCE_DIR = ROOT.parent / "shared" / "reference" / "next3d_small"
SPEC_DIR = ROOT.parent / "shared" / "spec"


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE_DIR / "state_dict.npz").is_file():
        pytest.skip(f"the official reference numbers are not here ({REFERENCE_DIR}); they live in "
                    "../shared/reference/next3d_small beside the repository, which CI has and a plain clone does not")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def official_key_list() -> Path:
    path = SPEC_DIR / "official_g_ema_state_dict.txt"
    if not path.is_file():
        pytest.skip(f"the official state-dict listing is not here ({path}); it lives in ../shared/spec")
    return path


@pytest.fixture(scope="session")
def official_standins(tmp_path_factory, reference_dir) -> dict:
    """Full-size stand-ins of the licensed files (tools/official_standins), generated once per session into a tmp
    folder: {file name: path} for generic_model.pkl, flame_static_embedding.pkl, flame_dynamic_embedding.npy,
    landmark_embedding.npy, flame2023.pkl and next3d_small.pkl (all in one folder, as a user keeps them)."""
    from tools.official_standins import write_standins

    return write_standins(tmp_path_factory.mktemp("official_standins"), reference_dir, flame2023=True)
