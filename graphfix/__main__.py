import sys

from graphfix.cli import main

sys.exit(main())
