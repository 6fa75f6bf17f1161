// `--timeout N`, as libvirtd's: the daemon exits once it has had no client for N seconds in a
// row. Under socket activation systemd keeps the listening sockets and starts it again on the
// next connection.

export interface ClientCountSource {
  readonly clientCount: number;
  /** Calls `listener` with the new count whenever a client connects or leaves; returns an unsubscribe. */
  onClientCountChange(listener: (count: number) => void): () => void;
}

/** Calls `onIdle` once the source has had no client for `seconds`; returns a cancel function. */
export function watchIdleTimeout(source: ClientCountSource, seconds: number, onIdle: () => void): () => void {
  let timer: NodeJS.Timeout | null = null;
  const disarm = () => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  const arm = () => {
    disarm();
    timer = setTimeout(() => {
      timer = null;
      if (source.clientCount === 0) {
        unsubscribe();
        onIdle();
      }
    }, seconds * 1000);
  };
  const unsubscribe = source.onClientCountChange((count) => (count === 0 ? arm() : disarm()));
  if (source.clientCount === 0) arm();
  return () => {
    unsubscribe();
    disarm();
  };
}
