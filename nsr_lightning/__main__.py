"""`python -m nsr_lightning fit|evaluate ...`"""

import sys

from nsr_lightning.cli import main

if __name__ == "__main__":
    sys.exit(main())
