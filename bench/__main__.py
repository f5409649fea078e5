import sys

from bench.forwarding import main

sys.exit(main())
