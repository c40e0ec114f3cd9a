"""The generator of the built-in FLAME-format head (addon_assets/builtin_head.npz), made procedurally.

The project cannot ship the licensed FLAME model, so it ships its own head, built here from scratch with numpy
and scipy and stored in the converted-FLAME layout (core/flame/model_data.py), so that one code path evaluates
both. Everything is deterministic: running the script twice gives identical arrays.

How the head is made
  * Shape: an implicit surface (a smooth union of ellipsoids, tapered ellipsoids, round cones and tube-like lips:
    cranium, face, jaw, chin, cheekbones, brow, nose, lips, ears, neck; field.py), in FLAME's frame: metres,
    y up, the face looking along +z, +x = the subject's left.
  * Surface parametrisation: every skin vertex has a "parameter" direction p on the unit sphere; its position is
    where the ray from O(p) along p leaves the implicit surface (O moves back along -z for forward directions,
    which keeps the rays through the face nearly parallel). The skin is triangulated once, as the convex hull of
    the parameter directions (a spherical Delaunay triangulation), so it is a closed surface by construction.
  * Structured regions: the eyes (almond-shaped loops round each lid opening: the lid margin sits on the eyeball,
    the skin inside the opening is tucked behind it, so the eyeball shows through) and the mouth (loops round a
    slit; the slit's vertices are duplicated into an upper and a lower lip, and the opening leads into a mouth
    bag behind the lips). The rest of the head is filled by farthest-point sampling with a spacing that is finer
    on the face and coarser on the scalp and neck.
  * Two eyeballs (UV spheres, radius 12.5 mm) sit in the sockets and are skinned to the eye joints.
  * A UV layout (face in the middle, seam down the back of the head; eyeballs and mouth bag in a strip at the
    bottom), a UV face/eye mask, LBS weights, a joint regressor, pose correctives, 68 iBUG landmarks, and smooth
    hand-designed shape (identity) and expression blend shapes.

What is in the file (float32 / int64, see core/flame/model_data.py for the layout)
  * 5023 vertices, like FLAME, all on real surfaces: skin, then the mouth bag, the left eyeball (+x), the right
    eyeball. The skin + bag is one closed, consistently oriented surface; each eyeball is a closed sphere.
  * Joints (J_regressor rows are convex vertex weights): 0 root at the neck base, 1 neck, 2 jaw hinge, 3/4 the
    eyeball centres. Parents -1, 0, 1, 1, 1. LBS weights: eyeballs 100 % on their eye joint; the lower lip, chin
    and jaw on the jaw joint, sharp across the middle of the lips, half-way at the mouth corners and fading over
    the cheeks and down the throat; the lower neck on the root; everything else on the neck joint.
  * shapedirs: 26 identity components (names in `shape_names`), orthogonalised, one unit ~ one standard deviation
    (2 = a strong but plausible face). exprdirs: 16 named expressions (`expression_names`), 1 = a clear expression
    (eye_close_* = 1 closes that eye). Eyeballs move rigidly with the shape and not with expressions.
  * posedirs: small correctives for nodding (throat) and jaw opening (cheeks, mouth corners); none for the eyes,
    so an eye rotation moves its eyeball only, as in FLAME.
  * 68 iBUG landmarks embedded on skin faces; the front orthographic mouth crop box of the generator is ~36 px,
    centred at about pixel (128, 104), like FLAME's.
  * UVs: skin from the parameter directions (azimuth/latitude, warped so the face is large and undistorted in the
    middle; seam down the back of the head, from the neck's base to the crown); eyeball discs and the unrolled
    mouth bag in a strip along the bottom. uv_face_mask [256, 256]: 1 on the face skin (forehead to chin, cheek to
    cheek) and the eyeballs, 0 on scalp, ears, neck and the mouth bag, soft-edged.

Where each part lives
  anatomy.py (eye centres, joints), field.py (the implicit surface), rays.py (parameter directions -> skin
  points), eyes.py and mouth.py (the structured regions), fill.py (seam, neck rim, farthest-point fill),
  triangulation.py, eyeballs.py, mouth_bag.py, mesh.py (the whole mesh), uv.py, uv_mask.py,
  skinning.py (LBS weights, joint regressor), landmarks.py, blendshapes/ (shapes, expressions, pose
  correctives), build.py (all arrays, the .npz), preview.py (--preview), cli.py (the command line).

Needs numpy and scipy; torch and the project's rasteriser for the UV mask (and smplx, imageio for --preview).
Takes ~10 s on two cores. It lives outside core/ because only this generator and its tests use it: the engine and
the extension read the finished .npz (core/flame/builtin_head.py).

Usage (from the repository root):
  python scripts/make_builtin_head.py [--out addon_assets/builtin_head.npz] [--preview [PNG]]
  python -m tools.builtin_head [--out ...] [--preview [PNG]]
"""


from .build import NAME, build, write
from .cli import main

__all__ = ["NAME", "build", "write", "main"]
