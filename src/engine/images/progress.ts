/**
 * Docker's JSON progress messages (jsonmessage), written the way dockerd writes them so the
 * docker CLI draws its progress bars: key order, `progressDetail` present-but-empty for layer
 * states, the legacy `progress` bar string, and go-units' human sizes.
 */
export interface ProgressDetail {
  current?: number;
  total?: number;
}

export interface JsonMessage {
  stream?: string;
  status?: string;
  progressDetail?: ProgressDetail;
  progress?: string;
  id?: string;
  errorDetail?: { message: string };
  error?: string;
  aux?: unknown;
}

/** Where progress goes; the HTTP layer turns it into a streamed response. */
export interface ProgressSink {
  write(msg: JsonMessage): void;
}

export const discardProgress: ProgressSink = { write: () => undefined };

/** One line of the stream, keys in dockerd's order. */
export function formatMessage(msg: JsonMessage): string {
  const out: Record<string, unknown> = {};
  if (msg.stream !== undefined) out.stream = msg.stream;
  if (msg.status !== undefined) out.status = msg.status;
  if (msg.progressDetail !== undefined) out.progressDetail = msg.progressDetail;
  if (msg.progress) out.progress = msg.progress;
  if (msg.id) out.id = msg.id;
  if (msg.errorDetail) out.errorDetail = msg.errorDetail;
  if (msg.error) out.error = msg.error;
  if (msg.aux !== undefined) out.aux = msg.aux;
  return JSON.stringify(out) + '\n';
}

export function errorMessage(err: unknown): JsonMessage {
  const message = err instanceof Error ? err.message : String(err);
  return { errorDetail: { message }, error: message };
}

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];

/** go-units HumanSize: decimal units, 4 significant digits, no trailing zeros ("32.77kB"). */
export function humanSize(bytes: number): string {
  let size = bytes;
  let i = 0;
  while (size >= 1000 && i < UNITS.length - 1) {
    size /= 1000;
    i++;
  }
  return `${formatG4(size)}${UNITS[i]}`;
}

/** Go's %.4g for the values humanSize produces (below 1000 after scaling). */
function formatG4(n: number): string {
  if (n === 0) return '0';
  return String(Number(n.toPrecision(4)));
}

/** The bar dockerd puts in the legacy `progress` field (terminal width taken as 200, no ETA). */
export function progressBar(current: number, total: number): string {
  if (current <= 0 && total <= 0) return '';
  if (total <= 0) return humanSize(current).padStart(8);
  let filled = Math.floor(Math.floor((current / total) * 100) / 2);
  if (filled > 50) filled = 50;
  const bar = `[${'='.repeat(filled)}>${' '.repeat(Math.max(0, 50 - filled))}] `;
  return bar + `${humanSize(current).padStart(8)}/${humanSize(total)}`;
}

/** Short ID used for layers in progress output: the first 12 hex digits of a digest. */
export function shortId(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

/** Layer progress with the update rate dockerd's progress reader has (not every chunk). */
export class LayerProgress {
  private last = 0;
  private lastBytes = 0;

  constructor(
    private readonly sink: ProgressSink,
    readonly id: string,
  ) {}

  status(status: string): void {
    this.sink.write({ status, progressDetail: {}, id: this.id });
  }

  update(action: string, current: number, total: number, force = false): void {
    const now = Date.now();
    if (!force && now - this.last < 100 && current - this.lastBytes < 512 * 1024 && current !== total) return;
    this.last = now;
    this.lastBytes = current;
    this.sink.write({
      status: action,
      progressDetail: total > 0 ? { current, total } : { current },
      progress: progressBar(current, total),
      id: this.id,
    });
  }
}
