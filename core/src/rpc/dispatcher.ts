// Server-side dispatch of incoming calls to the procedures of registered programs, in libvirt's
// order: program lookup, message type and status, procedure lookup, the auth gate, then decode.

import type { XdrReader, Codec } from '../xdr/codec.js';
import { rpcError } from '../errors.js';
import type { CallHandler, Reply } from './connection.js';
import { MessageStatus, MessageType, type Header } from './packet.js';

export interface Procedure<A = any, R = any, C = unknown> {
  args: Codec<A>;
  ret: Codec<R>;
  /** Whether the call is refused until the connection has authenticated (default true). */
  needsAuth?: boolean;
  handle(ctx: C, args: A): Promise<R> | R;
}

export interface ProgramDefinition<C> {
  prog: number;
  vers: number;
  procedures: ReadonlyMap<number, Procedure<any, any, C>>;
}

export interface DispatchGate<C> {
  /** The per-connection context handed to handlers. */
  context: C;
  isAuthenticated(): boolean;
}

/** Programs by number, then version: built once per list of programs, shared by every connection. */
type ProgramTable<C> = Map<number, Map<number, ProgramDefinition<C>>>;
const programTables = new WeakMap<readonly ProgramDefinition<unknown>[], ProgramTable<unknown>>();

function programTable<C>(programs: readonly ProgramDefinition<C>[]): ProgramTable<C> {
  let table = programTables.get(programs) as ProgramTable<C> | undefined;
  if (!table) {
    table = new Map();
    for (const p of programs) {
      let versions = table.get(p.prog);
      if (!versions) table.set(p.prog, (versions = new Map()));
      versions.set(p.vers, p);
    }
    programTables.set(programs, table as ProgramTable<unknown>);
  }
  return table;
}

/** Builds a CallHandler for one connection from program definitions. */
export function createDispatcher<C>(programs: readonly ProgramDefinition<C>[], gate: DispatchGate<C>): CallHandler {
  const table = programTable(programs);
  return (h: Header, body: XdrReader): Promise<Reply> | Reply => {
    const program = table.get(h.prog)?.get(h.vers);
    // libvirtd prints the numbers as signed ints; clients may match the text.
    if (!program) throw rpcError(`Cannot find program ${h.prog | 0} version ${h.vers | 0}`);
    if (h.type !== MessageType.CALL) throw rpcError(`Unexpected message type ${h.type}`);
    if (h.status !== MessageStatus.OK) throw rpcError(`Unexpected message status ${h.status}`);
    const proc = program.procedures.get(h.proc);
    if (!proc) throw rpcError(`unknown procedure: ${h.proc}`);
    if (proc.needsAuth !== false && !gate.isAuthenticated()) throw rpcError('authentication required');
    let args: unknown;
    try {
      args = proc.args.decode(body);
    } catch {
      throw rpcError('Unable to decode message payload');
    }
    const out = proc.handle(gate.context, args);
    if (out instanceof Promise) return out.then((value) => ({ codec: proc.ret, value }));
    return { codec: proc.ret, value: out };
  };
}
