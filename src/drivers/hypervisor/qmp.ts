/**
 * A minimal QMP (QEMU Machine Protocol) client: newline-delimited JSON over a socket that QEMU
 * connected to. Commands are matched to answers by id; asynchronous events are emitted.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { internal, unavailable } from '../../errors';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient extends EventEmitter {
  private buffer = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closed = false;
  private readonly greeted: Promise<void>;

  constructor(private readonly socket: Socket) {
    super();
    let greet!: () => void;
    this.greeted = new Promise((resolve) => (greet = resolve));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (!line) continue;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        if ('QMP' in msg) greet();
        else if ('event' in msg) this.emit('event', msg);
        else if ('id' in msg) {
          const p = this.pending.get(String(msg.id));
          if (!p) continue;
          this.pending.delete(String(msg.id));
          if ('error' in msg) {
            const e = msg.error as { desc?: string };
            p.reject(internal(`qmp: ${e.desc ?? 'error'}`));
          } else p.resolve(msg.return);
        }
      }
    });
    const onClose = () => {
      this.closed = true;
      for (const p of this.pending.values()) p.reject(unavailable('qmp connection closed'));
      this.pending.clear();
    };
    socket.on('close', onClose);
    socket.on('error', onClose);
  }

  /** Negotiates capabilities; must be called once before other commands. */
  async handshake(): Promise<void> {
    await this.greeted;
    await this.execute('qmp_capabilities');
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(unavailable('qmp connection closed'));
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket.write(JSON.stringify({ execute: command, arguments: args, id }) + '\n');
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
