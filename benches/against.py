#!/usr/bin/env python3
"""Benchmark this tree's `mitogen` against an earlier commit's, side by side.

Builds both as static release builds (the earlier one in a throw-away git
worktree under target/), runs `mitogen bench --json --target local` of each
alternately for --rounds rounds, so that drift in the machine's state affects
both alike, and writes the medians and the new/old ratios into a section of
docs/performance.md (which benches/compare.py keeps). This is how a change is
shown to cost nothing: same work, same machine, one run.

    python3 benches/against.py REV [--rounds N]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the build, the keys and the output file's sections)

BEGIN, END = compare.AGAINST_BEGIN, compare.AGAINST_END


def build_at(rev):
    """The static release `mitogen` of commit `rev`, built in a worktree."""
    tree = os.path.join(compare.target_dir(), 'against', rev)
    if not os.path.isdir(tree):
        compare.run(['git', 'worktree', 'add', '--detach', tree, rev], cwd=compare.ROOT)
    env = dict(os.environ)
    env['RUSTFLAGS'] = '-C target-feature=+crt-static'
    env['CARGO_TARGET_DIR'] = os.path.join(tree, 'target')
    compare.run(['cargo', 'build', '--release', '--target', compare.STATIC_TARGET,
                 '-p', 'mitogen-cli', '--bin', 'mitogen'], cwd=tree, env=env)
    return os.path.join(tree, 'target', compare.STATIC_TARGET, 'release', 'mitogen')


def bench(binary):
    out = subprocess.run([binary, 'bench', '--json', '--target', 'local'],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def section(rev, head, rounds_old, rounds_new):
    lines = [BEGIN, '## Against an earlier commit', '',
             'This tree (`%s`) against `%s`, both static release builds, '
             '`mitogen bench --target local` of each run alternately, %d rounds; '
             'medians, and new ÷ old (for a time or memory, < 1 is better; for a rate, > 1).'
             % (head, rev, len(rounds_new)), '',
             '| key | `%s` | `%s` | new ÷ old | every round, old | every round, new |' % (rev, head),
             '|---|---:|---:|---:|---|---|']
    for key, *_ in compare.KEYS:
        old = [r[key] for r in rounds_old]
        new = [r[key] for r in rounds_new]
        o, n = statistics.median(old), statistics.median(new)
        lines.append('| `%s` | %s | %s | %.2f | %s | %s |' % (
            key, compare.fmt(key, o), compare.fmt(key, n), n / o,
            ', '.join(compare.fmt(key, v) for v in old),
            ', '.join(compare.fmt(key, v) for v in new)))
    lines += ['', 'Rerun: `python3 benches/against.py %s --rounds %d`.' % (rev, len(rounds_new)),
              END]
    return '\n'.join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('rev', help='the earlier commit')
    p.add_argument('--rounds', type=int, default=8)
    p.add_argument('--output', default=os.path.join('docs', 'performance.md'))
    args = p.parse_args()
    rev = compare.output(['git', 'rev-parse', '--short', args.rev]).strip()
    head = compare.output(['git', 'rev-parse', '--short', 'HEAD']).strip()
    old_bin = build_at(rev)
    new_bin, _ = compare.build()
    rounds_old, rounds_new = [], []
    for i in range(args.rounds):
        compare.log('round %d of %d' % (i + 1, args.rounds))
        rounds_old.append(bench(old_bin))
        rounds_new.append(bench(new_bin))
    text = section(rev, head, rounds_old, rounds_new)
    path = os.path.join(compare.ROOT, args.output)
    compare.write_section(path, BEGIN, END, text)
    compare.log('wrote %s' % os.path.relpath(path, compare.ROOT))


if __name__ == '__main__':
    main()
