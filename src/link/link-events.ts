/**
 * Listener bookkeeping shared by Link implementations: every data listener sees every
 * chunk until the link closes, and every close listener is called exactly once, even when
 * it is registered after the close (see the contract in link.ts).
 */
export class LinkEvents {
  private readonly dataListeners: ((chunk: Uint8Array) => void)[] = [];
  private readonly closeListeners: ((err?: Error) => void)[] = [];
  private closedWith: { err: Error | undefined } | undefined;

  get closed(): boolean { return this.closedWith !== undefined; }

  onData(listener: (chunk: Uint8Array) => void): void {
    this.dataListeners.push(listener);
  }

  onClose(listener: (err?: Error) => void): void {
    const closed = this.closedWith;
    if (closed === undefined) {
      this.closeListeners.push(listener);
    } else {
      queueMicrotask(() => callClose(listener, closed.err));
    }
  }

  emitData(chunk: Uint8Array): void {
    if (this.closedWith !== undefined) return;
    for (const l of this.dataListeners) l(chunk);
  }

  /** Mark the link closed and notify close listeners; later calls are ignored. */
  emitClose(err?: Error): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = { err };
    const listeners = this.closeListeners.splice(0);
    this.dataListeners.length = 0;
    for (const l of listeners) callClose(l, err);
  }
}

function callClose(listener: (err?: Error) => void, err: Error | undefined): void {
  if (err === undefined) listener();
  else listener(err);
}
