"""`python -m core.cli`, the same as the `next3d` command."""

from . import main

if __name__ == "__main__":
    main()
