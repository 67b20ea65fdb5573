/** `GET /events`: past events (since/until), then live ones, filtered as dockerd filters them. */
import type { DockerEvent, EventBus } from '../../engine/events';
import { invalid } from '../../errors';
import type { RequestContext } from '../context';

/** Docker accepts Unix seconds (with optional fraction) or RFC 3339 for since/until. */
export function parseTimestamp(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Math.round(Number(value) * 1e9);
  const duration = /^(\d+)(s|m|h)$/.exec(value);
  if (duration) return (now - Number(duration[1]) * { s: 1e3, m: 6e4, h: 3.6e6 }[duration[2] as 's' | 'm' | 'h']) * 1e6;
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw invalid(`failed to parse value as time or duration: "${value}"`);
  return t * 1e6;
}

export function eventMatches(e: DockerEvent, filters: Record<string, string[]>): boolean {
  const any = (key: string, values: string[]) => !filters[key] || filters[key].some((f) => values.includes(f));
  const labels = Object.entries(e.Actor.Attributes).map(([k, v]) => [k, `${k}=${v}`]).flat();
  return (
    any('type', [e.Type]) &&
    any('event', [e.Action, e.Action.split(':')[0]]) &&
    // dockerd's FuzzyMatch: the whole ID or name, or a prefix of either.
    (!filters.container ||
      (e.Type === 'container' &&
        filters.container.some((f) => e.Actor.ID.startsWith(f) || (e.Actor.Attributes.name ?? '').startsWith(f)))) &&
    any('image', e.Type === 'image' ? [e.Actor.ID, e.Actor.Attributes.name ?? ''] : [e.Actor.Attributes.image ?? '']) &&
    any('network', e.Type === 'network' ? [e.Actor.ID, e.Actor.Attributes.name ?? ''] : []) &&
    any('volume', e.Type === 'volume' ? [e.Actor.ID] : []) &&
    any('label', labels) &&
    any('scope', ['local'])
  );
}

export function serveEvents(ctx: RequestContext, events: EventBus): void {
  const since = parseTimestamp(ctx.query.get('since'));
  const until = parseTimestamp(ctx.query.get('until'));
  const filters = ctx.filters();
  const res = ctx.stream(200, 'application/json');
  const send = (e: DockerEvent) => {
    if (until !== undefined && e.timeNano > until) return;
    if (eventMatches(e, filters)) res.write(JSON.stringify(e) + '\n');
  };
  if (since !== undefined) for (const e of events.since(since)) send(e);
  if (until !== undefined && until <= Date.now() * 1e6) {
    res.end();
    return;
  }
  const unsubscribe = events.subscribe(send);
  const timer = until !== undefined ? setTimeout(() => res.end(), until / 1e6 - Date.now()) : undefined;
  const stop = () => {
    unsubscribe();
    if (timer) clearTimeout(timer);
  };
  res.on('close', stop);
  res.on('finish', stop);
}
