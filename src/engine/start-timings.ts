/**
 * Where a container's start time goes, for bench/start-latency.ts (issue 7): the Sandbox reports
 * its steps here (VMM spawn, template restore, agent READY, mounts), and anything in the same
 * process — a benchmark running the daemon in-process — can listen. No listener, no cost.
 */
export type StartTimings = Record<string, number>;
type Listener = (id: string, timings: StartTimings) => void;

const listeners = new Set<Listener>();

export function onSandboxTimings(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function reportSandboxTimings(id: string, timings: StartTimings): void {
  for (const l of listeners) l(id, timings);
}
