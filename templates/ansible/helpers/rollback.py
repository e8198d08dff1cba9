"""Swap a model's `current` and `previous` symlinks atomically; print the now-active version as JSON.

rollback.py MODEL_DIR
"""

import hashlib
import json
import os
import sys

model_dir = sys.argv[1]
current, previous = os.path.join(model_dir, "current"), os.path.join(model_dir, "previous")
if not os.path.islink(previous):
    sys.exit("no previous version is kept on this host")
old, new = os.readlink(current), os.readlink(previous)
for target, link in ((new, current), (old, previous)):
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
files = {}
for base, _, names in os.walk(new):
    for name in names:
        path = os.path.join(base, name)
        rel = os.path.relpath(path, new)
        if rel.startswith(".sovkit"):
            continue
        with open(path, "rb") as fh:
            files[rel] = hashlib.sha256(fh.read()).hexdigest()
print(json.dumps({"version": os.path.basename(new), "path": new, "previous": os.path.basename(old),
                  "files": files}))
