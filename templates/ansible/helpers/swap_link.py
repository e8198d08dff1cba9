"""Point symlink LINK at TARGET atomically (create a temp link, rename over): swap_link.py TARGET LINK."""

import os
import sys

target, link = sys.argv[1:3]
tmp = link + ".tmp"
if os.path.lexists(tmp):
    os.unlink(tmp)
os.symlink(target, tmp)
os.replace(tmp, link)
