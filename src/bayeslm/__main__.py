import sys

from bayeslm.cli import main

sys.exit(main())
