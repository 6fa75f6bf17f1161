// How the CLI shows a sign-in: on stderr (stdout stays the command's output), with a QR code of
// the device flow's URL when stderr is a terminal wide enough to draw one, and the system browser
// opened for the authorization code flow unless --no-browser (or there is no display to open it on).

// `open` and `uqr` are loaded when a sign-in is shown: every other command starts without them.
import { terminalSafeLine } from '@virtauth/core';
import type { SignInInteraction } from '@virtauth/providers';

export interface TerminalInteractionOptions {
  /** Open the system browser for the authorization code flow (default true). */
  openBrowser?: boolean;
  out?: NodeJS.WriteStream;
  env?: NodeJS.ProcessEnv;
}

/** Whether a graphical browser can be opened here (Linux needs a display; a terminal over SSH has none). */
export function canOpenBrowser(env: NodeJS.ProcessEnv = process.env): boolean {
  if (process.platform === 'darwin' || process.platform === 'win32') return true;
  return Boolean(env.DISPLAY || env.WAYLAND_DISPLAY);
}

/** A QR code fits when the terminal is a TTY at least as wide as the code (with its quiet zone). */
async function qrCode(text: string, out: NodeJS.WriteStream): Promise<string | null> {
  if (!out.isTTY) return null;
  const { renderUnicodeCompact } = await import('uqr');
  const code = renderUnicodeCompact(text, { ecc: 'L', border: 2 });
  const width = code.split('\n')[0]?.length ?? Infinity;
  return width <= (out.columns ?? 0) ? code : null;
}

export function terminalInteraction(options: TerminalInteractionOptions = {}): SignInInteraction {
  const out = options.out ?? process.stderr;
  const env = options.env ?? process.env;
  return {
    async showDeviceCode({ verificationUri, userCode, verificationUriComplete, issuer }) {
      // The address and code come from the IdP: shown without terminal controls.
      out.write(`To sign in to ${issuer}, open ${terminalSafeLine(verificationUri)} and enter the code ${terminalSafeLine(userCode)}\n`);
      const qr = await qrCode(verificationUriComplete ?? verificationUri, out);
      if (qr) out.write(`or scan this code with a phone:\n${qr}\n`);
      out.write('Waiting for the sign-in to finish...\n');
    },
    async openAuthorizationUrl(url, issuer) {
      // Only a web address goes to the system opener (a hostile discovery document could name a file or a program).
      const web = /^https?:$/.test(new URL(url).protocol);
      if (options.openBrowser !== false && web && canOpenBrowser(env)) {
        try {
          const { default: open } = await import('open');
          const child = await open(url);
          child.once('error', () => {});
          out.write(`Opened the browser to sign in to ${issuer}. If it did not open, visit:\n${terminalSafeLine(url)}\n`);
          return;
        } catch {
          // No opener installed (xdg-open): fall back to printing the address.
        }
      }
      out.write(`To sign in to ${issuer}, open this address in a browser on this machine:\n${terminalSafeLine(url)}\n`);
      out.write('Waiting for the sign-in to finish...\n');
    },
  };
}
