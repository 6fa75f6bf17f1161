// polkit's Authority over D-Bus (dbus-next): one lazily opened connection to the system bus,
// reopened after a failure, and CheckAuthorization for a unix-process subject.

import dbus from 'dbus-next';
import { ErrorCode, ErrorDomain, VirError } from '@virtauth/core';

const POLKIT_BUS_NAME = 'org.freedesktop.PolicyKit1';
const AUTHORITY_PATH = '/org/freedesktop/PolicyKit1/Authority';
const AUTHORITY_INTERFACE = 'org.freedesktop.PolicyKit1.Authority';
const DEFAULT_SYSTEM_BUS_ADDRESS = 'unix:path=/var/run/dbus/system_bus_socket';
/** CheckAuthorization flag: polkit may ask an authentication agent. */
const ALLOW_USER_INTERACTION = 1;

/** libvirt's VIR_ERR_DBUS_SERVICE: a D-Bus call answered with an error. */
export const DBUS_SERVICE_ERROR_CODE = ErrorCode.DBUS_SERVICE;

/** The process being authorized: polkit identifies it by pid and start time (against pid reuse). */
export interface UnixProcessSubject {
  pid: number;
  /** Field 22 of /proc/PID/stat, in clock ticks since boot. */
  startTime: bigint;
  uid: number;
}

export interface AuthorizationResult {
  isAuthorized: boolean;
  /** Not authorized yet, but an authentication agent could obtain the authorization. */
  isChallenge: boolean;
  details: Record<string, string>;
}

/** What the polkit provider needs from polkit (a fake stands in for it in unit tests). */
export interface PolkitAuthorityClient {
  /** `details` are the attributes polkit rules read with `action.lookup(name)`. */
  checkAuthorization(
    subject: UnixProcessSubject,
    actionId: string,
    allowUserInteraction: boolean,
    details?: Readonly<Record<string, string>>,
  ): Promise<AuthorizationResult>;
  close(): void;
}

export interface PolkitAuthorityOptions {
  /** D-Bus address of the system bus; default DBUS_SYSTEM_BUS_ADDRESS, then the standard socket. */
  busAddress?: string;
  /** Bound on connecting and on each check (an agent prompt counts), default 60 s. */
  timeoutMs?: number;
}

type MessageBus = dbus.MessageBus;

export class DbusPolkitAuthority implements PolkitAuthorityClient {
  private bus: Promise<MessageBus> | null = null;
  private readonly pending = new Set<(error: Error) => void>();

  constructor(private readonly opts: PolkitAuthorityOptions = {}) {}

  private get timeoutMs(): number {
    return this.opts.timeoutMs ?? 60_000;
  }

  /** Read on every (re)connect, so the environment in force when a check runs is honoured. */
  busAddress(): string {
    return this.opts.busAddress ?? (process.env.DBUS_SYSTEM_BUS_ADDRESS || DEFAULT_SYSTEM_BUS_ADDRESS);
  }

  private connect(): Promise<MessageBus> {
    if (this.bus) return this.bus;
    const address = this.busAddress();
    const opening = new Promise<MessageBus>((resolve, reject) => {
      let bus: MessageBus;
      try {
        bus = dbus.sessionBus({ busAddress: address, authMethods: ['EXTERNAL'] });
      } catch (e) {
        reject(noSystemBus(address, (e as Error).message));
        return;
      }
      let connected = false;
      const timer = setTimeout(() => {
        if (connected) return;
        bus.disconnect();
        reject(noSystemBus(address, `no answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      timer.unref();
      bus.on('connect', () => {
        connected = true;
        clearTimeout(timer);
        // An idle bus connection must not keep the daemon's process alive; calls hold their own timers.
        (bus as unknown as { _connection?: { stream?: { unref?(): void } } })._connection?.stream?.unref?.();
        resolve(bus);
      });
      // dbus-next reports a failed connect, a lost connection and a write to a closed stream
      // only as 'error' events; pending calls would otherwise wait forever.
      bus.on('error', (error: Error) => {
        if (this.bus === opening) this.bus = null;
        try {
          bus.disconnect();
        } catch {
          // Already torn down.
        }
        if (!connected) {
          clearTimeout(timer);
          reject(noSystemBus(address, error.message));
          return;
        }
        const lost = noSystemBus(address, `connection lost: ${error.message}`);
        for (const fail of [...this.pending]) fail(lost);
      });
    });
    this.bus = opening;
    opening.catch(() => {
      if (this.bus === opening) this.bus = null;
    });
    return opening;
  }

  async checkAuthorization(
    subject: UnixProcessSubject,
    actionId: string,
    allowUserInteraction: boolean,
    details: Readonly<Record<string, string>> = {},
  ): Promise<AuthorizationResult> {
    const bus = await this.connect();
    const message = new dbus.Message({
      destination: POLKIT_BUS_NAME,
      path: AUTHORITY_PATH,
      interface: AUTHORITY_INTERFACE,
      member: 'CheckAuthorization',
      signature: '(sa{sv})sa{ss}us',
      body: [
        [
          'unix-process',
          {
            pid: new dbus.Variant('u', subject.pid),
            'start-time': new dbus.Variant('t', subject.startTime),
            uid: new dbus.Variant('i', subject.uid),
          },
        ],
        actionId,
        { ...details },
        allowUserInteraction ? ALLOW_USER_INTERACTION : 0,
        '',
      ],
    });
    const reply = await new Promise<dbus.Message | null>((resolve, reject) => {
      const fail = (error: Error) => {
        this.pending.delete(fail);
        clearTimeout(timer);
        reject(error);
      };
      const timer = setTimeout(
        () =>
          fail(
            new VirError({
              code: DBUS_SERVICE_ERROR_CODE,
              domain: ErrorDomain.DBUS,
              detail: `polkit did not answer CheckAuthorization within ${this.timeoutMs} ms`,
            }),
          ),
        this.timeoutMs,
      );
      this.pending.add(fail);
      bus.call(message).then(
        (answer) => {
          this.pending.delete(fail);
          clearTimeout(timer);
          resolve(answer);
        },
        (error: unknown) => fail(serviceError(error)),
      );
    });
    const result = reply?.body?.[0] as [boolean, boolean, Record<string, string>] | undefined;
    if (!Array.isArray(result) || typeof result[0] !== 'boolean' || typeof result[1] !== 'boolean') {
      throw new VirError({
        code: DBUS_SERVICE_ERROR_CODE,
        domain: ErrorDomain.DBUS,
        detail: 'malformed CheckAuthorization reply from polkit',
      });
    }
    return { isAuthorized: result[0], isChallenge: result[1], details: result[2] ?? {} };
  }

  close(): void {
    const bus = this.bus;
    this.bus = null;
    bus?.then(
      (b) => b.disconnect(),
      () => {},
    );
  }
}

/** libvirt's wording when the system bus cannot be reached (code 1, domain DBUS). */
function noSystemBus(address: string, reason: string): VirError {
  return new VirError({
    code: ErrorCode.INTERNAL_ERROR,
    domain: ErrorDomain.DBUS,
    detail: `Unable to get system bus connection: ${reason} (bus address ${address})`,
  });
}

function serviceError(error: unknown): VirError {
  if (error instanceof VirError) return error;
  const e = error as { type?: string; text?: string; message?: string };
  const text = e.type ? `${e.type}: ${e.text ?? e.message ?? ''}` : (e.message ?? String(error));
  return new VirError({ code: DBUS_SERVICE_ERROR_CODE, domain: ErrorDomain.DBUS, detail: text });
}
