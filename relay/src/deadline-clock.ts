// Deadlines of many waiting requests on one timer. A timer per request costs more than the rest
// of a relayed request together; requests mostly arrive with ever later deadlines, so one timer
// armed for the earliest of them is re-armed only when an earlier deadline comes along.

import { Observable, Subject, switchMap, tap } from 'rxjs';

/** Emits the time once after `delayMs`; does not hold the process open (a socket always does). */
export function unrefTimer(delayMs: number): Observable<number> {
  return new Observable<number>((subscriber) => {
    // setTimeout fires at once above 2^31-1 ms; firing early only means re-arming.
    const handle = setTimeout(
      () => {
        subscriber.next(Date.now());
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
 * earliest deadline left. Nothing ticks while nothing is watched.
 */
export class DeadlineClock {
  private armedAt = Infinity;
  private readonly arm$ = new Subject<number>();

  /** For one subscriber, the owner of the deadlines. */
  readonly expired$: Observable<number> = this.arm$.pipe(
    switchMap((at) => unrefTimer(at - Date.now())),
    tap(() => (this.armedAt = Infinity)),
  );

  /** Makes sure `expired$` fires no later than `deadline` (ms since the epoch). */
  watch(deadline: number): void {
    if (deadline >= this.armedAt) return;
    this.armedAt = deadline;
    this.arm$.next(deadline);
  }
}
