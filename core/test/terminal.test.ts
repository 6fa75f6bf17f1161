// The one pass every remote-sourced string goes through before the CLI or the prompter prints it.

import test from 'ava';
import { terminalSafe, terminalSafeLine } from '../src/terminal.js';

test('terminalSafe keeps newline and tab, and replaces C0, DEL, C1, separators and bidi controls', (t) => {
  t.is(terminalSafe('a\tb\nc'), 'a\tb\nc');
  t.is(terminalSafe('\u001b]0;title\u0007\u001b[2J'), '?]0;title??[2J');
  t.is(terminalSafe('\r\u0000\u007f\u0085\u009b31m'), '?????31m');
  t.is(terminalSafe('\u202eevil\u202c \u2066x\u2069 \u200f\u061c \u2028\u2029'), '?evil? ?x? ?? ??');
  t.is(terminalSafe('héllo — ✓ 日本'), 'héllo — ✓ 日本', 'printable text outside ASCII is untouched');
});

test('terminalSafeLine also replaces newline and tab, so a value cannot forge a line of its own', (t) => {
  t.is(terminalSafeLine('host\n*** fake header ***\tx'), 'host?*** fake header ***?x');
});
