"""The blend shapes, hand-designed as smooth displacement fields: 26 identity components (shapes.py), 16 named
expressions (expressions.py) and the pose correctives for nodding and jaw opening (pose.py), all following the
conventions in fields.py (eyeballs rigid, mouth bag following the lips)."""
