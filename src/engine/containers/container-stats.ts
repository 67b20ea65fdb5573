/**
 * `docker stats` numbers, read from the guest (its own /proc: the VM is the container), in the
 * shape of dockerd's stats JSON. CPU times come in USER_HZ ticks (100 Hz in our kernel).
 */
import type { AgentConnection } from '../../drivers/agent/agent-client';

const NS_PER_TICK = 1e7;

export interface GuestSample {
  read: string;
  busyNs: number;
  totalNs: number;
  userNs: number;
  kernelNs: number;
  onlineCpus: number;
  memTotal: number;
  memAvailable: number;
  memCached: number;
  processes: number;
}

export async function sampleGuest(agent: AgentConnection): Promise<GuestSample> {
  const [stat, meminfo, procs] = await Promise.all([
    agent.readFile('/proc/stat'),
    agent.readFile('/proc/meminfo'),
    agent.ps(),
  ]);
  const cpu = (/^cpu\s+(.*)$/m.exec(stat)?.[1] ?? '').trim().split(/\s+/).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = cpu;
  const total = user + nice + system + idle + iowait + irq + softirq + steal;
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
  return {
    read: new Date().toISOString(),
    busyNs: (total - idle - iowait) * NS_PER_TICK,
    totalNs: total * NS_PER_TICK,
    userNs: (user + nice) * NS_PER_TICK,
    kernelNs: (system + irq + softirq) * NS_PER_TICK,
    onlineCpus: (stat.match(/^cpu\d+\s/gm) ?? []).length || 1,
    memTotal: kb('MemTotal'),
    memAvailable: kb('MemAvailable'),
    memCached: kb('Cached'),
    processes: procs.length,
  };
}

const emptyCpu = { cpu_usage: { total_usage: 0, usage_in_kernelmode: 0, usage_in_usermode: 0 }, system_cpu_usage: 0, online_cpus: 0, throttling_data: { periods: 0, throttled_periods: 0, throttled_time: 0 } };

function cpuStats(s?: GuestSample) {
  if (!s) return emptyCpu;
  return {
    cpu_usage: { total_usage: s.busyNs, usage_in_kernelmode: s.kernelNs, usage_in_usermode: s.userNs },
    system_cpu_usage: s.totalNs,
    online_cpus: s.onlineCpus,
    throttling_data: { periods: 0, throttled_periods: 0, throttled_time: 0 },
  };
}

/** One stats object as dockerd writes it (cgroup v2 flavour). */
export function statsJson(id: string, name: string, cur?: GuestSample, prev?: GuestSample): Record<string, unknown> {
  const usage = cur ? cur.memTotal - cur.memAvailable : 0;
  return {
    name,
    id,
    read: cur?.read ?? '0001-01-01T00:00:00Z',
    preread: prev?.read ?? '0001-01-01T00:00:00Z',
    pids_stats: cur ? { current: cur.processes } : {},
    blkio_stats: { io_service_bytes_recursive: null, io_serviced_recursive: null, io_queue_recursive: null, io_service_time_recursive: null, io_wait_time_recursive: null, io_merged_recursive: null, io_time_recursive: null, sectors_recursive: null },
    num_procs: 0,
    storage_stats: {},
    cpu_stats: cpuStats(cur),
    precpu_stats: cpuStats(prev),
    memory_stats: cur ? { usage, limit: cur.memTotal, stats: { inactive_file: 0, file: cur.memCached } } : {},
  };
}
