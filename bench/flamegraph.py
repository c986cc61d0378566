#!/usr/bin/env python3
"""Turn `perf script` text output into an SVG flame graph and folded stacks.

This script owns exactly one job: reading the text that `perf script` prints
for a recording made with `perf record --call-graph dwarf`, and writing
  * a static SVG flame graph (no JavaScript), and optionally
  * the folded stacks (`root;child;...;leaf COUNT`, one line per stack) so
    that two runs can be diffed.

It must never run perf, cargo, or the benchmark itself: it only reads a text
file that was already produced. Standard library only.

Usage:
  python3 bench/flamegraph.py INPUT.txt OUTPUT.svg [--comm NAME]... \
      [--title TEXT] [--width 1200] [--min-percent 0.1] \
      [--folded OUT.folded] [--trim-prefix REGEX]
"""
import argparse
import colorsys
import hashlib
import html
import re
import sys
from collections import Counter

FRAME_LINE = re.compile(r"^\s*[0-9a-fA-F]+\s+(.*?)\s+\(([^()]*)\)\s*$")
OFFSET_SUFFIX = re.compile(r"\+0x[0-9a-fA-F]+$")

FRAME_HEIGHT = 16
FONT_SIZE = 11
CHAR_WIDTH = 7  # approximate px per character at FONT_SIZE
SIDE_PAD = 10
HEADER_HEIGHT = 50
FOOTER_PAD = 10


def parse_frame(line):
    """Return (function_name, is_kernel) for one indented frame line."""
    match = FRAME_LINE.match(line)
    if match:
        symbol, module = match.group(1), match.group(2)
    else:  # no trailing "(module)": take what follows the address
        parts = line.strip().split(None, 1)
        symbol, module = (parts[1] if len(parts) > 1 else "[unknown]"), ""
    name = OFFSET_SUFFIX.sub("", symbol).strip() or "[unknown]"
    name = name.replace(";", ":")  # ';' separates frames in folded stacks
    return name, module.startswith("[kernel.")


def read_samples(path):
    """Yield (comm, frames leaf-first, kernel names) for each kept sample."""
    comm, frames, kernel_names = None, [], set()
    with open(path, encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                if comm is not None:
                    yield comm, frames, kernel_names
                comm, frames, kernel_names = None, [], set()
            elif not line[0].isspace():
                if comm is not None:  # header without a blank line before it
                    yield comm, frames, kernel_names
                comm, frames, kernel_names = line.split()[0], [], set()
            elif comm is not None:
                name, is_kernel = parse_frame(line)
                frames.append(name)
                if is_kernel:
                    kernel_names.add(name)
    if comm is not None:
        yield comm, frames, kernel_names


def fold_stacks(path, wanted_comms, trim_prefix):
    """Count identical root-first stacks; also return the set of kernel names."""
    stack_counts, all_kernel_names = Counter(), set()
    for comm, leaf_first, kernel_names in read_samples(path):
        if wanted_comms and comm not in wanted_comms:
            continue
        stack = list(reversed(leaf_first)) or ["[unknown]"]
        if trim_prefix is not None:
            deepest = max((i for i, f in enumerate(stack) if trim_prefix.search(f)),
                          default=-1)
            # Keep the leaf if trimming would remove everything, so every
            # kept sample still appears somewhere in the graph.
            stack = stack[deepest + 1:] or stack[-1:]
        stack_counts[tuple(stack)] += 1
        all_kernel_names |= kernel_names
    return stack_counts, all_kernel_names


class Node:
    __slots__ = ("count", "children")

    def __init__(self):
        self.count = 0
        self.children = {}


def build_tree(stack_counts):
    root = Node()
    for stack, count in stack_counts.items():
        root.count += count
        node = root
        for name in stack:
            node = node.children.setdefault(name, Node())
            node.count += count
    return root


def frame_colour(name, kernel_names):
    """Deterministic colour from the name: warm, blue for kernel, green for mcpgate."""
    digest = hashlib.md5(name.encode("utf-8")).digest()
    hue_jitter, light_jitter, sat_jitter = (b / 255.0 for b in digest[:3])
    if name in kernel_names:
        hue = 195 + 35 * hue_jitter
    elif name.startswith("mcpgate") or name.startswith("<mcpgate"):
        hue = 90 + 50 * hue_jitter
    else:
        hue = 0 + 50 * hue_jitter
    red, green, blue = colorsys.hls_to_rgb(hue / 360.0, 0.55 + 0.15 * light_jitter,
                                           0.65 + 0.3 * sat_jitter)
    return "rgb(%d,%d,%d)" % (red * 255, green * 255, blue * 255)


def label_for(name, box_width):
    max_chars = int((box_width - 6) / CHAR_WIDTH)
    if max_chars < 3:
        return ""
    return name if len(name) <= max_chars else name[:max_chars - 2] + ".."


def layout(root, min_count):
    """Return visible boxes as (name, count, depth, x_fraction) plus max depth."""
    boxes, max_depth = [], 0
    pending = [("all", root, 0, 0.0)]
    while pending:
        name, node, depth, x_fraction = pending.pop()
        boxes.append((name, node.count, depth, x_fraction))
        max_depth = max(max_depth, depth)
        child_x = x_fraction
        for child_name in sorted(node.children):
            child = node.children[child_name]
            if child.count >= min_count:
                pending.append((child_name, child, depth + 1, child_x))
            child_x += child.count / root.count
    return boxes, max_depth


def render_svg(root, kernel_names, title, subtitle, width, min_percent):
    total = root.count
    min_count = max(1, total * min_percent / 100.0) if total else 1
    boxes, max_depth = layout(root, min_count) if total else ([], 0)
    height = HEADER_HEIGHT + (max_depth + 1) * FRAME_HEIGHT + FOOTER_PAD
    plot_width = width - 2 * SIDE_PAD
    bottom_y = height - FOOTER_PAD - FRAME_HEIGHT
    esc = lambda text: html.escape(text, quote=True)
    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
        '<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="%d" height="%d" '
        'viewBox="0 0 %d %d" font-family="Verdana, sans-serif" font-size="%d">'
        % (width, height, width, height, FONT_SIZE),
        '<rect x="0" y="0" width="%d" height="%d" fill="#f8f8f0"/>' % (width, height),
        '<text x="%d" y="20" font-size="16" text-anchor="middle">%s</text>'
        % (width // 2, esc(title)),
        '<text x="%d" y="38" text-anchor="middle" fill="#555">%s</text>'
        % (width // 2, esc(subtitle)),
    ]
    for name, count, depth, x_fraction in boxes:
        x = SIDE_PAD + x_fraction * plot_width
        box_width = count / total * plot_width
        y = bottom_y - depth * FRAME_HEIGHT
        fill = "rgb(200,200,200)" if depth == 0 else frame_colour(name, kernel_names)
        tooltip = "%s (%d samples, %.2f%%)" % (name, count, 100.0 * count / total)
        out.append('<g><title>%s</title><rect x="%.2f" y="%d" width="%.2f" height="%d" '
                   'fill="%s" rx="2" ry="2"/>'
                   % (esc(tooltip), x, y, box_width, FRAME_HEIGHT - 1, fill))
        label = label_for(name, box_width)
        if label:
            out.append('<text x="%.2f" y="%d">%s</text>' % (x + 3, y + 11, esc(label)))
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n", len(boxes)


def write_folded(path, stack_counts):
    with open(path, "w", encoding="utf-8") as folded:
        for stack in sorted(stack_counts):
            folded.write("%s %d\n" % (";".join(stack), stack_counts[stack]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="text produced by `perf script`")
    parser.add_argument("output", help="SVG file to write")
    parser.add_argument("--comm", action="append", default=[],
                        help="keep only samples from this thread name (repeatable)")
    parser.add_argument("--title", default="Flame Graph")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--min-percent", type=float, default=0.1,
                        help="omit frames narrower than this percent of all samples")
    parser.add_argument("--folded", help="also write folded stacks to this file")
    parser.add_argument("--trim-prefix", type=re.compile, default=None,
                        help="drop frames from the root up to the deepest match")
    args = parser.parse_args(argv)

    stack_counts, kernel_names = fold_stacks(args.input, set(args.comm), args.trim_prefix)
    root = build_tree(stack_counts)
    filters = ["comm=" + ",".join(args.comm)] if args.comm else []
    if args.trim_prefix is not None:
        filters.append("trim-prefix=" + args.trim_prefix.pattern)
    subtitle = "%d samples; filter: %s" % (root.count, "; ".join(filters) or "none")
    svg, box_count = render_svg(root, kernel_names, args.title, subtitle,
                                args.width, args.min_percent)
    with open(args.output, "w", encoding="utf-8") as svg_file:
        svg_file.write(svg)
    if args.folded:
        write_folded(args.folded, stack_counts)
    print("%s: %d samples, %d boxes drawn" % (args.output, root.count, box_count),
          file=sys.stderr)


if __name__ == "__main__":
    main()
