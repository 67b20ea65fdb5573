/**
 * Pure functions behind `docker events` and `docker ps`: since/until parsing, event filters,
 * Go's units.HumanDuration, the Status column and the container list filters.
 */
import { filterContainers, humanDuration, statusText } from '../../src/api/routes/container-views';
import { eventMatches, parseTimestamp } from '../../src/api/routes/events';
import type { ContainerService } from '../../src/engine/containers/container-service';
import type { ContainerRecord, ContainerState } from '../../src/engine/containers/types';
import { ZERO_TIME } from '../../src/engine/containers/types';
import { EventBus, type DockerEvent } from '../../src/engine/events';
import { PaddockError } from '../../src/errors';

describe('parseTimestamp', () => {
  const now = Date.UTC(2024, 0, 2, 3, 4, 5);

  it('is undefined when absent', () => {
    expect(parseTimestamp(null)).toBeUndefined();
    expect(parseTimestamp('')).toBeUndefined();
  });

  it('takes Unix seconds, with or without a fraction, as nanoseconds', () => {
    expect(parseTimestamp('1700000000')).toBe(1_700_000_000 * 1e9);
    expect(parseTimestamp('0')).toBe(0);
    // Doubles near 1.7e18 are 256 ns apart: allow for that.
    expect(Math.abs(parseTimestamp('1700000000.5')! - 1_700_000_000.5e9)).toBeLessThan(1024);
    expect(Math.abs(parseTimestamp('1700000000.000001')! - (1_700_000_000e9 + 1000))).toBeLessThan(1024);
  });

  it('takes durations relative to now', () => {
    expect(parseTimestamp('30s', now)).toBe((now - 30_000) * 1e6);
    expect(parseTimestamp('10m', now)).toBe((now - 600_000) * 1e6);
    expect(parseTimestamp('2h', now)).toBe((now - 7_200_000) * 1e6);
  });

  it('takes RFC 3339 times', () => {
    expect(parseTimestamp('2024-01-02T03:04:05Z')).toBe(now * 1e6);
    expect(parseTimestamp('2024-01-02T05:04:05+02:00')).toBe(now * 1e6);
    expect(parseTimestamp('2024-01-02T03:04:05.250Z')).toBe((now + 250) * 1e6);
  });

  it('refuses anything else as invalid', () => {
    for (const bad of ['yesterday', '10x', 'soon']) {
      expect(() => parseTimestamp(bad)).toThrow(`failed to parse value as time or duration: "${bad}"`);
    }
    try {
      parseTimestamp('nope');
    } catch (e) {
      expect((e as PaddockError).kind).toBe('invalid');
    }
  });
});

describe('eventMatches', () => {
  const id = 'c0ffee0123456789abcdef0123456789abcdef0123456789abcdef0123456789';
  const bus = new EventBus();
  const start = bus.publish('container', 'start', id, { name: 'web', image: 'busybox:latest', tier: 'front' });
  const execStart = bus.publish('container', 'exec_start: sh -c true', id, { name: 'web', image: 'busybox:latest' });
  const pull = bus.publish('image', 'pull', 'busybox:latest', { name: 'busybox' });
  const net = bus.publish('network', 'connect', 'n1', { name: 'bridge', container: id });
  const vol = bus.publish('volume', 'create', 'data', { driver: 'local' });
  const m = (e: DockerEvent, f: Record<string, string[]>) => eventMatches(e, f);

  it('matches everything without filters', () => {
    for (const e of [start, execStart, pull, net, vol]) expect(m(e, {})).toBe(true);
  });

  it('filters by type and by event, including the verb of "exec_start: cmd"', () => {
    expect(m(start, { type: ['container'] })).toBe(true);
    expect(m(pull, { type: ['container'] })).toBe(false);
    expect(m(start, { event: ['stop', 'start'] })).toBe(true);
    expect(m(start, { event: ['stop'] })).toBe(false);
    expect(m(execStart, { event: ['exec_start'] })).toBe(true);
  });

  it('matches containers by full id, short id and name, and nothing else', () => {
    expect(m(start, { container: [id] })).toBe(true);
    expect(m(start, { container: [id.slice(0, 12)] })).toBe(true);
    expect(m(start, { container: ['web'] })).toBe(true);
    expect(m(start, { container: ['db'] })).toBe(false);
    // A container filter excludes events of other types.
    expect(m(pull, { container: ['web'] })).toBe(false);
  });

  it('matches images by the image event id/name, and container events by their image', () => {
    expect(m(pull, { image: ['busybox:latest'] })).toBe(true);
    expect(m(pull, { image: ['busybox'] })).toBe(true);
    expect(m(start, { image: ['busybox:latest'] })).toBe(true);
    expect(m(start, { image: ['alpine'] })).toBe(false);
  });

  it('matches networks and volumes by id or name', () => {
    expect(m(net, { network: ['bridge'] })).toBe(true);
    expect(m(net, { network: ['n1'] })).toBe(true);
    expect(m(start, { network: ['bridge'] })).toBe(false);
    expect(m(vol, { volume: ['data'] })).toBe(true);
    expect(m(vol, { volume: ['other'] })).toBe(false);
  });

  it('matches labels by key or key=value', () => {
    expect(m(start, { label: ['tier'] })).toBe(true);
    expect(m(start, { label: ['tier=front'] })).toBe(true);
    expect(m(start, { label: ['tier=back'] })).toBe(false);
    expect(m(start, { label: ['missing'] })).toBe(false);
  });

  it('ANDs different keys and ORs values of one key; scope is always local', () => {
    expect(m(start, { type: ['container'], event: ['start'], container: ['web'] })).toBe(true);
    expect(m(start, { type: ['container'], event: ['die'] })).toBe(false);
    expect(m(start, { scope: ['local'] })).toBe(true);
    expect(m(start, { scope: ['swarm'] })).toBe(false);
  });

  // dockerd filters events with FuzzyMatch: a value also matches names and ids that start with it
  // (known: docker-compat-tests/allow-list.json, docker-py/events).
  test('matches containers whose name or id starts with the filter value, as dockerd does', () => {
    expect(m(start, { container: ['we'] })).toBe(true);
    expect(m(start, { container: [id.slice(0, 5)] })).toBe(true);
  });
});

describe('EventBus', () => {
  it('keeps history for since() and adds the deprecated fields for container/image events', () => {
    const bus = new EventBus();
    const before = Date.now() * 1e6;
    const seen: DockerEvent[] = [];
    const off = bus.subscribe((e) => seen.push(e));
    const e = bus.publish('container', 'create', 'abc', { image: 'busybox' });
    off();
    bus.publish('network', 'create', 'n');
    expect(seen).toEqual([e]);
    expect(e).toMatchObject({ status: 'create', id: 'abc', from: 'busybox', scope: 'local' });
    expect(e.time).toBe(Math.floor(e.timeNano / 1e9));
    expect(bus.since(before - 1e9)).toHaveLength(2);
    expect(bus.since(e.timeNano + 1e9)).toHaveLength(0);
    expect(bus.since(before - 1e9)[1]).not.toHaveProperty('status');
  });
});

describe('humanDuration (go-units HumanDuration table)', () => {
  const s = 1000;
  const min = 60 * s;
  const hour = 60 * min;
  const day = 24 * hour;
  const week = 7 * day;
  const month = 30 * day;
  const year = 365 * day;
  // The cases of docker/go-units duration_test.go.
  const table: Array<[number, string]> = [
    [450, 'Less than a second'],
    [1 * s, '1 second'],
    [45 * s, '45 seconds'],
    [46 * s, '46 seconds'],
    [59 * s, '59 seconds'],
    [60 * s, 'About a minute'],
    [1 * min, 'About a minute'],
    [3 * min, '3 minutes'],
    [35 * min, '35 minutes'],
    [35 * min + 40 * s, '35 minutes'],
    [45 * min, '45 minutes'],
    [45 * min + 40 * s, '45 minutes'],
    [46 * min, '46 minutes'],
    [59 * min, '59 minutes'],
    [1 * hour, 'About an hour'],
    [1 * hour + 29 * min, 'About an hour'],
    [1 * hour + 31 * min, '2 hours'],
    [1 * hour + 59 * min, '2 hours'],
    [3 * hour, '3 hours'],
    [3 * hour + 29 * min, '3 hours'],
    [3 * hour + 31 * min, '4 hours'],
    [3 * hour + 59 * min, '4 hours'],
    [3 * hour + 60 * min, '4 hours'],
    [24 * hour, '24 hours'],
    [1 * day + 12 * hour, '36 hours'],
    [2 * day, '2 days'],
    [7 * day, '7 days'],
    [13 * day + 5 * hour, '13 days'],
    [2 * week, '2 weeks'],
    [2 * week + 4 * day, '2 weeks'],
    [3 * week, '3 weeks'],
    [4 * week, '4 weeks'],
    [4 * week + 3 * day, '4 weeks'],
    [1 * month, '4 weeks'],
    [1 * month + 2 * week, '6 weeks'],
    [2 * month, '2 months'],
    [2 * month + 2 * week, '2 months'],
    [3 * month, '3 months'],
    [3 * month + 1 * week, '3 months'],
    [5 * month + 2 * week, '5 months'],
    [13 * month, '13 months'],
    [23 * month, '23 months'],
    [24 * month, '24 months'],
    [24 * month + 2 * week, '2 years'],
    [3 * year + 2 * month, '3 years'],
  ];

  it.each(table)('%d ms → %s', (ms, text) => {
    expect(humanDuration(ms)).toBe(text);
  });

  it('says less than a second for negative durations (clock skew)', () => {
    expect(humanDuration(-5000)).toBe('Less than a second');
  });

  // Go rounds hours (int(d.Hours()+0.5)) to choose the unit but counts years from the truncated
  // hours (int(d.Hours())/24/365): 2 years less 20 minutes is "1 years" there, "2 years" here.
  test('counts years from truncated hours, as go-units does', () => {
    expect(humanDuration(2 * year - 20 * min)).toBe('1 years');
  });
});

function record(over: Partial<ContainerRecord> & { state?: Partial<ContainerState> } = {}): ContainerRecord {
  const { state, ...rest } = over;
  return {
    Id: 'a'.repeat(64),
    Name: '/box',
    Created: '2024-01-01T00:00:00.000000000Z',
    Path: 'sh',
    Args: [],
    Config: { Image: 'busybox', Labels: {} },
    HostConfig: {},
    Image: 'sha256:' + 'b'.repeat(64),
    RestartCount: 0,
    Platform: 'linux',
    ...rest,
    State: {
      Status: 'created',
      Running: false,
      Paused: false,
      Restarting: false,
      OOMKilled: false,
      Dead: false,
      Pid: 0,
      ExitCode: 0,
      Error: '',
      StartedAt: ZERO_TIME,
      FinishedAt: ZERO_TIME,
      ...state,
    },
  };
}

describe('statusText', () => {
  const now = Date.parse('2024-06-01T12:00:00Z');
  const ago = (ms: number) => new Date(now - ms).toISOString();

  it('describes each state as the Status column of docker ps', () => {
    expect(statusText(record(), now)).toBe('Created');
    expect(statusText(record({ state: { Status: 'running', Running: true, StartedAt: ago(3 * 60_000) } }), now)).toBe('Up 3 minutes');
    expect(statusText(record({ state: { Status: 'exited', ExitCode: 137, FinishedAt: ago(2 * 3600_000) } }), now)).toBe(
      'Exited (137) 2 hours ago',
    );
    expect(statusText(record({ state: { Status: 'paused', Running: true, Paused: true, StartedAt: ago(5_000) } }), now)).toBe(
      'Up 5 seconds (Paused)',
    );
    expect(
      statusText(record({ state: { Status: 'restarting', Running: true, Restarting: true, ExitCode: 1, FinishedAt: ago(1_000) } }), now),
    ).toBe('Restarting (1) 1 second ago');
    expect(statusText(record({ state: { Status: 'dead', Dead: true } }), now)).toBe('Dead');
  });

  it('adds the health status while running', () => {
    const running = (Status: 'starting' | 'healthy' | 'unhealthy' | 'none') =>
      record({ state: { Status: 'running', Running: true, StartedAt: ago(60_000), Health: { Status, FailingStreak: 0, Log: [] } } });
    expect(statusText(running('starting'), now)).toBe('Up About a minute (health: starting)');
    expect(statusText(running('healthy'), now)).toBe('Up About a minute (healthy)');
    expect(statusText(running('unhealthy'), now)).toBe('Up About a minute (unhealthy)');
    expect(statusText(running('none'), now)).toBe('Up About a minute');
  });
});

describe('filterContainers', () => {
  const running = record({
    Id: '1111' + 'a'.repeat(60),
    Name: '/web-1',
    Created: '2024-01-01T00:00:01.000000000Z',
    Config: { Image: 'nginx', Labels: { app: 'web', tier: 'front' } },
    state: { Status: 'running', Running: true, StartedAt: '2024-01-01T00:00:02Z' },
  });
  const exited0 = record({
    Id: '2222' + 'a'.repeat(60),
    Name: '/job',
    Created: '2024-01-01T00:00:02.000000000Z',
    Config: { Image: 'busybox', Labels: { app: 'batch' } },
    state: { Status: 'exited', ExitCode: 0, StartedAt: '2024-01-01T00:00:03Z', FinishedAt: '2024-01-01T00:00:04Z' },
  });
  const exited3 = record({
    Id: '3333' + 'a'.repeat(60),
    Name: '/failing',
    Created: '2024-01-01T00:00:03.000000000Z',
    state: { Status: 'exited', ExitCode: 3, StartedAt: '2024-01-01T00:00:03Z', FinishedAt: '2024-01-01T00:00:04Z' },
  });
  const created = record({ Id: '4444' + 'a'.repeat(60), Name: '/fresh', Created: '2024-01-01T00:00:04.000000000Z' });
  const paused = record({
    Id: '5555' + 'a'.repeat(60),
    Name: '/sleepy',
    Created: '2024-01-01T00:00:05.000000000Z',
    state: { Status: 'running', Running: true, Paused: true },
  });
  const all = [running, exited0, exited3, created, paused];
  const svc = {
    get: (ref: string) => {
      const r = all.find((x) => x.Id.startsWith(ref) || x.Name === `/${ref}`);
      if (!r) throw new PaddockError('not-found', `No such container: ${ref}`);
      return r;
    },
  } as unknown as ContainerService;
  const names = (f: Record<string, string[]>, showAll = false) => filterContainers(svc, all, f, showAll).map((r) => r.Name);

  it('shows only running containers unless all is set', () => {
    expect(names({})).toEqual(['/web-1', '/sleepy']);
    expect(names({}, true)).toEqual(['/web-1', '/job', '/failing', '/fresh', '/sleepy']);
  });

  it('filters by status, reporting paused containers as paused, and implies all', () => {
    expect(names({ status: ['exited'] })).toEqual(['/job', '/failing']);
    expect(names({ status: ['created'] })).toEqual(['/fresh']);
    expect(names({ status: ['paused'] })).toEqual(['/sleepy']);
    expect(names({ status: ['running'] })).toEqual(['/web-1']);
    expect(names({ status: ['running', 'created'] })).toEqual(['/web-1', '/fresh']);
  });

  it('filters by exit code among exited containers only', () => {
    expect(names({ exited: ['0'] })).toEqual(['/job']);
    expect(names({ exited: ['3', '0'] })).toEqual(['/job', '/failing']);
    expect(names({ exited: ['137'] })).toEqual([]);
  });

  it('filters by label key or key=value, every label filter applying', () => {
    expect(names({ label: ['app'] }, true)).toEqual(['/web-1', '/job']);
    expect(names({ label: ['app=web'] }, true)).toEqual(['/web-1']);
    expect(names({ label: ['app=web', 'tier=front'] }, true)).toEqual(['/web-1']);
    expect(names({ label: ['app=web', 'tier=back'] }, true)).toEqual([]);
  });

  it('filters by name as a regular expression, with or without the slash', () => {
    expect(names({ name: ['web'] }, true)).toEqual(['/web-1']);
    expect(names({ name: ['^/fail'] }, true)).toEqual(['/failing']);
    expect(names({ name: ['^job$'] }, true)).toEqual(['/job']);
    expect(names({ name: ['e'] }, true)).toEqual(['/web-1', '/fresh', '/sleepy']);
  });

  it('filters by id prefix and by before/since', () => {
    expect(names({ id: ['2222', '4444'] }, true)).toEqual(['/job', '/fresh']);
    expect(names({ before: ['failing'] })).toEqual(['/web-1', '/job']);
    expect(names({ since: ['failing'] })).toEqual(['/fresh', '/sleepy']);
  });

  it('filters by ancestor image name or image id', () => {
    expect(names({ ancestor: ['nginx'] }, true)).toEqual(['/web-1']);
    expect(names({ ancestor: ['alpine'] }, true)).toEqual([]);
    const byId = filterContainers(svc, all, { ancestor: ['b'.repeat(12)] }, true);
    expect(byId).toHaveLength(all.length);
  });

  // dockerd resolves the ancestor reference to an image ID and compares IDs, so `nginx:latest`
  // finds a container created as `nginx`; here names are compared and only the reverse works.
  test('matches a container created as "nginx" with ancestor=nginx:latest, as dockerd does', () => {
    expect(names({ ancestor: ['nginx:latest'] }, true)).toEqual(['/web-1']);
  });

  it("refuses unknown filters and statuses with dockerd's messages", () => {
    expect(() => names({ colour: ['red'] })).toThrow("invalid filter 'colour'");
    expect(() => names({ status: ['sleeping'] })).toThrow("invalid filter 'status=sleeping'");
    try {
      names({ colour: ['red'] });
    } catch (e) {
      expect((e as PaddockError).kind).toBe('invalid');
    }
  });

  // dockerd parses each exited value with strconv.Atoi and fails the request on an error
  // (daemon/list.go foldFilter); Paddock silently matches nothing.
  test('refuses a non-numeric exited filter, as dockerd does', () => {
    expect(() => names({ exited: ['abc'] })).toThrow();
  });
});
