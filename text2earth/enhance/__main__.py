"""``python -m text2earth.enhance --input-dir IN --output-dir OUT --checkpoint W``."""

import sys

from text2earth.enhance.cli import main

sys.exit(main())
