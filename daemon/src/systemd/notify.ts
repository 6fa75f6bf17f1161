// sd_notify: readiness, reload and shutdown reported to systemd as datagrams on NOTIFY_SOCKET.
// Node has no unix datagram sockets; the peercred addon sends them (docs/service.md says why
// that beats spawning systemd-notify).

import { sendUnixDatagram } from '@virtauth/peercred';

export interface ServiceNotifier {
  /** Whether systemd (or a test) asked for notifications. */
  readonly enabled: boolean;
  ready(status?: string): void;
  reloading(): void;
  stopping(): void;
  status(text: string): void;
}

type Send = (path: string, data: Buffer) => void;

/**
 * A notifier for NOTIFY_SOCKET, or one that does nothing when it is unset. A failed send is
 * reported through `onError` and never stops the daemon: readiness is advisory to systemd.
 */
export function createServiceNotifier(
  options: { env?: NodeJS.ProcessEnv; onError?: (message: string, error: Error) => void; send?: Send } = {},
): ServiceNotifier {
  const env = options.env ?? process.env;
  const socketPath = env.NOTIFY_SOCKET;
  const send = options.send ?? ((path, data) => sendUnixDatagram(path, data));
  const notify = (message: string) => {
    if (!socketPath) return;
    try {
      send(socketPath, Buffer.from(message, 'utf8'));
    } catch (e) {
      options.onError?.(message.split('\n')[0]!, e as Error);
    }
  };
  // Newlines separate assignments; a status text cannot be allowed to add one of its own.
  const oneLine = (text: string) => text.replace(/[\r\n]+/g, ' ');
  return {
    enabled: Boolean(socketPath),
    ready: (status) => notify(`READY=1\nMAINPID=${process.pid}${status ? `\nSTATUS=${oneLine(status)}` : ''}`),
    // MONOTONIC_USEC lets systemd tell this reload from an earlier one (systemd >= 253 uses it).
    reloading: () => notify(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`),
    stopping: () => notify('STOPPING=1'),
    status: (text) => notify(`STATUS=${oneLine(text)}`),
  };
}
