#!/usr/bin/env python3
"""Lists the C++ functions longer than a limit: the project's complexity budget (STYLE.md: aim under 60).

Usage: scripts/function_lengths.py [LIMIT] [DIR ...]   (default: 60 src apps python/src)

A function is a brace block whose head ends in ')' (with const/noexcept/override/a trailing return
type) and is no if/for/while/switch/catch or lambda; its length counts from the line of its opening
brace to its closing one. Comments and string literals are skipped, so braces inside them do not count.
"""
import pathlib
import re
import sys


def strip_comments_and_strings(text):
    """`text` with comments and literals blanked, newlines kept (line numbers stay right)."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith('//', i):
            j = text.find('\n', i)
            i = n if j < 0 else j
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append('\n' * text[i:j].count('\n'))
            i = j
        elif text.startswith('R"', i) and re.match(r'R"([^(]*)\(', text[i:]):
            end = ')' + re.match(r'R"([^(]*)\(', text[i:]).group(1) + '"'
            j = text.find(end, i)
            j = n if j < 0 else j + len(end)
            out.append('""' + '\n' * text[i:j].count('\n'))
            i = j
        elif text[i] in '"\'':
            quote, j = text[i], i + 1
            while j < n and text[j] != quote:
                j += 2 if text[j] == '\\' else 1
            out.append(quote + quote)
            i = j + 1
        else:
            out.append(text[i])
            i += 1
    return ''.join(out)


FUNCTION_HEAD = re.compile(r'\)\s*(const\s*)?(noexcept\s*)?(override\s*)?(->\s*[\w:<>, ]+)?\s*$')
CONTROL = re.compile(r'\b(if|for|while|switch|catch)\s*\(.*$')
LAMBDA = re.compile(r'\]\s*\(')


def functions(path):
    """(length, first line, head) of every outermost function in `path`."""
    lines = strip_comments_and_strings(path.read_text()).split('\n')
    found, stack = [], []
    for number, line in enumerate(lines, 1):
        for column, ch in enumerate(line):
            if ch == '{':
                before = line[:column]
                previous = lines[number - 2] if number > 1 else ''
                head = (previous + ' ' + before).split(';')[-1]
                is_function = (bool(FUNCTION_HEAD.search(before if before.strip() else previous))
                               and not CONTROL.search(head) and not LAMBDA.search(head))
                stack.append((number, is_function, head.strip()))
            elif ch == '}' and stack:
                start, is_function, head = stack.pop()
                if is_function and not any(s[1] for s in stack):
                    found.append((number - start + 1, start, head[-70:]))
    return found


def main(argv):
    limit = int(argv[0]) if argv and argv[0].isdigit() else 60
    roots = [a for a in argv if not a.isdigit()] or ['src', 'apps', 'python/src']
    rows = []
    for root in roots:
        for path in sorted(pathlib.Path(root).rglob('*.cpp')):
            rows += [(length, str(path), start, head) for length, start, head in functions(path)]
    over = sorted((r for r in rows if r[0] > limit), reverse=True)
    for length, path, start, head in over:
        print(f'{length:5d} {path}:{start}  {head}')
    print(f'functions over {limit} lines: {len(over)}')


if __name__ == '__main__':
    main(sys.argv[1:])
