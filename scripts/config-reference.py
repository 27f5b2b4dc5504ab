#!/usr/bin/env python3
"""Rewrites the settings tables in docs/configuration.md from crates/bridge/src/config/settings.rs.

Run after adding or changing a setting; a unit test fails while the two differ.
"""
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
source = (root / "crates/bridge/src/config/settings.rs").read_text()
body = source[source.index("pub const SETTINGS"):]

rows = []
for line in body.splitlines():
    if m := re.match(r'\s*// (\w.*)', line):
        rows.append(("section", m.group(1)))
    elif m := re.match(r'\s*setting\("(\w+)", "(.*?)", "(.*)"\),', line):
        rows.append(("row", m.group(1), False, m.group(2), m.group(3)))
    elif m := re.match(r'\s*secret\("(\w+)", "(.*)"\),', line):
        rows.append(("row", m.group(1), True, "", m.group(2)))
    elif m := re.match(r'\s*Setting \{ name: "(\w+)", secret: (true|false), default: "(.*?)", help: "(.*)" \},', line):
        rows.append(("row", m.group(1), m.group(2) == "true", m.group(3), m.group(4)))

out = []
for row in rows:
    if row[0] == "section":
        out.append(f"\n### {row[1]}\n\n| Setting | Secret | Default | What it does |\n|---|---|---|---|")
    else:
        _, name, secret, default, help_text = row
        help_text = help_text.replace('\\"', '"')
        shown = f"`{default}`" if default and " " not in default else (default or "—")
        out.append(f"| `{name}` | {'yes' if secret else ''} | {shown} | {help_text} |")
tables = "\n".join(out) + "\n"

doc_path = root / "docs/configuration.md"
doc = doc_path.read_text()
start = doc.index("## Settings\n") + len("## Settings\n")
end = doc.index("\n## Notes for operators")
doc_path.write_text(doc[:start] + tables + doc[end:])
print(f"{doc_path.relative_to(root)}: {sum(1 for r in rows if r[0] == 'row')} settings")
