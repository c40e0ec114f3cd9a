"""Next3D Avatars: a Blender extension over the Next3D engine (core/, vendored into the built extension).

Two halves: blender/ runs in Blender's process and is the only part that imports bpy; engine/ is bpy-free and is
what the worker process imports (engine/worker.py), outside Blender, to reach the engine. So this module imports
no bpy at import time: Blender calls `register` / `unregister`, which collect the classes of the bpy modules
(PropertyGroups first) and attach or detach the pointer properties symmetrically.
"""


def _classes() -> tuple:
    from .blender import operators, panels, performance, preferences, properties, render_engine

    return (*properties.CLASSES, *preferences.CLASSES, *operators.CLASSES, *panels.CLASSES, *performance.CLASSES,
            *render_engine.CLASSES)


def register() -> None:
    import bpy

    from .blender import properties, render_engine

    register_classes, _ = bpy.utils.register_classes_factory(_classes())
    register_classes()
    properties.attach()
    render_engine.register()


def unregister() -> None:
    import bpy

    from .blender import properties, render_engine, runner, viewport

    runner.shutdown()
    viewport.shutdown()
    render_engine.unregister()
    properties.detach()
    _, unregister_classes = bpy.utils.register_classes_factory(_classes())
    unregister_classes()
