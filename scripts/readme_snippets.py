#!/usr/bin/env python3
"""Writes every C++ code block of README.md as a translation unit, so the tests compile them.

    python3 scripts/readme_snippets.py --readme README.md --wrappers tests/readme --out DIR

A block fenced as ```cpp (or c++, cxx) is compiled as it stands: it is a whole program or a
whole file. A block that is a fragment names its wrapper in an HTML comment on the line before
its fence, which the rendered README does not show:

    <!-- wrap: repository -->
    ```cpp
    ...
    ```

The wrapper is tests/readme/<name>.cpp: a file with one line `// {snippet}` where the block goes
(for example inside a function that has the variables the block uses). `#line` directives point
compiler messages at the README's own lines. Writes DIR/readme_<n>.cpp for the n-th block (a
file is rewritten only when its text changes) and prints the paths, one a line.
"""
import argparse
import pathlib
import re
import sys

FENCE = re.compile(r"^```(cpp|c\+\+|cxx)\s*$")
WRAP = re.compile(r"^<!--\s*wrap:\s*([A-Za-z0-9_-]+)\s*-->\s*$")
PLACEHOLDER = "// {snippet}"


def blocks(lines):
    """Yields (first line number of the code, code lines, wrapper name or None) per C++ block."""
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            previous = lines[i - 1] if i > 0 else ""
            wrap = WRAP.match(previous)
            start = i + 1
            end = start
            while end < len(lines) and lines[end].rstrip() != "```":
                end += 1
            if end == len(lines):
                sys.exit(f"readme_snippets: the block at line {i + 1} is never closed")
            yield start + 1, lines[start:end], wrap.group(1) if wrap else None
            i = end
        i += 1


def unit(readme, wrappers, number, first_line, code, wrap):
    out = [f"// Generated from {readme.name} by scripts/readme_snippets.py: block {number}, line {first_line}."]
    if wrap is None:
        out.append(f'#line {first_line} "{readme}"')
        out.extend(code)
        return "\n".join(out) + "\n"
    wrapper = wrappers / f"{wrap}.cpp"
    if not wrapper.is_file():
        sys.exit(f"readme_snippets: {readme}:{first_line - 1} names wrapper '{wrap}', but {wrapper} does not exist")
    text = wrapper.read_text().splitlines()
    places = [n for n, line in enumerate(text) if line.strip() == PLACEHOLDER]
    if len(places) != 1:
        sys.exit(f"readme_snippets: {wrapper} must hold the line '{PLACEHOLDER}' exactly once")
    place = places[0]
    out.append(f'#line 1 "{wrapper}"')
    out.extend(text[:place])
    out.append(f'#line {first_line} "{readme}"')
    out.extend(code)
    out.append(f'#line {place + 2} "{wrapper}"')
    out.extend(text[place + 1:])
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=pathlib.Path, required=True)
    parser.add_argument("--wrappers", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args()
    readme = args.readme.resolve()
    wrappers = args.wrappers.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for number, (first_line, code, wrap) in enumerate(blocks(readme.read_text().splitlines()), start=1):
        path = args.out / f"readme_{number}.cpp"
        text = unit(readme, wrappers, number, first_line, code, wrap)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    if not written:
        sys.exit(f"readme_snippets: no C++ block in {readme}")
    for stale in set(args.out.glob("readme_*.cpp")) - set(written):
        stale.unlink()
    print("\n".join(str(path) for path in written))


if __name__ == "__main__":
    main()
