"""'Avatar from Photo' in Blender: a real portrait (scikit-image's astronaut photo) becomes the scene's avatar, the
rig takes the fitted face shape, and renders then use the tuned model and latent. A photo without a face and a
missing avatar folder give clear errors and change nothing."""

import bpy
import numpy as np
import pytest

from n3d_helpers import make_scene


def _write(path, pixels):
    import imageio.v3 as iio

    iio.imwrite(path, pixels)
    return path


def _shape_values(mesh_obj):
    keys = mesh_obj.data.shape_keys.key_blocks
    return np.array([kb.value for kb in keys if kb.name.startswith("Shape")])


def test_avatar_from_photo(addon, use_tiny, tmp_path):
    from skimage import data

    photo = _write(tmp_path / "astronaut.png", data.astronaut())
    make_scene(tmp_path / "render", size=(32, 32))
    head = next(c for c in bpy.data.objects["FLAME"].children if c.type == "MESH")
    assert bpy.ops.next3d.render_frame() == {"FINISHED"}
    seed_render = np.array(bpy.data.images["Next3D Render"].pixels[:])
    assert not _shape_values(head).any()

    folder = tmp_path / "avatar"
    assert bpy.ops.next3d.avatar_from_photo(filepath=str(photo), directory_out=str(folder), latent_steps=3,
                                            tune_steps=2) == {"FINISHED"}
    for name in ("avatar.safetensors", "latent.npy"):
        assert (folder / name).is_file(), name
    settings = bpy.context.scene.next3d
    assert settings.avatar_source == "PHOTO"
    assert bpy.path.abspath(settings.avatar_folder).rstrip("/") == str(folder)
    assert _shape_values(head).any(), "the rig should take the fitted face shape"

    # Renders now come from the tuned model and the inverted latent, not from the seed.
    assert bpy.ops.next3d.render_frame() == {"FINISHED"}
    photo_render = np.array(bpy.data.images["Next3D Render"].pixels[:])
    assert photo_render.shape == seed_render.shape
    assert np.abs(photo_render - seed_render).max() > 1e-3

    # Running again into the same folder refuses rather than replacing the avatar.
    with pytest.raises(RuntimeError, match="already"):
        bpy.ops.next3d.avatar_from_photo(filepath=str(photo), directory_out=str(folder), latent_steps=1,
                                         tune_steps=0)


def test_photo_without_face(addon, use_tiny, tmp_path):
    photo = _write(tmp_path / "grey.png", np.full((256, 256, 3), 128, np.uint8))
    folder = tmp_path / "avatar"
    with pytest.raises(RuntimeError, match="(?i)no face"):
        bpy.ops.next3d.avatar_from_photo(filepath=str(photo), directory_out=str(folder), latent_steps=1,
                                         tune_steps=0)
    assert not (folder / "avatar.safetensors").exists()
    assert bpy.context.scene.next3d.avatar_source == "SEED"


def test_missing_photo_and_missing_avatar_folder(addon, use_tiny, tmp_path):
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.next3d.avatar_from_photo(filepath=str(tmp_path / "nope.jpg"), latent_steps=1, tune_steps=0)
    make_scene(tmp_path / "render", size=(32, 32))
    settings = bpy.context.scene.next3d
    settings.avatar_source = "PHOTO"
    settings.avatar_folder = str(tmp_path / "empty")
    with pytest.raises(RuntimeError, match="Avatar from Photo"):
        bpy.ops.next3d.render_frame()


def test_avatar_from_a_photo_with_two_faces_takes_the_chosen_one(addon, use_tiny, tmp_path):
    """Two people side by side, the larger one on the right: Face picks one by its number from the left (not the
    largest); a number beyond them is a one-line error naming how many there are, and nothing is written."""
    from skimage import data
    from skimage.transform import rescale

    face = data.astronaut()[:300, 100:400]
    small = (rescale(face, 0.6, channel_axis=2) * 255).astype(np.uint8)
    small[:] = small.mean(axis=2, keepdims=True).astype(np.uint8)      # the left one in grey: which was taken shows
    photo = np.full((300, 520, 3), 90, np.uint8)
    photo[60:60 + small.shape[0], 20:20 + small.shape[1]] = small
    photo[:, 220:520] = face
    path = _write(tmp_path / "two.png", photo)
    folder = tmp_path / "avatar"
    with pytest.raises(RuntimeError, match="no face 3 .*2 faces|no face 3 .*Choose --face 1 to 2"):
        bpy.ops.next3d.avatar_from_photo(filepath=str(path), directory_out=str(folder), face=3, latent_steps=1,
                                         tune_steps=0)
    assert not folder.exists() or not any(folder.iterdir())
    assert bpy.ops.next3d.avatar_from_photo(filepath=str(path), directory_out=str(folder), face=1, latent_steps=1,
                                            tune_steps=0, apply_shape=False) == {"FINISHED"}
    assert (folder / "avatar.safetensors").is_file()
    import imageio.v3 as iio

    target = iio.imread(folder / "target.png").astype(np.float64)      # the aligned crop the avatar was fitted to
    assert np.abs(target - target.mean(axis=2, keepdims=True)).mean() < 2.0, "face 1 (the grey one) was not taken"
