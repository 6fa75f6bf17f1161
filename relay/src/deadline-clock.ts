// Deadlines of many waiting requests on one timer. A timer per request costs more than the rest
// of a relayed request together; requests mostly arrive with ever later deadlines, so one timer
// armed for the earliest of them is re-armed only when an earlier deadline comes along.

import { performance } from 'node:perf_hooks';
import { Observable, Subject, switchMap, tap } from 'rxjs';

/** Emits performance.now() once after `delayMs`; does not hold the process open (a socket does). */
export function unrefTimer(delayMs: number): Observable<number> {
  return new Observable<number>((subscriber) => {
    // setTimeout fires at once above 2^31-1 ms; firing early only means re-arming.
    const handle = setTimeout(
      () => {
        subscriber.next(performance.now());
        subscriber.complete();
      },
      Math.min(Math.max(0, delayMs), 0x7fffffff),
    );
    handle.unref();
    return () => clearTimeout(handle);
  });
}

/**
 * One timer for the deadlines of many requests. `expired$` emits the current time when the
 * earliest watched deadline has passed; its subscriber ends whatever expired and watches the
 * earliest deadline left. Nothing ticks while nothing is watched. Times are on performance.now()'s
 * monotonic clock, so a jump of the wall clock neither hastens nor delays an expiry.
 */
export class DeadlineClock {
  private armedAt = Infinity;
  private readonly arm$ = new Subject<number>();

  /** For one subscriber, the owner of the deadlines. */
  readonly expired$: Observable<number> = this.arm$.pipe(
    switchMap((at) => unrefTimer(at - performance.now())),
    tap(() => (this.armedAt = Infinity)),
  );

  /** Makes sure `expired$` fires no later than `due` (a performance.now() time). */
  watch(due: number): void {
    if (due >= this.armedAt) return;
    this.armedAt = due;
    this.arm$.next(due);
  }

  /** Those of `waiting` that are due by `now`; watches the earliest of the others. */
  takeExpired<T extends { readonly due: number }>(waiting: Iterable<T>, now: number): T[] {
    const expired: T[] = [];
    let earliest = Infinity;
    for (const w of waiting) {
      if (w.due <= now) expired.push(w);
      else if (w.due < earliest) earliest = w.due;
    }
    this.watch(earliest);
    return expired;
  }
}
