"""The add-on's bpy-free half: what a job is (job_specs.py), running it on the engine (jobs.py), the worker process
that runs it outside Blender and its wire format (worker.py), the head models (heads.py) and the conversions from
Blender's camera, rotation and pixel conventions to the engine's (convert.py).

Nothing here imports bpy: the worker process imports this package outside Blender, and tests check it with bpy
blocked. torch is imported only inside the functions that run jobs.
"""
