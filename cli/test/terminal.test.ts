// How the CLI shows a sign-in: the device code (and a QR code only where it can be drawn), and
// the browser address, with the IdP's text made printable.

import test from 'ava';
import { encode } from 'uqr';
import { canOpenBrowser, terminalInteraction } from '../src/login/terminal.js';

function screen(isTTY: boolean, columns: number) {
  const out = { isTTY, columns, text: '', write: (s: string) => ((out.text += s), true) };
  return out;
}

const DEVICE = {
  verificationUri: 'https://id.example/device',
  userCode: 'ABCD-EFGH',
  verificationUriComplete: 'https://id.example/device?user_code=ABCD-EFGH',
  issuer: 'https://id.example',
};

test('the device code is printed; the QR code of the complete URL only on a terminal wide enough', async (t) => {
  const wide = screen(true, 120);
  await terminalInteraction({ out: wide as unknown as NodeJS.WriteStream }).showDeviceCode(DEVICE);
  t.regex(
    wide.text,
    /^To sign in to https:\/\/id\.example, open https:\/\/id\.example\/device and enter the code ABCD-EFGH\nor scan this code with a phone:\n/,
  );
  // One text row per two modules, plus the 2-module border on each side.
  const size = encode(DEVICE.verificationUriComplete, { ecc: 'L', border: 2 }).size;
  const rows = wide.text.split('\n').filter((line) => /[█▀▄]/.test(line));
  t.is(rows.length, Math.ceil(size / 2));
  t.true(rows.every((row) => row.length === size));

  const narrow = screen(true, 20);
  await terminalInteraction({ out: narrow as unknown as NodeJS.WriteStream }).showDeviceCode(DEVICE);
  t.false(narrow.text.includes('scan'), 'no QR code wider than the terminal');
  const piped = screen(false, 200);
  await terminalInteraction({ out: piped as unknown as NodeJS.WriteStream }).showDeviceCode(DEVICE);
  t.false(piped.text.includes('scan'), 'no QR code into a pipe or a log');
});

test("the IdP's text cannot drive the terminal, and without a display the address is printed", async (t) => {
  const out = screen(false, 80);
  const interaction = terminalInteraction({ out: out as unknown as NodeJS.WriteStream, env: {} });
  await interaction.showDeviceCode({ ...DEVICE, userCode: 'AB\u001b[2JCD' });
  t.true(out.text.includes('the code AB?[2JCD'));
  await interaction.openAuthorizationUrl('https://id.example/auth?x=1', 'https://id.example');
  t.regex(out.text, /open this address in a browser on this machine:\nhttps:\/\/id\.example\/auth\?x=1\n/);
  t.false(canOpenBrowser({}));
  t.true(canOpenBrowser({ DISPLAY: ':0' }) || process.platform !== 'linux');
});
