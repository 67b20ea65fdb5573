/**
 * How a create request becomes a container config: dockerd's merge with the image config, the
 * HostConfig checks, the body type checks, stop signals and container names.
 */
import {
  mergeEnv,
  mergeWithImage,
  normaliseHostConfig,
  signalNumber,
  validateCreateRequest,
} from '../../src/engine/containers/config-merge';
import { generateName, validateName } from '../../src/engine/containers/names';
import type { CreateContainerRequest, HostConfig } from '../../src/engine/containers/types';
import type { ImageRecord, ImageRuntimeConfig } from '../../src/engine/image-backend';
import { PaddockError } from '../../src/errors';

const ID = '0123456789abcdef'.repeat(4);

function image(config: ImageRuntimeConfig): ImageRecord {
  return {
    id: 'sha256:' + 'f'.repeat(64),
    repoTags: ['img:latest'],
    repoDigests: [],
    created: '2024-01-01T00:00:00Z',
    architecture: 'amd64',
    os: 'linux',
    size: 0,
    config,
    layerDirs: [],
  };
}

const merge = (req: Partial<CreateContainerRequest>, img: ImageRuntimeConfig) => mergeWithImage({ Image: 'img', ...req }, image(img), ID);

function thrown(fn: () => unknown): PaddockError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(PaddockError);
    return e as PaddockError;
  }
  throw new Error('expected a throw');
}

describe('Entrypoint and Cmd', () => {
  const img = { Entrypoint: ['/entry.sh'], Cmd: ['serve', '--port', '80'] };

  it("uses the image's Entrypoint and Cmd when the request has neither", () => {
    const m = merge({}, img);
    expect(m.config.Entrypoint).toEqual(['/entry.sh']);
    expect(m.config.Cmd).toEqual(['serve', '--port', '80']);
    expect([m.path, ...m.args]).toEqual(['/entry.sh', 'serve', '--port', '80']);
  });

  it("replaces only the image's Cmd when the request gives a Cmd", () => {
    const m = merge({ Cmd: ['debug'] }, img);
    expect(m.config.Entrypoint).toEqual(['/entry.sh']);
    expect([m.path, ...m.args]).toEqual(['/entry.sh', 'debug']);
  });

  it("drops the image's Cmd when the request gives an Entrypoint", () => {
    const m = merge({ Entrypoint: ['/bin/sh'] }, img);
    expect(m.config.Cmd ?? null).toBeNull();
    expect([m.path, ...m.args]).toEqual(['/bin/sh']);
    const both = merge({ Entrypoint: ['/bin/sh'], Cmd: ['-c', 'true'] }, img);
    expect([both.path, ...both.args]).toEqual(['/bin/sh', '-c', 'true']);
  });

  it('an empty Entrypoint list clears the image entrypoint but keeps the image Cmd', () => {
    const m = merge({ Entrypoint: [] }, img);
    expect(m.config.Entrypoint).toEqual([]);
    expect(m.config.Cmd).toEqual(['serve', '--port', '80']);
    expect([m.path, ...m.args]).toEqual(['serve', '--port', '80']);
  });

  it('a null Entrypoint takes the image one', () => {
    expect(merge({ Entrypoint: null, Cmd: ['x'] }, img).config.Entrypoint).toEqual(['/entry.sh']);
  });

  it('refuses a container with no command at all', () => {
    const e = thrown(() => merge({}, {}));
    expect(e.kind).toBe('invalid');
    expect(e.message).toBe('no command specified');
    expect(() => merge({ Cmd: [] }, { Cmd: null })).toThrow('no command specified');
  });

  // dockerd (daemon/create.go mergeAndVerifyConfig) resets an Entrypoint of [""] to nil after the
  // merge: `docker run --entrypoint "" busybox echo hi` runs `echo hi`. Here "" becomes the path.
  test('treats Entrypoint [""] as no entrypoint, as dockerd does', () => {
    const m = merge({ Entrypoint: [''], Cmd: ['echo', 'hi'] }, img);
    expect(m.config.Entrypoint).toBeNull();
    expect([m.path, ...m.args]).toEqual(['echo', 'hi']);
  });
});

describe('Env', () => {
  it('overrides image variables by key and adds new ones', () => {
    const m = merge({ Env: ['A=override', 'NEW=1'] }, { Env: ['PATH=/bin', 'A=image'], Cmd: ['x'] });
    expect(m.config.Env).toEqual(expect.arrayContaining(['PATH=/bin', 'A=override', 'NEW=1']));
    expect(m.config.Env).toHaveLength(3);
  });

  it('keeps image variables when the request has none', () => {
    expect(merge({}, { Env: ['PATH=/bin'], Cmd: ['x'] }).config.Env).toEqual(['PATH=/bin']);
    expect(merge({ Env: null }, { Cmd: ['x'] }).config.Env).toEqual([]);
  });

  it('mergeEnv: a bare KEY removes the variable; values may contain "="', () => {
    expect(mergeEnv(['A=1', 'B=2', 'C=3'], ['B', 'C=x=y', 'D=', 'NOPE'])).toEqual(['A=1', 'C=x=y', 'D=']);
  });

  it('mergeEnv: keys compare whole, not by prefix', () => {
    expect(mergeEnv(['PATH=/bin', 'PATHEXT=x'], ['PATH=/usr/bin'])).toEqual(['PATH=/usr/bin', 'PATHEXT=x']);
  });

  // dockerd's merge (daemon/commit.go) keeps the request's Env first and appends the image's
  // variables it does not override; known: allow-list.json `**.Config.Env[*]` (kind bug).
  test("puts the container's variables before the image's, as dockerd does", () => {
    const m = merge({ Env: ['B=2', 'A=3'] }, { Env: ['PATH=/bin', 'A=1'], Cmd: ['x'] });
    expect(m.config.Env).toEqual(['B=2', 'A=3', 'PATH=/bin']);
  });
});

describe('other image fields', () => {
  const img: ImageRuntimeConfig = {
    Cmd: ['x'],
    WorkingDir: '/app',
    User: 'nobody',
    Labels: { a: 'image', b: 'image' },
    ExposedPorts: { '80/tcp': {} },
    Volumes: { '/data': {} },
    StopSignal: 'SIGQUIT',
    Healthcheck: { Test: ['CMD', 'true'], Interval: 5e9, Retries: 3 },
  };

  it("takes WorkingDir, User, StopSignal and Healthcheck from the image unless the request sets them", () => {
    const m = merge({}, img);
    expect(m.config).toMatchObject({ WorkingDir: '/app', User: 'nobody', StopSignal: 'SIGQUIT', Healthcheck: img.Healthcheck });
    const own = merge({ WorkingDir: '/w', User: '1000:1000', StopSignal: 'SIGINT', Healthcheck: { Test: ['NONE'] } }, img);
    expect(own.config).toMatchObject({ WorkingDir: '/w', User: '1000:1000', StopSignal: 'SIGINT', Healthcheck: { Test: ['NONE'] } });
  });

  it('merges labels (request wins), exposed ports and volumes (union)', () => {
    const m = merge({ Labels: { b: 'request', c: 'request' }, ExposedPorts: { '443/tcp': {} }, Volumes: { '/logs': {} } }, img);
    expect(m.config.Labels).toEqual({ a: 'image', b: 'request', c: 'request' });
    expect(Object.keys(m.config.ExposedPorts ?? {}).sort()).toEqual(['443/tcp', '80/tcp']);
    expect(Object.keys(m.config.Volumes ?? {}).sort()).toEqual(['/data', '/logs']);
    const none = merge({}, { Cmd: ['x'] });
    expect(none.config.ExposedPorts).toBeNull();
    expect(none.config.Volumes).toBeNull();
    expect(none.config.Labels).toEqual({});
  });

  it('fills the defaults dockerd shows in inspect', () => {
    const m = merge({ Tty: true }, { Cmd: ['x'] });
    expect(m.config).toMatchObject({
      Hostname: ID.slice(0, 12),
      Domainname: '',
      Tty: true,
      OpenStdin: false,
      StdinOnce: false,
      AttachStdin: false,
      AttachStdout: false,
      AttachStderr: false,
      OnBuild: null,
      WorkingDir: '',
      User: '',
    });
    expect(merge({ Hostname: 'mine' }, { Cmd: ['x'] }).config.Hostname).toBe('mine');
    expect(m.config).not.toHaveProperty('HostConfig');
  });

  // dockerd merges a request's partial Healthcheck with the image's field by field
  // (`docker run --health-interval 1s` keeps the image's HEALTHCHECK test).
  test("fills a partial Healthcheck from the image's, as dockerd does", () => {
    const m = merge({ Healthcheck: { Interval: 1e9 } }, img);
    expect(m.config.Healthcheck).toEqual({ Test: ['CMD', 'true'], Interval: 1e9, Retries: 3 });
  });
});

describe('HostConfig', () => {
  const hc = (h: HostConfig) => normaliseHostConfig(h);

  it('defaults what dockerd defaults', () => {
    expect(hc({})).toMatchObject({
      NetworkMode: 'default',
      RestartPolicy: { Name: 'no', MaximumRetryCount: 0 },
      LogConfig: { Type: 'json-file', Config: {} },
      AutoRemove: false,
      Privileged: false,
      Memory: 0,
    });
    expect(hc({ NetworkMode: 'none', RestartPolicy: { Name: '' } })).toMatchObject({ NetworkMode: 'none', RestartPolicy: { Name: 'no', MaximumRetryCount: 0 } });
  });

  it('accepts the known policies and a retry count with on-failure', () => {
    for (const Name of ['no', 'always', 'unless-stopped', 'on-failure'] as const) expect(hc({ RestartPolicy: { Name } }).RestartPolicy?.Name).toBe(Name);
    expect(hc({ RestartPolicy: { Name: 'on-failure', MaximumRetryCount: 5 } }).RestartPolicy).toEqual({ Name: 'on-failure', MaximumRetryCount: 5 });
  });

  it('refuses bad restart policies with their messages', () => {
    expect(thrown(() => hc({ RestartPolicy: { Name: 'sometimes' as 'no' } })).message).toBe("invalid restart policy 'sometimes'");
    expect(thrown(() => hc({ RestartPolicy: { Name: 'always', MaximumRetryCount: 2 } })).message).toBe(
      "invalid restart policy: maximum retry count can only be used with 'on-failure'",
    );
    expect(thrown(() => hc({ RestartPolicy: { Name: 'on-failure', MaximumRetryCount: -1 } })).message).toBe(
      'invalid restart policy: maximum retry count cannot be negative',
    );
    expect(thrown(() => hc({ RestartPolicy: { Name: 'always' }, AutoRemove: true })).message).toBe(
      "can't create 'AutoRemove' container with restart policy",
    );
    expect(hc({ RestartPolicy: { Name: 'no' }, AutoRemove: true }).AutoRemove).toBe(true);
  });

  it('refuses memory limits under 6 MB but takes 0 as unlimited', () => {
    expect(thrown(() => hc({ Memory: 1024 * 1024 })).message).toBe('Minimum memory limit allowed is 6MB');
    expect(hc({ Memory: 0 }).Memory).toBe(0);
    expect(hc({ Memory: 6 * 1024 * 1024 }).Memory).toBe(6 * 1024 * 1024);
  });

  // dockerd (every version) accepts an empty policy name with any retry count, for backward
  // compatibility (daemon/container.go validateRestartPolicy: case "": return nil).
  test('accepts an empty policy name with a retry count, as dockerd does', () => {
    expect(() => hc({ RestartPolicy: { Name: '', MaximumRetryCount: 3 } })).not.toThrow();
  });
});

describe('validateCreateRequest', () => {
  it('accepts a minimal body and turns a bare-string Cmd/Entrypoint into a list', () => {
    const r = validateCreateRequest({ Image: 'busybox', Cmd: 'echo hi', Entrypoint: '/bin/sh' });
    expect(r.Cmd).toEqual(['echo hi']);
    expect(r.Entrypoint).toEqual(['/bin/sh']);
    expect(validateCreateRequest({ Image: 'busybox', Cmd: null }).Cmd).toBeNull();
  });

  it.each<[unknown, string]>([
    [null, 'config cannot be empty in order to create a container'],
    [[], 'config cannot be empty in order to create a container'],
    ['str', 'config cannot be empty in order to create a container'],
    [{ Image: 'b', Cmd: 5 }, 'json: cannot unmarshal number into Go struct field ContainerConfigWrapper.Cmd of type string'],
    [{ Image: 'b', Cmd: ['a', 1] }, 'json: cannot unmarshal array into Go struct field ContainerConfigWrapper.Cmd of type string'],
    [{ Image: 'b', Entrypoint: {} }, 'json: cannot unmarshal object into Go struct field ContainerConfigWrapper.Entrypoint of type string'],
    [{ Image: 'b', Env: 'A=1' }, 'json: cannot unmarshal string into Go struct field ContainerConfigWrapper.Env of type []string'],
    [{ Image: 'b', Env: ['A=1', 2] }, 'json: cannot unmarshal array into Go struct field ContainerConfigWrapper.Env of type []string'],
    [{ Image: 'b', User: 0 }, 'json: cannot unmarshal number into Go struct field ContainerConfigWrapper.User of type string'],
    [{ Image: 'b', WorkingDir: [] }, 'json: cannot unmarshal array into Go struct field ContainerConfigWrapper.WorkingDir of type string'],
    [{ Image: 'b', Tty: 'yes' }, 'json: cannot unmarshal string into Go struct field ContainerConfigWrapper.Tty of type bool'],
    [{ Image: 'b', Labels: ['a=b'] }, 'json: cannot unmarshal array into Go struct field ContainerConfigWrapper.Labels of type map[string]string'],
    [{ Image: 'b', HostConfig: 'x' }, 'json: cannot unmarshal string into Go struct field ContainerConfigWrapper.HostConfig of type container.HostConfig'],
    [{ Image: 7 }, 'json: cannot unmarshal number into Go struct field ContainerConfigWrapper.Image of type string'],
    [{ Cmd: ['x'] }, 'No image was specified'],
    [{ Image: '' }, 'No image was specified'],
  ])('refuses %j', (body, message) => {
    const e = thrown(() => validateCreateRequest(body));
    expect(e.kind).toBe('invalid');
    expect(e.message).toBe(message);
  });
});

describe('signalNumber', () => {
  it('reads names with or without SIG, any case, and numbers', () => {
    expect(signalNumber('SIGTERM')).toBe(15);
    expect(signalNumber('term')).toBe(15);
    expect(signalNumber('KILL')).toBe(9);
    expect(signalNumber('sigusr1')).toBe(10);
    expect(signalNumber('SIGWINCH')).toBe(28);
    expect(signalNumber('9')).toBe(9);
    expect(signalNumber(2)).toBe(2);
  });

  it('falls back when none is given', () => {
    expect(signalNumber(undefined)).toBe(15);
    expect(signalNumber('', 9)).toBe(9);
  });

  it('refuses unknown names', () => {
    const e = thrown(() => signalNumber('SIGFOO'));
    expect(e.kind).toBe('invalid');
    expect(e.message).toBe('Invalid signal: SIGFOO');
  });
});

describe('container names', () => {
  it('validates against dockerd\'s pattern and strips the slash', () => {
    expect(validateName('web')).toBe('web');
    expect(validateName('/web_1.a-b')).toBe('web_1.a-b');
    expect(validateName('9lives')).toBe('9lives');
  });

  it.each(['', 'a', '/a', '_web', '-web', '.web', 'web/x', 'we b', 'wéb'])("refuses %j with dockerd's message", (name) => {
    const e = thrown(() => validateName(name));
    expect(e.kind).toBe('invalid');
    expect(e.message).toBe(`Invalid container name (${name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
  });

  it('generates adjective_surname names that pass validation', () => {
    for (let i = 0; i < 50; i++) {
      const n = generateName(() => false);
      expect(n).toMatch(/^[a-z]+_[a-z]+$/);
      expect(validateName(n)).toBe(n);
    }
  });

  it('avoids names that are taken, adding a digit after a few tries', () => {
    const seen: string[] = [];
    const n = generateName((c) => {
      seen.push(c);
      return seen.length <= 3;
    });
    expect(seen).toHaveLength(4);
    expect(n).toBe(seen[3]);
    expect(n).toMatch(/^[a-z]+_[a-z]+[0-9]$/);
  });

  it('never returns a taken name, even when every generated one is taken', () => {
    const taken = new Set<string>();
    const n = generateName((c) => {
      taken.add(c);
      return true;
    });
    expect(taken.has(n)).toBe(false);
    expect(n).toMatch(/^paddock_\d+$/);
    expect(taken.size).toBe(10);
  });
});
