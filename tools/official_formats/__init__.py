"""Writers of the official file formats (FLAME's model and landmark files, Next3D's network pickles), opcode by
opcode, for the stand-ins (tools/official_standins) and the tests. Nothing here imports chumpy, scipy or the
official training code."""
