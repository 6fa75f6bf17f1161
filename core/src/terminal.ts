// Text from a peer (error messages, host and domain names, XML, relayed prompts and origins) is
// printed only after this pass: a control sequence in it would otherwise reach the user's
// terminal, where it can retitle the window, clear the screen or forge lines of output.

/**
 * C0 controls except tab and newline, DEL, C1 controls (U+0080-U+009F, where U+009B is a
 * one-character CSI), the line and paragraph separators, and the invisible marks and overrides
 * that reorder text (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069).
 */
// eslint-disable-next-line no-control-regex -- control characters are exactly what this matches
const UNSAFE_IN_TEXT = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
/** The same, plus tab and newline: for a value printed inside one line (a name, a prompt). */
// eslint-disable-next-line no-control-regex -- control characters are exactly what this matches
const UNSAFE_IN_LINE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** `text` with every control character (newline and tab kept) replaced by `?`. */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE_IN_TEXT, '?');
}

/** `text` as one line: every control character, newline and tab included, replaced by `?`. */
export function terminalSafeLine(text: string): string {
  return text.replace(UNSAFE_IN_LINE, '?');
}
