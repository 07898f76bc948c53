import sys

from modelcycle import cli

sys.exit(cli.main())
