"""Move directory SRC into place at DST, replacing an older DST: swap_dir.py SRC DST."""

import os
import shutil
import sys

src, dst = sys.argv[1:3]
old = dst + ".old"
shutil.rmtree(old, ignore_errors=True)
if os.path.isdir(dst):
    os.rename(dst, old)
os.rename(src, dst)
shutil.rmtree(old, ignore_errors=True)
