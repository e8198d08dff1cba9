"""Print the installed version of a distribution under a --target prefix: version_probe.py PREFIX PACKAGE."""

import sys
from importlib import metadata

want = sys.argv[2].lower().replace("_", "-")
found = (d.version for d in metadata.distributions(path=[sys.argv[1]])
         if d.metadata["Name"].lower().replace("_", "-") == want)
print(next(found, ""))
