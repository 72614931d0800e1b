#!/usr/bin/env python3
"""Every public declaration in the library targets has a doc comment (///) right above it
(attributes in between are fine). Conformance members (description, ==, <, hash) are exempt.
Prints one line per miss and "N passed, N failed" (files); exits 1 on any miss."""
import glob, re, sys

DECL = re.compile(r'^(@\w+(\([^)]*\))?\s+)*public\s+((static|final|mutating|nonisolated|override|convenience|required)\s+)*'
                  r'(func|var|let|init|struct|class|enum|protocol|typealias|subscript|actor)\b')
EXEMPT = re.compile(r'var description|static func [<=>]|func hash\(into|static func ==|static func <')
missing, files = [], sorted(glob.glob('Sources/LBKit*/**/*.swift', recursive=True))
bad_files = set()
for path in files:
    lines = open(path, encoding='utf-8').read().split('\n')
    for i, line in enumerate(lines):
        s = line.strip()
        if not DECL.match(s) or EXEMPT.search(s):
            continue
        j = i - 1
        while j >= 0 and lines[j].strip().startswith('@'):
            j -= 1
        prev = lines[j].strip() if j >= 0 else ''
        if not (prev.startswith('///') or prev.endswith('*/')):
            missing.append(f'{path}:{i + 1}: {s[:100]}')
            bad_files.add(path)
for m in missing:
    print('undocumented public symbol:', m)
print(f'{len(files) - len(bad_files)} passed, {len(bad_files)} failed')
sys.exit(1 if missing else 0)
