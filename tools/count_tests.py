#!/usr/bin/env python3
"""count_tests.py LOG.json... : sum TAP results over meson test logs.

Every meson test here speaks TAP (busted -o TAP, the C tests' tap.h), so
the real number of checks is the number of "ok"/"not ok" lines.  A test
that crashed or timed out before printing its plan counts as one failure;
a test that is not TAP (the fuzz run) counts as one check.
Prints "N passed, N failed" and exits 1 if anything failed.
"""
import json
import re
import sys

passed = failed = 0
for path in sys.argv[1:]:
    try:
        f = open(path)
    except OSError as e:  # a suite that wrote no log did not pass
        print(f"count_tests: {e}", file=sys.stderr)
        failed += 1
        continue
    with f:
        for line in f:
            t = json.loads(line)
            out = t.get("stdout") or ""
            oks = len(re.findall(r"^ok \d+", out, re.M))
            nots = len(re.findall(r"^not ok \d+", out, re.M))
            ok = t.get("result") in ("OK", "EXPECTEDFAIL")
            if oks + nots == 0:  # not TAP (the fuzz run): one result
                passed += ok
                failed += not ok and t.get("result") != "SKIP"
                continue
            passed += oks
            failed += nots
            if not ok and t.get("result") != "SKIP" and nots == 0:
                failed += 1
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
