"""``python -m napari_mupd.cli``."""

import sys

from napari_mupd.cli import main

sys.exit(main())
