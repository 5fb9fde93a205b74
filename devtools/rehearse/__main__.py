"""`python -m devtools.rehearse`: see devtools/rehearse/run.py."""

import sys

from devtools.rehearse.run import main

sys.exit(main())
