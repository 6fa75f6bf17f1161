// The default console credential callback, as virConnectAuthPtrDefault behaves: for each
// credential print "<prompt>: " and read one line; secrets are read without echo on a terminal.
//
// Input handling:
//  - Terminal input: each answer is read with the `read` package (secrets with `silent`), in raw
//    mode so the terminal itself does not echo.
//  - Anything else (a pipe, a file): one line stream per input is shared by every prompt and
//    every callback, so `printf 'alice\nsecret\n' | cmd` answers two prompts in sequence. The
//    stream is paused between prompts, so a waiting process can still exit.
//  - End of input before an answer: that credential stays unfilled and the callback reports
//    failure at once, rather than waiting for input that will never come.
//
// Text that comes from elsewhere (prompts and origins relayed from other daemons) is printed with
// control characters replaced, so a remote peer cannot drive the local terminal. A relayed request
// always gets a header naming the daemon this client verified, the driver, the host and the chain,
// and its prompts a "[relayed]" mark: a daemon's prompt must never pass for a local SASL prompt.

import { StringDecoder } from 'node:string_decoder';
import { read } from 'read';
import {
  CredentialType,
  ErrorCode,
  ErrorDomain,
  VirError,
  describeVia,
  type ConnectAuth,
  type Credential,
  type CredentialRequestInfo,
  type OriginHop,
  terminalSafeLine,
} from '@virtauth/core';

/** The types the console can answer: virConnectAuthPtrDefault's list. */
export const CONSOLE_CREDENTIAL_TYPES: readonly CredentialType[] = [
  CredentialType.AUTHNAME,
  CredentialType.ECHOPROMPT,
  CredentialType.REALM,
  CredentialType.PASSPHRASE,
  CredentialType.NOECHOPROMPT,
  CredentialType.EXTERNAL,
];

/** Answers read with echo. USERNAME is not advertised (as in libvirt) but is answered if asked. */
const ECHOED: ReadonlySet<number> = new Set([
  CredentialType.USERNAME,
  CredentialType.AUTHNAME,
  CredentialType.ECHOPROMPT,
  CredentialType.REALM,
]);
const HIDDEN: ReadonlySet<number> = new Set([CredentialType.PASSPHRASE, CredentialType.NOECHOPROMPT]);

/** The only EXTERNAL challenge the console accepts (nothing to type: an agent handles it). */
export const EXTERNAL_POLKIT_CHALLENGE = 'PolicyKit';

export type PromptInput = NodeJS.ReadableStream & { isTTY?: boolean };
export type PromptOutput = NodeJS.WritableStream & { isTTY?: boolean };

export interface ConsoleAuthOptions {
  /** Where answers come from; default process.stdin. */
  input?: PromptInput;
  /** Where prompts go; default process.stdout (as libvirt). */
  output?: PromptOutput;
  /** No one is there to answer (e.g. `--no-prompt`, a daemon): fail at once with AUTH_UNAVAILABLE. */
  noPrompt?: boolean;
}

/**
 * "xenapi on xen1.example via virtauthd@hostB via virtauthd@hostA asks for credentials":
 * origin[0] is the daemon running the driver that needs the credentials, later hops are the
 * daemons the request travelled through towards this console.
 */
export function describeOrigin(info: Pick<CredentialRequestInfo, 'host' | 'origin'>): string | null {
  const [first, ...rest] = info.origin as readonly OriginHop[];
  if (!first) return null;
  const via = [first, ...rest].map((hop) => ` via ${terminalSafeLine(hop.daemon)}`).join('');
  return `${terminalSafeLine(first.driver)} on ${terminalSafeLine(info.host)}${via} asks for credentials`;
}

/** Marks every prompt of a relayed request. */
export const RELAYED_PROMPT_MARK = '[relayed] ';

/** The header printed before every relayed request's prompts; null for a local request. */
export function describeRelayedRequest(info: Pick<CredentialRequestInfo, 'host' | 'origin' | 'via'>): string | null {
  if (!info.via && info.origin.length === 0) return null;
  return [
    '*** Credential request relayed by a daemon: it does not come from this computer ***',
    `Connected daemon: ${terminalSafeLine(describeVia(info.via))}`,
    describeOrigin(info) ?? `A driver for ${terminalSafeLine(info.host)} asks for credentials (no origin chain given)`,
  ].join('\n');
}

/** Lines of one non-terminal input, shared by every prompt that reads it. */
class LineReader {
  private buffered = '';
  private ended = false;
  private listening = false;
  private readonly decoder = new StringDecoder('utf8');
  private readonly waiters: { resolve(line: string | null): void }[] = [];

  constructor(private readonly input: PromptInput) {}

  /** The next line without its line ending, or null at end of input. */
  next(signal?: AbortSignal): Promise<string | null> {
    const ready = this.take();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (line: string | null) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(line);
        },
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        this.pauseIfIdle();
        reject(signal!.reason);
      };
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.listen();
    });
  }

  private listen(): void {
    if (!this.listening) {
      this.listening = true;
      this.input.on('data', (chunk: Buffer | string) => {
        this.buffered += typeof chunk === 'string' ? chunk : this.decoder.write(chunk);
        this.deliver();
      });
      const finish = () => {
        if (this.ended) return;
        this.buffered += this.decoder.end();
        this.ended = true;
        this.deliver();
      };
      this.input.on('end', finish);
      this.input.on('close', finish);
      this.input.on('error', finish);
    }
    this.input.resume();
  }

  private deliver(): void {
    while (this.waiters.length > 0) {
      const line = this.take();
      if (line === undefined) break;
      this.waiters.shift()!.resolve(line);
    }
    this.pauseIfIdle();
  }

  private pauseIfIdle(): void {
    if (this.waiters.length === 0 && !this.ended) this.input.pause();
  }

  /** A complete line; at end of input the unterminated remainder, then null; undefined = wait. */
  private take(): string | null | undefined {
    const nl = this.buffered.indexOf('\n');
    if (nl >= 0) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      return line.replace(/\r$/, '');
    }
    if (!this.ended) return undefined;
    if (this.buffered === '') return null;
    const rest = this.buffered.replace(/\r$/, '');
    this.buffered = '';
    return rest;
  }
}

const lineReaders = new WeakMap<PromptInput, LineReader>();

function lineReaderFor(input: PromptInput): LineReader {
  let reader = lineReaders.get(input);
  if (!reader) {
    reader = new LineReader(input);
    lineReaders.set(input, reader);
  }
  return reader;
}

/**
 * One answer from a terminal through `read`. Returns null when the user ends input (Ctrl-D): read
 * itself never settles then, so the readline close (which pauses the input) is watched for.
 */
async function readFromTerminal(
  input: PromptInput,
  output: PromptOutput,
  prompt: string,
  silent: boolean,
  signal: AbortSignal | undefined,
): Promise<string | null> {
  let settled = false;
  let onPause: () => void = () => {};
  let onAbort: () => void = () => {};
  const endOfInput = new Promise<null>((resolve) => {
    onPause = () => setImmediate(() => !settled && resolve(null));
    input.on('pause', onPause);
  });
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => {
      // read offers no way to stop; a Ctrl-C keypress makes its readline close and restore the tty.
      input.emit('keypress', '\u0003', { sequence: '\u0003', name: 'c', ctrl: true, meta: false, shift: false });
      reject(signal!.reason);
    };
    if (signal?.aborted) onAbort();
    else signal?.addEventListener('abort', onAbort, { once: true });
  });
  aborted.catch(() => {});
  try {
    const answer = read({ input, output, prompt, silent, terminal: true }).then((line) => {
      settled = true;
      return String(line);
    });
    answer.catch(() => {});
    return await Promise.race([answer, endOfInput, aborted]);
  } catch (e) {
    if (signal?.aborted) throw signal.reason;
    if (e instanceof Error && e.message === 'canceled') {
      throw new VirError({ code: ErrorCode.AUTH_CANCELLED, domain: ErrorDomain.AUTH, detail: 'credential prompt interrupted' });
    }
    throw e;
  } finally {
    settled = true;
    input.removeListener('pause', onPause);
    signal?.removeEventListener('abort', onAbort);
    // The Enter that ended a hidden answer was not echoed.
    if (silent) output.write('\n');
  }
}

/** The signal that ends waiting: the request's own, and its deadline. */
function waitSignal(info: CredentialRequestInfo): AbortSignal | undefined {
  const signals: AbortSignal[] = [];
  if (info.signal) signals.push(info.signal);
  if (info.deadline !== undefined) {
    const left = Math.max(0, info.deadline - Date.now());
    const controller = new AbortController();
    const timer = setTimeout(
      () =>
        controller.abort(
          new VirError({
            code: ErrorCode.OPERATION_TIMEOUT,
            domain: ErrorDomain.AUTH,
            detail: 'no answer at the console before the credential request expired',
          }),
        ),
      left,
    );
    timer.unref();
    signals.push(controller.signal);
  }
  if (signals.length === 0) return undefined;
  return signals.length === 1 ? signals[0] : AbortSignal.any(signals);
}

function cancelled(reason: unknown): VirError {
  if (reason instanceof VirError) return reason;
  return new VirError({
    code: ErrorCode.AUTH_CANCELLED,
    domain: ErrorDomain.AUTH,
    detail: 'the credential request was withdrawn',
    cause: reason,
  });
}

/** The console callback as core's ConnectAuth (virConnectAuthPtrDefault's equivalent). */
export function createConsoleAuth(opts: ConsoleAuthOptions = {}): ConnectAuth {
  const input = opts.input ?? process.stdin;
  const output = opts.output ?? process.stdout;

  const callback = async (creds: Credential[], info: CredentialRequestInfo): Promise<boolean> => {
    if (opts.noPrompt) {
      throw new VirError({ code: ErrorCode.AUTH_UNAVAILABLE, domain: ErrorDomain.AUTH, detail: 'no interactive prompt available' });
    }
    // Refuse what cannot be answered before asking anything, so no one types a password in vain.
    for (const c of creds) {
      if (c.type === CredentialType.EXTERNAL) {
        if (c.challenge !== EXTERNAL_POLKIT_CHALLENGE) return false;
      } else if (!ECHOED.has(c.type) && !HIDDEN.has(c.type)) {
        return false;
      }
    }
    const signal = waitSignal(info);
    const header = describeRelayedRequest(info);
    if (header) output.write(`${header}\n`);
    for (const c of creds) {
      if (c.type === CredentialType.EXTERNAL) {
        // Nothing to type: the PolicyKit agent does the asking. Filled with '' so the request
        // pipeline sees it as answered (libvirt leaves it NULL and reports success).
        c.result = '';
        continue;
      }
      const prompt = `${header ? RELAYED_PROMPT_MARK : ''}${terminalSafeLine(c.prompt)}: `;
      let answer: string | null;
      try {
        if (input.isTTY) {
          answer = await readFromTerminal(input, output, prompt, HIDDEN.has(c.type), signal);
        } else {
          output.write(prompt);
          answer = await lineReaderFor(input).next(signal);
        }
      } catch (e) {
        if (signal?.aborted) throw cancelled(signal.reason);
        throw e;
      }
      if (answer === null) return false;
      c.result = answer !== '' ? answer : (c.defresult ?? '');
    }
    return true;
  };

  return { credTypes: CONSOLE_CREDENTIAL_TYPES, callback };
}
