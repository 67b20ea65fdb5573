/**
 * The daemon's event stream in Docker's shape (`GET /events`): every engine service publishes
 * here; subscribers get live events, and a bounded history serves `since`.
 */
import { EventEmitter } from 'node:events';

export type EventType = 'container' | 'image' | 'volume' | 'network' | 'daemon';

export interface DockerEvent {
  Type: EventType;
  Action: string;
  Actor: { ID: string; Attributes: Record<string, string> };
  scope: 'local';
  time: number;
  timeNano: number;
  // Deprecated fields that older clients (docker-compose 1.29) still read.
  status?: string;
  id?: string;
  from?: string;
}

const HISTORY = 1000;

export class EventBus {
  private readonly emitter = new EventEmitter();
  private readonly history: DockerEvent[] = [];

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(type: EventType, action: string, id: string, attributes: Record<string, string> = {}): DockerEvent {
    const nowNs = BigInt(Date.now()) * 1_000_000n + process.hrtime.bigint() % 1_000_000n;
    const event: DockerEvent = {
      Type: type,
      Action: action,
      Actor: { ID: id, Attributes: attributes },
      scope: 'local',
      time: Number(nowNs / 1_000_000_000n),
      timeNano: Number(nowNs),
    };
    if (type === 'container' || type === 'image') {
      event.status = action;
      event.id = id;
      if (attributes.image) event.from = attributes.image;
    }
    this.history.push(event);
    if (this.history.length > HISTORY) this.history.shift();
    this.emitter.emit('event', event);
    return event;
  }

  /** Past events with time >= sinceNs (nanoseconds). */
  since(sinceNs: number): DockerEvent[] {
    return this.history.filter((e) => e.timeNano >= sinceNs);
  }

  subscribe(listener: (e: DockerEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}
