// `virtauth admin VERB`: virt-admin's verbs over libvirt's ADMIN program, against virtauthd's
// admin socket (or libvirtd's), through the generated AdminClient. Output matches virt-admin's;
// --json prints one JSON object per result.

import net from 'node:net';
import type { Command } from 'commander';
import { ErrorCode, ErrorDomain, RpcConnection, VirError, admin, defaultVirtauthSocketDir, parseUri } from '@virtauth/core';

export interface AdminConnection {
  readonly uri: string;
  readonly client: admin.AdminClient;
  close(): Promise<void>;
}

/** The admin socket a URI names: `?socket=`, else the daemon's own (libvirt's naming for libvirt's daemons). */
export function adminSocketPath(uri: string): string {
  const parsed = parseUri(uri);
  const socket = parsed.params.find(([k]) => k === 'socket')?.[1];
  if (socket) return socket;
  const scheme = parsed.driver;
  if (parsed.path !== '/system' && parsed.path !== '/session') {
    throw new VirError({
      code: ErrorCode.INVALID_ARG,
      domain: ErrorDomain.ADMIN,
      detail: `admin URI '${uri}' must name /system or /session, or give ?socket=`,
    });
  }
  if (scheme === 'virtauthd') return `${defaultVirtauthSocketDir()}/virtauth-admin-sock`;
  const base = scheme === 'libvirtd' ? 'libvirt' : scheme;
  if (!/^virt[a-z]*$|^libvirt$/.test(base)) {
    throw new VirError({
      code: ErrorCode.INVALID_ARG,
      domain: ErrorDomain.ADMIN,
      detail: `unsupported admin URI scheme '${scheme}' (virtauthd, libvirtd or virt<daemon>)`,
    });
  }
  const dir =
    parsed.path === '/system' ? '/run/libvirt' : `${process.env.XDG_RUNTIME_DIR ?? `${process.env.HOME ?? '/tmp'}/.cache`}/libvirt`;
  return `${dir}/${base}-admin-sock`;
}

export function defaultAdminUri(): string {
  return process.env.VIRTAUTH_ADMIN_DEFAULT_URI || `virtauthd:///system?socket=${defaultVirtauthSocketDir()}/virtauth-admin-sock`;
}

export async function openAdmin(uri: string): Promise<AdminConnection> {
  const path = adminSocketPath(uri);
  const socket = net.connect(path);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', (e) =>
      reject(
        new VirError({
          code: ErrorCode.SYSTEM_ERROR,
          domain: ErrorDomain.RPC,
          detail: `Failed to connect socket to '${path}': ${e.message}`,
        }),
      ),
    );
  });
  const rpc = new RpcConnection(socket);
  const client = new admin.AdminClient({
    call: (proc, argsCodec, args, retCodec) => rpc.call(admin.ADMIN_PROGRAM, admin.ADMIN_PROTOCOL_VERSION, proc, argsCodec, args, retCodec),
  });
  try {
    await client.connectOpen({ flags: 0 });
  } catch (e) {
    rpc.close(null);
    throw e;
  }
  return {
    uri,
    client,
    close: async () => {
      await client.connectClose().catch(() => {});
      rpc.close(null);
    },
  };
}

type ParamValue = number | string | boolean | bigint;

/** Typed parameters as a plain object; booleans as booleans. */
export function paramsObject(params: readonly admin.AdminTypedParam[]): Record<string, ParamValue> {
  const out: Record<string, ParamValue> = {};
  for (const p of params) out[p.field] = p.value.tag === 6 ? p.value.value !== 0 : p.value.value;
  return out;
}

const TRANSPORTS = ['unix', 'tcp', 'tls'];
const transportName = (t: number) => TRANSPORTS[t] ?? String(t);

/** virt-admin's time format: 2026-12-03 08:20:14+0000 (UTC here). */
function connectionTime(seconds: bigint): string {
  return `${new Date(Number(seconds) * 1000).toISOString().slice(0, 19).replace('T', ' ')}+0000`;
}

/** `label: value` lines, labels padded to virt-admin's fixed width for that command. */
function aligned(width: number, rows: [string, string][]): string {
  return rows.map(([k, v]) => `${k.padEnd(width)}: ${v}`).join('\n') + '\n';
}

/** virt-admin's tables: columns as wide as their widest cell, a rule two longer than the widest line. */
function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => ` ${cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('   ')}`;
  const lines = [headers, ...rows].map(line);
  const rule = '-'.repeat(Math.max(...lines.map((l) => l.length)) + 2);
  return [lines[0]!.trimEnd(), rule, ...lines.slice(1).map((l) => l.trimEnd())].join('\n') + '\n';
}

const json = (v: unknown) =>
  `${JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? (x <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(x) : x.toString()) : x))}\n`;

const uint = (field: string, value: number): admin.AdminTypedParam => ({ field, value: { tag: 2, value } });

function parseCount(option: string, text: string): number {
  if (!/^\d+$/.test(text) || Number(text) > 0xffffffff)
    throw new VirError({
      code: ErrorCode.INVALID_ARG,
      domain: ErrorDomain.ADMIN,
      detail: `${option} must be a number from 0 to 4294967295, not '${text}'`,
    });
  return Number(text);
}

/** Typed parameters from the options given (`[option, value, parameter]`); at least one is needed. */
function uintParamsFromOptions(options: [string, string | undefined, string][]): admin.AdminTypedParam[] {
  const params = options
    .filter(([, value]) => value !== undefined)
    .map(([option, value, field]) => uint(field, parseCount(option, value!)));
  if (params.length === 0) {
    throw new VirError({
      code: ErrorCode.INVALID_ARG,
      domain: ErrorDomain.ADMIN,
      detail: `need at least one option of ${options.map(([option]) => option).join(', ')}`,
    });
  }
  return params;
}

export interface AdminCommandContext {
  json(): boolean;
  run(action: (conn: AdminConnection) => Promise<string>): Promise<void>;
}

/** Registers `virtauth admin VERB ...`; the global -c and --json apply. */
export function registerAdminCommands(program: Command, ctx: AdminCommandContext): void {
  const adm = program.command('admin').description("administer a daemon over libvirt's admin protocol (virt-admin's verbs)");
  /** Numeric typed parameters as virt-admin prints them (labels `width` wide), or as JSON. */
  const report = (width: number, params: admin.AdminTypedParam[]) =>
    ctx.json()
      ? json(paramsObject(params))
      : aligned(
          width,
          params.map((p) => [p.field, String(p.value.value)]),
        );
  const verb = (name: string, alias: string | null, description: string) => {
    const c = adm.command(name).description(description);
    if (alias) c.alias(alias);
    return c;
  };

  verb('uri', null, 'print the admin server URI').action(() => ctx.run(async (c) => (ctx.json() ? json({ uri: c.uri }) : `${c.uri}\n`)));
  verb('version', null, 'show version').action(() =>
    ctx.run(async (c) => {
      const v = (await c.client.connectGetLibVersion()).libVer;
      const text = `${v / 1000000n}.${(v / 1000n) % 1000n}.${v % 1000n}`;
      return ctx.json() ? json({ daemon: text }) : `Running against daemon: ${text}\n`;
    }),
  );
  verb('server-list', 'srv-list', 'list available servers on a daemon').action(() =>
    ctx.run(async (c) => {
      const { servers } = await c.client.connectListServers({ need_results: 1, flags: 0 });
      if (ctx.json()) return json(servers.map((s, i) => ({ id: i, name: s.name })));
      return table(
        ['Id', 'Name'],
        servers.map((s, i) => [String(i), s.name]),
      );
    }),
  );
  verb('server-threadpool-info', 'srv-threadpool-info', 'get server workerpool parameters')
    .argument('<server>')
    .action((server: string) =>
      ctx.run(async (c) => report(15, (await c.client.serverGetThreadpoolParameters({ srv: { name: server }, flags: 0 })).params)),
    );
  verb('server-threadpool-set', 'srv-threadpool-set', 'set server workerpool parameters')
    .argument('<server>')
    .option('--min-workers <n>')
    .option('--max-workers <n>')
    .option('--prio-workers <n>')
    .action((server: string, o: { minWorkers?: string; maxWorkers?: string; prioWorkers?: string }) =>
      ctx.run(async (c) => {
        const params = uintParamsFromOptions([
          ['--min-workers', o.minWorkers, 'minWorkers'],
          ['--max-workers', o.maxWorkers, 'maxWorkers'],
          ['--prio-workers', o.prioWorkers, 'prioWorkers'],
        ]);
        await c.client.serverSetThreadpoolParameters({ srv: { name: server }, params, flags: 0 });
        return ctx.json() ? json({ ok: true }) : '';
      }),
    );
  verb('client-list', 'srv-clients-list', 'list clients connected to <server>')
    .argument('<server>')
    .action((server: string) =>
      ctx.run(async (c) => {
        const { clients } = await c.client.serverListClients({ srv: { name: server }, need_results: 1, flags: 0 });
        if (ctx.json())
          return json(clients.map((x) => ({ id: x.id, transport: transportName(x.transport), connectedSince: Number(x.timestamp) })));
        return table(
          ['Id', 'Transport', 'Connected since'],
          clients.map((x) => [String(x.id), transportName(x.transport), connectionTime(x.timestamp)]),
        );
      }),
    );
  verb('client-info', null, "retrieve client's identity info from server")
    .argument('<server>')
    .argument('<client>')
    .action((server: string, id: string) =>
      ctx.run(async (c) => {
        const { clnt } = await c.client.serverLookupClient({ srv: { name: server }, id: BigInt(parseCount('client', id)), flags: 0 });
        const { params } = await c.client.clientGetInfo({ clnt, flags: 0 });
        if (ctx.json())
          return json({
            id: clnt.id,
            connectedSince: Number(clnt.timestamp),
            transport: transportName(clnt.transport),
            ...paramsObject(params),
          });
        const rows: [string, string][] = [
          ['id', String(clnt.id)],
          ['connection_time', connectionTime(clnt.timestamp)],
          ['transport', transportName(clnt.transport)],
          ...params.map((p): [string, string] => [p.field, p.value.tag === 6 ? (p.value.value ? 'yes' : 'no') : String(p.value.value)]),
        ];
        return aligned(15, rows);
      }),
    );
  verb('client-disconnect', null, 'force disconnect a client from the given server')
    .argument('<server>')
    .argument('<client>')
    .action((server: string, id: string) =>
      ctx.run(async (c) => {
        const { clnt } = await c.client.serverLookupClient({ srv: { name: server }, id: BigInt(parseCount('client', id)), flags: 0 });
        await c.client.clientClose({ clnt, flags: 0 });
        return ctx.json() ? json({ disconnected: clnt.id }) : `Client '${clnt.id}' disconnected\n`;
      }),
    );
  verb('server-clients-info', 'srv-clients-info', "get server's client-related configuration limits")
    .argument('<server>')
    .action((server: string) =>
      ctx.run(async (c) => report(20, (await c.client.serverGetClientLimits({ srv: { name: server }, flags: 0 })).params)),
    );
  verb('server-clients-set', 'srv-clients-set', "set server's client-related configuration limits")
    .argument('<server>')
    .option('--max-clients <n>')
    .option('--max-unauth-clients <n>')
    .action((server: string, o: { maxClients?: string; maxUnauthClients?: string }) =>
      ctx.run(async (c) => {
        const params = uintParamsFromOptions([
          ['--max-clients', o.maxClients, 'nclients_max'],
          ['--max-unauth-clients', o.maxUnauthClients, 'nclients_unauth_max'],
        ]);
        const [max, unauth] = ['nclients_max', 'nclients_unauth_max'].map(
          (f) => params.find((p) => p.field === f)?.value.value as number | undefined,
        );
        // virt-admin checks this before asking the daemon.
        if (max !== undefined && unauth !== undefined && unauth > max) {
          throw new VirError({
            code: ErrorCode.INVALID_ARG,
            domain: ErrorDomain.ADMIN,
            detail: '--max-unauth-clients must be less than or equal to --max-clients',
          });
        }
        await c.client.serverSetClientLimits({ srv: { name: server }, params, flags: 0 });
        return ctx.json() ? json({ ok: true }) : '';
      }),
    );
  verb('server-update-tls', 'srv-update-tls', 'notify server to update TLS related files online')
    .argument('<server>')
    .action((server: string) =>
      ctx.run(async (c) => {
        await c.client.serverUpdateTlsFiles({ srv: { name: server }, flags: 0 });
        return ctx.json() ? json({ ok: true }) : 'update tls related files succeed\n';
      }),
    );
  verb('daemon-log-filters', 'dmn-log-filters', 'fetch or set the currently defined set of logging filters on daemon')
    .option('--filters <filters>', "filters in libvirt's syntax, e.g. '1:client 3:relay'; '' removes them")
    .action((o: { filters?: string }) =>
      ctx.run(async (c) => {
        if (o.filters !== undefined) {
          await c.client.connectSetLoggingFilters({ filters: o.filters === '' ? null : o.filters, flags: 0 });
          return ctx.json() ? json({ ok: true }) : '';
        }
        const { filters } = await c.client.connectGetLoggingFilters({ flags: 0 });
        return ctx.json() ? json({ filters: filters ?? '' }) : ` Logging filters: ${filters ?? ''}\n`;
      }),
    );
  verb('daemon-log-outputs', 'dmn-log-outputs', 'fetch or set the currently defined set of logging outputs on daemon')
    .option('--outputs <outputs>', "outputs in libvirt's syntax, e.g. '2:file:/var/log/virtauthd.log'")
    .action((o: { outputs?: string }) =>
      ctx.run(async (c) => {
        if (o.outputs !== undefined) {
          await c.client.connectSetLoggingOutputs({ outputs: o.outputs === '' ? null : o.outputs, flags: 0 });
          return ctx.json() ? json({ ok: true }) : '';
        }
        const { outputs } = await c.client.connectGetLoggingOutputs({ flags: 0 });
        return ctx.json() ? json({ outputs }) : ` Logging outputs: ${outputs}\n`;
      }),
    );
  verb('daemon-timeout', 'dmn-timeout', 'set the auto shutdown timeout of the daemon')
    .requiredOption('--timeout <seconds>')
    .action((o: { timeout: string }) =>
      ctx.run(async (c) => {
        await c.client.connectSetDaemonTimeout({ timeout: parseCount('--timeout', o.timeout), flags: 0 });
        return ctx.json() ? json({ ok: true }) : '';
      }),
    );
}
