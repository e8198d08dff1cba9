"""Keep or restore a serving process's previous config, for rollback: serving_files.py keep|restore SHA RECORD FILE...

keep NEW_SHA RECORD FILE...: if RECORD exists and records another config than NEW_SHA, copy RECORD and each
  existing FILE to FILE.prev (the config being replaced is the one a failed check rolls back to; re-applying the
  same config keeps the older .prev). Prints {"kept": bool}.
restore - RECORD FILE...: if RECORD.prev exists, move every FILE.prev back over FILE (a FILE with no .prev is
  removed: it did not exist before) and print {"restored": true, "record": <the restored record>}; otherwise
  print {"restored": false}.
"""

import json
import os
import shutil
import sys

command, sha, record = sys.argv[1:4]
files = [record, *sys.argv[4:]]


def read_record(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


if command == "keep":
    old = read_record(record)
    kept = isinstance(old, dict) and old.get("config_sha256") != sha
    if kept:
        for path in files:
            if os.path.exists(path + ".prev"):
                os.unlink(path + ".prev")
            if os.path.exists(path):
                shutil.copy2(path, path + ".prev.tmp")
                os.replace(path + ".prev.tmp", path + ".prev")
    print(json.dumps({"kept": kept}))
elif command == "restore":
    prev = read_record(record + ".prev")
    if not isinstance(prev, dict):
        print(json.dumps({"restored": False}))
        sys.exit(0)
    for path in files:
        if os.path.exists(path + ".prev"):
            os.replace(path + ".prev", path)
        elif os.path.exists(path):
            os.unlink(path)
    print(json.dumps({"restored": True, "record": prev}))
else:
    sys.exit(f"unknown command {command!r}")
