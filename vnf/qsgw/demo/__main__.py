"""`python -m qsgw.demo`: the demo without the `qsgw` front end."""

import sys

from qsgw.demo.cli import main

sys.exit(main(sys.argv[1:]))
