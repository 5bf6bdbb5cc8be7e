import sys

from unitgan.cli import main

sys.exit(main())
