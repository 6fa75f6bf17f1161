// Typed per-connection state for server-side providers: each provider creates its own slots
// (object keys, so two providers never share one by accident) and reads back the type it stored.

/** A key for one value of one connection's state; `name` only serves messages and debugging. */
export class SessionSlot<T> {
  // Carries T so a slot for one type cannot be read as another; never set at run time.
  declare private readonly valueType?: T;
  constructor(readonly name: string) {}
}

/** Creates a slot; keep it in a module-level constant and use it for every connection. */
export function createSessionSlot<T>(name: string): SessionSlot<T> {
  return new SessionSlot<T>(name);
}

/** The values providers keep for one connection, each under its own slot. */
export class SessionState {
  private readonly values = new Map<SessionSlot<unknown>, unknown>();

  get<T>(slot: SessionSlot<T>): T | undefined {
    return this.values.get(slot) as T | undefined;
  }

  set<T>(slot: SessionSlot<T>, value: T): void {
    this.values.set(slot, value);
  }

  has(slot: SessionSlot<unknown>): boolean {
    return this.values.has(slot);
  }

  delete(slot: SessionSlot<unknown>): boolean {
    return this.values.delete(slot);
  }
}
