"""How long the demo waits, scaled for slow machines.

QSGW_DEMO_TIME_SCALE multiplies every wait of the demo (default 1): an
emulated CPU, such as the test VM's, starts Python processes ten times
slower than the host.
"""

import os


def _scale() -> float:
    try:
        value = float(os.environ.get("QSGW_DEMO_TIME_SCALE", "1"))
    except ValueError:
        return 1.0
    return value if value > 0 else 1.0


TIME_SCALE = _scale()
